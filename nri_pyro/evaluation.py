"""Evaluating a trained NRI model and guide on held-out trajectories.

The paper's protocol (:func:`evaluate`): edge accuracy with the best relabelling of edge
types over the whole set, AUROC, the multi-step prediction NLL and MSE, the negative ELBO,
and rollout errors after 1 to 20 steps; and the importance-sampled held-out log evidence
(:func:`importance_log_weights`, :func:`log_evidence`).
"""

from __future__ import annotations

import contextlib
import logging
import math

import pyro.distributions as dist
import torch
from pyro import poutine
from torch import Tensor

# Moved to nri_pyro.data.dataset; importable from here for one release (0.2 drops them).
from nri_pyro.data.dataset import batch_slices, normalizer_for, prepare  # noqa: F401
from nri_pyro.guide import NRIGuide
from nri_pyro.metrics import EdgeAccumulator, MSEAccumulator, switch_detection
from nri_pyro.model import NRIModel
from nri_pyro.nn import recompute_threshold
from nri_pyro.nn.modes import eval_mode
from nri_pyro.objectives import objective
from nri_pyro.refine import REFINE_LR, check_refine, refined

logger = logging.getLogger(__name__)

ROLLOUT_PREFIX = 50  # the encoder reads frames 0..48; the rollout starts at frame 49
ROLLOUT_STEPS = 20
EVAL_SEED = 1234


def memory_safe_batch(
    requested: int, model: NRIModel, guide: NRIGuide, x: Tensor, device: torch.device | str
) -> int:
    """``requested``, or fewer trajectories where one batch's widest per-edge tensors (the
    decoder's messages, the encoder's edge activations: each class says how many bytes per
    edge, ``bytes_per_edge``) would exceed a sixteenth of the device's memory: evaluation
    of large systems (N = 100 has 9,900 edges, about 100 MB of messages per trajectory at
    hidden 256) without running out of memory."""
    num_objects, num_frames = x.shape[1], x.shape[2]
    edges = num_objects * (num_objects - 1)
    frames = min(num_frames, guide.num_frames)  # the encoder reads the training length
    per_edge = max(_decoder_bytes_per_edge(model, frames), guide.encoder.bytes_per_edge(frames))
    budget = recompute_threshold(torch.device(device)) // 4
    return max(1, min(requested, budget // (edges * per_edge)))


def _decoder_bytes_per_edge(model: NRIModel, frames: int) -> int:
    return model.decoder.bytes_per_edge(frames, model.prediction_steps)


# What a training step keeps beyond its per-edge tensors (inputs of every layer, the output
# networks' activations, the allocator's slack): a factor on the per-edge estimate.
TRAINING_SLACK = 3


def training_step_bytes(
    model: NRIModel, guide: NRIGuide, batch_size: int, num_objects: int, num_frames: int
) -> int:
    """An upper estimate of a training step's device memory: the parameters with their
    gradients and Adam's two moments (16 bytes each), and ``TRAINING_SLACK`` times the
    per-edge tensors the backward pass keeps: the encoder's, and the decoder's of every
    step (``prediction_steps`` sequential steps of a Markovian decoder, one per frame of a
    recurrent one). For planning runs that share one GPU (``ablate --jobs``)."""
    edges = num_objects * (num_objects - 1)
    frames = min(num_frames, guide.num_frames)
    steps = model.prediction_steps if model.decoder.markovian else frames - 1
    per_edge = _decoder_bytes_per_edge(model, frames) * steps + guide.encoder.bytes_per_edge(frames)
    parameters = sum(p.numel() for p in (*model.parameters(), *guide.parameters()))
    return 16 * parameters + TRAINING_SLACK * batch_size * edges * per_edge


@torch.no_grad()
def evaluate(
    model: NRIModel,
    guide: NRIGuide,
    x: Tensor,
    edges: Tensor | None = None,
    *,
    objective_name: str = "nri",
    batch_size: int = 256,
    device: torch.device | str = "cpu",
    anchor_first: bool | None = None,
    refine: int | str = 0,
    refine_lr: float = REFINE_LR,
) -> dict[str, float]:
    """Held-out metrics of normalised trajectories x: [S, N, T, D].

    - edge_accuracy / edge_auroc / edge_density: posterior argmax against the true types,
      best relabelling over the whole set (type 0 fixed when skip-first anchors it);
      no_edge_type: the learned type that this relabelling reads as "no edge";
    - nll: NRI's Gaussian NLL (no constant), summed over frames and features, per object,
      of the multi-step predictions with hard edge samples (with a learned variance it
      includes its log, which is then no constant: else a shrinking variance would make
      a better fit look worse); mse: their mean squared error;
    - elbo_loss: the objective's negative ELBO of the whole set, per trajectory (global
      latents' terms counted once, not once per batch: the same for any batch size);
    - mse_1 .. mse_20: rollout error after k steps from frame 49, where T >= 70.

    Graphs that change over time: with per-frame truth ``edges`` [S, T, E], or a dynamic
    model (``graph.dynamic``), the edge metrics are per frame: every (trajectory, frame,
    edge) counts once, against the probabilities of the window holding the frame (a
    static model's one graph at every frame; static truth repeated over the frames), with
    one relabelling for the whole set. Per-frame truth adds switch_precision and
    switch_recall: switches of the argmax type found within +-W frames of a true switch
    (:func:`nri_pyro.metrics.switch_detection`; W is the model's window, 0 for a static
    model, which never switches), and switches_true / switches_detected, their counts.

    With ``refine`` = K > 0 every figure is of the guide's logits after K steps of
    semi-amortized refinement on each trajectory's own ELBO (:mod:`nri_pyro.refine`; the
    weights are not changed), and the record adds what the refinement changed:
    refine_steps (K; 0 without refinement), elbo_loss_unrefined, edge_accuracy_unrefined,
    and amortization_gap, the negative ELBO per trajectory it removed (elbo_loss_unrefined
    - elbo_loss; each a one-sample estimate per batch). ``refine="exact"``: a node-level
    prior's exact posterior over its graphs instead of the guide's (refine_steps "exact").

    Runs in eval mode with a fixed seed for the Gumbel noise, without touching the
    global RNG state.
    """
    check_refine(refine, model, guide, x.shape[1])
    device = torch.device(device)
    if anchor_first is None:
        anchor_first = bool(getattr(model.decoder, "skip_first", False))
    frames = guide.num_frames
    elbo = objective(objective_name)
    accumulator = EdgeAccumulator() if edges is not None else None
    unrefined = EdgeAccumulator() if edges is not None and refine else None
    unrefined_loss = 0.0
    per_frame = edges is not None and (edges.dim() == 3 or model.dynamic)
    if edges is not None and edges.dim() == 3 and edges.shape[1] != x.shape[2]:
        raise ValueError(
            f"per-frame edges must be [S, T, E] with T = {x.shape[2]} (the trajectories' "
            f"frames), got shape {tuple(edges.shape)}"
        )
    if per_frame and not model.dynamic:
        logger.info(
            "per-frame truth and a static model: its one graph per trajectory is scored at "
            "every frame"
        )
    switch_counts = {"true_switches": 0, "detected_switches": 0, "matched": 0}
    tolerance = model.structure.window or 0
    rollout = MSEAccumulator()
    totals = {"nll": 0.0, "mse": 0.0, "elbo_loss": 0.0}
    count = x.shape[0]
    batch_size = memory_safe_batch(batch_size, model, guide, x, device)
    variance = model.sigma.detach().square()  # a scalar, or [D] per feature
    devices = [device] if device.type == "cuda" else []
    with eval_mode(model, guide), torch.random.fork_rng(devices=devices):
        torch.manual_seed(EVAL_SEED)
        for batch in batch_slices(count, batch_size):
            xb = x[batch].to(device)
            xt = xb[:, :, :frames]
            share = xt.shape[0] / count
            fixed = contextlib.nullcontext()
            if refine:  # the encoder's own figures first, then the refined logits' below
                unrefined_loss += elbo.loss(model, guide, xt, num_trajectories=count) * share
                if unrefined is not None:
                    unrefined.update(*_scored_edges(guide, xb, edges[batch], per_frame))
                fixed = refined(model, guide, xt, refine, lr=refine_lr)
            with fixed:
                if accumulator is not None:
                    probs, truth = _scored_edges(guide, xb, edges[batch], per_frame)
                    accumulator.update(probs, truth)
                    if per_frame and edges.dim() == 3:
                        found = switch_detection(probs, truth, tolerance)
                        for key in switch_counts:
                            switch_counts[key] += found[key]
                z = guide.sample_edges(xb)
                err = (model.predict(xt, z) - xt[:, :, 1:]).square()
                nll = err / (2 * variance.to(err))
                if model.learns_variance:  # the log variance is no constant then
                    nll = nll + 0.5 * variance.to(err).log()
                totals["nll"] += float(nll.sum()) / xt.shape[1]
                totals["mse"] += float(err.mean(dim=(1, 2, 3)).sum())
                # The ELBO of the whole set estimated from this batch (local sites scaled by
                # count / b, global ones once), weighted by the batch's share: the global
                # latents' terms (a Dirichlet prior's frequencies, a shared graph) count once
                # per evaluation, whatever the batch size, and the local ones add up.
                totals["elbo_loss"] += elbo.loss(model, guide, xt, num_trajectories=count) * share
                if _has_rollout(xb):
                    prefix = xb[:, :, :ROLLOUT_PREFIX]
                    preds = model.rollout(prefix, z, ROLLOUT_STEPS)
                    target = xb[:, :, ROLLOUT_PREFIX : ROLLOUT_PREFIX + ROLLOUT_STEPS]
                    rollout.update(preds, target)
    metrics = {k: v / count for k, v in totals.items()}
    if accumulator is not None:
        metrics["edge_accuracy"] = accumulator.accuracy(anchor_first)
        metrics["edge_auroc"] = accumulator.auroc(anchor_first)
        metrics["edge_density"] = accumulator.density(anchor_first)
        metrics["no_edge_type"] = accumulator.no_edge_label(anchor_first)
    if refine:
        metrics["elbo_loss_unrefined"] = unrefined_loss / count
        metrics["amortization_gap"] = metrics["elbo_loss_unrefined"] - metrics["elbo_loss"]
        if unrefined is not None:
            metrics["edge_accuracy_unrefined"] = unrefined.accuracy(anchor_first)
    metrics["refine_steps"] = refine
    if per_frame and edges.dim() == 3:
        true, detected, matched = (switch_counts[k] for k in switch_counts)
        metrics["switch_precision"] = matched / detected if detected else math.nan
        metrics["switch_recall"] = matched / true if true else math.nan
        metrics["switches_true"], metrics["switches_detected"] = true, detected
    if _has_rollout(x):
        per_step = rollout.result()
        for k in range(ROLLOUT_STEPS):
            metrics[f"mse_{k + 1}"] = float(per_step[k])
    return metrics


def _scored_edges(
    guide: NRIGuide, xb: Tensor, truth: Tensor, per_frame: bool
) -> tuple[Tensor, Tensor]:
    """A batch's edge probabilities and true types, as an EdgeAccumulator scores them: one
    graph per trajectory, or per frame (a static graph's, and static truth, repeated)."""
    if not per_frame:
        return guide.edge_probs(xb).cpu(), truth.cpu()
    probs = guide.frame_edge_probs(xb).cpu()
    truth = truth.cpu()
    if truth.dim() == 2:  # one graph per trajectory, at every frame
        truth = truth[:, None].expand(-1, probs.shape[1], -1)
    return probs, truth


@torch.no_grad()
def importance_log_weights(
    model: NRIModel,
    guide: NRIGuide,
    x: Tensor,
    *,
    num_samples: int = 64,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
) -> Tensor:
    """Importance log-weights log p(x, z) - log q(z | x) of trajectories x: [S, num_samples].

    The weights are those of the discrete model that NRI evaluates: z are one-hot edge types
    drawn from the guide's categorical probabilities, the decoder reads the first
    ``num_frames`` frames (as in training), and the Gaussian likelihood keeps its constant,
    so ``logsumexp(w) - log(num_samples)`` estimates the held-out log evidence log p(x) in
    the model's (normalised) units. Global latents (e.g. Dirichlet edge frequencies) are
    drawn from the guide, whose evaluation state is their posterior given the training
    data, and enter the weights through p(z | globals): the estimate is of the posterior
    predictive density of a new trajectory. A shared graph is drawn from its posterior too,
    so its weights are the likelihood alone. Known edges are fixed and not counted.
    """
    if not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"num_samples must be a positive integer, got {num_samples!r}")
    device = torch.device(device)
    weigh = _dynamic_log_weights if model.dynamic else _static_log_weights
    if model.prior.node_level:
        weigh = _node_log_weights
    out = []
    devices = [device] if device.type == "cuda" else []
    with eval_mode(model, guide), torch.random.fork_rng(devices=devices):
        torch.manual_seed(EVAL_SEED)
        for batch in batch_slices(x.shape[0], batch_size):
            xt = x[batch, :, : guide.num_frames].to(device)
            out.append(weigh(model, guide, xt, num_samples, batch_size).cpu())
    return torch.cat(out)


def _static_log_weights(
    model: NRIModel, guide: NRIGuide, xt: Tensor, num_samples: int, batch_size: int
) -> Tensor:
    """The importance log-weights of one batch xt of a static graph: [B, num_samples]."""
    k, structure, b = model.num_edge_types, model.structure, xt.shape[0]
    layout = structure.layout(xt.shape[1], xt.device)
    probs = guide.slot_probs(xt)  # [B or 1, U, K]
    known = structure.known_slots(None, None, layout, b)
    latent = torch.ones(probs.shape[:-1], dtype=torch.bool, device=xt.device)
    if known is not None:
        latent = ~known[1][: probs.shape[0]]
    weights = []
    per_pass = max(1, batch_size // b)  # samples decoded together, as one batch
    for first in range(0, num_samples, per_pass):
        s = min(per_pass, num_samples - first)
        prior_probs = (
            torch.stack([_prior_probs(model, guide, probs, xt) for _ in range(s)])
            .unsqueeze(-2)
            .unsqueeze(-2)
        )  # [s, 1, 1, K]
        types = dist.Categorical(probs=probs).sample((s,))  # [s, B or 1, U]
        z = torch.nn.functional.one_hot(types, k).to(xt.dtype)
        z = layout.to_edges(z).expand(s, b, -1, -1).flatten(0, 1)
        xs = xt.expand(s, *xt.shape).flatten(0, 1)
        loc = model.predict(xs, z)
        sigma = model.sigma.to(loc.dtype)
        log_lik = dist.Normal(loc, sigma).log_prob(xs[:, :, 1:]).sum((1, 2, 3))
        log_w = log_lik.view(s, b)
        if not structure.shared:
            index = types.unsqueeze(-1)
            log_prior = prior_probs.log().expand(s, *probs.shape).gather(-1, index)
            log_q = probs.log().expand(s, *probs.shape).gather(-1, index)
            log_w = log_w + ((log_prior - log_q).squeeze(-1) * latent).sum(-1)
        weights.append(log_w)
    return torch.cat(weights).T


def _node_log_weights(
    model: NRIModel, guide: NRIGuide, xt: Tensor, num_samples: int, batch_size: int
) -> Tensor:
    """The importance log-weights of one batch xt of a node-level prior: [B, num_samples];
    the latents per object drawn from the guide's categorical probabilities, one sample
    decoded at a time."""
    b, n = xt.shape[:2]
    probs = torch.softmax(guide.node_logits(xt), -1)  # [B, ..., K_s]
    log_prior = model.prior.node_distribution(xt, b, n).probs.log()
    weights = []
    for _ in range(num_samples):
        types = dist.Categorical(probs=probs).sample()  # [B, ...]
        one_hot = torch.nn.functional.one_hot(types, probs.shape[-1]).to(xt.dtype)
        log_ratio = ((log_prior - probs.log()) * one_hot).flatten(1).sum(1)
        loc = model.predict(xt, model.prior.edges(one_hot, n))
        log_lik = dist.Normal(loc, model.sigma.to(loc.dtype)).log_prob(xt[:, :, 1:])
        weights.append(log_lik.sum((1, 2, 3)) + log_ratio)
    return torch.stack(weights, dim=1)


def _dynamic_log_weights(
    model: NRIModel, guide: NRIGuide, xt: Tensor, num_samples: int, batch_size: int
) -> Tensor:
    """The importance log-weights of one batch xt of a dynamic graph: [B, num_samples].

    z is one type per slot and window, drawn from the guide's categorical probabilities;
    log p(z) is the prior's chain (:meth:`~nri_pyro.priors.EdgePrior.window_distribution`,
    the model's own transitions, read as categorical probabilities given the previous
    window's one-hot types). One sample is decoded at a time."""
    k, b = model.num_edge_types, xt.shape[0]
    layout = model.structure.layout(xt.shape[1], xt.device)
    probs = guide.slot_probs(xt)  # [B, W, U, K]
    weights = []
    for _ in range(num_samples):
        state = _prior_probs(model, guide, probs, xt)
        types = dist.Categorical(probs=probs).sample()  # [B, W, U]
        z = torch.nn.functional.one_hot(types, k).to(xt.dtype)
        log_prior = torch.zeros(b, dtype=xt.dtype, device=xt.device)
        previous = None
        for w in range(z.shape[1]):
            site = model.prior.window_distribution(state, previous, [b, layout.num_slots])
            chosen = site.probs.gather(-1, types[:, w, :, None]).squeeze(-1)
            log_prior += chosen.log().sum(-1)
            previous = z[:, w]
        log_q = probs.gather(-1, types[..., None]).log().sum((1, 2, 3))
        loc = model.predict(xt, layout.to_edges(z))
        log_lik = dist.Normal(loc, model.sigma.to(loc.dtype)).log_prob(xt[:, :, 1:])
        weights.append(log_lik.sum((1, 2, 3)) + log_prior - log_q)
    return torch.stack(weights, dim=1)


def _prior_probs(model: NRIModel, guide: NRIGuide, slot_probs: Tensor, like: Tensor) -> Tensor:
    """The prior's edge-type probabilities, its global latents drawn from the guide."""
    if guide.prior_guide is None:
        return model.prior.sample(like)
    trace = poutine.trace(guide.prior_guide).get_trace(slot_probs, 1.0)
    return poutine.replay(model.prior.sample, trace=trace)(like)


def log_evidence(log_weights: Tensor) -> Tensor:
    """Per-trajectory log evidence estimates [S] from importance log-weights [S, K]."""
    return torch.logsumexp(log_weights, dim=-1) - math.log(log_weights.shape[-1])


def _has_rollout(x: Tensor) -> bool:
    return x.shape[2] >= ROLLOUT_PREFIX + ROLLOUT_STEPS
