"""Priors that draw every edge independently: uniform, categorical, sparse and dirichlet."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pyro
import pyro.distributions as dist
import torch
from torch import Tensor, nn

from nri_pyro.nn.parallel import global_count, global_sum
from nri_pyro.priors.base import EdgePrior, check_probs, register_prior


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
