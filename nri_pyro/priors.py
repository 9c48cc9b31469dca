"""Edge priors: the swappable part of the model, chosen by name in the model spec.

A prior is a small class registered under a name. It puts the edge-type site in the model
(and, for priors with global latents, the matching sites in the guide). Adding one is a
class plus the decorator::

    @register_prior("mine")
    class MyPrior(EdgePrior):
        def __init__(self, num_edge_types, temperature=0.5, strength=1.0): ...
        def probs(self, like): ...

and ``prior: {name: mine, strength: 2}`` in a model spec.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor

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

    def distribution(self, like: Tensor, num_edges: int, hard: bool = False) -> EdgeTypes:
        """The prior of one trajectory's edges: batch [E], event [K]."""
        probs = self.probs(like)
        return EdgeTypes(self.temperature, probs=probs, hard=hard).expand([num_edges])

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
