"""The base class of edge priors, their registry, and building one from a spec's settings."""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

from torch import Tensor, nn

from nri_pyro.distributions import EdgeTypes

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
    # True for priors whose latents are per object, the edges a function of them
    # (nri_pyro.priors.nodes): they sample ``site`` instead of the edges.
    node_level: ClassVar[bool] = False
    # What a prior that encodes knowledge of the system assumes (results with it are
    # labelled so); None for priors that assume nothing about the system.
    system_knowledge: ClassVar[str | None] = None

    def __init__(self, num_edge_types: int, temperature: float = 0.5) -> None:
        if not isinstance(num_edge_types, int) or num_edge_types < 2:
            raise ValueError(f"edge_types must be an integer >= 2, got {num_edge_types!r}")
        number = isinstance(temperature, (int, float)) and not isinstance(temperature, bool)
        if not (number and 0 < temperature < math.inf):
            raise ValueError(f"prior.temperature must be a positive number, got {temperature!r}")
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

    def check_truth(self, edges: Any, num_objects: int) -> None:
        """Refuse training data whose true graphs ([S, E] types, or None) contradict what
        this prior assumes, before any work. Edge-wise priors assume nothing to check."""

    def settings(self) -> dict[str, Any]:
        """The settings that rebuild this prior (for the resolved spec)."""
        return {"name": self.name, "temperature": self.temperature}


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
