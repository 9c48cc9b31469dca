"""The graph's structure: slots and layouts, symmetric, shared and known edges, and the
windows of a dynamic graph, each checked where the spec is resolved."""

from __future__ import annotations

import pytest
import torch
from common import random_graph_data

from nri_pyro.api import build
from nri_pyro.nn import edges_to_adjacency
from nri_pyro.structure import EdgeLayout, GraphStructure

KNOWN = "[[null,1,0,null],[1,null,null,0],[0,null,null,1],[null,0,1,null]]"


@pytest.mark.parametrize(("frames", "window"), [(20, 5), (23, 5), (4, 5), (49, 7), (50, 7)])
def test_window_spans_follow_the_one_window_rule(frames, window):
    structure = GraphStructure({"dynamic": {"window": window}}, 2)
    spans = structure.window_spans(frames, "cpu")
    count = max(1, frames // window)
    assert spans.shape == (count, 2) and spans[0, 0] == 0 and spans[-1, 1] == frames
    assert torch.equal(spans[1:, 0], spans[:-1, 1])  # contiguous, no frame twice
    of_frame = structure.window_of_frames(frames, "cpu")
    for w, (start, end) in enumerate(spans.tolist()):
        assert (of_frame[start:end] == w).all()
    # Every window but the last holds W frames; the last also the ones left over.
    assert ((spans[:-1, 1] - spans[:-1, 0]) == window).all()


def test_a_static_graph_has_no_windows_and_says_so():
    with pytest.raises(ValueError, match="static"):
        GraphStructure(None, 2).num_windows(10)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["graph.directed=true"],
            "no key 'directed' here; valid keys: dynamic, known, shared, symmetric",
        ),
        (["graph.symmetric=maybe"], "graph.symmetric must be true or false"),
        (["graph.known.fraction=1.5"], r"graph.known.fraction must lie in \[0, 1\]"),
        (["graph.known.adjacency=[[0,1],[1]]"], "must be a square N x N matrix"),
        (["graph.known.adjacency=[[0,3],[1,0]]"], r"known types must be integers in 0..1"),
        (["graph.shared=true", "graph.known.fraction=0.5"], "give graph.known.adjacency"),
    ],
)
def test_bad_graph_settings_are_refused_before_any_work(overrides, message):
    x, _ = random_graph_data()
    with pytest.raises(ValueError, match=message):
        build(None, None, x, overrides=overrides)


def test_a_known_adjacency_of_the_wrong_size_names_both_sizes():
    x, _ = random_graph_data(n=5)
    with pytest.raises(ValueError, match="is 4 x 4 but the data have 5 objects"):
        build(None, None, x, overrides=[f"graph.known.adjacency={KNOWN}"])


def test_symmetric_known_edges_must_agree_in_both_directions():
    x, _ = random_graph_data()
    asymmetric = (
        "[[null,1,null,null],[0,null,null,null],[null,null,null,null],[null,null,null,null]]"
    )
    overrides = ["graph.symmetric=true", f"graph.known.adjacency={asymmetric}"]
    with pytest.raises(ValueError, match="same type in both directions"):
        build(None, None, x, overrides=overrides)


def test_the_symmetric_layout_maps_both_directions_to_one_slot():
    layout = EdgeLayout(4, True, "cpu")
    assert layout.num_slots == 6 and layout.num_edges == 12
    slots = torch.arange(6.0).unsqueeze(-1)
    adj = edges_to_adjacency(layout.to_edges(slots), 4, dim=-2)[..., 0]
    assert torch.equal(adj, adj.T)
    assert sorted(adj[torch.triu_indices(4, 4, 1).unbind()].tolist()) == list(range(6))
    logits = torch.randn(12, 2)
    pair = layout.logits_to_slots(logits)
    a = edges_to_adjacency(logits, 4, dim=-2)
    assert torch.allclose(pair[0], (a[0, 1] + a[1, 0]) / 2)


def test_the_training_mask_reveals_the_requested_fraction_reproducibly():
    structure = GraphStructure({"known": {"fraction": 0.3, "seed": 4}}, 2)
    mask = structure.training_mask(2000, 5)
    assert mask.shape == (2000, 20)
    assert abs(mask.float().mean() - 0.3) < 0.02
    assert torch.equal(mask, structure.training_mask(2000, 5))
    symmetric = GraphStructure({"symmetric": True, "known": {"fraction": 0.3}}, 2)
    adj = edges_to_adjacency(symmetric.training_mask(10, 5), 5)
    assert torch.equal(adj, adj.transpose(1, 2))
