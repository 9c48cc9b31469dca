"""The amortized guide: q(z | x) from a GNN encoder, with the model's sites.

Per trajectory, q(z_b | x_b) is a relaxed categorical with the encoder's logits. The
model spec's graph structure shapes it like the model's site: with ``symmetric`` the logits
of (i, j) and (j, i) are averaged into one per unordered pair; with ``shared`` the one
graph's logits are the mean of the minibatch's (a pooled guide), with a running average of
them kept for evaluation. A prior with global latents brings its own guide module
(:meth:`nri_pyro.priors.EdgePrior.make_guide`), fed the edge-type probabilities.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from pyro import poutine
from pyro.nn import PyroModule
from torch import Tensor

from nri_pyro.distributions import EdgeTypes
from nri_pyro.model import check_edges, check_trajectories, sample_edges, trajectories_plate
from nri_pyro.nn import MLPEncoder, full_graph
from nri_pyro.nn.parallel import global_batch_norms, global_count, global_sum, paused
from nri_pyro.priors import EdgePrior, GraphStructure, UniformPrior
from nri_pyro.specs import ENCODERS, component_kwargs

SHARED_MOMENTUM = 0.05  # running average of a shared graph's pooled logits, for evaluation


class NRIGuide(PyroModule):
    """q(z_b | x_b) = relaxed categorical with the encoder's logits, per trajectory.

    ``spec`` is a resolved guide spec (:func:`nri_pyro.specs.resolve_guide_spec`).
    The encoder reads the first ``num_frames`` frames of each trajectory (the training
    length: an MLP encoder is tied to it; at test time NRI reads the first 49 of 99).
    Takes the model's arguments. ``hard=True`` gives straight-through one-hot samples.
    Pass the model's ``prior`` and ``structure`` (as :func:`nri_pyro.api.build` does) for
    priors with global latents and for symmetric, shared or known graphs; a shared graph
    also needs ``num_objects``.
    """

    def __init__(
        self,
        spec: dict[str, Any],
        num_features: int,
        num_frames: int,
        num_edge_types: int,
        *,
        prior: EdgePrior | None = None,
        structure: GraphStructure | None = None,
        num_objects: int | None = None,
    ) -> None:
        super().__init__()
        self.spec = spec
        self.graph_for = full_graph  # how the graph of N objects is built (see NRIModel)
        self.num_features = num_features
        self.num_frames = num_frames
        self.num_edge_types = num_edge_types
        self.temperature = float(spec["temperature"])
        self.hard = bool(spec["hard"])
        encoder = spec["encoder"]
        cls = ENCODERS[encoder["name"]]
        kwargs = component_kwargs(encoder)
        if cls is MLPEncoder:
            network = cls(num_frames, num_features, num_edge_types=num_edge_types, **kwargs)
        else:
            network = cls(num_features, num_edge_types=num_edge_types, **kwargs)
        # Batch norms with the global batch's statistics in a data-parallel step (and
        # BatchNorm1d's own elsewhere): W processes train what one process trains.
        self.encoder = global_batch_norms(network)
        self.structure = structure or GraphStructure(None, num_edge_types)
        self.prior_guide = (prior or UniformPrior(num_edge_types)).make_guide()
        self.num_objects = num_objects
        if self.structure.shared:
            if num_objects is None:
                raise ValueError("a guide for a shared graph needs num_objects")
            slots = self.structure.layout(num_objects, "cpu").num_slots
            self.register_buffer("shared_logits", torch.zeros(slots, num_edge_types))
            self.register_buffer("shared_tracked", torch.tensor(False))

    @classmethod
    def for_model(
        cls, spec: dict[str, Any], model: Any, num_frames: int, num_objects: int
    ) -> NRIGuide:
        """The guide that matches ``model`` (an :class:`~nri_pyro.model.NRIModel`): its
        prior's global sites and its graph structure, for data of this shape."""
        return cls(
            spec, model.num_features, num_frames, model.num_edge_types,
            prior=model.prior, structure=model.structure, num_objects=num_objects,
        )  # fmt: skip

    def check_frames(self, num_frames: int, where: str = "the trajectories") -> None:
        """A clear error when the encoder cannot read trajectories of ``num_frames`` frames."""
        if isinstance(self.encoder, MLPEncoder) and num_frames < self.num_frames:
            raise ValueError(
                f"the MLP encoder reads {self.num_frames} frames (its training length), "
                f"but {where} have {num_frames}"
            )
        needed = getattr(self.encoder, "min_frames", 1)
        if num_frames < needed:
            raise ValueError(
                f"the {type(self.encoder).__name__} needs at least {needed} frames, but {where} "
                f"have {num_frames}"
            )

    def logits(self, x: Tensor) -> Tensor:
        """Edge-type logits [B, E, K] from the first ``num_frames`` frames of x: [B, N, T, D],
        in x's dtype (also when the encoder ran under autocast)."""
        check_trajectories(x, self.num_features)
        self.check_frames(x.shape[2])
        logits = self.encoder(x[:, :, : self.num_frames], self.graph_for(x.shape[1], x.device))
        return logits.to(x.dtype)

    def slot_logits(self, x: Tensor) -> Tensor:
        """Logits of the latent slots: [B, U, K] per trajectory, or [U, K] for a shared graph
        (the minibatch's pooled logits in training, their running average in evaluation)."""
        layout = self.structure.layout(x.shape[1], x.device)
        logits = layout.logits_to_slots(self.logits(x))
        if not self.structure.shared:
            return logits
        if x.shape[1] != self.num_objects:
            raise ValueError(
                f"the shared graph has {self.num_objects} objects, the data have {x.shape[1]}"
            )
        # The minibatch's mean (the global batch's in a data-parallel step).
        pooled = global_sum(logits.sum(0)) / global_count(logits.shape[0])
        if self.training:
            with torch.no_grad():
                if bool(self.shared_tracked):
                    self.shared_logits.lerp_(pooled.detach(), SHARED_MOMENTUM)
                else:
                    self.shared_logits.copy_(pooled.detach())
                    self.shared_tracked.fill_(True)
            return pooled
        return self.shared_logits.to(pooled.dtype) if bool(self.shared_tracked) else pooled

    def slot_probs(
        self, x: Tensor, edges: Tensor | None = None, edge_mask: Tensor | None = None
    ) -> Tensor:
        """Posterior edge-type probabilities of the latent slots, known edges one-hot:
        [B, U, K] ([1, U, K] for a shared graph)."""
        check_edges(edges, edge_mask, x, self.num_edge_types)
        logits = self.slot_logits(x)
        return self._known_one_hot(torch.softmax(logits, -1), x, edges, edge_mask)

    def _known_one_hot(
        self, probs: Tensor, x: Tensor, edges: Tensor | None, edge_mask: Tensor | None
    ) -> Tensor:
        if probs.dim() == 2:
            probs = probs.unsqueeze(0)
        layout = self.structure.layout(x.shape[1], x.device)
        known = self.structure.known_slots(edges, edge_mask, layout, x.shape[0])
        if known is None:
            return probs
        one_hot = torch.nn.functional.one_hot(known[0], self.num_edge_types).to(probs.dtype)
        return torch.where(known[1].unsqueeze(-1), one_hot, probs)

    def edge_probs(self, x: Tensor) -> Tensor:
        """Posterior edge-type probabilities of every ordered pair [B, E, K] (known edges of
        the spec one-hot; both directions equal when symmetric; one graph when shared)."""
        probs = self.slot_probs(x)
        layout = self.structure.layout(x.shape[1], x.device)
        return layout.to_edges(probs).expand(x.shape[0], -1, -1)

    def sample_edges(self, x: Tensor, hard: bool = True) -> Tensor:
        """One relaxed (or, with ``hard``, one-hot) sample of every ordered pair's type,
        drawn per latent slot: [B, E, K] (both directions equal when symmetric)."""
        probs = self.slot_probs(x)
        z = EdgeTypes(self.temperature, probs=probs, hard=hard).rsample()
        layout = self.structure.layout(x.shape[1], x.device)
        return layout.to_edges(z).expand(x.shape[0], -1, -1)

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
        batch = x.shape[0]
        logits = self.slot_logits(x)
        layout = self.structure.layout(x.shape[1], x.device)
        known = self.structure.known_slots(edges, edge_mask, layout, batch)
        # A shared graph's logits are pooled already (over the global batch in a
        # data-parallel step): what follows from them is the same in every process.
        replicated = paused() if self.structure.shared else contextlib.nullcontext()
        if self.prior_guide is not None:
            probs = self._known_one_hot(torch.softmax(logits, -1), x, edges, edge_mask)
            scale = 1.0 if self.structure.shared else (num_trajectories or batch) / batch
            with poutine.scale(scale=kl_weight), replicated:
                self.prior_guide(probs, scale)
        q = EdgeTypes(self.temperature, logits=logits, hard=self.hard)
        return sample_edges(
            q, trajectories_plate(x, num_trajectories), known, shared=self.structure.shared,
            kl_weight=kl_weight, replicated=paused(),
        )  # fmt: skip
