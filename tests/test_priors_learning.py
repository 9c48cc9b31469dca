"""Each prior does its job, shown by short training runs (CPU, a minute or so each).

The data: springs with 5 objects, stronger springs than the paper's (interaction strength
0.5), and sparse graphs (each pair connected with probability 0.25), so that a small
network learns the graphs in a few epochs.
"""

from __future__ import annotations

import pytest
import torch

from nri_pyro import NRI, simulate
from nri_pyro.data.dataset import prepare
from nri_pyro.priors import GraphStructure

pytestmark = pytest.mark.slow

SPARSE = {"edge_prob": 0.25, "interaction_strength": 0.5}
NETWORK = [
    "decoder.msg_hidden=64",
    "decoder.msg_out=64",
    "decoder.hidden=64",
    "guide.encoder.hidden=64",
    "train.batch_size=32",
    "train.progress=false",
]


@pytest.fixture(scope="module")
def sparse_springs():
    return {
        split: simulate("springs", size, seed=1, split=split, **SPARSE)
        for split, size in (("train", 1000), ("valid", 200), ("test", 300))
    }


def _fit(splits, overrides, epochs):
    torch.set_num_threads(2)
    torch.manual_seed(0)
    nri = NRI(overrides=[*NETWORK, *overrides])
    return nri.fit(splits["train"], splits["valid"], epochs=epochs)


def _true_frequency(data) -> float:
    return float((data.edges != 0).float().mean())


def test_the_sparse_prior_lowers_the_inferred_edge_density_of_sparse_graphs(sparse_springs):
    """Under a broad likelihood (variance 0.05), where the prior carries weight, a sparse
    prior (90% "no edge") infers clearly fewer edges than the uniform prior on the same data.
    (With the paper's variance 5e-5 the likelihood outweighs any prior by orders of
    magnitude and the two differ by about 0.01 in density.)"""
    density = {}
    for prior in ("uniform", "sparse"):
        overrides = [f"prior.name={prior}", "likelihood.variance=0.05", "train.lr=0.003"]
        nri = _fit(sparse_springs, overrides, epochs=10)
        density[prior] = nri.evaluate(sparse_springs["test"])["edge_density"]
    print(f"inferred edge density {density}, true {_true_frequency(sparse_springs['test']):.3f}")
    assert density["sparse"] < density["uniform"] - 0.1


def test_the_dirichlet_prior_recovers_the_edge_frequency_of_the_data(sparse_springs):
    """The learned frequency of "any edge" (posterior mean of 1 - pi_0) is within 0.05 of
    the dataset's true frequency (0.244); a model that learned nothing says about 0.5.
    (At 15 epochs the figure sat on the threshold: it passed in CI and was 0.051 off on
    another machine; at 20 epochs it was 0.019 off there.)"""
    nri = _fit(sparse_springs, ["prior.name=dirichlet", "train.lr=0.005"], epochs=20)
    nri.guide.eval()
    learned = 1 - float(nri.guide.prior_guide.posterior().mean[0])
    accuracy = nri.evaluate(sparse_springs["test"])["edge_accuracy"]
    true = _true_frequency(sparse_springs["train"])
    print(f"learned edge frequency {learned:.4f}, true {true:.4f}, accuracy {accuracy:.4f}")
    assert abs(learned - true) < 0.05
    assert accuracy > 0.85


def test_conditioning_on_half_the_true_edges_raises_accuracy_on_the_other_half(sparse_springs):
    """Semi-supervised training (graph.known.fraction=0.5) against none, at the same short
    budget: accuracy of the encoder on the training edges that were never revealed."""
    train = sparse_springs["train"]
    known = {"fraction": 0.5, "seed": 3}
    hidden = ~GraphStructure({"known": known}, 2).training_mask(*train.edges.shape[:1], 5)
    accuracy = {}
    for fraction in (0.0, 0.5):
        overrides = ["train.lr=0.003", f"graph.known.fraction={fraction}", "graph.known.seed=3"]
        nri = _fit(sparse_springs, overrides, epochs=5)
        x, _ = prepare(train, nri.normalizer)
        nri.guide.eval()
        with torch.no_grad():
            predicted = nri.guide.edge_probs(x).argmax(-1)
        accuracy[fraction] = float((predicted[hidden] == train.edges[hidden]).float().mean())
    print(f"accuracy on the unrevealed edges: {accuracy}")
    assert accuracy[0.5] > accuracy[0.0] + 0.05


def test_a_shared_graph_recovers_the_one_graph_of_a_single_system():
    """Trajectories of one system (one fixed graph, different initial states): the shared
    graph's posterior names every one of its 20 ordered pairs correctly."""
    graph = torch.tensor(
        [[0, 1, 0, 0, 1], [1, 0, 1, 0, 0], [0, 1, 0, 0, 0], [0, 0, 0, 0, 1], [1, 0, 0, 1, 0]]
    )
    splits = {
        split: simulate("springs", size, seed=2, split=split, graph=graph, **SPARSE)
        for split, size in (("train", 300), ("valid", 50), ("test", 50))
    }
    nri = _fit(splits, ["graph.shared=true", "train.lr=0.003"], epochs=15)
    probs = nri.infer_edges(splits["test"], as_adjacency=True)  # [S, N, N, K]
    assert torch.equal(probs, probs[:1].expand_as(probs))  # one graph for all
    inferred = probs[0].argmax(-1).fill_diagonal_(0)
    assert torch.equal(inferred, graph), f"inferred {inferred.tolist()}"
    assert nri.evaluate(splits["test"])["edge_accuracy"] == 1.0
