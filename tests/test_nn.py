"""The GNN blocks: edge order, indexed vs dense message passing, equivariance, decoding schemes."""

import math
import threading

import pytest
import torch
from reference.dense_graph import DenseGraph, dense_graph

from nri_pyro.nn import (
    CNNEncoder,
    GlobalBatchNorm1d,
    Graph,
    MLPDecoder,
    MLPEncoder,
    RelationalEncoder,
    RNNDecoder,
    adjacency_to_edges,
    compile_modules,
    decoders,
    edges_to_adjacency,
    full_graph,
    global_batch_norms,
    parallel,
)
from nri_pyro.nn.encoders import MLP
from nri_pyro.nn.graph import FACTORIZE_FROM_FEATURES, permute_objects_edges
from nri_pyro.nn.parallel import Step

B, N, T, D, K, H = 3, 5, 16, 4, 2, 16
E = N * (N - 1)


def _data(seed=0, batch=B, frames=T, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, N, frames, D, generator=gen, dtype=dtype)
    edges = torch.softmax(torch.randn(batch, E, K, generator=gen, dtype=dtype), dim=-1)
    return x, edges


def _module(cls, **kwargs):
    torch.manual_seed(0)
    return cls(**kwargs).double().eval()


ENCODERS = {
    "mlp": lambda **kw: _module(MLPEncoder, num_frames=T, num_features=D, hidden=H, **kw),
    "cnn": lambda **kw: _module(CNNEncoder, num_features=D, hidden=H, **kw),
    "relational": lambda **kw: _module(RelationalEncoder, num_features=D, hidden=H, **kw),
}
DECODERS = {
    "mlp": lambda **kw: _module(
        MLPDecoder, num_features=D, msg_hidden=H, msg_out=H, hidden=H, **kw
    ),
    "rnn": lambda **kw: _module(RNNDecoder, num_features=D, hidden=H, **kw),
}


def test_edges_are_receiver_major_pairs_without_the_diagonal():
    g = Graph(3)
    pairs = list(zip(g.receivers.tolist(), g.senders.tolist(), strict=True))
    assert pairs == [(0, 1), (0, 2), (1, 0), (1, 2), (2, 0), (2, 1)]
    x = torch.arange(3.0)[:, None]  # object a has feature a
    e = g.node_to_edge(x)
    assert e[2].tolist() == [0.0, 1.0]  # edge (receiver 1, sender 0): sender features first
    incoming = g.edge_to_node(torch.arange(6.0)[:, None])
    assert incoming[:, 0].tolist() == [0 + 1, 2 + 3, 4 + 5]


def test_indexed_graph_equals_dense_graph_on_random_inputs():
    g, dense = Graph(N), DenseGraph(N)
    x = torch.randn(2, 7, N, 6, dtype=torch.float64)
    e = torch.randn(2, 7, E, 6, dtype=torch.float64)
    torch.testing.assert_close(g.node_to_edge(x), dense.node_to_edge(x))
    for mean in (False, True):
        torch.testing.assert_close(g.edge_to_node(e, mean), dense.edge_to_node(e, mean))
    torch.testing.assert_close(g.edge_to_node(e, mean=True) * (N - 1), g.edge_to_node(e))


def test_full_graph_is_cached_per_size_device_and_kind():
    assert full_graph(4, "cpu") is full_graph(4, torch.device("cpu"))
    assert full_graph(4) is not full_graph(5)
    assert isinstance(dense_graph(4), DenseGraph) and dense_graph(4) is dense_graph(4)


@pytest.mark.parametrize("dtype", [torch.long, torch.float32, torch.bool])
def test_adjacency_and_edges_round_trip(dtype):
    adj = torch.randint(0, 2, (6, N, N)).to(dtype)
    adj[:, range(N), range(N)] = 0
    edges = adjacency_to_edges(adj)
    assert edges.shape == (6, E) and edges.dtype == dtype
    assert torch.equal(edges_to_adjacency(edges, N), adj)
    g = Graph(N)
    assert torch.equal(edges[:, 3], adj[:, g.receivers[3], g.senders[3]])


def test_adjacency_of_probabilities_keeps_the_type_dimension_and_fills_the_diagonal():
    _, probs = _data()
    adj = edges_to_adjacency(probs, N, fill=-1.0, dim=-2)
    assert adj.shape == (B, N, N, K)
    assert torch.all(adj[:, range(N), range(N)] == -1.0)
    torch.testing.assert_close(adjacency_to_edges(adj, dim=-3), probs)


def test_edges_to_adjacency_says_which_dimension_is_wrong():
    with pytest.raises(ValueError, match="E = N\\(N-1\\) = 20"):
        edges_to_adjacency(torch.zeros(B, E, K), N)


def test_permute_objects_edges_matches_relabelling_the_adjacency():
    perm = torch.tensor([3, 0, 4, 1, 2])
    adj = torch.randint(0, 3, (N, N))
    relabelled = adj[perm][:, perm]  # new object a is old object perm[a]
    assert torch.equal(
        adjacency_to_edges(adj)[permute_objects_edges(perm)], adjacency_to_edges(relabelled)
    )


@pytest.mark.parametrize("name", ["mlp", "cnn", "relational"])
@pytest.mark.parametrize("factor", [True, False])
def test_encoders_give_the_same_logits_with_indexed_and_dense_graphs(name, factor):
    encoder = ENCODERS[name](factor=factor)
    x, _ = _data()
    logits = encoder(x, Graph(N))
    assert logits.shape == (B, E, K)
    torch.testing.assert_close(logits, encoder(x, DenseGraph(N)), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ["mlp", "rnn"])
def test_decoders_give_the_same_predictions_with_indexed_and_dense_graphs(name):
    decoder = DECODERS[name]()
    x, edges = _data()
    out = decoder(x, edges, Graph(N), prediction_steps=3)
    assert out.shape == (B, N, T - 1, D)
    torch.testing.assert_close(
        out, decoder(x, edges, DenseGraph(N), prediction_steps=3), atol=1e-5, rtol=1e-5
    )


@pytest.mark.parametrize("name", ["mlp", "rnn"])
def test_decoders_with_several_message_types_match_the_dense_graph(name):
    decoder = DECODERS[name](num_edge_types=3, skip_first=False)  # three message MLPs
    x, _ = _data()
    edges = torch.softmax(torch.randn(B, E, 3, dtype=x.dtype), dim=-1)
    out = decoder(x, edges, Graph(N), prediction_steps=3)
    dense = decoder(x, edges, DenseGraph(N), prediction_steps=3)
    torch.testing.assert_close(out, dense, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ["mlp", "cnn", "relational"])
def test_permuting_objects_permutes_the_encoder_logits(name):
    encoder = ENCODERS[name]()
    x, _ = _data()
    perm = torch.randperm(N, generator=torch.Generator().manual_seed(1))
    graph = full_graph(N)
    expected = encoder(x, graph)[:, permute_objects_edges(perm)]
    torch.testing.assert_close(encoder(x[:, perm], graph), expected)


@pytest.mark.parametrize("name", ["mlp", "rnn"])
def test_skip_first_type_zero_sends_no_message(name):
    x, edges = _data()
    graph = full_graph(N)
    no_messages = torch.zeros_like(edges)
    type0 = torch.zeros_like(edges)
    type0[..., 0] = 1.0
    reweighted = edges.clone()
    reweighted[..., 0] = 5.0 * torch.rand(B, E, dtype=edges.dtype)

    decoder = DECODERS[name](skip_first=True)
    out = decoder(x, edges, graph)
    torch.testing.assert_close(decoder(x, reweighted, graph), out)
    torch.testing.assert_close(decoder(x, type0, graph), decoder(x, no_messages, graph))

    # Without skip-first, type 0 is an ordinary message-sending type.
    decoder = DECODERS[name](skip_first=False)
    assert not torch.allclose(decoder(x, reweighted, graph), decoder(x, edges, graph))


@pytest.mark.parametrize("prediction_steps", [1, 4, 20])
def test_mlp_decoder_forward_is_a_rollout_from_every_pth_ground_truth_frame(prediction_steps):
    decoder = DECODERS["mlp"]()
    x, edges = _data()
    graph = full_graph(N)
    out = decoder(x, edges, graph, prediction_steps=prediction_steps)
    assert out.shape == (B, N, T - 1, D)
    for t in range(T - 1):
        start, s = divmod(t, prediction_steps)
        start *= prediction_steps
        expected = decoder.rollout(x[:, :, start], edges, graph, steps=s + 1)[:, :, s]
        torch.testing.assert_close(out[:, :, t], expected)


def test_mlp_decoder_step_broadcasts_edges_over_time():
    decoder = DECODERS["mlp"]()
    x, edges = _data()
    graph = full_graph(N)
    per_frame = decoder.step(x.transpose(1, 2), edges[:, None], graph)  # [B, T, N, D]
    torch.testing.assert_close(per_frame[:, 3], decoder.step(x[:, :, 3], edges, graph))


def test_rnn_decoder_rollout_continues_a_burnt_in_prefix():
    decoder = DECODERS["rnn"]()
    x, edges = _data()
    graph = full_graph(N)
    prefix = 6
    rollout = decoder.rollout(x[:, :, :prefix], edges, graph, steps=T - prefix)
    assert rollout.shape == (B, N, T - prefix, D)
    burnt_in = decoder(x, edges, graph, burn_in_steps=prefix)
    torch.testing.assert_close(burnt_in[:, :, prefix - 1 :], rollout)
    # After burn-in it never reads ground truth again.
    changed = x.clone()
    changed[:, :, prefix:] += 1.0
    torch.testing.assert_close(decoder(changed, edges, graph, burn_in_steps=prefix), burnt_in)


def test_rnn_decoder_with_one_prediction_step_reads_ground_truth_every_step():
    decoder = DECODERS["rnn"]()
    x, edges = _data()
    graph = full_graph(N)
    out = decoder(x, edges, graph, prediction_steps=1)
    t = 5
    later = x.clone()
    later[:, :, t + 2] += 1.0
    torch.testing.assert_close(
        decoder(later, edges, graph, prediction_steps=1)[:, :, : t + 2], out[:, :, : t + 2]
    )
    now = x.clone()
    now[:, :, t] += 1.0
    changed = decoder(now, edges, graph, prediction_steps=1)
    torch.testing.assert_close(changed[:, :, :t], out[:, :, :t])
    assert not torch.allclose(changed[:, :, t], out[:, :, t])


def test_relational_encoder_lets_every_edge_read_every_other():
    encoder = ENCODERS["relational"]()
    x, _ = _data()
    changed = x.clone()
    changed[:, 3:] = torch.randn_like(changed[:, 3:])  # objects 3 and 4 only
    graph = full_graph(N)
    untouched = [e for e, (i, j) in enumerate(zip(*graph_pairs(N), strict=True))
                 if i < 3 and j < 3]  # fmt: skip
    # the CNN encoder's factor pass mixes edges too; without it only attention does
    plain = ENCODERS["cnn"](factor=False)
    relational = ENCODERS["relational"](factor=False)
    # fresh, its attention adds nothing: it is the CNN encoder (the same seed, the same
    # weights); what it would learn is stood in for by random output projections
    torch.testing.assert_close(relational(x, graph), plain(x, graph), rtol=0, atol=0)
    with torch.no_grad():
        for block in relational.relations.layers:
            for out in (block.self_attn.out_proj, block.linear2):
                out.weight.normal_(0, 0.3)
    assert torch.equal(plain(x, graph)[:, untouched], plain(changed, graph)[:, untouched])
    assert not torch.allclose(relational(x, graph)[:, untouched],
                              relational(changed, graph)[:, untouched])  # fmt: skip
    assert encoder(x, graph).shape == (B, E, K)


def graph_pairs(n):
    from nri_pyro.nn.graph import edge_index

    return edge_index(n, None)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"layers": 0}, "guide.encoder.layers must be an integer >= 1"),
        ({"heads": 3}, r"hidden \(16\) must be a multiple of guide.encoder.heads \(3\)"),
    ],
)
def test_relational_encoder_refuses_bad_settings(settings, message):
    with pytest.raises(ValueError, match=message):
        RelationalEncoder(num_features=D, hidden=H, **settings)


def test_mlp_encoder_refuses_another_frame_count():
    encoder = ENCODERS["mlp"]()
    x, _ = _data(frames=T - 2)
    with pytest.raises(ValueError, match=f"exactly {T} frames.*got T = {T - 2}"):
        encoder(x, full_graph(N))


def test_cnn_encoder_refuses_too_short_trajectories():
    encoder = ENCODERS["cnn"]()
    encoder(_data(frames=14)[0], full_graph(N))  # the minimum works
    with pytest.raises(ValueError, match="at least 14 frames, got T = 13"):
        encoder(_data(frames=13)[0], full_graph(N))


def test_bad_shapes_raise_value_errors_that_name_expected_and_got():
    x, edges = _data()
    encoder, decoder = ENCODERS["mlp"](), DECODERS["mlp"]()
    graph = full_graph(N)
    with pytest.raises(ValueError, match="4 dimensions"):
        encoder(x[0], graph)
    with pytest.raises(ValueError, match="x has 5 objects but the graph has 6"):
        encoder(x, full_graph(N + 1))
    with pytest.raises(ValueError, match=f"E = {E}.*K = {K}.*got shape \\(3, 20, 3\\)"):
        decoder(x, torch.cat([edges, edges[..., :1]], -1), graph)
    with pytest.raises(ValueError, match="B = 3"):
        decoder(x, edges[:2], graph)
    with pytest.raises(ValueError, match="N = 6"):
        decoder.step(x[:, :, 0], edges, full_graph(N + 1))
    with pytest.raises(ValueError, match="at least 2 edge types"):
        MLPDecoder(D, num_edge_types=1, skip_first=True)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_every_module_runs_on_cuda():
    cuda = torch.device("cuda")
    x, edges = (t.float().to(cuda) for t in _data())
    graph = full_graph(N, cuda)
    for encoder in ENCODERS.values():
        assert encoder().float().to(cuda)(x, graph).device.type == "cuda"
    mlp, rnn = (build().float().to(cuda) for build in DECODERS.values())
    outputs = [
        mlp(x, edges, graph),
        mlp.rollout(x[:, :, 0], edges, graph, steps=3),
        rnn(x, edges, graph, burn_in_steps=4),
        rnn.rollout(x[:, :, :4], edges, graph, steps=3),
        DenseGraph(N, cuda).edge_to_node(graph.node_to_edge(x[:, :, 0])),
        graph.node_to_edge_linear(x[:, :, 0], torch.ones(2 * D, 3, device=cuda)),
        graph.node_to_edge_linear(x[:, :, 0, :1].expand(B, N, 40), torch.ones(80, 3, device=cuda)),
    ]
    assert all(out.device.type == "cuda" for out in outputs)
    for decoder in (mlp, rnn):  # recomputed messages, backward included
        decoder.recompute_messages = True
        decoder(x, edges.requires_grad_(), graph).sum().backward()
        assert edges.grad.device.type == "cuda"


@pytest.mark.parametrize("features", [6, FACTORIZE_FROM_FEATURES])  # pairs GEMM, factorized
def test_node_to_edge_linear_equals_the_linear_map_of_the_edge_pairs(features):
    x = torch.randn(2, 3, N, features, dtype=torch.float64)
    weight = torch.randn(4, 2 * features, 5, dtype=torch.float64)  # 4 stacked maps
    bias = torch.randn(4, 5, dtype=torch.float64)
    pairs = Graph(N).node_to_edge(x)  # [2, 3, E, 2F]
    expected = torch.stack([pairs @ weight[k] + bias[k] for k in range(4)])
    for graph in (Graph(N), DenseGraph(N)):
        torch.testing.assert_close(graph.node_to_edge_linear(x, weight, bias), expected)
        torch.testing.assert_close(graph.node_to_edge_linear(x, weight[0]), pairs @ weight[0])
        relu = graph.node_to_edge_linear(x, weight[1], bias[1], torch.relu_)
        torch.testing.assert_close(relu, torch.relu(expected[1]))
    with pytest.raises(ValueError, match=f"2F = {2 * features} rows"):
        Graph(N).node_to_edge_linear(x, weight[:, :-2])


def test_edge_to_node_weighted_equals_weighting_then_summing():
    e = torch.randn(2, 3, E, 6, dtype=torch.float64)
    weights = torch.rand(2, 1, E, dtype=torch.float64)  # broadcast over the second dimension
    for graph in (Graph(N), DenseGraph(N)):
        for mean in (False, True):
            torch.testing.assert_close(
                graph.edge_to_node_weighted(e, weights, mean),
                Graph(N).edge_to_node(e * weights[..., None], mean),
            )


@pytest.mark.parametrize("features", [H, FACTORIZE_FROM_FEATURES])
@pytest.mark.parametrize("skip", [False, True])
def test_encoder_mlp_on_edges_equals_the_mlp_of_the_concatenated_pairs(skip, features):
    torch.manual_seed(0)
    mlp = MLP(2 * features + (H if skip else 0), H, H).double()
    x = torch.randn(B, N, features, dtype=torch.float64, requires_grad=True)
    s = torch.randn(B, E, H, dtype=torch.float64) if skip else None
    graph = full_graph(N)
    pairs = graph.node_to_edge(x)
    expected = mlp(torch.cat([pairs, s], -1) if skip else pairs)
    (grad,) = torch.autograd.grad(expected.square().sum(), x)
    out = mlp.on_edges(x, graph, s)
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(torch.autograd.grad(out.square().sum(), x)[0], grad)
    with pytest.raises(ValueError, match="takes"):
        mlp.on_edges(x[..., :-1], graph, s)


@pytest.mark.parametrize("name", ["mlp", "rnn"])
def test_recomputed_messages_give_the_same_predictions_and_gradients(name):
    x, edges = _data()
    edges.requires_grad_()
    graph = full_graph(N)
    results = []
    for recompute in (False, True):
        decoder = DECODERS[name](dropout=0.2, recompute_messages=recompute).train()
        torch.manual_seed(1)  # the same dropout masks: recomputation replays the RNG
        out = decoder(x, edges, graph, prediction_steps=4)
        grads = torch.autograd.grad(out.square().sum(), [edges, *decoder.parameters()])
        results.append((out, grads))
    torch.testing.assert_close(results[1], results[0])


@pytest.mark.parametrize("name", ["mlp", "rnn"])
def test_messages_recomputed_in_chunks_of_the_batch_are_the_same(name, monkeypatch):
    x, edges = _data()
    edges.requires_grad_()
    graph = full_graph(N)
    decoder = DECODERS[name](recompute_messages=True)
    results = []
    for chunk_bytes in (2**40, 1):  # one chunk; one per trajectory (B = 3)
        monkeypatch.setattr(decoders, "RECOMPUTE_CHUNK_BYTES", chunk_bytes)
        out = decoder(x, edges, graph, prediction_steps=4)
        grads = torch.autograd.grad(out.square().sum(), [edges, *decoder.parameters()])
        results.append((out, grads))
    torch.testing.assert_close(results[1], results[0])


def _saved_bytes(fn):
    """Bytes of the distinct tensors autograd keeps for the backward pass of fn()."""
    saved = {}

    def pack(t):
        saved[(t.untyped_storage().data_ptr(), t.dtype)] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return sum(saved.values()), out


def _decoder_saved_bytes(num_objects, recompute, batch=2, frames=12):
    torch.manual_seed(0)
    decoder = MLPDecoder(D, msg_hidden=H, msg_out=H, hidden=H, recompute_messages=recompute)
    x = torch.randn(batch, num_objects, frames, D)
    edges = torch.rand(batch, num_objects * (num_objects - 1), K)
    return _saved_bytes(lambda: decoder(x, edges, full_graph(num_objects)))[0]


def test_recomputed_messages_keep_node_sized_activations_only():
    kept = {n: _decoder_saved_bytes(n, recompute=False) for n in (10, 40)}
    recomputed = {n: _decoder_saved_bytes(n, recompute=True) for n in (10, 40)}
    assert kept[40] / kept[10] > 10  # E grows 17-fold: the messages dominate
    assert recomputed[40] / recomputed[10] < 5  # N grows 4-fold
    assert recomputed[40] < kept[40] / 10


def test_messages_are_recomputed_automatically_above_the_threshold(monkeypatch):
    below = _decoder_saved_bytes(20, recompute=None)
    assert below == _decoder_saved_bytes(20, recompute=False)
    monkeypatch.setattr(decoders, "RECOMPUTE_ABOVE_FRACTION", 0.0)
    assert _decoder_saved_bytes(20, recompute=None) == _decoder_saved_bytes(20, recompute=True)
    with torch.no_grad():  # nothing to keep: no checkpointing either
        assert _decoder_saved_bytes(20, recompute=None) == 0


def test_a_training_step_at_50_objects_keeps_memory_linear_in_the_edges():
    """A whole SVI step at N = 50 runs, and what it keeps for the backward pass is a few
    [B, E, H] tensors per decoder step and encoder layer: O(E H), nothing O(E N)."""
    import pyro

    from nri_pyro.api import build

    batch, frames = 2, 12

    def step(num_objects):
        torch.manual_seed(0)
        x = torch.randn(batch, num_objects, frames, D).cumsum(2) * 0.05
        tiny = [f"decoder.{k}={H}" for k in ("msg_hidden", "msg_out", "hidden")]
        model, guide = build(None, None, x, overrides=[*tiny, f"guide.encoder.hidden={H}"])
        elbo = pyro.infer.TraceMeanField_ELBO()
        saved, loss = _saved_bytes(lambda: elbo.differentiable_loss(model, guide, x))
        loss.backward()
        grads = [p.grad for p in (*model.parameters(), *guide.parameters())]
        assert all(g is not None and torch.isfinite(g).all() for g in grads)
        edge_tensor = batch * num_objects * (num_objects - 1) * H * 4  # bytes of [B, E, H]
        return saved / edge_tensor

    # The decoder keeps two per step (T - 1 = 11 of them) and its [B, E, 2D] input pairs
    # (half of one here, with H = 16, D = 4), the encoder about a dozen.
    assert step(50) < 2.5 * (frames - 1) + 15
    assert step(50) < 1.1 * step(25)  # memory per edge does not grow with N


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch's own, on importing dynamo
def test_compile_modules_compiles_the_encoder_and_decoder_only():
    from nri_pyro.api import build

    model, guide = build(None, None, _data(dtype=torch.float32)[0])
    assert compile_modules(model) == ["decoder"]
    assert compile_modules(guide) == ["encoder"]
    assert compile_modules(MLPEncoder(T, D, hidden=H)) == [""]


# --- batch norm swapped in, the data-parallel step as context (nri_pyro.nn.parallel) -------
@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_global_batch_norms_swap_every_batch_norm_and_change_nothing_outside_a_step(name):
    """Every BatchNorm1d of an encoder (the CNN's after its convolutions too) becomes a
    GlobalBatchNorm1d holding the same tensors: the state dict and, outside a
    data-parallel step, the outputs, gradients and running statistics are unchanged."""
    plain, swapped = ENCODERS[name]().train(), ENCODERS[name]().train()
    tensors = {k: v.data_ptr() for k, v in swapped.state_dict().items()}
    count = sum(type(m) is torch.nn.BatchNorm1d for m in swapped.modules())
    assert global_batch_norms(swapped) is swapped
    assert sum(isinstance(m, GlobalBatchNorm1d) for m in swapped.modules()) == count
    assert count == (5 if name == "cnn" else 4) and not any(
        type(m) is torch.nn.BatchNorm1d for m in swapped.modules()
    )
    assert {k: v.data_ptr() for k, v in swapped.state_dict().items()} == tensors
    x = _data()[0]
    out, ref = swapped(x, full_graph(N)), plain(x, full_graph(N))
    torch.testing.assert_close(out, ref, rtol=0, atol=0)
    out.square().sum().backward()
    ref.square().sum().backward()
    for (key, a), b in zip(swapped.named_parameters(), plain.parameters(), strict=True):
        torch.testing.assert_close(a.grad, b.grad, rtol=0, atol=0, msg=key)
    for (key, a), b in zip(swapped.state_dict().items(), plain.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=key)


@pytest.mark.parametrize("guide", ["mlp", "cnn"])
def test_the_guides_encoder_takes_the_global_batchs_statistics(guide):
    from nri_pyro.api import build

    _, nri_guide = build(None, guide, _data(dtype=torch.float32)[0])
    norms = [m for m in nri_guide.encoder.modules() if isinstance(m, torch.nn.BatchNorm1d)]
    assert norms and all(isinstance(m, GlobalBatchNorm1d) for m in norms)


def test_the_step_is_context_entered_and_left_explicitly():
    """stepping/paused set and restore the step (also on error), per thread; outside a
    step the reductions are this process's own."""
    step = Step(rank=1, world_size=2, global_batch=5)
    assert parallel.current_step() is None
    assert parallel.global_count(3) == 3
    with parallel.step_context(step):
        assert parallel.current_step() is step
        assert parallel.global_count(2) == 5  # rows 1 and 3 of 0..4
        with pytest.raises(RuntimeError, match="expected 2 local rows, got 3"):
            parallel.global_count(3)
        with parallel.paused():
            assert parallel.current_step() is None
        assert parallel.current_step() is step
        with pytest.raises(KeyError), parallel.paused():
            raise KeyError
        assert parallel.current_step() is step
        seen = []
        thread = threading.Thread(target=lambda: seen.append(parallel.current_step()))
        thread.start()
        thread.join()
        assert seen == [None]
    assert parallel.current_step() is None
    with pytest.raises(ValueError, match="rank must be in"):
        Step(rank=2, world_size=2, global_batch=4)


def test_local_rows_keeps_this_processs_rows_of_the_global_draw():
    def draw(shape):
        return torch.rand(shape, generator=torch.Generator().manual_seed(0))

    whole = draw(torch.Size([5, 3]))
    with parallel.step_context(Step(rank=1, world_size=2, global_batch=5)):
        torch.testing.assert_close(parallel.local_rows(torch.Size([2, 3]), draw), whole[1::2])
        # Not per trajectory (a global latent): drawn as asked, the same in every process.
        torch.testing.assert_close(parallel.local_rows(torch.Size([4, 3]), draw), draw([4, 3]))
    torch.testing.assert_close(parallel.local_rows(torch.Size([5, 3]), draw), whole)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch's own, on importing dynamo
def test_a_compiled_global_batch_norm_is_one_graph_outside_a_step():
    """torch.compile cannot read a ContextVar without splitting the graph; the step is read
    from a traceable copy while compiling, so the encoders compile as they did."""
    torch._dynamo.reset()
    bn = GlobalBatchNorm1d(H)
    compiled = torch.compile(bn, backend="eager", fullgraph=True)
    x = torch.randn(6, H, 5)
    torch.testing.assert_close(compiled(x), torch.nn.BatchNorm1d(H)(x))
    torch._dynamo.reset()


# --- components by registration (nri_pyro.nn.registry) ------------------------------------


def test_an_encoder_from_outside_the_package_trains_by_registration_alone():
    """A new encoder is one class plus its registration: the guide builds it from the spec,
    checks the frames it declares it needs, sizes evaluation batches by what it declares,
    and SVI trains it; no module of the package names it."""
    from nri_pyro import NRI, simulate
    from nri_pyro.nn import ENCODERS, Encoder, register_encoder

    @register_encoder("test-pairwise")
    class PairwiseEncoder(Encoder):
        """Each pair's two trajectories through one MLP: no messages between pairs."""

        min_frames = 3

        def __init__(self, num_features, num_frames, hidden=16, num_edge_types=2):
            super().__init__()
            self.hidden = hidden
            self.pair = torch.nn.Sequential(
                torch.nn.Linear(2 * num_frames * num_features, hidden), torch.nn.ELU()
            )
            self.out = torch.nn.Linear(hidden, num_edge_types)

        fixed_frames = True

        @property
        def feature_size(self):
            return self.hidden

        def edge_features(self, x, graph):
            pairs = graph.node_to_edge(x.flatten(2))  # [B, E, 2 T D]
            return self.pair(pairs)

        def output(self, features):
            return self.out(features)

    try:
        train = simulate("springs", 64, num_objects=3, num_frames=12, seed=0)
        valid = simulate("springs", 16, num_objects=3, num_frames=12, seed=0, split="valid")
        overrides = [
            "guide.encoder.name=test-pairwise", "guide.encoder.hidden=8", "decoder.hidden=8",
            "decoder.msg_hidden=8", "decoder.msg_out=8", "train.batch_size=16",
        ]  # fmt: skip
        nri = NRI(overrides=overrides, progress=False)
        nri.fit(train, valid, epochs=3)
        assert type(nri.guide.encoder) is PairwiseEncoder
        before = nri.guide.encoder.out.weight.detach().clone()
        losses = [record["train_loss"] for record in nri.history]
        assert all(math.isfinite(v) for v in losses) and losses[-1] < losses[0]
        assert not torch.equal(before, PairwiseEncoder(4, 12, hidden=8).out.weight)
        metrics = nri.evaluate(valid)
        assert 0.0 <= metrics["edge_accuracy"] <= 1.0
        assert compile_modules(nri.guide) == ["encoder"]  # it declared itself compilable
        refused = r"encoder\.depth for encoder 'test-pairwise'; valid keys: hidden, name"
        with pytest.raises(ValueError, match=refused):
            NRI(overrides=[*overrides, "guide.encoder.depth=2"])
    finally:
        del ENCODERS["test-pairwise"]
