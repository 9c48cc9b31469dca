"""Encoders q(z | x): GNNs on the full graph that read trajectories and give edge-type logits."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nri_pyro.nn.graph import Graph


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
        h = F.elu(self.fc2(self.dropout(F.elu(self.fc1(x)))))
        return self.bn(h.reshape(-1, h.shape[-1])).reshape(h.shape)


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
        if self.factor:
            skip = h
            h = self.node_mlp(graph.edge_to_node(h, mean=True))  # [B, N, H]
            h = self.edge_mlp(torch.cat([graph.node_to_edge(h), skip], dim=-1))  # [B, E, H]
        return self.fc_out(h)


class MLPEncoder(nn.Module):
    """The reference MLP encoder, tied to trajectories of ``num_frames`` frames.

    forward(x: [B, N, T, D], graph) -> logits [B, E, K].
    """

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

    def forward(self, x: Tensor, graph: Graph) -> Tensor:
        """x: [B, N, T, D] -> logits [B, E, K]."""
        _check_nodes(x, graph, self.num_features)
        if x.shape[2] != self.num_frames:
            raise ValueError(
                f"this MLPEncoder reads trajectories of exactly {self.num_frames} frames "
                f"(it flattens them), got T = {x.shape[2]}; crop the input to "
                f"{self.num_frames} frames or use CNNEncoder, which handles any T"
            )
        h = self.mlp1(x.flatten(2))  # [B, N, H]
        return self.head(self.mlp2(graph.node_to_edge(h)), graph)  # [B, E, H] -> [B, E, K]


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


class CNNEncoder(nn.Module):
    """The reference CNN encoder: per-edge temporal convolutions, so any T >= 14 works.

    forward(x: [B, N, T, D], graph) -> logits [B, E, K].
    """

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

    def forward(self, x: Tensor, graph: Graph) -> Tensor:
        """x: [B, N, T, D] -> logits [B, E, K]."""
        _check_nodes(x, graph, self.num_features)
        batch, _, frames, _ = x.shape
        if frames < _CNN.MIN_FRAMES:
            raise ValueError(
                f"CNNEncoder needs at least {_CNN.MIN_FRAMES} frames, got T = {frames} "
                "(two kernel-5 convolutions around a 2x pooling leave nothing shorter)"
            )
        pairs = graph.node_to_edge(x.transpose(1, 2))  # [B, T, E, 2D]
        series = pairs.permute(0, 2, 3, 1).flatten(0, 1)  # [B*E, 2D, T]
        h = self.mlp1(self.cnn(series).unflatten(0, (batch, graph.num_edges)))  # [B, E, H]
        return self.head(h, graph)
