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

The ``graph:`` section (symmetric, shared, known and dynamic graphs) composes with any
prior; it lives in :mod:`nri_pyro.structure`.

Priors over how a dynamic graph evolves from window to window (they need
``graph.dynamic``): ``markov`` (a sticky chain: keep the previous window's type with
probability ``stay``, else redraw from a ``base`` prior) and ``markov_learned`` (the
transition matrix a global latent with a Dirichlet prior per row). A static prior draws
every window independently. A prior's :meth:`EdgePrior.window_distribution` is the one
place that says how windows relate.
"""

from __future__ import annotations

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

# Moved to nri_pyro.structure; importable from here for one release (0.2 drops them).
from nri_pyro.structure import (  # noqa: F401
    GRAPH_DEFAULTS,
    EdgeLayout,
    GraphStructure,
    check_dynamic,
)

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
