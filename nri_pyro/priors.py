"""Edge priors and graph structure: the swappable part of the model, chosen in the spec.

Two sections of a model spec describe what is believed about the graph before seeing data:

``prior:`` the distribution of each edge's type, a small class registered under a name:
``uniform``, ``categorical`` (explicit probabilities), ``sparse`` (probability of type 0,
"no interaction"), ``dirichlet`` (the type frequencies are a global latent with a Dirichlet
prior, learned from the data). Adding one is a class plus the decorator::

    @register_prior("mine")
    class MyPrior(EdgePrior):
        def __init__(self, num_edge_types, temperature=0.5, strength=1.0): ...
        def probs(self, like): ...

and ``prior: {name: mine, strength: 2}`` in a model spec. A prior with global latents
overrides :meth:`EdgePrior.sample` (its ``pyro.sample`` sites, outside the trajectories
plate) and :meth:`EdgePrior.make_guide` (a module that samples the same sites in the guide).

``graph:`` modifiers that compose with any prior (:class:`GraphStructure`):
``symmetric`` (one latent per unordered pair, used in both directions), ``shared`` (one
graph for all trajectories, a global latent), ``known`` (observed edges that condition
the edge site: ``adjacency`` for the same known entries in every trajectory, or
``fraction`` of the training data's true edges revealed, for semi-supervised training)
and ``dynamic`` (``{window: W}``: a graph per window of W frames, for graphs that change
over time).

Priors over how a dynamic graph evolves from window to window (they need
``graph.dynamic``): ``markov`` (a sticky chain: keep the previous window's type with
probability ``stay``, else redraw from a ``base`` prior) and ``markov_learned`` (the
transition matrix a global latent with a Dirichlet prior per row). A static prior draws
every window independently. A prior's :meth:`EdgePrior.window_distribution` is the one
place that says how windows relate.
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import pyro
import pyro.distributions as dist
import torch
from torch import Tensor, nn
from torch.distributions.utils import clamp_probs

from nri_pyro.distributions import EdgeTypes
from nri_pyro.nn.parallel import global_count, global_sum

PRIORS: dict[str, type[EdgePrior]] = {}


def register_prior(name: str) -> Callable[[type[EdgePrior]], type[EdgePrior]]:
    """Class decorator: make a prior available under ``name`` in model specs."""

    def add(cls: type[EdgePrior]) -> type[EdgePrior]:
        cls.name = name
        PRIORS[name] = cls
        return cls

    return add


class EdgePrior:
    """Base class: a relaxed categorical over K edge types for every ordered pair.

    Subclasses give :meth:`probs`; the relaxation temperature of the prior's density
    (used by the "concrete" objective) is ``temperature``.
    """

    name: ClassVar[str] = ""
    # True for priors over how edges evolve between windows: they need ``graph.dynamic``.
    dynamic_only: ClassVar[bool] = False

    def __init__(self, num_edge_types: int, temperature: float = 0.5) -> None:
        if not isinstance(num_edge_types, int) or num_edge_types < 2:
            raise ValueError(f"edge_types must be an integer >= 2, got {num_edge_types!r}")
        if not temperature > 0:
            raise ValueError(f"prior.temperature must be positive, got {temperature!r}")
        self.num_edge_types = num_edge_types
        self.temperature = float(temperature)

    def probs(self, like: Tensor) -> Tensor:
        """Edge-type probabilities [K] on ``like``'s device and dtype."""
        raise NotImplementedError

    def sample(self, like: Tensor) -> Tensor:
        """Called once per model run, outside the trajectories plate: the edge-type
        probabilities [K], after sampling any global latents they depend on."""
        return self.probs(like)

    def make_guide(self) -> nn.Module | None:
        """A module whose ``forward(slot_probs, scale)`` samples this prior's global sites in
        the guide (``slot_probs``: the guide's edge-type probabilities [..., K], ``scale``: how
        many times the dataset is larger than the minibatch). None without global latents."""
        return None

    def distribution(self, probs: Tensor, batch_shape: Sequence[int]) -> EdgeTypes:
        """The relaxed categorical of edges with type probabilities ``probs`` [K]."""
        return EdgeTypes(self.temperature, probs=probs).expand(list(batch_shape))

    def window_distribution(
        self, state: Any, previous: Tensor | None, batch_shape: Sequence[int]
    ) -> EdgeTypes:
        """The edges of one window of a dynamic graph (``graph.dynamic``) given the
        previous window's sample ``previous`` [*batch_shape, K] (None for the first window);
        ``state`` is what :meth:`sample` returned. A static prior draws every window
        independently from :meth:`distribution`."""
        return self.distribution(state, batch_shape)

    def settings(self) -> dict[str, Any]:
        """The settings that rebuild this prior (for the resolved spec)."""
        return {"name": self.name, "temperature": self.temperature}


@register_prior("uniform")
class UniformPrior(EdgePrior):
    """Every edge type equally likely (the paper's default)."""

    def probs(self, like: Tensor) -> Tensor:
        k = self.num_edge_types
        return torch.full((k,), 1.0 / k, device=like.device, dtype=like.dtype)


@register_prior("categorical")
class CategoricalPrior(EdgePrior):
    """Explicit edge-type probabilities, e.g. ``probs: [0.91, 0.09]``."""

    def __init__(
        self, num_edge_types: int, probs: Sequence[float], temperature: float = 0.5
    ) -> None:
        super().__init__(num_edge_types, temperature)
        self._probs = check_probs(probs, num_edge_types)

    def probs(self, like: Tensor) -> Tensor:
        return torch.tensor(self._probs, device=like.device, dtype=like.dtype)

    def settings(self) -> dict[str, Any]:
        return {**super().settings(), "probs": list(self._probs)}


@register_prior("sparse")
class SparsePrior(CategoricalPrior):
    """Probability ``no_edge`` for type 0 ("no interaction"), the rest shared equally."""

    def __init__(self, num_edge_types: int, no_edge: float = 0.91, temperature: float = 0.5):
        if not 0 < no_edge < 1:
            raise ValueError(f"prior.no_edge must lie strictly between 0 and 1, got {no_edge!r}")
        rest = (1.0 - no_edge) / (num_edge_types - 1)
        super().__init__(num_edge_types, [no_edge] + [rest] * (num_edge_types - 1), temperature)
        self.no_edge = float(no_edge)

    def settings(self) -> dict[str, Any]:
        return {"name": self.name, "temperature": self.temperature, "no_edge": self.no_edge}


@register_prior("dirichlet")
class DirichletPrior(EdgePrior):
    """Edge-type frequencies pi ~ Dirichlet(concentration), shared by all edges of a dataset;
    each edge's type ~ Categorical(pi). The site ``edge_freqs`` is learned: the model finds
    out how sparse the graphs are instead of being told.

    ``concentration`` is one positive number (symmetric) or one per edge type.
    """

    def __init__(
        self,
        num_edge_types: int,
        concentration: float | Sequence[float] = 1.0,
        temperature: float = 0.5,
    ) -> None:
        super().__init__(num_edge_types, temperature)
        if isinstance(concentration, (int, float)) and not isinstance(concentration, bool):
            values = (float(concentration),) * num_edge_types
        else:
            try:
                values = tuple(float(c) for c in concentration)
            except (TypeError, ValueError):
                raise ValueError(
                    f"prior.concentration must be a positive number or a list of them, got "
                    f"{concentration!r}"
                ) from None
        if len(values) != num_edge_types:
            raise ValueError(
                f"prior.concentration has {len(values)} entries but the model has "
                f"{num_edge_types} edge types"
            )
        if any(not c > 0 for c in values):
            raise ValueError(f"prior.concentration must be positive, got {list(values)}")
        self.concentration = values

    def _concentration(self, like: Tensor) -> Tensor:
        return torch.tensor(self.concentration, device=like.device, dtype=like.dtype)

    def probs(self, like: Tensor) -> Tensor:
        """The prior mean of the frequencies."""
        c = self._concentration(like)
        return c / c.sum()

    def sample(self, like: Tensor) -> Tensor:
        return pyro.sample(FREQS_SITE, dist.Dirichlet(self._concentration(like)))

    def make_guide(self) -> nn.Module:
        return DirichletPosterior(torch.tensor(self.concentration))

    def settings(self) -> dict[str, Any]:
        return {**super().settings(), "concentration": list(self.concentration)}


FREQS_SITE = "edge_freqs"


class DirichletPosterior(nn.Module):
    """q(pi) = Dirichlet(concentration + expected type counts of the whole dataset).

    Given the guide's edge-type probabilities this is the optimal mean-field factor for pi
    (the conjugate update), so pi needs no parameters of its own to learn slowly: in
    training the counts are the minibatch's, scaled to the dataset; a running average of
    them (momentum ``momentum``, like batch norm's statistics) serves in evaluation, so a
    held-out trajectory sees the frequencies learned from the training set.
    """

    site = FREQS_SITE
    event_dims = 0  # dimensions of the concentration beyond one Dirichlet's

    def __init__(self, concentration: Tensor, momentum: float = 0.05) -> None:
        super().__init__()
        self.momentum = momentum
        self.register_buffer("prior_concentration", concentration.float())
        self.register_buffer("counts", torch.zeros_like(concentration, dtype=torch.float))
        self.register_buffer("tracked", torch.tensor(False))

    def statistics(self, slot_probs: Tensor) -> Tensor:
        """Expected counts of the local rows of ``slot_probs`` [B, ..., K] (or [U, K] for
        one shared graph): the number of edges of each type."""
        return slot_probs.reshape(-1, slot_probs.shape[-1]).sum(0)

    def posterior(self, slot_probs: Tensor | None = None, scale: float = 1.0) -> dist.Dirichlet:
        """q(pi): from the running counts in evaluation (or without data), else from data."""
        counts = None
        if slot_probs is not None:
            # scale: dataset / minibatch size; in a data-parallel step the minibatch is the
            # global batch, over which the counts are summed.
            local = slot_probs.shape[0] if slot_probs.dim() > 2 else 1
            counts = global_sum(self.statistics(slot_probs.detach()))
            counts = counts * scale * local / global_count(local)
        if self.training and counts is not None:
            with torch.no_grad():
                if bool(self.tracked):
                    self.counts.lerp_(counts.to(self.counts), self.momentum)
                else:
                    self.counts.copy_(counts)
                    self.tracked.fill_(True)
        elif bool(self.tracked) or counts is None:
            counts = self.counts
        prior = self.prior_concentration
        like = slot_probs if slot_probs is not None else prior
        concentration = (prior + counts).to(device=like.device, dtype=like.dtype)
        return dist.Dirichlet(concentration).to_event(self.event_dims)

    def forward(self, slot_probs: Tensor, scale: float = 1.0) -> Tensor:
        return pyro.sample(self.site, self.posterior(slot_probs, scale))


# --- priors over how a dynamic graph's edges evolve from window to window ---------------


def _previous_type(previous: Tensor) -> Tensor:
    """The previous window's type as a one-hot vector, with straight-through gradients.

    The argmax of a relaxed (Gumbel-softmax) sample is distributed exactly as its
    categorical, so the transition below is the discrete chain's, given the type the
    previous window was drawn; gradients pass as if the soft sample had been used.
    """
    soft = getattr(previous, "_unquantize", previous)
    hard = torch.nn.functional.one_hot(soft.argmax(-1), soft.shape[-1]).to(soft.dtype)
    return hard + soft - soft.detach()


def _base_prior(base: Any, num_edge_types: int, temperature: float, owner: str) -> EdgePrior:
    settings = {"name": "uniform"} if base is None else base
    if isinstance(settings, str):
        settings = {"name": settings}
    if not isinstance(settings, dict):
        raise ValueError(
            f"prior.base of the {owner} prior must be a prior's settings such as "
            f"{{name: sparse, no_edge: 0.9}}, got {base!r}"
        )
    settings = {"temperature": temperature, **settings}
    prior = build_prior(settings, num_edge_types)
    if prior.dynamic_only:
        raise ValueError(
            f"prior.base of the {owner} prior must be a static prior, not {prior.name!r}"
        )
    return prior


class ChainPrior(EdgePrior):
    """Base class of the priors that chain the windows of a dynamic graph
    (``graph.dynamic``): the first window's types come from the ``base`` prior, each later
    window's from :meth:`transition_probs` given the previous window's sample."""

    dynamic_only = True

    def __init__(
        self, num_edge_types: int, base: dict[str, Any] | None = None, temperature: float = 0.5
    ) -> None:
        super().__init__(num_edge_types, temperature)
        self.base = _base_prior(base, num_edge_types, temperature, self.name)

    def probs(self, like: Tensor) -> Tensor:
        return self.base.probs(like)

    def transition_probs(self, state: Any, previous: Tensor) -> Tensor:
        """p(z_w | z_{w-1}): [..., K] given the previous window's sample [..., K]."""
        raise NotImplementedError

    def window_distribution(
        self, state: Any, previous: Tensor | None, batch_shape: Sequence[int]
    ) -> EdgeTypes:
        if previous is None:
            return self.distribution(state, batch_shape)
        probs = clamp_probs(self.transition_probs(state, previous))
        return EdgeTypes(self.temperature, probs=probs / probs.sum(-1, keepdim=True))


@register_prior("markov")
class MarkovPrior(ChainPrior):
    """A sticky chain over the windows of a dynamic graph (``graph.dynamic``).

    The first window's edge types are drawn from the ``base`` prior (uniform, sparse,
    dirichlet, ...); each later window keeps the previous window's type with probability
    ``stay`` and otherwise redraws it from the base:

        p(z_w = k | z_{w-1} = j) = stay [k = j] + (1 - stay) base_k.

    ``stay = 0`` gives independent windows, ``stay = 1`` one graph for the whole trajectory.
    """

    def __init__(
        self,
        num_edge_types: int,
        stay: float = 0.9,
        base: dict[str, Any] | None = None,
        temperature: float = 0.5,
    ) -> None:
        super().__init__(num_edge_types, base, temperature)
        if isinstance(stay, bool) or not isinstance(stay, (int, float)) or not 0 <= stay <= 1:
            raise ValueError(f"prior.stay must be a number in [0, 1], got {stay!r}")
        self.stay = float(stay)

    def sample(self, like: Tensor) -> Any:
        return self.base.sample(like)

    def make_guide(self) -> nn.Module | None:
        """The base prior's global sites (e.g. a Dirichlet's frequencies), updated from the
        first window, the one drawn from the base alone (the redraws of later windows are
        not counted: an approximation of the conjugate update)."""
        base = self.base.make_guide()
        return None if base is None else _MarkovGuide(base, None)

    def distribution(self, state: Any, batch_shape: Sequence[int]) -> EdgeTypes:
        return self.base.distribution(state, batch_shape)

    def transition_probs(self, state: Any, previous: Tensor) -> Tensor:
        return self.stay * _previous_type(previous) + (1 - self.stay) * state

    def settings(self) -> dict[str, Any]:
        return {**super().settings(), "stay": self.stay, "base": self.base.settings()}


TRANSITIONS_SITE = "edge_transitions"


@register_prior("markov_learned")
class LearnedMarkovPrior(ChainPrior):
    """A chain over windows whose transition matrix is learned: each row
    T_j = p(z_w = . | z_{w-1} = j) ~ Dirichlet(concentration[j]), a global latent
    (the site ``edge_transitions``, [K, K]) learned like the Dirichlet prior's frequencies.
    The first window is drawn from the ``base`` prior.

    ``concentration``: a K x K matrix, or [stay, switch], the pseudo-counts of keeping a
    type and of moving to each other type (default [9, 1]: a prior mean of 0.9 for keeping
    with two types).
    """

    def __init__(
        self,
        num_edge_types: int,
        concentration: Sequence[Any] = (9.0, 1.0),
        base: dict[str, Any] | None = None,
        temperature: float = 0.5,
    ) -> None:
        super().__init__(num_edge_types, base, temperature)
        self.concentration = _transition_concentration(concentration, num_edge_types)

    def _concentration(self, like: Tensor) -> Tensor:
        return torch.tensor(self.concentration, device=like.device, dtype=like.dtype)

    def sample(self, like: Tensor) -> Any:
        state = self.base.sample(like)
        transitions = dist.Dirichlet(self._concentration(like)).to_event(1)
        return state, pyro.sample(TRANSITIONS_SITE, transitions)

    def distribution(self, state: Any, batch_shape: Sequence[int]) -> EdgeTypes:
        return self.base.distribution(state[0], batch_shape)

    def transition_probs(self, state: Any, previous: Tensor) -> Tensor:
        return _previous_type(previous) @ state[1].to(previous.dtype)

    def make_guide(self) -> nn.Module:
        return _MarkovGuide(self.base.make_guide(), TransitionPosterior(
            torch.tensor(self.concentration)))  # fmt: skip

    def settings(self) -> dict[str, Any]:
        return {
            "name": self.name, "temperature": self.temperature,
            "concentration": [list(row) for row in self.concentration],
            "base": self.base.settings(),
        }  # fmt: skip


def _transition_concentration(value: Any, k: int) -> tuple[tuple[float, ...], ...]:
    message = (
        f"prior.concentration of markov_learned must be [stay, switch] (two positive "
        f"numbers) or a {k} x {k} matrix of positive numbers, got {value!r}"
    )
    try:
        rows = [list(map(float, row)) for row in value] if _nested(value) else None
        flat = None if rows is not None else [float(v) for v in value]
    except (TypeError, ValueError):
        raise ValueError(message) from None
    if rows is None:
        if flat is None or len(flat) != 2:
            raise ValueError(message)
        stay, switch = flat
        rows = [[stay if i == j else switch for j in range(k)] for i in range(k)]
    if len(rows) != k or any(len(r) != k for r in rows) or any(not v > 0 for r in rows for v in r):
        raise ValueError(message)
    return tuple(tuple(r) for r in rows)


def _nested(value: Any) -> bool:
    return isinstance(value, (list, tuple)) and bool(value) and isinstance(value[0], (list, tuple))


class TransitionPosterior(DirichletPosterior):
    """q(T) = Dirichlet(concentration + expected transition counts), row by row: the
    conjugate mean-field update of :class:`DirichletPosterior` for a chain, with
    counts[j, k] = sum over consecutive windows of q(z_{w-1} = j) q(z_w = k)."""

    site = TRANSITIONS_SITE
    event_dims = 1

    def statistics(self, slot_probs: Tensor) -> Tensor:
        if slot_probs.dim() < 4:  # [B, W, U, K]
            raise ValueError("the learned transitions need per-window probabilities [B, W, U, K]")
        return torch.einsum("bwuj,bwuk->jk", slot_probs[:, :-1], slot_probs[:, 1:])


class _MarkovGuide(nn.Module):
    """The guide of a chain's global sites: the base prior's (if any), then the learned
    transitions' (if any). Fed the per-window probabilities [B, W, U, K]; the base sees
    the first window's."""

    def __init__(self, base: nn.Module | None, transitions: TransitionPosterior | None) -> None:
        super().__init__()
        self.base = base
        self.transitions = transitions

    def forward(self, slot_probs: Tensor, scale: float = 1.0) -> Any:
        out = None
        if self.base is not None:
            out = self.base(slot_probs[:, 0] if slot_probs.dim() > 3 else slot_probs, scale)
        if self.transitions is not None:
            out = self.transitions(slot_probs, scale)
        return out


def check_probs(probs: Sequence[float], num_edge_types: int) -> tuple[float, ...]:
    """Validate a probability vector for ``num_edge_types`` types."""
    try:
        values = tuple(float(p) for p in probs)
    except (TypeError, ValueError):
        raise ValueError(f"prior.probs must be a list of numbers, got {probs!r}") from None
    if len(values) != num_edge_types:
        raise ValueError(
            f"prior.probs has {len(values)} entries but the model has {num_edge_types} edge types"
        )
    if any(not p > 0 for p in values):
        raise ValueError(f"prior.probs must all be positive, got {list(values)}")
    if not math.isclose(sum(values), 1.0, abs_tol=1e-6):
        raise ValueError(f"prior.probs must sum to 1, got {list(values)} (sum {sum(values):g})")
    return values


def build_prior(settings: dict[str, Any], num_edge_types: int) -> EdgePrior:
    """The prior named by ``settings["name"]`` with the other settings as arguments."""
    settings = dict(settings)
    name = settings.pop("name", None)
    if name not in PRIORS:
        raise ValueError(f"unknown prior {name!r}; valid priors: {', '.join(sorted(PRIORS))}")
    cls = PRIORS[name]
    accepted = set(inspect.signature(cls.__init__).parameters) - {"self", "num_edge_types"}
    unknown = sorted(set(settings) - accepted)
    if unknown:
        raise ValueError(
            f"unknown setting(s) {', '.join(unknown)} for prior {name!r}; "
            f"valid settings: {', '.join(sorted(accepted))}"
        )
    try:
        return cls(num_edge_types, **settings)
    except TypeError as err:
        raise ValueError(f"prior {name!r}: {err}") from None


# --- graph structure: symmetric, shared and known edges --------------------------------


class EdgeLayout:
    """The latent slots of a graph on N objects and how they map to the ordered edges.

    Without symmetry a slot is an ordered pair (E = N(N-1) slots, receiver-major). With
    symmetry a slot is an unordered pair {i, j}, i < j (U = N(N-1)/2 slots), and both
    directions read the same slot. ``edge_slot`` [E] gives each ordered edge's slot;
    ``slot_edges`` [U, 2] each slot's ordered edges ((i, j) and (j, i); twice the same
    edge without symmetry).
    """

    def __init__(self, num_objects: int, symmetric: bool, device: torch.device | str) -> None:
        # Built on the CPU whatever torch's default device, then moved.
        with torch.device("cpu"):
            n = num_objects
            receivers, senders = (~torch.eye(n, dtype=torch.bool)).nonzero(as_tuple=True)
            edge_id = torch.full((n, n), -1, dtype=torch.long)
            edge_id[receivers, senders] = torch.arange(n * (n - 1))
            if symmetric:
                low, high = torch.minimum(receivers, senders), torch.maximum(receivers, senders)
                first, second = torch.triu_indices(n, n, offset=1)
                slot_id = torch.full((n, n), -1, dtype=torch.long)
                slot_id[first, second] = torch.arange(first.numel())
                edge_slot = slot_id[low, high]
                slot_edges = torch.stack([edge_id[first, second], edge_id[second, first]], dim=1)
            else:
                edge_slot = torch.arange(n * (n - 1))
                slot_edges = edge_slot.unsqueeze(1).expand(-1, 2)
        self.num_objects, self.symmetric = n, symmetric
        self.num_edges = n * (n - 1)
        self.num_slots = slot_edges.shape[0]
        self.edge_slot = edge_slot.to(device)
        self.slot_edges = slot_edges.contiguous().to(device)

    def to_edges(self, slots: Tensor, dim: int = -2) -> Tensor:
        """Slot values [..., U, ...] -> ordered-edge values [..., E, ...] along ``dim``."""
        return slots.index_select(dim, self.edge_slot) if self.symmetric else slots

    def logits_to_slots(self, logits: Tensor) -> Tensor:
        """Ordered-edge logits [..., E, K] -> slot logits [..., U, K]: the mean of the two
        directions' logits (a symmetric guide reads the evidence of both)."""
        if not self.symmetric:
            return logits
        pair = logits.index_select(-2, self.slot_edges.reshape(-1))
        return pair.unflatten(-2, (self.num_slots, 2)).mean(-2)

    def known_to_slots(self, values: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """Known ordered edges (values, mask: [..., E]) -> per slot ([..., U]).

        A slot is known when either direction is; where both are, they must agree.
        """
        if not self.symmetric:
            return values, mask
        v = values.index_select(-1, self.slot_edges.reshape(-1)).unflatten(-1, (-1, 2))
        m = mask.index_select(-1, self.slot_edges.reshape(-1)).unflatten(-1, (-1, 2))
        if bool((m.all(-1) & (v[..., 0] != v[..., 1])).any()):
            raise ValueError(
                "graph.symmetric: known edges must have the same type in both directions, "
                "but some (i, j) and (j, i) differ"
            )
        return torch.where(m[..., 0], v[..., 0], v[..., 1]), m.any(-1)


GRAPH_DEFAULTS: dict[str, Any] = {
    "symmetric": False, "shared": False, "known": None, "dynamic": None,
}  # fmt: skip


class GraphStructure:
    """The ``graph:`` section of a model spec, checked, shared by the model and the guide.

    - ``symmetric``: one latent per unordered pair, used in both directions.
    - ``shared``: one graph for all trajectories (a global latent, with a pooled guide).
    - ``known``: ``{adjacency: [[...]]}``, an N x N matrix of known types with null (or -1)
      where unknown, the same for every trajectory; or ``{fraction: f, seed: s}``, a fixed
      random fraction f of each training trajectory's true edges revealed in training
      (semi-supervised NRI; needs labelled training data).
    """

    def __init__(self, settings: dict[str, Any] | None, num_edge_types: int) -> None:
        settings = {**GRAPH_DEFAULTS, **(settings or {})}
        unknown = sorted(set(settings) - set(GRAPH_DEFAULTS))
        if unknown:
            raise ValueError(
                f"unknown key(s) {', '.join(f'graph.{k}' for k in unknown)}; valid keys: "
                f"{', '.join(f'graph.{k}' for k in GRAPH_DEFAULTS)}"
            )
        for key in ("symmetric", "shared"):
            if not isinstance(settings[key], bool):
                raise ValueError(f"graph.{key} must be true or false, got {settings[key]!r}")
        self.symmetric: bool = settings["symmetric"]
        self.shared: bool = settings["shared"]
        self.num_edge_types = num_edge_types
        self.adjacency: Tensor | None = None
        self.fraction = 0.0
        self.seed = 0
        known = self.known = settings["known"]
        if known is not None:
            self._read_known(known)
        self.window: int | None = None
        if settings["dynamic"] is not None:
            self._read_dynamic(settings["dynamic"])
        if self.shared and self.fraction > 0:
            raise ValueError(
                "graph.known.fraction reveals edges per trajectory, but graph.shared has one "
                "graph for all of them; give graph.known.adjacency instead"
            )

    def _read_dynamic(self, dynamic: Any) -> None:
        window = dynamic.get("window") if isinstance(dynamic, dict) else None
        if not isinstance(dynamic, dict) or set(dynamic) != {"window"}:
            raise ValueError(
                f"graph.dynamic must be {{window: W}} (frames per window), got {dynamic!r}"
            )
        if isinstance(window, bool) or not isinstance(window, int) or window < 1:
            raise ValueError(f"graph.dynamic.window must be a positive integer, got {window!r}")
        if self.shared:
            raise ValueError(
                "graph.dynamic gives every trajectory its own graph per window, graph.shared "
                "one graph for all trajectories and times: choose one"
            )
        if self.known is not None:
            raise ValueError(
                "graph.known is not supported with graph.dynamic: known edges are given for "
                "a whole trajectory, a dynamic graph has one per window"
            )
        self.window = window

    def num_windows(self, num_frames: int) -> int:
        """Windows of a trajectory of ``num_frames`` frames: max(1, T // W)."""
        assert self.window is not None
        return max(1, num_frames // self.window)

    def window_index(self, frames: Tensor, num_windows: int) -> Tensor:
        """The window of each frame index in ``frames`` among ``num_windows`` windows:
        min(t // W, num_windows - 1) (the last window takes the frames left over)."""
        assert self.window is not None
        return (frames // self.window).clamp(max=num_windows - 1)

    def window_of_frames(self, num_frames: int, device: torch.device | str) -> Tensor:
        """The window of each frame of a trajectory of ``num_frames`` frames: [T]."""
        frames = torch.arange(num_frames, device=device)
        return self.window_index(frames, self.num_windows(num_frames))

    def _read_known(self, known: Any) -> None:
        valid = {"adjacency", "fraction", "seed"}
        if not isinstance(known, dict) or not known or set(known) - valid:
            raise ValueError(
                "graph.known must be {adjacency: N x N matrix with null where unknown} or "
                f"{{fraction: f, seed: s}}, got {known!r}"
            )
        if "adjacency" in known and "fraction" in known:
            raise ValueError("graph.known takes adjacency or fraction, not both")
        if "adjacency" in known:
            self.adjacency = _known_adjacency(known["adjacency"], self.num_edge_types)
            return
        fraction, seed = known.get("fraction"), known.get("seed", 0)
        if isinstance(fraction, bool) or not isinstance(fraction, (int, float)):
            raise ValueError(f"graph.known.fraction must be a number in [0, 1], got {fraction!r}")
        if not 0 <= fraction <= 1:
            raise ValueError(f"graph.known.fraction must lie in [0, 1], got {fraction!r}")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"graph.known.seed must be an integer, got {seed!r}")
        self.fraction, self.seed = float(fraction), seed

    def settings(self) -> dict[str, Any]:
        known = None
        if self.adjacency is not None:
            adj = self.adjacency.tolist()
            known = {"adjacency": [[None if v < 0 else v for v in row] for row in adj]}
        elif self.fraction > 0:
            known = {"fraction": self.fraction, "seed": self.seed}
        dynamic = None if self.window is None else {"window": self.window}
        return {"symmetric": self.symmetric, "shared": self.shared, "known": known,
                "dynamic": dynamic}  # fmt: skip

    def check_objects(self, num_objects: int) -> None:
        """Clear errors for settings that do not fit graphs of ``num_objects`` objects."""
        if self.adjacency is not None and self.adjacency.shape[0] != num_objects:
            n = self.adjacency.shape[0]
            raise ValueError(
                f"graph.known.adjacency is {n} x {n} but the data have {num_objects} objects"
            )
        if self.adjacency is not None and self.symmetric:
            EdgeLayout(num_objects, True, "cpu").known_to_slots(*self._known_edges())

    def layout(self, num_objects: int, device: torch.device | str) -> EdgeLayout:
        return _layout(num_objects, self.symmetric, torch.device(device))

    def _known_edges(self) -> tuple[Tensor, Tensor]:
        """The spec's known adjacency as ordered edges: values, mask [E]."""
        assert self.adjacency is not None
        n = self.adjacency.shape[0]
        off_diagonal = ~torch.eye(n, dtype=torch.bool, device=self.adjacency.device)
        values = self.adjacency[off_diagonal]
        return values.clamp(min=0), values >= 0

    def known_slots(
        self, edges: Tensor | None, edge_mask: Tensor | None, layout: EdgeLayout, batch: int
    ) -> tuple[Tensor, Tensor] | None:
        """Known types and mask per slot, [B, U] ([1, U] for a shared graph), from the
        spec's known adjacency and the edges passed at call time; None when none are."""
        device = layout.edge_slot.device
        values = mask = None
        if self.adjacency is not None:
            self.check_objects(layout.num_objects)
            v, m = self._known_edges()
            values = v.to(device).expand(batch, -1)
            mask = m.to(device).expand(batch, -1)
        if edges is not None:
            if self.shared:
                raise ValueError(
                    "a shared graph takes known edges from graph.known.adjacency in the model "
                    "spec, not per trajectory at call time"
                )
            call_mask = torch.ones_like(edges, dtype=torch.bool) if edge_mask is None else edge_mask
            if values is None:
                values, mask = edges, call_mask
            else:
                values = torch.where(call_mask, edges, values)
                mask = call_mask | mask
        if values is None:
            return None
        values, mask = layout.known_to_slots(values, mask)
        return (values[:1], mask[:1]) if self.shared else (values, mask)

    def training_mask(self, num_trajectories: int, num_objects: int) -> Tensor | None:
        """Which training edges are revealed under ``known.fraction``: [S, E] bool, fixed by
        the seed (per unordered pair when symmetric); None when the fraction is 0."""
        if self.fraction <= 0:
            return None
        layout = self.layout(num_objects, "cpu")
        generator = torch.Generator().manual_seed(self.seed)
        revealed = torch.rand(num_trajectories, layout.num_slots, generator=generator, device="cpu")
        return layout.to_edges(revealed < self.fraction, dim=-1)


def check_dynamic(prior: EdgePrior, structure: GraphStructure, decoder: str) -> None:
    """Clear errors for a prior or decoder that does not fit the graph's (non-)dynamics."""
    if prior.dynamic_only and structure.window is None:
        raise ValueError(
            f"prior.name={prior.name} is a prior over how edges change between windows: it "
            f"needs a dynamic graph, graph.dynamic: {{window: W}}"
        )
    if structure.window is not None and decoder != "mlp":
        raise ValueError(
            f"graph.dynamic needs the mlp decoder (edges that change per step); decoder.name "
            f"is {decoder!r}"
        )


@functools.lru_cache(maxsize=64)
def _layout(num_objects: int, symmetric: bool, device: torch.device) -> EdgeLayout:
    return EdgeLayout(num_objects, symmetric, device)


def _known_adjacency(adjacency: Any, num_edge_types: int) -> Tensor:
    """An N x N matrix of known types (null or -1 where unknown, diagonal ignored)."""
    rows = adjacency if isinstance(adjacency, (list, tuple)) else None
    n = len(rows) if rows is not None else 0
    if n < 2 or any(not isinstance(r, (list, tuple)) or len(r) != n for r in rows):
        raise ValueError(
            "graph.known.adjacency must be a square N x N matrix (a list of N lists of N "
            "entries: the known type of sender j's influence on receiver i, null if unknown)"
        )
    out = torch.full((n, n), -1, dtype=torch.long)
    for i, row in enumerate(rows):
        for j, value in enumerate(row):
            if i == j or value is None or value == -1:
                continue
            integer = isinstance(value, int) and not isinstance(value, bool)
            if not integer or not 0 <= value < num_edge_types:
                raise ValueError(
                    f"graph.known.adjacency[{i}][{j}] = {value!r}: known types must be integers "
                    f"in 0..{num_edge_types - 1} (null or -1 where unknown)"
                )
            out[i, j] = value
    return out
