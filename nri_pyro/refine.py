"""Semi-amortized inference: refine each trajectory's variational edge parameters.

The guide's encoder amortizes inference: one network maps every trajectory to its edge
logits. The best logits for one trajectory, those that maximise its own ELBO, can lie
elsewhere; the difference in ELBO is the amortization gap. :func:`refine_logits` starts
from the encoder's logits and takes ``steps`` Adam steps on the trajectory's own "nri"
ELBO (the analytic-KL objective, :class:`~nri_pyro.objectives.MeanFieldLoss`) with respect
to those logits alone, as in semi-amortized VAEs (Kim et al., 2018). The model's and
guide's weights are read, never changed: gradients are taken with respect to the logits
only, so a refined evaluation leaves the stored run as it was.

Everything that reads the guide's logits reads the refined ones inside
:meth:`NRIGuide.fixed_logits <nri_pyro.guide.NRIGuide.fixed_logits>`: edge
probabilities, samples, the ELBO, and a node-level prior's latents (whose guide is a
function of the edge logits). ``evaluate --refine K``, ``infer --refine K`` and
``NRI.infer_edges(..., refine=K)`` use it; evaluation reports the ELBO and edge accuracy
before and after (``amortization_gap``: the negative ELBO per trajectory it removed).

It optimises the "nri" ELBO whatever objective trained the run. Not supported: dynamic
graphs (logits per window) and shared graphs (one graph pooled over all trajectories).

``refine="exact"`` goes all the way for a node-level prior written jointly
(``prior.name=charges``, :mod:`nri_pyro.priors.nodes`): its graphs are few (2 ** (N-1) a
labelling), so the posterior over them, p(g | x) ~ p(g) p(x | g), is computed exactly by
decoding every one (:func:`exact_latent_logits`) and replaces the guide's q(g | x). The
amortization gap is then closed: the ELBO of the exact posterior is the log evidence.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from torch import Tensor

# Adam's step size on the logits: they are of order 1 to 10, so a few tens of steps can
# move a confident edge; smaller steps change little in K <= 50 steps.
REFINE_LR = 0.1


EXACT = "exact"  # refine=EXACT: a node-level prior's exact posterior over its graphs


def check_refine(
    steps: Any, model: Any = None, guide: Any = None, num_objects: int | None = None
) -> int | str:
    """``steps`` as an integer >= 0 or "exact", or a clear error; with ``model`` and
    ``guide``, also an error where refinement does not apply to them (before any work)."""
    if steps == EXACT:
        if model is None:
            return steps
        prior = model.prior
        if not prior.node_level or (num_objects is not None and not prior.joint(num_objects)):
            raise ValueError(
                "refine='exact' computes the posterior over every graph a node-level prior "
                "allows, one categorical over them: it needs prior.name=charges with "
                "prior.inference joint (or auto, up to 12 objects); use a number of steps"
            )
        return steps
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ValueError(
            f"refine must be a whole number of refinement steps >= 0 (0: none) or 'exact', "
            f"got {steps!r}"
        )
    if not steps or model is None:
        return steps
    from nri_pyro.objectives import fast_path_unsupported

    if model.dynamic:
        raise ValueError(
            "refinement is not supported for a dynamic graph (graph.dynamic): its logits "
            "are per window; evaluate without --refine"
        )
    if model.structure.shared:
        raise ValueError(
            "refinement refines each trajectory's own edges, but graph.shared has one graph "
            "for all of them; evaluate without --refine"
        )
    reason = fast_path_unsupported(model, guide)
    if reason is not None:
        raise ValueError(f"refinement optimises the 'nri' ELBO, which does not apply: {reason}")
    return steps


def refine_logits(
    model: Any, guide: Any, x: Tensor, steps: int, *, lr: float = REFINE_LR
) -> Tensor:
    """The guide's edge logits [B, E, K] of trajectories x [B, N, T, D] (normalised),
    after ``steps`` Adam steps on the sum of their ELBOs (each trajectory's logits follow
    its own ELBO's gradient: the trajectories are independent given the weights). One
    relaxed sample per step, from the global RNG. Runs in whatever train/eval mode the
    caller set (evaluation: eval mode); the weights get no gradient and do not change."""
    from nri_pyro.objectives import MeanFieldLoss

    if check_refine(steps, model, guide, x.shape[1]) == EXACT:
        raise ValueError("refine_logits takes a number of steps; 'exact': exact_latent_logits")
    with torch.no_grad():
        start = guide.logits(x)
    logits = start.detach().clone().requires_grad_(True)
    if not steps:
        return logits.detach()
    optimizer = torch.optim.Adam([logits], lr=lr)
    loss_fn = MeanFieldLoss(model, guide)
    for _ in range(steps):
        with torch.enable_grad(), guide.fixed_logits(logits):
            loss = loss_fn(x)
            (grad,) = torch.autograd.grad(loss, [logits])
        logits.grad = grad
        optimizer.step()
    return logits.detach()


def exact_latent_logits(model: Any, x: Tensor, *, rows: int = 4096) -> Tensor:
    """The exact posterior of a jointly written node-level prior's latent given x
    [B, N, T, D] (normalised; the decoder reads all T frames): log p(g) + log p(x | g) for
    each of its G graphs, [B, G] in x's dtype, logits of the categorical p(g | x)."""
    check_refine(EXACT, model, None, x.shape[1])
    log_prior = model.prior.node_distribution(x, 1, x.shape[1]).logits[0]  # [G]
    return (assignment_log_likelihoods(model, x, rows=rows) + log_prior.double()).to(x.dtype)


def assignment_log_likelihoods(model: Any, x: Tensor, *, rows: int = 4096) -> Tensor:
    """log p(x_b | g) [B, G] (float64) of trajectories x [B, N, T, D] under each graph g a
    node-level prior allows (its ``assignment_edges``), each decoded once, ``rows``
    trajectory-graph pairs a pass; the model's weights are only read. The exact posterior
    (:func:`exact_latent_logits`) and the exact evidence (:mod:`nri_pyro.evidence`) both
    sum over these."""
    batch, n = x.shape[:2]
    table = model.prior.assignment_edges(n, x)  # [G, E, K]
    per_pass = max(1, rows // batch)
    out = []
    with torch.no_grad():
        for first in range(0, table.shape[0], per_pass):
            z = table[first : first + per_pass]  # [g, E, K]
            g = z.shape[0]
            xs = x.repeat(g, 1, 1, 1)  # graph-major rows
            zs = z.repeat_interleave(batch, dim=0)
            log_lik = model.likelihood(xs, zs).log_prob(xs[:, :, 1:]).view(g, batch)
            out.append(log_lik.T.double())
    return torch.cat(out, dim=1)


def refined(
    model: Any, guide: Any, x: Tensor, refine: int | str, *, lr: float = REFINE_LR
) -> contextlib.AbstractContextManager:
    """A block in which the guide reads refined logits of trajectories x [B, N, T, D]
    (the frames the model is trained on): ``refine`` Adam steps (:func:`refine_logits`),
    or with "exact" a node-level prior's exact posterior (:func:`exact_latent_logits`);
    0: the encoder's own (nothing changes)."""
    if refine == EXACT:
        return guide.fixed_logits(exact_latent_logits(model, x), latent=True)
    if not refine:
        return contextlib.nullcontext()
    return guide.fixed_logits(refine_logits(model, guide, x, refine, lr=lr))
