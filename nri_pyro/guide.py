"""The amortized guide: q(z | x) from a GNN encoder, with the model's sites."""

from __future__ import annotations

from typing import Any

import pyro
import torch
from pyro import poutine
from pyro.nn import PyroModule
from torch import Tensor

from nri_pyro.distributions import EdgeTypes
from nri_pyro.model import check_edges, check_trajectories, known_mask, trajectories_plate
from nri_pyro.nn import MLPEncoder, full_graph
from nri_pyro.specs import ENCODERS, component_kwargs


class NRIGuide(PyroModule):
    """q(z_b | x_b) = relaxed categorical with the encoder's logits, per trajectory.

    ``spec`` is a resolved guide spec (:func:`nri_pyro.specs.resolve_guide_spec`).
    The encoder reads the first ``num_frames`` frames of each trajectory (the training
    length: an MLP encoder is tied to it; at test time NRI reads the first 49 of 99).
    Takes the model's arguments. ``hard=True`` gives straight-through one-hot samples.
    """

    def __init__(
        self, spec: dict[str, Any], num_features: int, num_frames: int, num_edge_types: int
    ) -> None:
        super().__init__()
        self.spec = spec
        self.dense = False  # dense one-hot message passing: benchmarks only
        self.num_features = num_features
        self.num_frames = num_frames
        self.num_edge_types = num_edge_types
        self.temperature = float(spec["temperature"])
        self.hard = bool(spec["hard"])
        encoder = spec["encoder"]
        cls = ENCODERS[encoder["name"]]
        kwargs = component_kwargs(encoder)
        if cls is MLPEncoder:
            self.encoder = cls(num_frames, num_features, num_edge_types=num_edge_types, **kwargs)
        else:
            self.encoder = cls(num_features, num_edge_types=num_edge_types, **kwargs)

    def logits(self, x: Tensor) -> Tensor:
        """Edge-type logits [B, E, K] from the first ``num_frames`` frames of x: [B, N, T, D]."""
        check_trajectories(x, self.num_features)
        if isinstance(self.encoder, MLPEncoder) and x.shape[2] < self.num_frames:
            raise ValueError(
                f"the MLP encoder reads {self.num_frames} frames (its training length), "
                f"but the trajectories have {x.shape[2]}"
            )
        return self.encoder(
            x[:, :, : self.num_frames], full_graph(x.shape[1], x.device, dense=self.dense)
        )

    def edge_probs(self, x: Tensor) -> Tensor:
        """Posterior edge-type probabilities [B, E, K]."""
        return torch.softmax(self.logits(x), dim=-1)

    def forward(
        self,
        x: Tensor,
        edges: Tensor | None = None,
        edge_mask: Tensor | None = None,
        *,
        num_trajectories: int | None = None,
        kl_weight: float = 1.0,
    ) -> Tensor:
        check_edges(edges, edge_mask, x, self.num_edge_types)
        logits = self.logits(x)
        known = known_mask(edges, edge_mask)
        with trajectories_plate(x, num_trajectories):
            q = EdgeTypes(self.temperature, logits=logits, hard=self.hard)
            if known is not None:
                q = q.mask(~known)
            with poutine.scale(scale=kl_weight):
                return pyro.sample("edges", q.to_event(1))
