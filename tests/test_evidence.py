"""The held-out log evidence (nri_pyro.evidence) against exact enumeration of every graph:
4 objects make 4,096 directed graphs (64 symmetric), few enough to sum."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from common import random_graph_data, tiny

from nri_pyro.api import build
from nri_pyro.evidence import MAX_EXACT_GRAPHS, count_graphs, held_out_log_evidence

KNOWN = "[[null,1,0,null],[1,null,null,0],[0,null,null,1],[null,0,1,null]]"
# Every shipped static prior, and the graph structures that change the latent slots.
SETTINGS = {
    "uniform": ["prior.name=uniform"],
    "categorical": ["prior.name=categorical", "prior.probs=[0.7,0.3]"],
    "sparse": ["prior.name=sparse", "prior.no_edge=0.8"],
    "dirichlet": ["prior.name=dirichlet", "prior.concentration=[2.0,1.0]"],
    "symmetric": ["prior.name=sparse", "graph.symmetric=true"],
    "known": ["prior.name=uniform", f"graph.known.adjacency={KNOWN}"],
}
# A broad likelihood for the tiny networks' predictions: the exact posterior over graphs
# has an entropy of about 3.5 nats (of 8.3 for a flat one), neither flat nor a point mass.
SIGMA = 0.3


def _setup(overrides: list[str], seed: int = 0):
    x, _ = random_graph_data(batch=3, n=4, frames=8, seed=3)
    torch.manual_seed(seed)
    model, guide = build(None, None, x, overrides=[*tiny(8), *overrides])
    model.log_sigma.fill_(math.log(SIGMA))
    if model.prior.name == "dirichlet":  # a q(pi) learned from data, not the prior
        guide.prior_guide.counts.copy_(torch.tensor([30.0, 10.0]))
        guide.prior_guide.tracked.fill_(True)
    return x, model, guide


def _brute_force(model, guide, x) -> torch.Tensor:
    """log p(x) by a plain loop over graphs, one decoder call each (the reference for the
    batched enumeration); a Dirichlet's pi integrated numerically over q(pi) = Beta."""
    model.eval(), guide.eval()
    layout = model.structure.layout(4, "cpu")
    known = model.structure.known_slots(None, None, layout, 1)
    latent = [u for u in range(layout.num_slots) if known is None or not known[1][0, u]]
    grid = torch.linspace(1e-4, 1 - 1e-4, 20001, dtype=torch.float64)
    if model.prior.name == "dirichlet":
        a, b = guide.prior_guide.posterior().concentration.double().tolist()
        log_beta = torch.distributions.Beta(a, b).log_prob(grid)
    terms = []
    with torch.no_grad():
        for graph in itertools.product(range(2), repeat=len(latent)):
            types = known[0][0].clone() if known is not None else torch.zeros(layout.num_slots)
            types = types.long()
            types[latent] = torch.tensor(graph)
            z = layout.to_edges(torch.nn.functional.one_hot(types, 2).float())
            loc = model.predict(x, z.expand(x.shape[0], -1, -1))
            normal = torch.distributions.Normal(loc, model.sigma)
            log_lik = normal.log_prob(x[:, :, 1:]).sum((1, 2, 3)).double()
            ones = sum(graph)
            if model.prior.name == "dirichlet":  # E_q(pi)[pi0^n0 pi1^n1], pi0 ~ Beta(a, b)
                f = log_beta + (len(graph) - ones) * grid.log() + ones * (1 - grid).log()
                log_prior = torch.logsumexp(f, 0) + math.log(grid[1] - grid[0])
            else:
                pi = model.prior.probs(torch.zeros(1, dtype=torch.float64))
                log_prior = (len(graph) - ones) * pi[0].log() + ones * pi[1].log()
            terms.append(log_lik + log_prior)
    return torch.logsumexp(torch.stack(terms), 0)


@pytest.mark.parametrize("name", ["dirichlet", "symmetric", "known"])
def test_exact_evidence_sums_every_graph(name):
    """The batched enumeration (several passes: batch_size 7) against a plain loop; 64
    graphs each (the Dirichlet's on symmetric graphs), so that the loop is quick."""
    symmetric = ["graph.symmetric=true"] if name == "dirichlet" else []
    x, model, guide = _setup([*SETTINGS[name], *symmetric])
    exact = held_out_log_evidence(model, guide, x, method="exact", batch_size=7)
    assert exact.method == "exact" and torch.isneginf(exact.pareto_k).all()
    reference = _brute_force(model, guide, x)
    torch.testing.assert_close(exact.log_evidence, reference, atol=2e-3, rtol=0)


@pytest.mark.parametrize("name", list(SETTINGS))
def test_the_local_estimator_is_within_half_a_nat_of_the_exact_evidence(name):
    """The studies' estimator ("local": a local mode of p(x, z) and its neighbours summed,
    the rest importance-sampled) against exact enumeration, per trajectory, for every
    shipped static prior and graph structure."""
    x, model, guide = _setup(SETTINGS[name])
    exact = held_out_log_evidence(model, guide, x, method="exact").log_evidence
    estimate = held_out_log_evidence(model, guide, x, method="local", num_samples=64)
    assert estimate.method == "local"
    error = (estimate.log_evidence - exact).abs()
    assert (error < 0.5).all(), (name, error, estimate.pareto_k)


@pytest.mark.parametrize("name", list(SETTINGS))
def test_annealed_importance_sampling_is_within_half_a_nat_of_the_exact_evidence(name):
    """Annealed importance sampling over graphs (64 chains, 8 temperatures) against exact
    enumeration, per trajectory, for every shipped static prior and graph structure."""
    x, model, guide = _setup(SETTINGS[name])
    exact = held_out_log_evidence(model, guide, x, method="exact").log_evidence
    estimate = held_out_log_evidence(
        model, guide, x, method="annealed", num_samples=64, anneal_steps=8
    )
    assert estimate.method == "annealed"
    error = (estimate.log_evidence - exact).abs()
    assert (error < 0.5).all(), (name, error, estimate.pareto_k)


def test_annealed_importance_sampling_has_a_pareto_k_that_trusts_its_estimates():
    """Where annealing is within half a nat, its k-hat says so: below 0.7 on at least 5
    of 6 trajectories over every setting (the "local" estimator's remainder is flagged
    on most of them, benchmarks/evidence.py)."""
    khats = []
    for overrides in SETTINGS.values():
        x, model, guide = _setup(overrides)
        estimate = held_out_log_evidence(model, guide, x, method="annealed", num_samples=64)
        khats.append(estimate.pareto_k)
    k = torch.cat(khats)
    assert float((k < 0.7).double().mean()) >= 5 / 6, k


def test_annealed_importance_sampling_refuses_a_schedule_without_steps():
    x, model, guide = _setup(SETTINGS["uniform"])
    with pytest.raises(ValueError, match=r"anneal_steps must be a positive integer, got 0"):
        held_out_log_evidence(model, guide, x, method="annealed", anneal_steps=0)


def test_auto_is_exact_where_enumerating_is_no_dearer_and_exact_refuses_too_many_graphs():
    x, model, guide = _setup(SETTINGS["symmetric"])  # 2 ** 6 = 64 graphs
    assert count_graphs(model, 4) == 64
    assert held_out_log_evidence(model, guide, x, method="auto").method == "exact"
    x, model, guide = _setup(SETTINGS["known"])  # 12 slots, 8 known: 16 graphs
    assert count_graphs(model, 4) == 16
    x, model, guide = _setup(SETTINGS["uniform"])  # 4,096 graphs: more than 64 + 13
    assert held_out_log_evidence(model, guide, x, method="auto").method == "local"
    x5 = torch.randn(2, 5, 8, 4)
    model5, guide5 = build(None, None, x5, overrides=tiny(8))
    assert count_graphs(model5, 5) == 2**20 > MAX_EXACT_GRAPHS
    with pytest.raises(ValueError, match=r"1,048,576 graphs, more than the limit of 65,536"):
        held_out_log_evidence(model5, guide5, x5, method="exact")
    with pytest.raises(ValueError, match=r"unknown evidence method 'best'; valid methods"):
        held_out_log_evidence(model, guide, x, method="best")


def test_a_study_records_the_evidence_with_its_diagnostics_and_marks_untrusted_ones():
    from nri_pyro.ablate import markdown_table

    x, model, guide = _setup(SETTINGS["sparse"])
    summary = held_out_log_evidence(model, guide, x, num_samples=32).summary()
    assert summary["evidence_method"] == "local"
    assert set(summary) >= {"log_evidence", "pareto_k", "pareto_k_over_0.7"}
    row = {"variant": "a", "runs": 1, "log_evidence_mean": -1.0, "log_evidence_std": 0.0}
    trusted = markdown_table(
        [{**row, "pareto_k_over_0.7_mean": 0.05, "pareto_k_over_0.7_std": 0.0}]
    )
    untrusted = markdown_table(
        [{**row, "pareto_k_over_0.7_mean": 0.5, "pareto_k_over_0.7_std": 0.0}]
    )
    assert "†" not in trusted and "-1 ± 0 †" in untrusted and "cannot be trusted" in untrusted
