"""Edge priors: registry, shapes, sites, checks, no NaN anywhere (the graph's structure
is tested in test_structure.py)."""

from __future__ import annotations

import contextlib
import itertools
import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from common import random_graph_data, tiny
from pyro import poutine

from nri_pyro.api import build
from nri_pyro.evaluation import evaluate, importance_log_weights, log_evidence
from nri_pyro.nn import edges_to_adjacency
from nri_pyro.priors import (
    PRIORS,
    DirichletPosterior,
    EdgePrior,
    build_prior,
    register_prior,
)

TINY = tiny(8)
KNOWN = "[[null,1,0,null],[1,null,null,0],[0,null,null,1],[null,0,1,null]]"


def _sites(model, guide, x, **kwargs):
    guide_trace = poutine.trace(guide).get_trace(x, **kwargs)
    model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(x, **kwargs)
    return model_trace, guide_trace


def _in_plate(site) -> bool:
    return any(f.name == "trajectories" for f in site["cond_indep_stack"])


# --- the registry and its checks ---------------------------------------------------------


def test_every_documented_prior_is_registered():
    assert {"uniform", "categorical", "sparse", "dirichlet", "charges"} <= set(PRIORS)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (
            {"name": "nope"},
            "valid priors: categorical, charges, dirichlet, markov, markov_learned, sparse, "
            "uniform",
        ),
        ({"name": "categorical", "probs": [1.1, -0.1]}, "must all be positive"),
        ({"name": "categorical", "probs": [0.5, 0.4]}, "must sum to 1"),
        ({"name": "categorical", "probs": [0.2, 0.3, 0.5]}, "3 entries but the model has 2"),
        ({"name": "sparse", "no_edge": 1.2}, "strictly between 0 and 1"),
        ({"name": "dirichlet", "concentration": [1.0, 0.0]}, "concentration must be positive"),
        ({"name": "dirichlet", "concentration": [1, 1, 1]}, "3 entries but the model has 2"),
        ({"name": "uniform", "no_edge": 0.9}, "valid settings: temperature"),
    ],
)
def test_bad_prior_settings_are_refused_clearly(settings, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        build_prior(settings, 2)


def test_a_user_prior_is_one_class_and_a_name():
    @register_prior("test-mostly-type-1")
    class MostlyOne(EdgePrior):
        def __init__(self, num_edge_types, temperature=0.5, weight=3.0):
            super().__init__(num_edge_types, temperature)
            self.weight = weight

        def probs(self, like):
            p = torch.ones(self.num_edge_types, device=like.device, dtype=like.dtype)
            p[1] = self.weight
            return p / p.sum()

    try:
        x, _ = random_graph_data()
        model, guide = build(None, None, x, overrides=[*TINY, "prior.name=test-mostly-type-1"])
        model_trace, _ = _sites(model, guide, x)
        probs = model_trace.nodes["edges"]["fn"].base_dist.probs
        assert torch.allclose(probs[0, 0], torch.tensor([0.25, 0.75]))
    finally:
        del PRIORS["test-mostly-type-1"]


# --- layouts and sites -------------------------------------------------------------------


def test_the_symmetric_model_and_guide_have_one_latent_per_unordered_pair():
    x, _ = random_graph_data()
    model, guide = build(None, None, x, overrides=[*TINY, "graph.symmetric=true"])
    model_trace, guide_trace = _sites(model, guide, x)
    assert model_trace.nodes["edges"]["value"].shape == (6, 6, 2)  # B, U = 4*3/2, K
    assert guide_trace.nodes["edges"]["value"].shape == (6, 6, 2)
    probs = edges_to_adjacency(guide.edge_probs(x), 4, dim=-2)
    assert torch.equal(probs, probs.transpose(1, 2))  # identical, not merely close


def test_a_shared_graph_is_one_global_latent_outside_the_plate():
    x, _ = random_graph_data()
    model, guide = build(None, None, x, overrides=[*TINY, "graph.shared=true"])
    model_trace, guide_trace = _sites(model, guide, x, num_trajectories=60)
    for trace in (model_trace, guide_trace):
        site = trace.nodes["edges"]
        assert site["value"].shape == (12, 2) and not _in_plate(site)
    assert _in_plate(model_trace.nodes["x"])
    probs = guide.edge_probs(x)
    assert torch.equal(probs, probs[:1].expand_as(probs))


def test_the_dirichlet_prior_puts_matching_global_sites_in_model_and_guide():
    x, _ = random_graph_data()
    model, guide = build(None, None, x, overrides=[*TINY, "prior.name=dirichlet"])
    model_trace, guide_trace = _sites(model, guide, x, num_trajectories=60)
    for trace in (model_trace, guide_trace):
        site = trace.nodes["edge_freqs"]
        assert isinstance(site["fn"], dist.Dirichlet) and not _in_plate(site)
    # the edges' prior is Categorical(pi) with the pi the guide drew
    pi = guide_trace.nodes["edge_freqs"]["value"]
    assert torch.allclose(model_trace.nodes["edges"]["fn"].base_dist.probs[0, 0], pi)


def test_the_dirichlet_posterior_is_the_conjugate_update_scaled_to_the_dataset():
    post = DirichletPosterior(torch.tensor([1.0, 2.0]), momentum=0.5)
    probs = torch.tensor([[[0.9, 0.1], [0.2, 0.8]]])  # one trajectory, two edges
    q = post.posterior(probs, scale=10.0)  # training: this minibatch, 10x
    assert torch.allclose(q.concentration, torch.tensor([1 + 11.0, 2 + 9.0]))
    post.posterior(torch.tensor([[[1.0, 0.0], [1.0, 0.0]]]), scale=10.0)
    post.eval()  # evaluation: the running average of the scaled counts, not the batch's
    q = post.posterior(torch.tensor([[[0.0, 1.0], [0.0, 1.0]]]))
    assert torch.allclose(q.concentration, torch.tensor([1 + 15.5, 2 + 4.5]))


def test_known_edges_from_the_spec_condition_model_and_guide():
    x, _ = random_graph_data()
    model, guide = build(None, None, x, overrides=[*TINY, f"graph.known.adjacency={KNOWN}"])
    model_trace, _ = _sites(model, guide, x)
    known = model_trace.nodes["known_edges"]
    assert known["is_observed"] and known["value"].shape == (6, 12)
    probs = edges_to_adjacency(guide.edge_probs(x), 4, dim=-2)
    assert torch.equal(probs[:, 0, 1], torch.tensor([[0.0, 1.0]]).expand(6, 2))
    assert torch.equal(probs[:, 0, 2], torch.tensor([[1.0, 0.0]]).expand(6, 2))
    # the decoder sees the known types, whatever the latent sample
    z = model_trace.nodes["_RETURN"]["value"]
    assert torch.equal(edges_to_adjacency(z, 4, dim=-2)[:, 1, 0], probs[:, 1, 0])


# --- every prior, every structure, both objectives, hard and soft: finite ----------------

COMBINATIONS = list(
    itertools.product(
        ["uniform", "sparse", "dirichlet"],
        [
            (),
            ("graph.symmetric=true",),
            ("graph.shared=true",),
            (f"graph.known.adjacency={KNOWN}",),
        ],
    )
) + [  # the node-level prior: no shared graph, no known edges (any structure given: no
    # edges passed at call time)
    ("charges", ("graph.symmetric=true", "decoder.skip_first=false")),
    ("charges", ("graph.symmetric=false", "prior.inference=mean_field", "prior.same=1")),
]


def _steps_are_finite(
    device: torch.device, prior: str, structure: tuple, objective, hard: bool,
    within=contextlib.nullcontext,
):  # fmt: skip
    """Train 3 steps on ``device``, evaluate, draw importance weights: all finite. Our code
    (not the optimiser's) runs inside ``within()``."""
    x, edges = random_graph_data()
    x, edges = x.to(device), edges.to(device)
    overrides = [*TINY, f"prior.name={prior}", f"guide.hard={str(hard).lower()}", *structure]
    model, guide = build(None, None, x, overrides=overrides)
    model.to(device), guide.to(device)
    loss_fn = objective()(model, guide)
    optimizer = torch.optim.Adam(loss_fn.parameters(), lr=1e-2)
    conditioned = {} if structure else {"edges": edges, "edge_mask": edges_to_mask(edges)}
    for _ in range(3):
        optimizer.zero_grad()
        with within():
            loss = loss_fn(x, num_trajectories=100, **conditioned)
            loss.backward()
        optimizer.step()
        assert torch.isfinite(loss)
        assert all(torch.isfinite(p).all() for p in loss_fn.parameters())
    with within():
        metrics = evaluate(model, guide, x, edges, device=device)
        weights = importance_log_weights(model, guide, x, num_samples=4, device=device)
    assert all(math.isfinite(metrics[k]) for k in ("nll", "elbo_loss", "edge_accuracy"))
    assert weights.shape == (6, 4) and torch.isfinite(weights).all()


def edges_to_mask(edges):
    return torch.arange(edges.shape[1], device=edges.device).expand_as(edges) % 3 == 0


@pytest.mark.parametrize(("prior", "structure"), COMBINATIONS)
@pytest.mark.parametrize("objective", [pyro.infer.TraceMeanField_ELBO, pyro.infer.Trace_ELBO])
@pytest.mark.parametrize("hard", [False, True])
def test_every_prior_trains_without_nan_on_the_cpu(prior, structure, objective, hard):
    _steps_are_finite(torch.device("cpu"), prior, structure, objective, hard)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize(("prior", "structure"), COMBINATIONS)
@pytest.mark.parametrize("hard", [False, True])
def test_every_prior_trains_without_nan_on_cuda(prior, structure, hard):
    for objective in (pyro.infer.TraceMeanField_ELBO, pyro.infer.Trace_ELBO):
        _steps_are_finite(torch.device("cuda"), prior, structure, objective, hard)


@pytest.mark.parametrize(("prior", "structure"), COMBINATIONS)
def test_every_prior_makes_its_tensors_on_the_device_of_therandom_graph_data(prior, structure):
    """What a first run on CUDA would catch, caught on the CPU: with torch's default device
    set to "meta", any tensor that model, guide, training or evaluation create without
    following their input's device lands on "meta" and meets the CPU data in an error."""

    def trap():
        return torch.device("meta")

    with trap():
        assert torch.zeros(1).device.type == "meta"  # the trap is set
    for objective in (pyro.infer.TraceMeanField_ELBO, pyro.infer.Trace_ELBO):
        _steps_are_finite(torch.device("cpu"), prior, structure, objective, True, within=trap)


# --- the held-out evidence estimator -----------------------------------------------------


def test_importance_sampling_matches_the_exact_evidence_of_a_two_object_system():
    """With 2 objects there are 2 ordered pairs and 4 graphs: log p(x) can be summed exactly."""
    x, _ = random_graph_data(batch=3, n=2, frames=8, seed=3)
    for prior in ("sparse", "dirichlet"):
        torch.manual_seed(0)
        model, guide = build(None, None, x, overrides=[*TINY, f"prior.name={prior}"])
        model.eval(), guide.eval()
        with torch.no_grad():
            q = guide.slot_probs(x)
            pi = model.prior.probs(x) if prior == "sparse" else guide.prior_guide.posterior().mean
            exact = []
            for graph in itertools.product(range(2), repeat=2):
                z = torch.nn.functional.one_hot(torch.tensor(graph), 2).float().expand(3, 2, 2)
                loc = model.predict(x, z)
                log_lik = dist.Normal(loc, model.sigma).log_prob(x[:, :, 1:]).sum((1, 2, 3))
                exact.append(log_lik + pi.log()[list(graph)].sum())
            exact = torch.logsumexp(torch.stack(exact, -1), -1)
        estimate = log_evidence(importance_log_weights(model, guide, x, num_samples=1000))
        assert q.shape == (3, 2, 2)
        # the Dirichlet's pi is drawn per sample: E[log p] under q(pi) is below log p(pi-mean)
        tolerance = 0.05 if prior == "sparse" else 0.5
        assert torch.allclose(estimate, exact, atol=tolerance), (prior, estimate, exact)
