"""The training objectives by name: which ELBO a run optimises, and how it is computed.

Both are honest ELBOs of the same model and guide. "nri" is the paper's: the analytic KL
between the guide's and the prior's categorical edge probabilities
(``TraceMeanField_ELBO`` with the KL registered in :mod:`nri_pyro.distributions`);
"concrete" scores the relaxed samples' densities (``Trace_ELBO``). Training and evaluation
both take them from here.

Training computes the "nri" objective on a **fast path** where it can
(:class:`MeanFieldLoss`): the same number as ``TraceMeanField_ELBO``, on the same random
draws, from the same pieces of the model and guide (the guide's logits and edge
distribution, the prior's distributions, the model's likelihood), without building Pyro
traces, so that the whole step can be compiled (``train.compile``). Pyro stays its judge:
the tests check its value and gradients against ``TraceMeanField_ELBO`` for every shipped
spec. Where it does not apply (:func:`fast_path_unsupported` says why) training falls back
to Pyro's ELBO and says so; ``train.elbo`` chooses ("auto", "fast" or "pyro").
"""

from __future__ import annotations

import contextlib
from typing import Any

import pyro
import torch
from pyro import poutine
from pyro.infer.util import is_validation_enabled
from torch import Tensor, nn
from torch.distributions import kl_divergence

from nri_pyro.data.dataset import check_trajectories
from nri_pyro.distributions import edge_types_kl
from nri_pyro.model import (
    DYNAMIC_KNOWN_EDGES,
    NODE_KNOWN_EDGES,
    check_edges,
    known_edges_likelihood,
)
from nri_pyro.nn.decoders import recompute_threshold
from nri_pyro.nn.parallel import paused

OBJECTIVES = {"nri": pyro.infer.TraceMeanField_ELBO, "concrete": pyro.infer.Trace_ELBO}
# train.elbo: how the "nri" objective is computed in training steps.
ELBO_PATHS = ("auto", "fast", "pyro")


def objective(name: str) -> pyro.infer.ELBO:
    """The ELBO of an objective name: "nri" (analytic categorical KL) or "concrete"."""
    if name not in OBJECTIVES:
        raise ValueError(f"unknown objective {name!r}; valid objectives: {', '.join(OBJECTIVES)}")
    return OBJECTIVES[name]()


def fast_path_unsupported(model: Any, guide: Any, objective_name: str = "nri") -> str | None:
    """Why :class:`MeanFieldLoss` cannot compute this objective of this model and guide,
    or None when it can: it computes the "nri" objective of the library's own model and
    guide (:class:`~nri_pyro.model.NRIModel`, :class:`~nri_pyro.guide.NRIGuide`), any
    prior, graph structure and decoder of theirs included."""
    from nri_pyro.guide import NRIGuide
    from nri_pyro.model import NRIModel

    if objective_name != "nri":
        return f"the {objective_name!r} objective scores sampled densities: Pyro's Trace_ELBO"
    if type(model) is not NRIModel or type(guide) is not NRIGuide:
        return (
            f"the model and guide are {type(model).__name__} and {type(guide).__name__}, not "
            "the library's NRIModel and NRIGuide"
        )
    if (guide.prior_guide is None) != (model.prior.make_guide() is None):
        return "the guide does not sample the prior's global latents"
    if model.prior.node_level and getattr(guide, "node_prior", None) is None:
        return "the guide does not infer the node-level prior's latent (built without it)"
    return None


def training_loss(
    objective_name: str, model: Any, guide: Any, path: str = "auto"
) -> tuple[nn.Module, str]:
    """The module whose ``forward`` is a training step's loss (the negative ELBO), and the
    path it takes: "fast" (:class:`MeanFieldLoss`) or "pyro" (Pyro's ELBO module).

    ``path``: "auto" takes the fast path where it applies, else Pyro's; "fast" refuses a
    spec it does not cover, saying why; "pyro" always takes Pyro's."""
    if path not in ELBO_PATHS:
        raise ValueError(f"train.elbo must be one of {', '.join(ELBO_PATHS)}, got {path!r}")
    reason = None if path == "pyro" else fast_path_unsupported(model, guide, objective_name)
    if path == "fast" and reason is not None:
        raise ValueError(f"train.elbo = fast does not cover this run: {reason}")
    if path == "pyro" or reason is not None:
        return objective(objective_name)(model, guide), "pyro"
    return MeanFieldLoss(model, guide), "fast"


class MeanFieldLoss(nn.Module):
    """The negative "nri" ELBO of an NRI model and guide, computed without Pyro traces.

    ``forward`` takes the model's arguments (``x, edges=None, edge_mask=None, *,
    num_trajectories=None, kl_weight=1.0``) and returns what
    ``TraceMeanField_ELBO()(model, guide)`` returns on the same draws: with B trajectories
    in the minibatch and S = num_trajectories / B,

        -[ S sum_b log p(x_b | z_b) + S log p(known edges)
           - kl_weight (S sum_b KL(q(z_b) || p(z_b | pi)) + KL(q(pi) || p(pi))) ]

    (a shared graph's edges, one sample for all, are not scaled by S). The random draws
    come in the guide's order (its encoder, its global latents, the edges window by
    window), then the decoder's, so that a seed gives the draws Pyro's ELBO would. The
    prior's global latents (a Dirichlet's frequencies, learned transitions), a few sites
    at most, are traced by Pyro (eagerly, also in a compiled step); everything per
    trajectory is plain tensor code.
    """

    def __init__(self, model: nn.Module, guide: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.guide = guide
        self._loss = self.loss

    def compile(self, **options: Any) -> None:
        """torch.compile the loss after the eager checks of its inputs (:meth:`loss`, its
        backward pass included): one graph for a prior without global latents, split
        around the few Pyro sites of one with them. Steps with Pyro's validation on stay
        eager. ``options`` go to ``torch.compile``."""
        self._loss = torch.compile(self.loss, **options)

    def forward(
        self,
        x: Tensor,
        edges: Tensor | None = None,
        edge_mask: Tensor | None = None,
        *,
        num_trajectories: int | None = None,
        kl_weight: float = 1.0,
    ) -> Tensor:
        """Checks the inputs (eagerly: they read data) and returns :meth:`loss`."""
        model = self.model
        check_trajectories(x, model.num_features)
        check_edges(edges, edge_mask, x, model.num_edge_types)
        if model.dynamic and edges is not None:
            raise ValueError(DYNAMIC_KNOWN_EDGES)
        if model.prior.node_level and edges is not None:
            raise ValueError(NODE_KNOWN_EDGES.format(prior=model.prior.name))
        layout = model.structure.layout(x.shape[1], x.device)
        known = model.structure.known_slots(edges, edge_mask, layout, x.shape[0])
        recompute_threshold(x.device)  # read from the host here, a constant when compiled
        # A step that checks the distributions' arguments (Pyro's validation: a training
        # epoch's first) runs eagerly: its data-dependent checks would split a compiled graph.
        loss = self.loss if is_validation_enabled() else self._loss
        return loss(x, edges, edge_mask, known, num_trajectories, kl_weight)

    def loss(
        self, x: Tensor, edges: Tensor | None, edge_mask: Tensor | None,
        known: tuple[Tensor, Tensor] | None, num_trajectories: int | None, kl_weight: float,
    ) -> Tensor:  # fmt: skip
        """The negative ELBO of checked inputs, ``known`` their known slots (values, mask)."""
        model, guide = self.model, self.guide
        batch, num_objects = x.shape[:2]
        scale = (num_trajectories or batch) / batch  # the plate's: dataset / minibatch
        if model.prior.node_level:  # latents per object, the edges a function of them
            q = guide.edge_distribution(guide.node_logits(x))
            p = model.prior.node_distribution(x, batch, num_objects)
            z = model.prior.edges(q.rsample(), num_objects)
            log_likelihood = model.likelihood(x, z).log_prob(x[:, :, 1:]).sum() * scale
            return -(log_likelihood - kl_weight * edge_types_kl(q, p).sum() * scale)
        structure = model.structure
        layout = structure.layout(num_objects, x.device)
        logits = guide.slot_logits(x)  # [B, (W,) U, K], or [U, K] for a shared graph
        if guide.prior_guide is None:
            state, global_kl = model.prior.sample(x), 0.0
        else:
            state, global_kl = self._global_latents(x, logits, edges, edge_mask, num_trajectories)
        replicated = paused() if structure.shared else contextlib.nullcontext()
        if model.dynamic:
            shape = [batch, layout.num_slots]
            windows, edge_kl = [], 0.0
            for w in range(logits.shape[1]):
                q = guide.edge_distribution(logits[:, w])
                # p(z_w | z_{w-1}): the previous window's sample, as the model reads it
                p = model.prior.window_distribution(state, windows[-1] if w else None, shape)
                edge_kl = edge_kl + edge_types_kl(q, p).sum()
                windows.append(q.rsample())
            z = layout.to_edges(torch.stack(windows, dim=1))  # [B, W, E, K]
            edge_kl = edge_kl * scale
            known_log_prob = 0.0
        else:
            q = guide.edge_distribution(logits)
            with replicated:
                z = q.rsample()
            p = model.prior.distribution(state, list(logits.shape[:-1]))
            kl = edge_types_kl(q, p)  # [(B,) U]
            known_log_prob = 0.0
            if known is not None:
                latent = ~(known[1][0] if structure.shared else known[1])
                kl = torch.where(latent, kl, kl.new_zeros(()))
                observed, values = known_edges_likelihood(
                    state, known, z.dtype, model.num_edge_types, structure.shared
                )
                known_log_prob = observed.log_prob(values).sum()
                if not structure.shared:
                    known_log_prob = known_log_prob * scale
            edge_kl = kl.sum() if structure.shared else kl.sum() * scale
            if structure.shared:
                z = z.expand(batch, -1, -1)
            z = model.decoder_edges(z, known, layout)
        log_likelihood = model.likelihood(x, z).log_prob(x[:, :, 1:]).sum() * scale
        return -(log_likelihood + known_log_prob - kl_weight * (edge_kl + global_kl))

    @torch.compiler.disable  # a few Pyro sites: traced eagerly, between compiled graphs
    def _global_latents(
        self, x: Tensor, logits: Tensor, edges: Tensor | None, edge_mask: Tensor | None,
        num_trajectories: int | None,
    ) -> tuple[Any, Tensor | float]:  # fmt: skip
        """The prior's state (what ``prior.sample`` returns: its edge-type probabilities,
        after any global latents) with the global latents drawn from the guide, and the
        global latents' KL(q || p) (analytic where torch has it, else log q - log p at the
        draw, as TraceMeanField_ELBO scores a site without one)."""
        model, guide = self.model, self.guide
        probs, scale = guide.global_inputs(logits, x, edges, edge_mask, num_trajectories)
        replicated = paused() if model.structure.shared else contextlib.nullcontext()
        with replicated:
            guide_trace = poutine.trace(guide.prior_guide).get_trace(probs, scale)
        model_trace = poutine.trace(poutine.replay(model.prior.sample, trace=guide_trace))
        trace = model_trace.get_trace(x)
        kl: Tensor | float = 0.0
        for name, site in trace.nodes.items():
            if site["type"] != "sample" or site["is_observed"]:
                continue
            q, p = guide_trace.nodes[name]["fn"], site["fn"]
            try:
                term = kl_divergence(q, p).sum()
            except NotImplementedError:
                term = (q.log_prob(site["value"]) - p.log_prob(site["value"])).sum()
            kl = kl + term
        return trace.nodes["_RETURN"]["value"], kl
