"""Priors over how a dynamic graph's edges evolve from window to window (they need
``graph.dynamic``): a chain whose first window comes from a static ``base`` prior."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pyro
import pyro.distributions as dist
import torch
from torch import Tensor, nn
from torch.distributions.utils import clamp_probs

from nri_pyro.distributions import EdgeTypes
from nri_pyro.priors.base import EdgePrior, build_prior, register_prior
from nri_pyro.priors.static import DirichletPosterior


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
