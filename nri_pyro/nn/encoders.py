"""Encoders q(z | x): GNNs on the full graph that read trajectories and give edge-type logits.

Their batch norms are plain ``nn.BatchNorm1d`` modules (attributes ``bn``, ``bn1``, ``bn2``),
over [rows, C] after the linear layers and [rows, C, L] after the convolutions. Whoever
builds an encoder may swap them for another batch norm with the same parameters and
buffers: :class:`nri_pyro.guide.NRIGuide` swaps in
:class:`~nri_pyro.nn.parallel.GlobalBatchNorm1d` (with
:func:`~nri_pyro.nn.parallel.global_batch_norms`), which takes the global batch's
statistics in a data-parallel training step.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nri_pyro.nn.graph import Graph
from nri_pyro.nn.registry import Encoder, register_encoder


class MLP(nn.Module):
    """Linear, ELU, Dropout, Linear, ELU, BatchNorm over the last (feature) dimension.

    x: [..., n_in] -> [..., n_out]; batch norm sees all leading dimensions as one batch.
    """

    def __init__(self, n_in: int, n_hidden: int, n_out: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(n_in, n_hidden)
        self.fc2 = nn.Linear(n_hidden, n_out)
        self.dropout = nn.Dropout(dropout)
        self.bn = nn.BatchNorm1d(n_out)
        for layer in (self.fc1, self.fc2):
            nn.init.xavier_normal_(layer.weight)
            nn.init.constant_(layer.bias, 0.1)

    def forward(self, x: Tensor) -> Tensor:
        rows = x.reshape(-1, x.shape[-1])  # 2-D throughout: in-place ELUs on fresh outputs
        return self._after_fc1(_elu_(self.fc1(rows)), x.shape[:-1])

    def on_edges(self, x: Tensor, graph: Graph, skip: Tensor | None = None) -> Tensor:
        """``self(torch.cat([graph.node_to_edge(x), skip], -1))`` without building that input.

        x: [..., N, F] node features, skip: [..., E, S] or None -> [..., E, n_out]. The first
        layer's sender and receiver blocks come from ``Graph.node_to_edge_linear``: for wide
        node features (the hidden layers here) they are applied per node and gathered, which
        saves their GEMM's (N-1)-fold repetition and the [..., E, 2F] input.
        """
        pair_features = 2 * x.shape[-1]
        skip_features = 0 if skip is None else skip.shape[-1]
        if pair_features + skip_features != self.fc1.in_features:
            raise ValueError(
                f"this MLP takes {self.fc1.in_features} inputs per edge, but nodes with "
                f"F = {x.shape[-1]} features give 2F = {pair_features}"
                + (f" and the skip gives {skip_features}" if skip is not None else "")
            )
        weight = self.fc1.weight  # [n_hidden, n_in]: (sender, receiver, skip) columns
        pairs = weight[:, :pair_features].t()
        if skip is None:
            h = graph.node_to_edge_linear(x, pairs, self.fc1.bias, _elu_)
            return self._after_fc1(h.flatten(0, -2), h.shape[:-1])
        h = graph.node_to_edge_linear(x, pairs, self.fc1.bias)
        skip_rows = skip.reshape(-1, skip_features)
        h = _elu_(torch.addmm(h.flatten(0, -2), skip_rows, weight[:, pair_features:].t()))
        return self._after_fc1(h, skip.shape[:-1])

    def _after_fc1(self, h: Tensor, shape: torch.Size) -> Tensor:
        """h: [rows, n_hidden], the first layer's activations -> [*shape, n_out]."""
        h = self.bn(_elu_(self.fc2(self.dropout(h))))
        return h.view(*shape, h.shape[-1])


def _elu_(x: Tensor) -> Tensor:
    """ELU in place; only for fresh tensors that nothing else reads (its backward needs only
    its result), which saves a tensor of activations per layer."""
    return F.elu(x, inplace=True)


def _check_nodes(x: Tensor, graph: Graph, num_features: int) -> None:
    if x.dim() != 4:
        raise ValueError(f"x must be [B, N, T, D] (4 dimensions), got shape {tuple(x.shape)}")
    if x.shape[1] != graph.num_objects:
        raise ValueError(
            f"x has {x.shape[1]} objects but the graph has {graph.num_objects}; "
            f"use full_graph({x.shape[1]}, x.device)"
        )
    if x.shape[3] != num_features:
        raise ValueError(f"x must have D = {num_features} features, got {x.shape[3]}")


class _EdgeHead(nn.Module):
    """What both encoders do after their first edge embedding: the factor-graph pass
    (edge -> node, mean over incoming edges -> node MLP -> edge, concatenated with the
    skip) and a linear map to K logits. [B, E, H] -> [B, E, K]."""

    def __init__(self, hidden: int, num_edge_types: int, dropout: float, factor: bool) -> None:
        super().__init__()
        self.factor = factor
        if factor:
            self.node_mlp = MLP(hidden, hidden, hidden, dropout)
            self.edge_mlp = MLP(3 * hidden, hidden, hidden, dropout)
        self.fc_out = nn.Linear(hidden, num_edge_types)
        nn.init.xavier_normal_(self.fc_out.weight)
        nn.init.constant_(self.fc_out.bias, 0.1)

    def forward(self, h: Tensor, graph: Graph) -> Tensor:
        return self.fc_out(self.features(h, graph))

    def features(self, h: Tensor, graph: Graph) -> Tensor:
        """The edge features that the logits are a linear map of: [B, E, H]."""
        if self.factor:
            skip = h
            h = self.node_mlp(graph.edge_to_node(h, mean=True))  # [B, N, H]
            h = self.edge_mlp.on_edges(h, graph, skip)  # [B, E, H]
        return h


class _HeadEncoder(Encoder):
    """An encoder whose logits are its ``head``'s (an :class:`_EdgeHead`) linear map."""

    head: _EdgeHead

    @property
    def feature_size(self) -> int:
        return self.head.fc_out.in_features

    def output(self, features: Tensor) -> Tensor:
        return self.head.fc_out(features)


@register_encoder("mlp")
class MLPEncoder(_HeadEncoder):
    """The reference MLP encoder, tied to trajectories of ``num_frames`` frames.

    forward(x: [B, N, T, D], graph) -> logits [B, E, K].
    """

    fixed_frames = True  # it flattens the frames it reads

    def __init__(
        self,
        num_frames: int,
        num_features: int,
        hidden: int = 256,
        num_edge_types: int = 2,
        dropout: float = 0.0,
        factor: bool = True,
    ) -> None:
        super().__init__()
        self.num_frames = num_frames
        self.num_features = num_features
        self.mlp1 = MLP(num_frames * num_features, hidden, hidden, dropout)
        self.mlp2 = MLP(2 * hidden, hidden, hidden, dropout)
        self.head = _EdgeHead(hidden, num_edge_types, dropout, factor)

    def edge_features(self, x: Tensor, graph: Graph) -> Tensor:
        """x: [B, N, T, D] -> the edge features [B, E, H] that the logits are linear in."""
        _check_nodes(x, graph, self.num_features)
        if x.shape[2] != self.num_frames:
            raise ValueError(
                f"this MLPEncoder reads trajectories of exactly {self.num_frames} frames "
                f"(it flattens them), got T = {x.shape[2]}; crop the input to "
                f"{self.num_frames} frames or use CNNEncoder, which handles any T"
            )
        h = self.mlp1(x.flatten(2))  # [B, N, H]
        return self.head.features(self.mlp2.on_edges(h, graph), graph)


class _CNN(nn.Module):
    """Two kernel-5 convolutions and attention pooling over time: [M, C, T] -> [M, H]."""

    MIN_FRAMES = 14  # T - 4, halved, minus 4 must leave at least one frame

    def __init__(self, n_in: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(n_in, hidden, kernel_size=5)
        self.bn1 = nn.BatchNorm1d(hidden)
        self.dropout = nn.Dropout(dropout)
        self.pool = nn.MaxPool1d(kernel_size=2)
        self.conv2 = nn.Conv1d(hidden, hidden, kernel_size=5)
        self.bn2 = nn.BatchNorm1d(hidden)
        self.conv_predict = nn.Conv1d(hidden, hidden, kernel_size=1)
        self.conv_attention = nn.Conv1d(hidden, 1, kernel_size=1)
        for conv in (self.conv1, self.conv2, self.conv_predict, self.conv_attention):
            fan_out = conv.kernel_size[0] * conv.out_channels
            nn.init.normal_(conv.weight, 0.0, math.sqrt(2.0 / fan_out))
            nn.init.constant_(conv.bias, 0.1)

    def forward(self, x: Tensor) -> Tensor:
        h = self.pool(self.dropout(self.bn1(F.relu(self.conv1(x)))))
        h = self.bn2(F.relu(self.conv2(h)))
        attention = torch.softmax(self.conv_attention(h), dim=-1)  # [M, 1, T']
        return (self.conv_predict(h) * attention).mean(dim=-1)


@register_encoder("cnn")
class CNNEncoder(_HeadEncoder):
    """The reference CNN encoder: per-edge temporal convolutions, so any T >= 14 works.

    forward(x: [B, N, T, D], graph) -> logits [B, E, K].
    """

    min_frames = _CNN.MIN_FRAMES

    def __init__(
        self,
        num_features: int,
        hidden: int = 256,
        num_edge_types: int = 2,
        dropout: float = 0.0,
        factor: bool = True,
    ) -> None:
        super().__init__()
        self.num_features = num_features
        self.cnn = _CNN(2 * num_features, hidden, dropout)
        self.mlp1 = MLP(hidden, hidden, hidden, dropout)
        self.head = _EdgeHead(hidden, num_edge_types, dropout, factor)

    def edge_features(self, x: Tensor, graph: Graph) -> Tensor:
        """x: [B, N, T, D] -> the edge features [B, E, H] that the logits are linear in."""
        return self.head.features(self.pair_features(x, graph), graph)

    def pair_features(self, x: Tensor, graph: Graph) -> Tensor:
        """x: [B, N, T, D] -> each pair's embedding of its two series [B, E, H], before the
        factor-graph pass of the head."""
        _check_nodes(x, graph, self.num_features)
        batch, _, frames, _ = x.shape
        if frames < _CNN.MIN_FRAMES:
            raise ValueError(
                f"CNNEncoder needs at least {_CNN.MIN_FRAMES} frames, got T = {frames} "
                "(two kernel-5 convolutions around a 2x pooling leave nothing shorter)"
            )
        pairs = graph.node_to_edge(x.transpose(1, 2))  # [B, T, E, 2D]
        series = pairs.permute(0, 2, 3, 1).flatten(0, 1)  # [B*E, 2D, T]
        return self.mlp1(self.cnn(series).unflatten(0, (batch, graph.num_edges)))  # [B, E, H]

    def bytes_per_edge(self, num_frames: int) -> int:
        """Every edge's series is convolved over the frames it reads: the widest activations
        are [B*E, H, T-4] (after the first kernel-5 convolution), two of them alive at once
        (a layer's input and output), 90 times H floats per edge at T = 49."""
        return 4 * max(4 * self.feature_size, 2 * self.feature_size * (num_frames - 4))


@register_encoder("relational")
class RelationalEncoder(CNNEncoder):
    """The CNN encoder, then relations that attend to each other before the edge logits:
    ``layers`` pre-norm transformer layers (``heads`` heads, feed-forward 2 H) over the E
    edge features of each trajectory, so each edge's logits read every other edge's
    evidence (joint inference of all relations, as NRI-MPM's relation-interaction encoder
    does, here with attention instead of its RNN). Memory and time grow as E ** 2 per layer:
    meant for the paper's sizes (E = 20 or 90), not for hundreds of objects.

    Each layer's two output projections (attention and feed-forward) start at zero, so a
    fresh encoder is the CNN encoder exactly and attention only adds what training finds.
    The layers sit between the pair embeddings and the factor-graph pass: on the head's
    output, with nothing to normalise their updates, a few Adam steps made every edge one
    confident type (charged5 collapsed within 10 steps to accuracy 0.51 and never left).

    forward(x: [B, N, T, D], graph) -> logits [B, E, K].
    """

    def __init__(
        self,
        num_features: int,
        hidden: int = 256,
        num_edge_types: int = 2,
        dropout: float = 0.0,
        factor: bool = True,
        layers: int = 2,
        heads: int = 4,
    ) -> None:
        for key, value in (("layers", layers), ("heads", heads)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"guide.encoder.{key} must be an integer >= 1, got {value!r}")
        if hidden % heads:
            raise ValueError(
                f"guide.encoder.hidden ({hidden}) must be a multiple of guide.encoder.heads "
                f"({heads}): each head attends over hidden / heads features"
            )
        super().__init__(num_features, hidden, num_edge_types, dropout, factor)
        layer = nn.TransformerEncoderLayer(
            hidden, heads, dim_feedforward=2 * hidden, dropout=dropout, batch_first=True,
            norm_first=True,
        )  # fmt: skip
        self.relations = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        for block in self.relations.layers:  # each block starts as the identity
            for out in (block.self_attn.out_proj, block.linear2):
                nn.init.zeros_(out.weight)
                nn.init.zeros_(out.bias)

    def edge_features(self, x: Tensor, graph: Graph) -> Tensor:
        """x: [B, N, T, D] -> the edge features [B, E, H]: the pairs' embeddings attend to
        each other, then the head's factor-graph pass (whose batch-normalised MLPs keep the
        attention's output at the scale the logits were initialised for)."""
        return self.head.features(self.relations(self.pair_features(x, graph)), graph)


class WindowGRU(nn.Module):
    """A bidirectional GRU over a trajectory's windows, one sequence per edge: it lets a
    dynamic graph's logits of every window read the whole trajectory (as Dynamic NRI's
    recurrent encoder does), on top of a per-window encoder.

    forward(features: [B, W, E, H]) -> logit corrections [B, W, E, K]. Its output layer
    starts at zero, so a fresh one adds nothing to the per-window encoder's logits.
    """

    def __init__(self, n_in: int, hidden: int = 64, num_edge_types: int = 2) -> None:
        super().__init__()
        self.gru = nn.GRU(n_in, hidden, batch_first=True, bidirectional=True)
        self.fc_out = nn.Linear(2 * hidden, num_edge_types)
        nn.init.zeros_(self.fc_out.weight)
        nn.init.zeros_(self.fc_out.bias)

    def forward(self, features: Tensor) -> Tensor:
        if features.dim() != 4:
            raise ValueError(
                f"features must be [B, W, E, H] (4 dimensions), got shape {tuple(features.shape)}"
            )
        batch, _, edges, _ = features.shape
        sequences = features.transpose(1, 2).flatten(0, 1)  # [B*E, W, H]
        out, _ = self.gru(sequences)
        return self.fc_out(out).unflatten(0, (batch, edges)).transpose(1, 2)
