"""Decoders p(x | z): GNN dynamics models that pass messages only along typed edges."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from nri_pyro.nn.graph import Graph


class _TypedMLP(nn.Module):
    """One two-layer MLP per edge type, all types computed at once by stacked weights.

    x: [..., E, n_in] -> [..., E, num_types, n_out].
    """

    def __init__(
        self,
        num_types: int,
        n_in: int,
        n_hidden: int,
        n_out: int,
        activation: Callable[[Tensor], Tensor],
        dropout: float,
    ) -> None:
        super().__init__()
        self.w1 = nn.Parameter(torch.empty(num_types, n_in, n_hidden))
        self.b1 = nn.Parameter(torch.empty(num_types, n_hidden))
        self.w2 = nn.Parameter(torch.empty(num_types, n_hidden, n_out))
        self.b2 = nn.Parameter(torch.empty(num_types, n_out))
        self.activation = activation
        self.dropout = nn.Dropout(dropout)
        # The same ranges as nn.Linear's default initialisation, per type.
        for w, b in ((self.w1, self.b1), (self.w2, self.b2)):
            bound = 1.0 / math.sqrt(w.shape[1])
            nn.init.uniform_(w, -bound, bound)
            nn.init.uniform_(b, -bound, bound)

    def forward(self, x: Tensor) -> Tensor:
        num_types, n_in, n_hidden = self.w1.shape
        # First layer: all types' weights side by side, so one large GEMM.
        w1 = self.w1.permute(1, 0, 2).reshape(n_in, num_types * n_hidden)
        h = self.activation(x @ w1 + self.b1.flatten())
        h = self.dropout(h).unflatten(-1, (num_types, n_hidden))  # [..., E, K', H]
        if num_types == 1:
            return self.activation(h @ self.w2[0] + self.b2[0])
        # Second layer: block-diagonal, one batched GEMM with the types as the batch
        # (einsum would pick a batched GEMM over the many small leading dims instead).
        rows = h.movedim(-2, 0).reshape(num_types, -1, n_hidden)
        out = torch.bmm(rows, self.w2).reshape(num_types, *h.shape[:-2], -1).movedim(0, -2)
        return self.activation(out + self.b2)


def _output_mlp(n_in: int, hidden: int, n_out: int, dropout: float) -> nn.Sequential:
    """The decoders' output network, predicting the change of a node's state."""
    return nn.Sequential(
        nn.Linear(n_in, hidden),
        nn.ReLU(),
        nn.Dropout(dropout),
        nn.Linear(hidden, hidden),
        nn.ReLU(),
        nn.Dropout(dropout),
        nn.Linear(hidden, n_out),
    )


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
    if edges.dim() != 3 or edges.shape[0] not in (1, batch) or edges.shape[1:] != expected:
        raise ValueError(
            f"edges must be [B, E, K] with B = {batch} (or 1 to share one graph), "
            f"E = {graph.num_edges} (the graph's edges) and K = {k} edge types, "
            f"got shape {tuple(edges.shape)}"
        )


def _check_count(name: str, value: int, minimum: int) -> None:
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {value}")


class MLPDecoder(nn.Module):
    """The reference Markovian decoder: x_{t+1} = x_t + f(x_t, messages along typed edges).

    With ``skip_first`` edge type 0 sends no message, which anchors it as "no interaction".
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
    ) -> None:
        super().__init__()
        self.num_features = num_features
        self.num_edge_types = num_edge_types
        self.skip_first = skip_first
        num_types = _message_types(num_edge_types, skip_first)
        self.messages = _TypedMLP(
            num_types, 2 * num_features, msg_hidden, msg_out, torch.relu, dropout
        )
        self.out = _output_mlp(num_features + msg_out, hidden, num_features, dropout)

    def step(self, x_t: Tensor, edges: Tensor, graph: Graph) -> Tensor:
        """One step. x_t: [..., N, D], edges: [..., E, K] (broadcast) -> x_{t+1}: [..., N, D]."""
        _check_step(x_t, edges, graph, self.num_features, self.num_edge_types)
        msgs = self.messages(graph.node_to_edge(x_t))  # [..., E, K', M]
        weights = edges[..., int(self.skip_first) :, None]  # [..., E, K', 1]
        incoming = graph.edge_to_node((msgs * weights).sum(-2))  # [..., N, M]
        return x_t + self.out(torch.cat([x_t, incoming], dim=-1))

    def forward(self, x: Tensor, edges: Tensor, graph: Graph, prediction_steps: int = 10) -> Tensor:
        """Predictions of x[:, :, 1:] with ground truth fed every ``prediction_steps`` frames.

        x: [B, N, T, D], edges: [B, E, K] -> [B, N, T-1, D]. Output frame t (predicting frame
        t+1) is a ((t mod P) + 1)-step rollout from ground truth at frame P * floor(t / P).
        """
        _check_sequence(x, edges, graph, self.num_features, self.num_edge_types, 2)
        _check_count("prediction_steps", prediction_steps, 1)
        frames = x.shape[2]
        # All blocks advance together: P sequential steps, each over every block start.
        state = x[:, :, : frames - 1 : prediction_steps].transpose(1, 2)  # [B, blocks, N, D]
        block_edges = edges[:, None]  # [B, 1, E, K]
        preds = []
        for _ in range(prediction_steps):
            state = self.step(state, block_edges, graph)
            preds.append(state)
        out = torch.stack(preds, dim=2).flatten(1, 2)  # [B, blocks * P, N, D]
        return out[:, : frames - 1].transpose(1, 2)

    def rollout(self, x0: Tensor, edges: Tensor, graph: Graph, steps: int) -> Tensor:
        """Its own predictions from x0. x0: [B, N, D], edges: [B, E, K] -> [B, N, steps, D]."""
        if x0.dim() != 3:
            raise ValueError(f"x0 must be [B, N, D] (3 dimensions), got shape {tuple(x0.shape)}")
        _check_count("steps", steps, 1)
        preds = []
        state = x0
        for _ in range(steps):
            state = self.step(state, edges, graph)
            preds.append(state)
        return torch.stack(preds, dim=2)


class RNNDecoder(nn.Module):
    """The reference recurrent decoder: messages between GRU hidden states, for non-Markovian
    data; supports burn-in (ground truth first, then its own predictions)."""

    def __init__(
        self,
        num_features: int,
        num_edge_types: int = 2,
        hidden: int = 256,
        dropout: float = 0.0,
        skip_first: bool = True,
    ) -> None:
        super().__init__()
        self.num_features = num_features
        self.num_edge_types = num_edge_types
        self.hidden = hidden
        self.skip_first = skip_first
        self.num_message_types = _message_types(num_edge_types, skip_first)
        self.messages = _TypedMLP(
            self.num_message_types, 2 * hidden, hidden, hidden, torch.tanh, dropout
        )
        self.input_r = nn.Linear(num_features, hidden)
        self.input_i = nn.Linear(num_features, hidden)
        self.input_n = nn.Linear(num_features, hidden)
        self.hidden_r = nn.Linear(hidden, hidden, bias=False)
        self.hidden_i = nn.Linear(hidden, hidden, bias=False)
        self.hidden_n = nn.Linear(hidden, hidden, bias=False)
        self.out = _output_mlp(hidden, hidden, num_features, dropout)

    def step(
        self, x_t: Tensor, hidden: Tensor, edges: Tensor, graph: Graph
    ) -> tuple[Tensor, Tensor]:
        """x_t: [..., N, D], hidden: [..., N, H], edges: [..., E, K] -> (x_{t+1}, hidden)."""
        _check_step(x_t, edges, graph, self.num_features, self.num_edge_types)
        msgs = self.messages(graph.node_to_edge(hidden))  # [..., E, K', H]
        weights = edges[..., int(self.skip_first) :, None]
        msg = (msgs * weights).sum(-2) / self.num_message_types
        agg = graph.edge_to_node(msg, mean=True)  # [..., N, H]
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
        preds = []
        for t, from_truth in enumerate(use_truth):
            x_t = truth[:, :, t] if from_truth else preds[-1]
            pred, hidden = self.step(x_t, hidden, edges, graph)
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
