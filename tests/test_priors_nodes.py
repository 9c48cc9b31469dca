"""The node-level prior ``charges`` (nri_pyro.priors.nodes): a sign per object, each pair's
type the product of the two signs. Its graphs, its sites in model and guide, the guide's
inference, the exact evidence, and every refusal."""

from __future__ import annotations

import itertools
import math

import pyro
import pytest
import torch
from common import random_graph_data, tiny
from pyro import poutine

from nri_pyro.api import build
from nri_pyro.data.dataset import Normalizer
from nri_pyro.evaluation import importance_log_weights, log_evidence
from nri_pyro.evidence import count_graphs, held_out_log_evidence
from nri_pyro.nn import edges_to_adjacency
from nri_pyro.nn.graph import edge_index
from nri_pyro.objectives import MeanFieldLoss
from nri_pyro.priors import ChargePrior, build_prior
from nri_pyro.specs import load_spec, resolve_model_spec
from nri_pyro.train_config import TrainConfig
from nri_pyro.training import Trainer

TINY = tiny(8)
CHARGES = ["prior.name=charges", "decoder.skip_first=false"]


def _charged_edges(signs: torch.Tensor) -> torch.Tensor:
    """The charged system's stored labels [B, E] of signs [B, N] in {-1, +1}:
    (q_i q_j + 1) / 2, receiver-major."""
    receivers, senders = edge_index(signs.shape[1], None)
    return ((signs[:, receivers] * signs[:, senders] + 1) // 2).long()


def _all_balanced_graphs(n: int) -> set[tuple[int, ...]]:
    graphs = set()
    for rest in itertools.product([-1, 1], repeat=n - 1):
        signs = torch.tensor([[1, *rest]])
        graphs.add(tuple(_charged_edges(signs)[0].tolist()))
    return graphs


# --- the prior's graphs ------------------------------------------------------------------


@pytest.mark.parametrize("n", [2, 4, 5])
def test_the_joint_latent_enumerates_exactly_the_balanced_graphs(n):
    prior = ChargePrior(2, same=1)
    table = prior.assignment_edges(n, torch.zeros(()))  # [G, E, 2]
    assert table.shape == (2 ** (n - 1), n * (n - 1), 2) and prior.num_graphs(n) == len(table)
    graphs = [tuple(row.tolist()) for row in table.argmax(-1)]
    assert set(graphs) == _all_balanced_graphs(n) and len(set(graphs)) == len(graphs)
    # same: null adds the other labelling's graphs (the same graphs with types swapped)
    either = ChargePrior(2).assignment_edges(n, torch.zeros(())).argmax(-1)
    assert either.shape[0] == 2**n and ChargePrior(2).num_graphs(n) == 2**n
    swapped = {tuple((1 - torch.tensor(g)).tolist()) for g in graphs}
    assert {tuple(row.tolist()) for row in either} == set(graphs) | swapped


@pytest.mark.parametrize("inference", ["joint", "mean_field"])
def test_one_hot_latents_give_the_charged_systems_labels_and_probabilities_their_marginals(
    inference,
):
    n, prior = 4, ChargePrior(2, same=1, inference=inference)
    signs = torch.tensor([[1, -1, -1, 1], [1, 1, 1, 1], [1, 1, -1, -1]])
    bits = (signs[:, 1:] < 0).long()  # object i's sign B where it differs from object 0's
    if inference == "joint":
        codes = (bits * 2 ** torch.arange(n - 1)).sum(-1)
        latent = torch.nn.functional.one_hot(codes, 2 ** (n - 1)).float()
    else:
        latent = torch.nn.functional.one_hot(bits, 2).float()
    edges = prior.edges(latent, n)
    assert torch.equal(edges.argmax(-1), _charged_edges(signs))
    assert torch.equal(edges.sum(-1), torch.ones(3, n * (n - 1)))
    # independent sign probabilities: P(equal) = p_i p_j + (1 - p_i)(1 - p_j)
    probs = torch.tensor([[0.9, 0.2, 0.6]])  # P(sign A) of objects 1..3; object 0 is A
    full = torch.cat([torch.ones(1, 1), probs], -1)
    receivers, senders = edge_index(n, None)
    p_r, p_s = full[:, receivers], full[:, senders]
    equal = p_r * p_s + (1 - p_r) * (1 - p_s)
    if inference == "joint":  # the product distribution over assignments
        assignment = prior.assignment_edges(n, probs)  # [G, E, 2]
        b = 1 - assignment[:, :1, :].new_tensor(
            [[(g >> i) & 1 for i in range(n - 1)] for g in range(2 ** (n - 1))]
        )  # [G, N-1]: 1 where object i+1 is A
        joint = (b * probs + (1 - b) * (1 - probs)).prod(-1, keepdim=True).T  # [1, G]
        marginal = prior.edges(joint, n)
    else:
        marginal = prior.edges(torch.stack([probs, 1 - probs], -1), n)
    torch.testing.assert_close(marginal[..., 1], equal)


def test_same_chooses_which_type_equal_signs_take():
    n = 3
    signs = torch.tensor([[1, -1, 1]])
    latent = torch.nn.functional.one_hot(torch.tensor([[1, 0]]), 2).float()
    flipped = ChargePrior(2, same=0, inference="mean_field").edges(latent, n).argmax(-1)
    assert torch.equal(flipped, 1 - _charged_edges(signs))
    # with same: null the latent's second half is that labelling
    either = ChargePrior(2)
    code = 2 ** (n - 1) + 1  # object 1's sign B, object 2's A; equal signs type 0
    one_hot = torch.nn.functional.one_hot(torch.tensor([code]), 2**n).float()
    assert torch.equal(either.edges(one_hot, n).argmax(-1), 1 - _charged_edges(signs))


# --- model, guide and the guide's inference ------------------------------------------------


@pytest.mark.parametrize(("inference", "same"), [("joint", "null"), ("joint", "1"),
                                               ("mean_field", "0")])  # fmt: skip
@pytest.mark.parametrize("symmetric", [False, True])
def test_model_and_guide_share_one_latent_per_trajectory_and_the_fast_path_matches_pyro(
    inference, same, symmetric
):
    x, _ = random_graph_data(batch=5, n=4, frames=14, seed=3)
    overrides = [*TINY, *CHARGES, f"prior.inference={inference}", f"prior.same={same}",
                 f"graph.symmetric={str(symmetric).lower()}"]  # fmt: skip
    model, guide = build(None, None, x, overrides)
    guide_trace = poutine.trace(guide).get_trace(x, num_trajectories=20)
    model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(
        x, num_trajectories=20
    )
    latent = [n for n, s in guide_trace.nodes.items() if s["type"] == "sample"]
    assert latent == ["trajectories", "signs"]  # no edge site: the edges are a function
    shape = (5, 16 if same == "null" else 8) if inference == "joint" else (5, 3, 2)
    for trace in (model_trace, guide_trace):
        site = trace.nodes["signs"]
        assert site["value"].shape == shape
        assert any(f.name == "trajectories" for f in site["cond_indep_stack"])
        assert site["fn"].event_shape == shape[1:] and site["fn"].batch_shape == (5,)
    z = model_trace.nodes["_RETURN"]["value"]  # [B, E, K], balanced for one-hot latents
    assert z.shape == (5, 12, 2)
    # The fast path computes what Pyro's ELBO does, on the same draws, gradients included.
    model.train(), guide.train()
    pyro_loss = pyro.infer.TraceMeanField_ELBO()(model, guide)
    fast_loss = MeanFieldLoss(model, guide)
    params = [p for p in fast_loss.parameters() if p.requires_grad]
    for loss_fn in (pyro_loss, fast_loss):
        torch.manual_seed(0)
        loss = loss_fn(x, num_trajectories=20, kl_weight=0.7)
        grads = torch.autograd.grad(loss, params)
        if loss_fn is pyro_loss:
            want, want_grads = loss.detach(), grads
    torch.testing.assert_close(loss.detach(), want, rtol=2e-6, atol=1e-4)
    for g, w in zip(grads, want_grads, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-5)


def test_the_joint_guide_is_the_encoders_edge_posterior_restricted_to_balanced_graphs():
    n, prior = 4, ChargePrior(2)  # both labellings: 16 graphs
    logits = torch.randn(3, n * (n - 1), 2)
    q = torch.softmax(prior.node_logits(logits), -1)  # [B, G]
    table = prior.assignment_edges(n, logits).argmax(-1)  # [G, E]
    log_edge = torch.log_softmax(logits, -1)  # [B, E, 2]
    chosen = log_edge.gather(-1, table.T.unsqueeze(0).expand(3, -1, -1))  # [B, E, G]
    want = torch.softmax(0.5 * chosen.sum(1), -1)
    torch.testing.assert_close(q, want)


def test_mean_field_reads_every_pairs_evidence_with_object_0_as_the_reference():
    # Strong evidence on a chain 0-1, 1-2, 2-3 only: mean field carries it along the chain.
    n, prior = 4, ChargePrior(2, same=1, inference="mean_field", iterations=5)
    adjacency = torch.zeros(n, n)
    for i, j, equal in ((0, 1, True), (1, 2, False), (2, 3, False)):
        adjacency[i, j] = adjacency[j, i] = 6.0 if equal else -6.0
    receivers, senders = edge_index(n, None)
    log_odds = adjacency[receivers, senders]
    logits = torch.stack([torch.zeros_like(log_odds), log_odds], -1)[None]  # same = 1
    p_a = torch.softmax(prior.node_logits(logits), -1)[0, :, 0]  # P(sign of object 0)
    assert p_a[0] > 0.99 and p_a[1] < 0.01 and p_a[2] > 0.99  # objects 0..3: A, A, B, A
    edges = prior.edges(torch.softmax(prior.node_logits(logits), -1), n)[0].argmax(-1)
    assert torch.equal(edges, _charged_edges(torch.tensor([[1, 1, -1, 1]]))[0])


# --- evidence ----------------------------------------------------------------------------


@pytest.mark.parametrize(("inference", "same", "graphs"),
                         [("joint", "null", 16), ("joint", "1", 8), ("mean_field", "1", 8)])
def test_the_evidence_is_the_exact_sum_over_the_sign_assignments(inference, same, graphs):
    x, _ = random_graph_data(batch=3, n=4, frames=10, seed=1)
    overrides = [*TINY, *CHARGES, f"prior.inference={inference}", f"prior.same={same}",
                 "likelihood.variance=100.0"]  # fmt: skip
    torch.manual_seed(0)
    model, guide = build(None, None, x, overrides)
    model.eval(), guide.eval()
    assert count_graphs(model, 4) == graphs
    evidence = held_out_log_evidence(model, guide, x)
    assert evidence.method == "exact" and torch.isinf(evidence.pareto_k).all()
    # by hand: log mean over the balanced graphs of p(x | z)
    table = model.prior.assignment_edges(4, x)
    with torch.no_grad():
        log_lik = torch.stack([
            model.likelihood(x, z.expand(3, -1, -1)).log_prob(x[:, :, 1:]) for z in table
        ])  # fmt: skip
    want = torch.logsumexp(log_lik.double(), 0) - math.log(graphs)
    torch.testing.assert_close(evidence.log_evidence, want, rtol=0, atol=1e-3)
    # importance sampling from the guide agrees with it
    with torch.no_grad():
        # a broad likelihood: light weights
        weights = importance_log_weights(model, guide, x, num_samples=3000)
    torch.testing.assert_close(log_evidence(weights).double(), want, rtol=0, atol=0.05)
    with pytest.raises(ValueError, match="summed exactly, method 'exact'"):
        held_out_log_evidence(model, guide, x, method="local")


# --- refusals ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"name": "charges", "same": 2}, "prior.same .* must be 0, 1 or null"),
        ({"name": "charges", "inference": "mean_field"}, "set prior.same to 0 or 1"),
        ({"name": "charges", "inference": "exact"}, "one of auto, joint, mean_field"),
        ({"name": "charges", "iterations": 0}, "integer >= 1"),
        ({"name": "charges", "stay": 0.9}, "valid settings: inference, iterations, same"),
    ],
)
def test_bad_charges_settings_are_refused(settings, message):
    with pytest.raises(ValueError, match=message):
        build_prior(settings, 2)


def test_many_objects_need_a_labelling_for_mean_field():
    x = torch.randn(2, 13, 8, 4).cumsum(2) * 0.05
    _, guide = build("nri_charges", None, x, TINY)
    with pytest.raises(ValueError, match="13 objects: more than 12 .* set prior.same"):
        guide(x)
    _, guide = build("nri_charges", None, x, [*TINY, "prior.same=1"])
    assert guide.node_logits(x).shape == (2, 12, 2)  # a sign per object


def test_more_than_two_edge_types_are_refused():
    with pytest.raises(ValueError, match="must have 2 edge types .* but edge_types is 3"):
        resolve_model_spec(load_spec("model", {"base": "nri_charges", "edge_types": 3}))


@pytest.mark.parametrize(
    ("graph", "what"),
    [
        ({"dynamic": {"window": 5}}, "a dynamic graph"),
        ({"shared": True}, "a shared graph"),
        ({"known": {"fraction": 0.5, "seed": 0}}, "known edges"),
    ],
)
def test_structures_it_cannot_express_are_refused_when_the_spec_is_read(graph, what):
    with pytest.raises(ValueError, match=f"prior.name=charges .* does not take {what}"):
        resolve_model_spec(load_spec("model", {"base": "nri_charges", "graph": graph}))


def test_known_edges_at_call_time_are_refused():
    x, edges = random_graph_data(batch=3, n=4)
    model, guide = build("nri_charges", None, x, TINY)
    for call in (model, guide, MeanFieldLoss(model, guide)):
        with pytest.raises(ValueError, match="takes no known edges"):
            call(x, edges)


def _trainer(x, edges, overrides=()):
    model, guide = build("nri_charges", None, x, [*TINY, *overrides])
    config = TrainConfig(epochs=1, batch_size=4, progress=False)
    normalizer = Normalizer.fit(x, [[0, 1, 2, 3]])
    return Trainer(model, guide, (x, edges), None, config, normalizer=normalizer)


def test_training_refuses_data_whose_true_graphs_it_contradicts():
    x, _ = random_graph_data(batch=6, n=4)
    signs = torch.tensor([[1, -1, 1, 1]] * 6)
    charged = _charged_edges(signs)
    _trainer(x, charged)  # the charged system's graphs: accepted
    springs = charged.clone()
    springs[0] = torch.tensor([1, 0, 0, 1, 1, 0, 0, 1, 0, 0, 0, 0])  # springs 0-1, 1-2
    assert torch.equal(edges_to_adjacency(springs[:1], 4), edges_to_adjacency(springs[:1], 4).mT)
    with pytest.raises(ValueError, match="1 of 6 training graphs are not balanced .* springs"):
        _trainer(x, springs)
    directed = charged.clone()
    directed[1, 0] = 1 - directed[1, 0]
    with pytest.raises(ValueError, match="directed"):
        _trainer(x, directed)
    with pytest.raises(ValueError, match="with prior.same=0 they would all be balanced"):
        _trainer(x, 1 - charged, ["prior.same=1"])
    _trainer(x, 1 - charged, ["prior.same=0"])
    _trainer(x, 1 - charged)  # same: null takes either labelling


def test_the_exact_posterior_replaces_the_guides_and_closes_the_amortization_gap():
    from nri_pyro.evaluation import evaluate
    from nri_pyro.refine import exact_latent_logits

    x, _ = random_graph_data(batch=4, n=4, frames=10, seed=2)
    signs = torch.tensor([[1, -1, 1, -1], [1, 1, 1, -1], [1, 1, 1, 1], [1, -1, -1, 1]])
    truth = _charged_edges(signs)
    torch.manual_seed(0)
    model, guide = build(None, None, x, [*TINY, *CHARGES, "likelihood.variance=0.01"])
    model.eval(), guide.eval()
    logits = exact_latent_logits(model, x, rows=5)  # several passes
    table = model.prior.assignment_edges(4, x)
    with torch.no_grad():
        want = torch.stack([
            model.likelihood(x, z.expand(4, -1, -1)).log_prob(x[:, :, 1:]) for z in table
        ], dim=1) - math.log(16)  # fmt: skip
    torch.testing.assert_close(logits, want)
    evidence = held_out_log_evidence(model, guide, x).log_evidence
    torch.testing.assert_close(torch.logsumexp(logits.double(), 1), evidence, rtol=1e-6, atol=1e-3)
    metrics = evaluate(model, guide, x, truth, refine="exact")
    assert metrics["refine_steps"] == "exact" and metrics["amortization_gap"] > 0
    # its negative ELBO is the negative log evidence, to the one relaxed sample's noise
    assert metrics["elbo_loss"] == pytest.approx(-float(evidence.mean()), rel=0.05)
    with pytest.raises(ValueError, match="refine='exact' .* needs prior.name=charges"):
        uniform, uniform_guide = build(None, None, x, TINY)
        evaluate(uniform, uniform_guide, x, truth, refine="exact")
