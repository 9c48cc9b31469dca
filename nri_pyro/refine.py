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
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

# Adam's step size on the logits: they are of order 1 to 10, so a few tens of steps can
# move a confident edge; smaller steps change little in K <= 50 steps.
REFINE_LR = 0.1


def check_refine(steps: Any, model: Any = None, guide: Any = None) -> int:
    """``steps`` as an integer >= 0, or a clear error; with ``model`` and ``guide``, also
    an error where refinement does not apply to them (before any work)."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ValueError(
            f"refine must be a whole number of refinement steps >= 0 (0: none), got {steps!r}"
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

    check_refine(steps, model, guide)
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
