"""The trace-free fast path of the "nri" objective (nri_pyro.objectives.MeanFieldLoss)
against its judge, Pyro's TraceMeanField_ELBO: the same value and gradients on the same
draws, for every shipped spec and every structure, and a fallback to Pyro where it does
not apply."""

from __future__ import annotations

import pyro
import pytest
import torch

from nri_pyro.api import build
from nri_pyro.objectives import MeanFieldLoss, fast_path_unsupported, training_loss
from nri_pyro.specs import spec_names
from tests.common import random_graph_data, tiny

SHIPPED_MODELS = spec_names("model")
SHIPPED_GUIDES = spec_names("guide")

# Every structure and every prior with global latents, on top of the shipped specs.
VARIANTS = {
    "dirichlet-symmetric": ("nri_dirichlet", ["graph.symmetric=true"]),
    "sparse-hard": ("nri_sparse", ["guide.hard=true"]),
    "known-adjacency": ("nri", ["graph.known.adjacency=[[-1,1,-1,0],[1,-1,-1,-1],"
                                "[-1,-1,-1,1],[0,-1,1,-1]]"]),  # fmt: skip
    "shared-dirichlet": ("nri_shared", ["prior.name=dirichlet"]),
    "shared-known": ("nri_shared", ["graph.known.adjacency=[[-1,1,-1,-1],[1,-1,-1,-1],"
                                    "[-1,-1,-1,-1],[-1,-1,-1,-1]]"]),  # fmt: skip
    "markov-dirichlet-base": ("nri_markov", ["prior.base.name=dirichlet"]),
    "markov-learned": ({"base": "nri_markov", "prior": {"name": "markov_learned"}}, []),
    "dynamic-static-prior": ({"base": "nri_markov", "prior": {"name": "sparse"}}, []),
    "dynamic-recurrent": ("nri_markov", ["guide.recurrent.hidden=4"]),
    "rnn-burn-in": ("nri_rnn", ["decoder.burn_in_steps=5"]),
    "learned-variance": ("nri", ["likelihood.learn_variance=true",
                                 "likelihood.per_feature=true"]),  # fmt: skip
    "dropout": ("nri", ["decoder.dropout=0.2", "guide.encoder.dropout=0.2"]),
}


def _pair(model_spec, guide_spec, overrides, x):
    if model_spec == "nri_rnn":  # its decoder has one width
        overrides = ["decoder.hidden=8", "guide.encoder.hidden=8", *overrides]
    else:
        overrides = tiny(8, *overrides)
    model, guide = build(model_spec, guide_spec, x, overrides)
    model.train(), guide.train()
    return model, guide


def _loss_and_grads(loss_fn, params, x, seed, **kwargs):
    torch.manual_seed(seed)
    loss = loss_fn(x, num_trajectories=20, kl_weight=0.7, **kwargs)
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    return loss.detach(), grads


def _check_against_pyro(model_spec, guide_spec, overrides, known=False):
    x, edges = random_graph_data(batch=5, n=4, frames=14, seed=3)
    model, guide = _pair(model_spec, guide_spec, overrides, x)
    assert fast_path_unsupported(model, guide) is None
    pyro_loss = pyro.infer.TraceMeanField_ELBO()(model, guide)
    fast_loss = MeanFieldLoss(model, guide)
    params = [p for p in fast_loss.parameters() if p.requires_grad]
    assert params and {id(p) for p in params} == {id(p) for p in pyro_loss.parameters()}
    kwargs = {}
    if known:
        kwargs = {"edges": edges, "edge_mask": torch.rand(edges.shape) < 0.5}
    for seed in (0, 1):  # the second step sees running statistics the first one left
        want, want_grads = _loss_and_grads(pyro_loss, params, x, seed, **kwargs)
        got, got_grads = _loss_and_grads(fast_loss, params, x, seed, **kwargs)
        assert torch.isfinite(want)
        torch.testing.assert_close(got, want, rtol=2e-6, atol=1e-4)
        for (name, _), g, w in zip(fast_loss.named_parameters(), got_grads, want_grads,
                                   strict=True):  # fmt: skip
            if w is None:
                assert g is None or not g.any(), name
                continue
            torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-5, msg=lambda m, n=name: f"{n}: {m}")


@pytest.mark.parametrize("guide_spec", SHIPPED_GUIDES)
@pytest.mark.parametrize("model_spec", SHIPPED_MODELS)
def test_fast_path_equals_pyro_on_every_shipped_spec(model_spec, guide_spec):
    if model_spec == "nri_markov" and guide_spec in ("cnn", "relational"):
        pytest.skip("a 7-frame window is shorter than the CNN encoder reads")
    _check_against_pyro(model_spec, guide_spec, [])


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_fast_path_equals_pyro_on_every_structure(variant):
    model_spec, overrides = VARIANTS[variant]
    _check_against_pyro(model_spec, "mlp", overrides)


@pytest.mark.parametrize("model_spec", ["nri", "nri_symmetric", "nri_dirichlet"])
def test_fast_path_equals_pyro_with_edges_known_at_call_time(model_spec):
    _check_against_pyro(model_spec, "mlp", [], known=True)


def test_the_concrete_objective_falls_back_to_pyro_and_says_why():
    x, _ = random_graph_data(batch=3, n=4, frames=14)
    model, guide = _pair("nri", "mlp", [], x)
    loss, path = training_loss("concrete", model, guide)
    assert path == "pyro" and isinstance(loss, pyro.infer.elbo.ELBOModule)
    assert "Trace_ELBO" in fast_path_unsupported(model, guide, "concrete")
    with pytest.raises(ValueError, match="train.elbo = fast does not cover this run: the 'concrete'"):
        training_loss("concrete", model, guide, "fast")
    loss, path = training_loss("nri", model, guide, "pyro")
    assert path == "pyro"
    loss, path = training_loss("nri", model, guide)
    assert path == "fast" and isinstance(loss, MeanFieldLoss)
    with pytest.raises(ValueError, match="train.elbo must be one of auto, fast, pyro"):
        training_loss("nri", model, guide, "quick")


def test_the_fast_path_refuses_what_the_model_refuses():
    x, edges = random_graph_data(batch=3, n=4, frames=14)
    model, guide = _pair("nri_markov", "mlp", [], x)
    with pytest.raises(ValueError, match="takes no known edges"):
        MeanFieldLoss(model, guide)(x, edges)
    model, guide = _pair("nri", "mlp", [], x)
    with pytest.raises(ValueError, match=r"edges must have shape \[B, E\]"):
        MeanFieldLoss(model, guide)(x, edges[:, :3])


@pytest.mark.filterwarnings("ignore::UserWarning")  # dynamo's notes on lru_cache wrappers
@pytest.mark.parametrize(("model_spec", "graphs"), [("nri", 1), ("nri_symmetric", 1),
                                                    ("nri_markov", 1), ("nri_dirichlet", 2)])
def test_the_fast_path_compiles_to_one_graph_split_only_around_global_latents(model_spec, graphs):
    """train.compile compiles MeanFieldLoss.loss whole: one graph (forward and backward)
    without global latents; a Dirichlet's few Pyro sites run eagerly between two. (Steps
    that check the distributions' arguments, an epoch's first, run eagerly.)"""
    from nri_pyro.nn.decoders import recompute_threshold

    x, _ = random_graph_data(batch=4, n=5, frames=14)
    model, guide = _pair(model_spec, "mlp", [], x)
    loss = MeanFieldLoss(model, guide)
    recompute_threshold(x.device)  # what forward reads eagerly first
    with pyro.validation_enabled(False):  # as in training's compiled steps (forward)
        explained = torch._dynamo.explain(loss.loss)(x, None, None, None, 10, 1.0)
    assert explained.graph_count == graphs, explained.break_reasons
    torch._dynamo.reset()
