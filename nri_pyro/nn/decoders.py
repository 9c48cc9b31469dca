"""Decoders p(x | z): GNN dynamics models that pass messages only along typed edges."""

from __future__ import annotations

import math
import os

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from nri_pyro.nn.graph import Graph
from nri_pyro.nn.registry import Decoder, register_decoder

# Recomputed messages are recomputed in chunks of at most about this many bytes (fewer
# when the batch has fewer rows than that needs).
RECOMPUTE_CHUNK_BYTES = 64 * 2**20


class _TypedMLP(nn.Module):
    """One two-layer MLP per edge type on [x_sender, x_receiver] of every edge, its outputs
    weighted by the edge types and summed at the receivers (the decoders' messages).

    forward(x: [..., N, F], weights: [..., E, K'], graph) -> [..., N, n_out], where
    n_in = 2F. All types are computed at once by stacked weights, types outermost, so the
    second layer is one batched GEMM over contiguous rows. The first layer comes from
    ``Graph.node_to_edge_linear`` (per node and gathered, for wide inputs) and the weighting
    and sum are one matrix-vector product per receiver (``Graph.edge_to_node_weighted``):
    the only [..., E, H] tensors are the two layers' outputs, which the backward pass
    needs. With ``recompute=True`` those are not kept either but recomputed in the
    backward pass (activation checkpointing), in chunks of the batch of at most about
    ``RECOMPUTE_CHUNK_BYTES``: memory O(N H) instead of O(E H) for one more second-layer
    GEMM. (With dropout, chunks draw other masks than one pass would, equally distributed.)
    """

    def __init__(
        self,
        num_types: int,
        n_in: int,
        n_hidden: int,
        n_out: int,
        activation: str,
        dropout: float,
    ) -> None:
        super().__init__()
        self.w1 = nn.Parameter(torch.empty(num_types, n_in, n_hidden))
        self.b1 = nn.Parameter(torch.empty(num_types, n_hidden))
        self.w2 = nn.Parameter(torch.empty(num_types, n_hidden, n_out))
        self.b2 = nn.Parameter(torch.empty(num_types, n_out))
        self.activation_ = getattr(torch, activation + "_")  # "relu" or "tanh", in place
        self.dropout = nn.Dropout(dropout)
        # The same ranges as nn.Linear's default initialisation, per type.
        for w, b in ((self.w1, self.b1), (self.w2, self.b2)):
            bound = 1.0 / math.sqrt(w.shape[1])
            nn.init.uniform_(w, -bound, bound)
            nn.init.uniform_(b, -bound, bound)

    def bytes_per_edge(self, element_size: int = 4) -> int:
        """Bytes of the activations one call makes per edge and state: both layers' outputs,
        every type."""
        num_types, _, n_hidden = self.w1.shape
        return num_types * (n_hidden + self.w2.shape[-1]) * element_size

    def saved_bytes(self, x: Tensor, graph: Graph) -> int:
        """Bytes of the [..., E, H] activations one call keeps for the backward pass."""
        states = math.prod(x.shape[:-2])
        return states * graph.num_edges * self.bytes_per_edge(x.element_size())

    def forward(self, x: Tensor, weights: Tensor, graph: Graph, recompute: bool = False) -> Tensor:
        if not (recompute and torch.is_grad_enabled()):
            return self._messages(x, weights, graph)
        # Recomputed in chunks along the first (batch) dimension, whose rows are independent,
        # so that the messages the backward pass recomputes at once stay small too.
        chunks = min(x.shape[0], -(-self.saved_bytes(x, graph) // RECOMPUTE_CHUNK_BYTES))
        if x.dim() < 3 or chunks <= 1:
            return checkpoint(self._messages, x, weights, graph, use_reentrant=False)
        xs = x.tensor_split(chunks)
        if weights.dim() >= x.dim() and weights.shape[0] == x.shape[0]:
            ws = weights.tensor_split(chunks)
        else:  # broadcast over the first dimension
            ws = (weights,) * chunks
        parts = [
            checkpoint(self._messages, xk, wk, graph, use_reentrant=False)
            for xk, wk in zip(xs, ws, strict=True)
        ]
        return torch.cat(parts)

    def _messages(self, x: Tensor, weights: Tensor, graph: Graph) -> Tensor:
        num_types, _, n_hidden = self.w1.shape
        # The activations work in place, on fresh outputs whose backward needs only them.
        h = graph.node_to_edge_linear(x, self.w1, self.b1, self.activation_)  # [K', ..., E, H]
        h = self.dropout(h)
        # Second layer: block-diagonal, one batched GEMM with the types as the batch (one
        # GEMM for one type).
        if num_types == 1:
            msgs = torch.addmm(self.b2[0], h.view(-1, n_hidden), self.w2[0])
        else:
            msgs = torch.bmm(h.reshape(num_types, -1, n_hidden), self.w2)
            msgs = msgs.add_(self.b2.unsqueeze(1))  # in place: no broadcast copy of the bias
        msgs = self.activation_(msgs).view(*h.shape[:-1], -1)  # [K', ..., E, M]
        # A view for one type; unbind for more (its backward is one stack, where indexing's
        # would be a zero-filled copy per type).
        per_type = (msgs.squeeze(0),) if num_types == 1 else msgs.unbind(0)
        incoming = None
        for msgs_k, weights_k in zip(per_type, weights.unbind(-1), strict=True):
            term = graph.edge_to_node_weighted(msgs_k, weights_k)
            incoming = term if incoming is None else incoming + term
        return incoming  # [..., N, M]


class _OutputMLP(nn.Sequential):
    """The decoders' output network, predicting the change of a node's state.

    [..., n_in] -> [..., n_out], computed on the rows as one 2-D batch so that its ReLUs
    can work in place on the fresh outputs of the linear layers.
    """

    def __init__(self, n_in: int, hidden: int, n_out: int, dropout: float) -> None:
        super().__init__(
            nn.Linear(n_in, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden, n_out),
        )

    def forward(self, x: Tensor) -> Tensor:
        out = super().forward(x.reshape(-1, x.shape[-1]))
        return out.view(*x.shape[:-1], out.shape[-1])


def _message_types(num_edge_types: int, skip_first: bool) -> int:
    if num_edge_types < 1 + skip_first:
        raise ValueError(
            f"num_edge_types={num_edge_types} leaves no type that sends messages "
            f"(skip_first={skip_first}); use at least {1 + skip_first} edge types"
        )
    return num_edge_types - skip_first


def _check_step(x: Tensor, edges: Tensor, graph: Graph, num_features: int, k: int) -> None:
    if x.dim() < 2 or x.shape[-2] != graph.num_objects or x.shape[-1] != num_features:
        raise ValueError(
            f"x_t must be [..., N, D] with N = {graph.num_objects} (the graph's objects) and "
            f"D = {num_features}, got shape {tuple(x.shape)}"
        )
    if edges.dim() < 2 or tuple(edges.shape[-2:]) != (graph.num_edges, k):
        raise ValueError(
            f"edges must be [..., E, K] with E = {graph.num_edges} (the graph's edges) and "
            f"K = {k} edge types, got shape {tuple(edges.shape)}"
        )


def _check_sequence(
    x: Tensor, edges: Tensor, graph: Graph, num_features: int, k: int, min_frames: int
) -> None:
    if x.dim() != 4:
        raise ValueError(f"x must be [B, N, T, D] (4 dimensions), got shape {tuple(x.shape)}")
    batch, num_objects, frames, features = x.shape
    if num_objects != graph.num_objects or features != num_features:
        raise ValueError(
            f"x must be [B, N, T, D] with N = {graph.num_objects} (the graph's objects) and "
            f"D = {num_features}, got shape {tuple(x.shape)}"
        )
    if frames < min_frames:
        raise ValueError(f"x needs at least {min_frames} frames, got T = {frames}")
    expected = (graph.num_edges, k)
    if edges.dim() == 4 and edges.shape[0] in (1, batch) and edges.shape[2:] == expected:
        if edges.shape[1] != frames - 1:
            raise ValueError(
                f"per-step edges must be [B, T-1, E, K] with T-1 = {frames - 1} (the edges of "
                f"each step's source frame), got shape {tuple(edges.shape)}"
            )
        return
    if edges.dim() != 3 or edges.shape[0] not in (1, batch) or edges.shape[1:] != expected:
        raise ValueError(
            f"edges must be [B, E, K] (or [B, T-1, E, K] per step) with B = {batch} (or 1 to "
            f"share one graph), E = {graph.num_edges} (the graph's edges) and K = {k} edge "
            f"types, got shape {tuple(edges.shape)}"
        )


def _check_count(name: str, value: int, minimum: int) -> None:
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {value}")


# recompute_messages=None (automatic) recomputes the edge messages in the backward pass
# when those one forward pass would keep exceed this fraction of the device's memory.
RECOMPUTE_ABOVE_FRACTION = 0.25


# Total memory per device, read once; a dict that torch.compile reads as a constant once
# a device's entry exists (the fast path's eager checks make it: MeanFieldLoss.forward).
_DEVICE_MEMORY: dict[torch.device, int] = {}


def _device_memory(device: torch.device) -> int:
    """Total memory of a CUDA device, else the machine's physical memory."""
    if device not in _DEVICE_MEMORY:
        if device.type == "cuda":
            _DEVICE_MEMORY[device] = torch.cuda.get_device_properties(device).total_memory
        else:
            _DEVICE_MEMORY[device] = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return _DEVICE_MEMORY[device]


def recompute_threshold(device: torch.device | str) -> int:
    """Bytes of edge messages per forward pass above which the decoders recompute them
    (``recompute_messages=None``): ``RECOMPUTE_ABOVE_FRACTION`` of the device's memory."""
    return int(RECOMPUTE_ABOVE_FRACTION * _device_memory(torch.device(device)))


def _auto_recompute(messages: _TypedMLP, x: Tensor, graph: Graph, steps: int) -> bool:
    """recompute_messages=None: whether ``steps`` message passes over states like x keep
    more messages than ``recompute_threshold(x.device)``."""
    if not torch.is_grad_enabled():
        return False
    return steps * messages.saved_bytes(x, graph) > recompute_threshold(x.device)


def _recompute(setting: bool | None, messages: _TypedMLP, x: Tensor, graph: Graph,
               steps: int) -> bool:  # fmt: skip
    """Whether ``steps`` message passes over states like x recompute their messages."""
    return _auto_recompute(messages, x, graph, steps) if setting is None else setting


@register_decoder("mlp")
class MLPDecoder(Decoder):
    """The reference Markovian decoder: x_{t+1} = x_t + f(x_t, messages along typed edges).

    With ``skip_first`` edge type 0 sends no message, which anchors it as "no interaction".
    ``recompute_messages``: recompute each step's edge messages in the backward pass instead
    of keeping them (activation checkpointing), which takes the memory of a training step
    from O(E H) to O(N H) per step for one more message GEMM (about a quarter more time);
    None (the default) does so when the messages one forward pass would keep exceed
    ``recompute_threshold(device)``, a quarter of the device's memory (at batch 16 and
    hidden 256 they take 1.6 MB per edge: 16 GB for 100 objects).
    """

    def __init__(
        self,
        num_features: int,
        num_edge_types: int = 2,
        msg_hidden: int = 256,
        msg_out: int = 256,
        hidden: int = 256,
        dropout: float = 0.0,
        skip_first: bool = True,
        recompute_messages: bool | None = None,
    ) -> None:
        super().__init__()
        self.recompute_messages = recompute_messages
        self.num_features = num_features
        self.num_edge_types = num_edge_types
        self.skip_first = skip_first
        num_types = _message_types(num_edge_types, skip_first)
        self.messages = _TypedMLP(num_types, 2 * num_features, msg_hidden, msg_out, "relu", dropout)
        self.out = _OutputMLP(num_features + msg_out, hidden, num_features, dropout)

    per_step_edges = True
    markovian = True

    def bytes_per_edge(self, num_frames: int, prediction_steps: int) -> int:
        """Every block of the trajectory advances at once: one step's messages per block."""
        blocks = math.ceil((num_frames - 1) / prediction_steps)
        return blocks * self.messages.bytes_per_edge()

    def step(self, x_t: Tensor, edges: Tensor, graph: Graph, *, recompute: bool = False) -> Tensor:
        """One step. x_t: [..., N, D], edges: [..., E, K] (broadcast) -> x_{t+1}: [..., N, D].

        ``recompute``: recompute its messages in the backward pass instead of keeping them.
        """
        _check_step(x_t, edges, graph, self.num_features, self.num_edge_types)
        weights = edges[..., int(self.skip_first) :]  # [..., E, K']
        incoming = self.messages(x_t, weights, graph, recompute)  # [..., N, M]
        return x_t + self.out(torch.cat([x_t, incoming], dim=-1))

    def forward(self, x: Tensor, edges: Tensor, graph: Graph, prediction_steps: int = 10) -> Tensor:
        """Predictions of x[:, :, 1:] with ground truth fed every ``prediction_steps`` frames.

        x: [B, N, T, D], edges: [B, E, K] -> [B, N, T-1, D]. Output frame t (predicting frame
        t+1) is a ((t mod P) + 1)-step rollout from ground truth at frame P * floor(t / P).
        Edges that change over time are given per step, [B, T-1, E, K]: the step from frame
        t to t+1 passes messages along edges[:, t].
        """
        _check_sequence(x, edges, graph, self.num_features, self.num_edge_types, 2)
        _check_count("prediction_steps", prediction_steps, 1)
        frames = x.shape[2]
        # All blocks advance together: P sequential steps, each over every block start.
        state = x[:, :, : frames - 1 : prediction_steps].transpose(1, 2)  # [B, blocks, N, D]
        per_step = edges.dim() == 4
        starts = torch.arange(0, frames - 1, prediction_steps, device=edges.device)
        block_edges = edges[:, None]  # [B, 1, E, K]
        recompute = _recompute(
            self.recompute_messages, self.messages, state, graph, prediction_steps
        )
        # The last block predicts only up to frame T-1: it stops early, the others go on.
        blocks = state.shape[1]
        last = frames - 1 - (blocks - 1) * prediction_steps  # 1..P steps
        preds = []
        for s in range(prediction_steps):
            if s == last:
                if blocks == 1:
                    break
                state = state[:, :-1]
                starts = starts[:-1]
            if per_step:  # each block's source frame: its start + s
                block_edges = edges.index_select(1, starts + s)  # [B, blocks, E, K]
            state = self.step(state, block_edges, graph, recompute=recompute)
            preds.append(state)
        full = torch.stack(preds[:last], dim=2)  # [B, blocks, last, N, D]
        if blocks == 1:
            return full[:, 0].transpose(1, 2)
        early = full[:, :-1]  # [B, blocks - 1, P, N, D] once the later steps are added
        if last < prediction_steps:
            early = torch.cat([early, torch.stack(preds[last:], dim=2)], dim=2)
        out = torch.cat([early.flatten(1, 2), full[:, -1]], dim=1)  # [B, T-1, N, D]
        return out.transpose(1, 2)

    def rollout(self, x0: Tensor, edges: Tensor, graph: Graph, steps: int) -> Tensor:
        """Its own predictions from x0. x0: [B, N, D], edges: [B, E, K], or [B, steps, E, K]
        per step -> [B, N, steps, D]."""
        if x0.dim() != 3:
            raise ValueError(f"x0 must be [B, N, D] (3 dimensions), got shape {tuple(x0.shape)}")
        _check_count("steps", steps, 1)
        if edges.dim() == 4 and edges.shape[1] != steps:
            raise ValueError(
                f"per-step edges must be [B, steps, E, K] with steps = {steps}, got shape "
                f"{tuple(edges.shape)}"
            )
        recompute = _recompute(self.recompute_messages, self.messages, x0, graph, steps)
        preds = []
        state = x0
        for s in range(steps):
            state = self.step(state, edges[:, s] if edges.dim() == 4 else edges, graph,
                              recompute=recompute)  # fmt: skip
            preds.append(state)
        return torch.stack(preds, dim=2)


@register_decoder("rnn")
class RNNDecoder(Decoder):
    """The reference recurrent decoder: messages between GRU hidden states, for non-Markovian
    data; supports burn-in (ground truth first, then its own predictions).

    ``recompute_messages``: as for :class:`MLPDecoder` (activation checkpointing of the
    edge messages; None decides by their size).
    """

    def __init__(
        self,
        num_features: int,
        num_edge_types: int = 2,
        hidden: int = 256,
        dropout: float = 0.0,
        skip_first: bool = True,
        recompute_messages: bool | None = None,
    ) -> None:
        super().__init__()
        self.recompute_messages = recompute_messages
        self.num_features = num_features
        self.num_edge_types = num_edge_types
        self.hidden = hidden
        self.skip_first = skip_first
        self.num_message_types = _message_types(num_edge_types, skip_first)
        self.messages = _TypedMLP(
            self.num_message_types, 2 * hidden, hidden, hidden, "tanh", dropout
        )
        self.input_r = nn.Linear(num_features, hidden)
        self.input_i = nn.Linear(num_features, hidden)
        self.input_n = nn.Linear(num_features, hidden)
        self.hidden_r = nn.Linear(hidden, hidden, bias=False)
        self.hidden_i = nn.Linear(hidden, hidden, bias=False)
        self.hidden_n = nn.Linear(hidden, hidden, bias=False)
        self.out = _OutputMLP(hidden, hidden, num_features, dropout)

    def bytes_per_edge(self, num_frames: int, prediction_steps: int) -> int:
        """It steps through the frames one at a time: one step's messages."""
        return self.messages.bytes_per_edge()

    def step(
        self, x_t: Tensor, hidden: Tensor, edges: Tensor, graph: Graph, *, recompute: bool = False
    ) -> tuple[Tensor, Tensor]:
        """x_t: [..., N, D], hidden: [..., N, H], edges: [..., E, K] -> (x_{t+1}, hidden).

        ``recompute``: recompute its messages in the backward pass instead of keeping them.
        """
        _check_step(x_t, edges, graph, self.num_features, self.num_edge_types)
        # The mean over message types and over incoming edges, folded into the weights.
        weights = edges[..., int(self.skip_first) :] / (
            self.num_message_types * (graph.num_objects - 1)
        )
        agg = self.messages(hidden, weights, graph, recompute)  # [..., N, H]
        r = torch.sigmoid(self.input_r(x_t) + self.hidden_r(agg))
        i = torch.sigmoid(self.input_i(x_t) + self.hidden_i(agg))
        n = torch.tanh(self.input_n(x_t) + r * self.hidden_n(agg))
        hidden = (1 - i) * n + i * hidden
        return x_t + self.out(hidden), hidden

    def _unroll(
        self,
        truth: Tensor,
        edges: Tensor,
        graph: Graph,
        use_truth: list[bool],
    ) -> Tensor:
        """truth: [B, N, T, D] -> [B, N, len(use_truth), D]; step t reads truth[:, :, t]
        where use_truth[t], else its own previous prediction."""
        hidden = truth.new_zeros(*truth.shape[:2], self.hidden)
        recompute = _recompute(
            self.recompute_messages, self.messages, hidden, graph, len(use_truth)
        )
        preds = []
        for t, from_truth in enumerate(use_truth):
            x_t = truth[:, :, t] if from_truth else preds[-1]
            pred, hidden = self.step(x_t, hidden, edges, graph, recompute=recompute)
            preds.append(pred)
        return torch.stack(preds, dim=2)

    def forward(
        self,
        x: Tensor,
        edges: Tensor,
        graph: Graph,
        prediction_steps: int = 10,
        burn_in_steps: int | None = None,
    ) -> Tensor:
        """Predictions of x[:, :, 1:]. x: [B, N, T, D], edges: [B, E, K] -> [B, N, T-1, D].

        Step t reads ground truth when t < burn_in_steps or, without burn-in, when
        t % prediction_steps == 0; otherwise its own previous prediction.
        """
        _check_sequence(x, edges, graph, self.num_features, self.num_edge_types, 2)
        steps = range(x.shape[2] - 1)
        if burn_in_steps is None:
            _check_count("prediction_steps", prediction_steps, 1)
            use_truth = [t % prediction_steps == 0 for t in steps]
        else:
            _check_count("burn_in_steps", burn_in_steps, 1)
            use_truth = [t < burn_in_steps for t in steps]
        return self._unroll(x, edges, graph, use_truth)

    def rollout(self, x_prefix: Tensor, edges: Tensor, graph: Graph, steps: int) -> Tensor:
        """Burn in on the whole prefix, then predict ``steps`` frames after it on its own.

        x_prefix: [B, N, T0, D], edges: [B, E, K] -> [B, N, steps, D].
        """
        _check_sequence(x_prefix, edges, graph, self.num_features, self.num_edge_types, 1)
        _check_count("steps", steps, 1)
        frames = x_prefix.shape[2]
        out = self._unroll(x_prefix, edges, graph, [t < frames for t in range(frames - 1 + steps)])
        return out[:, :, frames - 1 :]
