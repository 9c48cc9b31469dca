"""Semi-amortized refinement (nri_pyro.refine): each trajectory's logits follow its own
ELBO's gradient, the weights never move, and what it does not apply to is refused."""

from __future__ import annotations

import pytest
import torch
from common import random_graph_data, tiny

from nri_pyro.api import build
from nri_pyro.evaluation import evaluate
from nri_pyro.objectives import MeanFieldLoss
from nri_pyro.refine import check_refine, refine_logits

TINY = tiny(8, "likelihood.variance=0.01")


def _pair(*overrides):
    torch.manual_seed(0)
    x, edges = random_graph_data(batch=6, n=4, frames=12)
    model, guide = build(None, None, x, [*TINY, *overrides])
    model.eval(), guide.eval()
    return model, guide, x, edges


@pytest.mark.parametrize("prior", ["uniform", "dirichlet", "charges"])
def test_refined_logits_raise_each_trajectorys_elbo_and_leave_the_weights(prior):
    model, guide, x, edges = _pair(f"prior.name={prior}")
    weights = {k: v.clone() for k, v in (*model.state_dict().items(),
                                         *guide.state_dict().items())}  # fmt: skip
    logits = refine_logits(model, guide, x, 30)
    assert logits.shape == (6, 12, 2) and not logits.requires_grad
    assert all(p.grad is None for p in (*model.parameters(), *guide.parameters()))
    after = {**model.state_dict(), **guide.state_dict()}
    assert all(torch.equal(weights[k], after[k]) for k in weights)
    loss = MeanFieldLoss(model, guide)

    def per_trajectory(fixed=None):  # the negative ELBO of each trajectory, 64 draws
        torch.manual_seed(1)
        out = []
        for b in range(6):
            xb = x[b : b + 1]
            with torch.no_grad():
                if fixed is None:
                    out.append(torch.stack([loss(xb) for _ in range(64)]).mean())
                else:
                    with guide.fixed_logits(fixed[b : b + 1]):
                        out.append(torch.stack([loss(xb) for _ in range(64)]).mean())
        return torch.stack(out)

    before, refined = per_trajectory(), per_trajectory(logits)
    assert (refined < before).all(), (before, refined)
    metrics = evaluate(model, guide, x, edges, refine=30)
    assert metrics["refine_steps"] == 30 and metrics["amortization_gap"] > 0


def test_fixed_logits_must_be_those_of_the_trajectories():
    _, guide, x, _ = _pair()
    with guide.fixed_logits(torch.zeros(5, 12, 2)), pytest.raises(ValueError, match="not those"):
        guide.logits(x)
    with guide.fixed_logits(torch.zeros(6, 12, 2)):
        assert torch.equal(guide.edge_probs(x), torch.full((6, 12, 2), 0.5))
    assert guide._fixed_logits is None


@pytest.mark.parametrize("steps", [-1, 1.5, True, "3"])
def test_bad_step_counts_are_refused(steps):
    with pytest.raises(ValueError, match="whole number of refinement steps >= 0 .* or .exact."):
        check_refine(steps)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("nri_markov", "not supported for a dynamic graph"),
        ("nri_shared", "graph.shared has one graph"),
    ],
)
def test_what_it_does_not_apply_to_is_refused_before_any_work(spec, message):
    x, edges = random_graph_data(batch=6, n=4, frames=16)
    model, guide = build(spec, None, x, tiny(8))
    with pytest.raises(ValueError, match=message):
        evaluate(model, guide, x, edges, refine=2)
    assert check_refine(0, model, guide) == 0  # no refinement: nothing to refuse
