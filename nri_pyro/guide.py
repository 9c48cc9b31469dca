"""The amortized guide: q(z | x) from a GNN encoder, with the model's sites.

Per trajectory, q(z_b | x_b) is a relaxed categorical with the encoder's logits. The
model spec's graph structure shapes it like the model's site: with ``symmetric`` the logits
of (i, j) and (j, i) are averaged into one per unordered pair; with ``shared`` the one
graph's logits are the mean of the minibatch's (a pooled guide), with a running average of
them kept for evaluation. A prior with global latents brings its own guide module
(:meth:`nri_pyro.priors.EdgePrior.make_guide`), fed the edge-type probabilities. A dynamic
graph (``graph.dynamic``) gets one q(z_bw | x_b) per window w, each from the encoder
reading that window with ``window_context`` frames either side (a sliding-window encoder),
sampled in the model's order. With the guide's ``recurrent: {hidden: H}``, a bidirectional
GRU over the windows (per edge) adds to every window's logits what the rest of the
trajectory says, so that q(z_bw | x_b) reads all of x_b.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import pyro
import torch
from pyro import poutine
from pyro.nn import PyroModule
from torch import Tensor

from nri_pyro.distributions import EdgeTypes
from nri_pyro.model import (
    NODE_KNOWN_EDGES,
    check_edges,
    check_trajectories,
    sample_edges,
    sample_nodes,
    trajectories_plate,
    window_site,
)
from nri_pyro.nn import ENCODERS, WindowGRU, full_graph
from nri_pyro.nn.parallel import global_batch_norms, global_count, global_sum, paused
from nri_pyro.nn.registry import build_encoder
from nri_pyro.priors import EdgePrior, UniformPrior
from nri_pyro.structure import GraphStructure

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
        self.structure = structure or GraphStructure(None, num_edge_types)
        # A dynamic graph's windows: the encoder reads each window and `window_context`
        # frames either side of it (a sliding-window encoder), `encoder_frames` in all.
        self.window_context = int(spec.get("window_context") or 0)
        self.encoder_frames = num_frames
        if self.structure.window is not None:
            self.encoder_frames = self.structure.window + 2 * self.window_context
            needed = cls.min_frames
            if self.encoder_frames < needed:
                raise ValueError(
                    f"the {cls.__name__} needs at least {needed} frames, but a window of "
                    f"graph.dynamic.window={self.structure.window} with window_context="
                    f"{self.window_context} on each side gives it {self.encoder_frames}: "
                    f"raise the window or the guide's window_context"
                )
            if num_frames < self.encoder_frames:
                raise ValueError(
                    f"the trajectories have {num_frames} frames, fewer than the "
                    f"{self.encoder_frames} that the encoder reads per window"
                )
        network = build_encoder(
            encoder, num_frames=self.encoder_frames, num_features=num_features,
            num_edge_types=num_edge_types,
        )  # fmt: skip
        # Batch norms with the global batch's statistics in a data-parallel step (and
        # BatchNorm1d's own elsewhere): W processes train what one process trains.
        self.encoder = global_batch_norms(network)
        # A dynamic graph's optional GRU over the windows (the guide's `recurrent`).
        self.window_gru = None
        if spec.get("recurrent") is not None:
            if self.structure.window is None:
                raise ValueError(
                    "the guide's recurrent encoder runs over the windows of a dynamic graph, "
                    "but the model's graph is static: set graph.dynamic.window or drop "
                    "recurrent"
                )
            self.window_gru = WindowGRU(
                network.feature_size, spec["recurrent"]["hidden"], num_edge_types
            )
        self.prior_guide = (prior or UniformPrior(num_edge_types)).make_guide()
        # A prior over latents per object (nri_pyro.priors.nodes): the guide infers them
        # from its encoder's pair logits with the prior's own rule (its node_logits).
        self.node_prior = prior if prior is not None and prior.node_level else None
        # Logits that replace the encoder's (semi-amortized refinement, nri_pyro.refine)
        self._fixed_logits: Tensor | None = None
        self._fixed_latent: Tensor | None = None  # a node-level prior's latent's, likewise
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

    @property
    def dynamic(self) -> bool:
        """Whether the model's graph changes over time: logits per window."""
        return self.structure.window is not None

    def check_frames(self, num_frames: int, where: str = "the trajectories") -> None:
        """A clear error when the encoder cannot read trajectories of ``num_frames`` frames."""
        if self.dynamic:
            if num_frames < self.encoder_frames:
                raise ValueError(
                    f"the encoder reads {self.encoder_frames} frames per window, but {where} "
                    f"have {num_frames}"
                )
            return
        if self.encoder.fixed_frames and num_frames < self.num_frames:
            raise ValueError(
                f"the {type(self.encoder).__name__} reads {self.num_frames} frames (its "
                f"training length), but {where} have {num_frames}"
            )
        needed = self.encoder.min_frames
        if num_frames < needed:
            raise ValueError(
                f"the {type(self.encoder).__name__} needs at least {needed} frames, but {where} "
                f"have {num_frames}"
            )

    def logits(self, x: Tensor) -> Tensor:
        """Edge-type logits [B, E, K] from the first ``num_frames`` frames of x: [B, N, T, D],
        in x's dtype (also when the encoder ran under autocast). A dynamic graph's:
        [B, W, E, K], one per window of the whole of x (:meth:`window_frames`)."""
        check_trajectories(x, self.num_features)
        self.check_frames(x.shape[2])
        if self._fixed_logits is not None:
            fixed = self._fixed_logits
            if fixed.shape[0] != x.shape[0] or fixed.shape[-2] != x.shape[1] * (x.shape[1] - 1):
                raise ValueError(
                    f"the fixed logits {tuple(fixed.shape)} are not those of these "
                    f"{x.shape[0]} trajectories of {x.shape[1]} objects"
                )
            return fixed.to(x.dtype)
        graph = self.graph_for(x.shape[1], x.device)
        if self.dynamic:
            frames = self.window_frames(x.shape[2], x.device)  # [W, L]
            batch, n, _, d = x.shape
            windows = x[:, :, frames.flatten()].unflatten(2, tuple(frames.shape))
            windows = windows.transpose(1, 2).reshape(-1, n, frames.shape[1], d)
            if self.window_gru is None:
                return self.encoder(windows, graph).unflatten(0, (batch, -1)).to(x.dtype)
            features = self.encoder.edge_features(windows, graph).unflatten(0, (batch, -1))
            logits = self.encoder.output(features) + self.window_gru(features)
            return logits.to(x.dtype)
        return self.encoder(x[:, :, : self.num_frames], graph).to(x.dtype)

    @contextlib.contextmanager
    def fixed_logits(self, logits: Tensor, *, latent: bool = False) -> Iterator[None]:
        """Within this block, :meth:`logits` returns ``logits`` [B, E, K] (those of the
        trajectories it is called with, e.g. refined by :func:`nri_pyro.refine.refine_logits`)
        instead of the encoder's: everything downstream reads them. With ``latent``, they
        are a node-level prior's latent's logits (:meth:`node_logits`; e.g. its exact
        posterior, :func:`nri_pyro.refine.exact_latent_logits`)."""
        name = "_fixed_latent" if latent else "_fixed_logits"
        if latent and self.node_prior is None:
            raise ValueError("fixed latent logits need a node-level prior (prior.name=charges)")
        previous = getattr(self, name)
        setattr(self, name, logits)
        try:
            yield
        finally:
            setattr(self, name, previous)

    def window_frames(self, num_frames: int, device: torch.device | str) -> Tensor:
        """The frames the encoder reads for each window of a dynamic graph: [W, L], the
        L = W + 2 window_context frames centred on the window's span
        (:meth:`~nri_pyro.structure.GraphStructure.window_spans`), shifted to lie within
        the trajectory."""
        length = self.encoder_frames
        spans = self.structure.window_spans(num_frames, device)  # [W, 2]
        first = torch.div(spans.sum(-1) - length, 2, rounding_mode="floor")
        first = first.clamp(min=0, max=num_frames - length)
        return first[:, None] + torch.arange(length, device=device)

    def slot_logits(self, x: Tensor) -> Tensor:
        """Logits of the latent slots: [B, U, K] per trajectory, or [U, K] for a shared graph
        (the minibatch's pooled logits in training, their running average in evaluation)."""
        layout = self.structure.layout(x.shape[1], x.device)
        logits = layout.logits_to_slots(self.logits(x))  # [B, (W,) U, K]
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

    def node_logits(self, x: Tensor) -> Tensor:
        """A node-level prior's latent: its logits (e.g. [B, N-1, 2], a sign per object),
        from the encoder's edge logits by the prior's rule (:meth:`ChargePrior.node_logits
        <nri_pyro.priors.nodes.ChargePrior.node_logits>`)."""
        if self.node_prior is None:
            raise ValueError("node_logits needs a node-level prior (such as prior.name=charges)")
        fixed = self._fixed_latent
        if fixed is not None:
            if fixed.shape[0] != x.shape[0]:
                raise ValueError(
                    f"the fixed latent logits {tuple(fixed.shape)} are not those of these "
                    f"{x.shape[0]} trajectories"
                )
            return fixed.to(x.dtype)
        return self.node_prior.node_logits(self.logits(x))

    def slot_probs(
        self, x: Tensor, edges: Tensor | None = None, edge_mask: Tensor | None = None
    ) -> Tensor:
        """Posterior edge-type probabilities of the latent slots, known edges one-hot:
        [B, U, K] ([1, U, K] for a shared graph). With a node-level prior: each edge's
        marginal under the guide's posterior of its latent."""
        check_edges(edges, edge_mask, x, self.num_edge_types)
        if self.node_prior is not None:
            if edges is not None:
                raise ValueError(NODE_KNOWN_EDGES.format(prior=self.node_prior.name))
            probs = torch.softmax(self.node_logits(x), -1)
            probs = self.node_prior.edges(probs, x.shape[1])  # [B, E, K]
            layout = self.structure.layout(x.shape[1], x.device)
            return probs.index_select(-2, layout.slot_edges[:, 0]) if layout.symmetric else probs
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
        the spec one-hot; both directions equal when symmetric; one graph when shared); a
        dynamic graph's per window, [B, W, E, K]."""
        probs = self.slot_probs(x)
        layout = self.structure.layout(x.shape[1], x.device)
        edges = layout.to_edges(probs)
        return edges if self.dynamic else edges.expand(x.shape[0], -1, -1)

    def frame_edge_probs(self, x: Tensor) -> Tensor:
        """Edge-type probabilities of every frame of x: [B, T, E, K] (a static graph's
        repeated over the frames; a dynamic graph's window's at each frame)."""
        probs = self.edge_probs(x)
        frames = x.shape[2]
        if not self.dynamic:
            return probs[:, None].expand(-1, frames, -1, -1)
        window = self.structure.window_of_frames(frames, x.device)
        return probs.index_select(1, window)

    def sample_edges(self, x: Tensor, hard: bool = True) -> Tensor:
        """One relaxed (or, with ``hard``, one-hot) sample of every ordered pair's type,
        drawn per latent slot: [B, E, K] (both directions equal when symmetric); a dynamic
        graph's per window, [B, W, E, K]."""
        if self.node_prior is not None:  # the latents per object, then their edges
            signs = EdgeTypes(self.temperature, logits=self.node_logits(x), hard=hard)
            return self.node_prior.edges(signs.rsample(), x.shape[1])
        probs = self.slot_probs(x)
        z = EdgeTypes(self.temperature, probs=probs, hard=hard).rsample()
        layout = self.structure.layout(x.shape[1], x.device)
        edges = layout.to_edges(z)
        return edges if self.dynamic else edges.expand(x.shape[0], -1, -1)

    def edge_distribution(self, logits: Tensor) -> EdgeTypes:
        """q(z | x) of the latent slots with these logits: the relaxed categorical the guide
        samples (straight-through one-hot with ``hard``)."""
        return EdgeTypes(self.temperature, logits=logits, hard=self.hard)

    def global_inputs(
        self, logits: Tensor, x: Tensor, edges: Tensor | None, edge_mask: Tensor | None,
        num_trajectories: int | None,
    ) -> tuple[Tensor, float]:  # fmt: skip
        """What the guide of the prior's global latents reads (``prior_guide(probs,
        scale)``): the slots' edge-type probabilities, known slots one-hot (per window for a
        dynamic graph), and how many times the dataset is larger than the minibatch (1 for
        a shared graph, whose one sample stands for every trajectory)."""
        probs = torch.softmax(logits, -1)
        if self.dynamic:
            return probs, (num_trajectories or x.shape[0]) / x.shape[0]
        probs = self._known_one_hot(probs, x, edges, edge_mask)
        if self.structure.shared:
            return probs, 1.0
        return probs, (num_trajectories or x.shape[0]) / x.shape[0]

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
        if self.dynamic:
            return self._forward_dynamic(x, edges, num_trajectories, kl_weight)
        if self.node_prior is not None:  # q(s | x): the latents per object
            if edges is not None:
                raise ValueError(NODE_KNOWN_EDGES.format(prior=self.node_prior.name))
            q = self.edge_distribution(self.node_logits(x))
            plate = trajectories_plate(x, num_trajectories)
            return sample_nodes(q, plate, kl_weight, self.node_prior.site)
        batch = x.shape[0]
        logits = self.slot_logits(x)
        layout = self.structure.layout(x.shape[1], x.device)
        known = self.structure.known_slots(edges, edge_mask, layout, batch)
        # A shared graph's logits are pooled already (over the global batch in a
        # data-parallel step): what follows from them is the same in every process.
        replicated = paused() if self.structure.shared else contextlib.nullcontext()
        if self.prior_guide is not None:
            probs, scale = self.global_inputs(logits, x, edges, edge_mask, num_trajectories)
            with poutine.scale(scale=kl_weight), replicated:
                self.prior_guide(probs, scale)
        q = self.edge_distribution(logits)
        return sample_edges(
            q, trajectories_plate(x, num_trajectories), known, shared=self.structure.shared,
            kl_weight=kl_weight, replicated=paused(),
        )  # fmt: skip

    def _forward_dynamic(
        self, x: Tensor, edges: Tensor | None, num_trajectories: int | None, kl_weight: float
    ) -> Tensor:
        """q(z_w | x) per window, independent given x (mean field), in the model's order."""
        if edges is not None:
            raise ValueError("a dynamic graph (graph.dynamic) takes no known edges")
        logits = self.slot_logits(x)  # [B, W, U, K]
        if self.prior_guide is not None:
            probs, scale = self.global_inputs(logits, x, None, None, num_trajectories)
            with poutine.scale(scale=kl_weight):
                self.prior_guide(probs, scale)
        plate = trajectories_plate(x, num_trajectories)
        windows = []
        for w in pyro.markov(range(logits.shape[1])):
            q = self.edge_distribution(logits[:, w])
            windows.append(
                sample_edges(q, plate, None, shared=False, kl_weight=kl_weight, name=window_site(w))
            )
        return torch.stack(windows, dim=1)
