"""The reference's dense one-hot message passing: the baseline that benchmarks compare with.

Not part of the library, which indexes: :class:`DenseGraph` computes what
:class:`nri_pyro.nn.Graph` computes, by [E, N] incidence matmuls (O(N^3) time and memory),
as the 2018 code does. ``model.graph_for = guide.graph_for = dense_graph`` makes a model
and guide pass their messages this way (benchmarks/train_step.py, scale.py); the tests
check that both formulations agree.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
from torch import Tensor

from nri_pyro.nn import Graph


class DenseGraph(Graph):
    """The same graph with the reference's dense one-hot incidence matrices (O(N^3)).

    It computes what ``Graph`` computes, by matmuls.
    """

    def __init__(self, num_objects: int, device: torch.device | str | None = None) -> None:
        super().__init__(num_objects, device)
        eye = torch.eye(num_objects, device=self.device)
        self.rel_rec = eye[self.receivers]  # [E, N]
        self.rel_send = eye[self.senders]  # [E, N]

    def node_to_edge(self, x: Tensor) -> Tensor:
        """x: [..., N, H] -> [..., E, 2H]."""
        self._check(x, self.num_objects, "x", "N (objects)")
        rel_rec, rel_send = self.rel_rec.to(x.dtype), self.rel_send.to(x.dtype)
        return torch.cat([rel_send @ x, rel_rec @ x], dim=-1)

    def edge_to_node(self, e: Tensor, mean: bool = False) -> Tensor:
        """e: [..., E, H] -> [..., N, H]."""
        self._check(e, self.num_edges, "e", "E (edges)")
        total = self.rel_rec.to(e.dtype).t() @ e
        return total / (self.num_objects - 1) if mean else total

    def node_to_edge_linear(
        self,
        x: Tensor,
        weight: Tensor,
        bias: Tensor | None = None,
        activation: Callable[[Tensor], Tensor] | None = None,
    ) -> Tensor:
        """The reference's way: the [..., E, 2F] pairs, then each linear map."""
        _, stack, maps, out = self._check_linear(x, weight, bias)
        pairs = self.node_to_edge(x)
        weights = weight.reshape(maps, *weight.shape[-2:])
        biases = [None] * maps if bias is None else bias.reshape(maps, out)
        edges = torch.stack(
            [
                pairs @ w if b is None else pairs @ w + b
                for w, b in zip(weights, biases, strict=True)
            ]
        )
        if activation is not None:
            edges = activation(edges)
        return edges.reshape(*stack, *edges.shape[1:])

    def edge_to_node_weighted(self, e: Tensor, weights: Tensor, mean: bool = False) -> Tensor:
        """The reference's way: weight every edge, then the incidence matmul."""
        return self.edge_to_node(e * weights.unsqueeze(-1), mean)


@functools.lru_cache(maxsize=64)
def _cached(num_objects: int, device: torch.device) -> DenseGraph:
    return DenseGraph(num_objects, device)


def dense_graph(num_objects: int, device: torch.device | str | None = None) -> DenseGraph:
    """The (cached) dense graph on ``num_objects`` objects, like ``full_graph``."""
    return _cached(num_objects, torch.device(device or "cpu"))
