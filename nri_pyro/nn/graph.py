"""The fully connected directed graph that NRI passes messages on, and its edge order.

Objects are 0..N-1. The E = N(N-1) ordered pairs (i, j), i != j, are enumerated
receiver-major: i (the receiver) outer, j (the sender) inner. ``adjacency[i, j]`` is the type
of j's influence on i; messages flow j -> i and are aggregated at i.

Every function here treats dimension -2 as the node (or edge) dimension, so any leading
dimensions (batch, time, ...) pass through: ``x: [..., N, H]``, ``e: [..., E, H]``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import torch
from torch import Tensor

# From this many node features on, an edge MLP's first layer is applied per node and
# gathered (Graph.node_to_edge_linear); below, a GEMM over the [E, 2F] pairs is cheaper.
FACTORIZE_FROM_FEATURES = 32


def _stacked_linear(rows: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """rows: [R, I], weight: [M, I, O], bias: [*S, O] with prod(S) = M, or None ->
    [M, R, O], every stacked map applied to every row: one GEMM (with the bias in it) for
    one map, one batched GEMM for more."""
    maps, _, out = weight.shape
    if maps == 1:
        if bias is None:
            return (rows @ weight[0]).unsqueeze(0)
        return torch.addmm(bias.reshape(out), rows, weight[0]).unsqueeze(0)
    edges = torch.bmm(rows.expand(maps, -1, -1), weight)
    if bias is not None:  # in place on the fresh product: no broadcast copy
        edges = edges.add_(bias.reshape(maps, 1, out))
    return edges


def edge_index(num_objects: int, device: torch.device | None) -> tuple[Tensor, Tensor]:
    """receivers, senders: [E], receiver-major, diagonal skipped. Computed without
    data-dependent shapes (no ``nonzero``), so that torch.compile traces it whole."""
    n = num_objects
    receivers = torch.arange(n, device=device).repeat_interleave(n - 1)
    # receiver i's senders are 0 .. n-1 without i: k, then k + 1 from k = i on
    k = torch.arange(n - 1, device=device).repeat(n)
    return receivers, k + (k >= receivers).long()


class Graph:
    """Index tensors of the full graph on N objects, with gather/scatter message passing.

    Memory is O(B E H): node features are gathered per edge, and incoming edges are summed
    by a reshape, since receiver-major order makes each receiver's N-1 edges contiguous.
    """

    def __init__(self, num_objects: int, device: torch.device | str | None = None) -> None:
        if num_objects < 2:
            raise ValueError(f"a graph needs at least 2 objects, got num_objects={num_objects}")
        self.num_objects = num_objects
        self.num_edges = num_objects * (num_objects - 1)
        self.receivers, self.senders = edge_index(num_objects, torch.device(device or "cpu"))

    @property
    def device(self) -> torch.device:
        return self.receivers.device

    def __repr__(self) -> str:
        return f"{type(self).__name__}(num_objects={self.num_objects}, device={self.device})"

    def node_to_edge(self, x: Tensor) -> Tensor:
        """x: [..., N, H] -> [..., E, 2H], each edge's [sender, receiver] features."""
        self._check(x, self.num_objects, "x", "N (objects)")
        return torch.cat(
            [x.index_select(-2, self.senders), x.index_select(-2, self.receivers)], dim=-1
        )

    def edge_to_node(self, e: Tensor, mean: bool = False) -> Tensor:
        """e: [..., E, H] -> [..., N, H], the sum (or mean) of each node's incoming edges."""
        self._check(e, self.num_edges, "e", "E (edges)")
        total = e.unflatten(-2, (self.num_objects, self.num_objects - 1)).sum(-2)
        return total / (self.num_objects - 1) if mean else total

    def node_to_edge_linear(
        self,
        x: Tensor,
        weight: Tensor,
        bias: Tensor | None = None,
        activation: Callable[[Tensor], Tensor] | None = None,
    ) -> Tensor:
        """``activation(node_to_edge(x) @ weight + bias)``, the first layer of an edge MLP.

        x: [..., N, F], weight: [*S, 2F, O] (sender rows first), bias: [*S, O] or None ->
        [*S, ..., E, O]: S is zero or more dimensions of stacked maps (one per edge type,
        say), each applied to every edge. From ``FACTORIZE_FROM_FEATURES`` features on, the
        [..., E, 2F] pairs are never built: since W [x_s; x_r] = W_s x_s + W_r x_r, both
        halves of every map are applied once per node (N rows, not E) in one GEMM, the
        sender's half is gathered per edge and the receiver's broadcast over its N-1
        contiguous incoming edges. With fewer features one GEMM over the small pairs is
        cheaper than that gather. ``activation`` (optional) may work in place
        (``torch.relu_``): it sees a fresh tensor before any reshape, so autograd copies
        nothing for it.
        """
        self._check(x, self.num_objects, "x", "N (objects)")
        features, stack, maps, out = self._check_linear(x, weight, bias)
        lead = x.shape[:-2]
        if features < FACTORIZE_FROM_FEATURES:
            pairs = self.node_to_edge(x).reshape(-1, 2 * features)  # [rows, 2F]
            edges = _stacked_linear(pairs, weight.reshape(maps, 2 * features, out), bias)
        else:
            # [F, 2 * maps * O]: (sender, receiver) outer, then the stacked maps.
            w = weight.reshape(maps, 2, features, out).permute(2, 1, 0, 3).flatten(1)
            proj = (x @ w).unflatten(-1, (2, maps, out)).movedim(-2, 0)  # [maps, ..., N, 2, O]
            send, recv = proj[..., 0, :], proj[..., 1, :]
            if bias is not None:
                recv = recv + bias.reshape(maps, *[1] * (x.dim() - 1), out)
            pairs = send.index_select(-2, self.senders).unflatten(-2, self._by_receiver)
            edges = pairs + recv.unsqueeze(-2)  # [maps, ..., N, N-1, O]
        if activation is not None:
            edges = activation(edges)
        return edges.view(*stack, *lead, self.num_edges, out)

    def edge_to_node_weighted(self, e: Tensor, weights: Tensor, mean: bool = False) -> Tensor:
        """``edge_to_node(e * weights[..., None], mean)`` without building the product.

        e: [..., E, H], weights: [..., E] (leading dimensions broadcast with e's) ->
        [..., N, H]. One matrix-vector product per receiver over its N-1 incoming edges, so
        neither the forward nor the backward pass materializes another [..., E, H] tensor
        besides the gradient of e.
        """
        self._check(e, self.num_edges, "e", "E (edges)")
        w = weights.unflatten(-1, self._by_receiver).unsqueeze(-2)  # [..., N, 1, N-1]
        total = (w @ e.unflatten(-2, self._by_receiver)).squeeze(-2)
        return total / (self.num_objects - 1) if mean else total

    @property
    def _by_receiver(self) -> tuple[int, int]:
        """The edge dimension split as (receiver, sender) = (N, N-1): receiver-major order."""
        return self.num_objects, self.num_objects - 1

    def _check_linear(
        self, x: Tensor, weight: Tensor, bias: Tensor | None
    ) -> tuple[int, torch.Size, int, int]:
        """features F, stacked dimensions S, number of stacked maps, outputs O."""
        features = x.shape[-1]
        if weight.dim() < 2 or weight.shape[-2] != 2 * features:
            raise ValueError(
                f"weight must be [*S, 2F, O] with 2F = {2 * features} rows (sender features "
                f"first, then receiver features) for x with F = {features}, got shape "
                f"{tuple(weight.shape)}"
            )
        stack, out = weight.shape[:-2], weight.shape[-1]
        if bias is not None and bias.shape != (*stack, out):
            raise ValueError(
                f"bias must be [*S, O] = {[*stack, out]} for weight of shape "
                f"{tuple(weight.shape)}, got shape {tuple(bias.shape)}"
            )
        return features, stack, math.prod(stack), out

    def _check(self, t: Tensor, size: int, name: str, what: str) -> None:
        if t.dim() < 2 or t.shape[-2] != size:
            raise ValueError(
                f"{name} must have {what} = {size} in dimension -2 for a graph on "
                f"{self.num_objects} objects, got shape {tuple(t.shape)}"
            )
        if t.device != self.device:
            raise ValueError(
                f"{name} is on {t.device} but the graph is on {self.device}; "
                f"use full_graph({self.num_objects}, {name}.device)"
            )


@functools.lru_cache(maxsize=64)
def _cached_graph(num_objects: int, device: torch.device) -> Graph:
    return Graph(num_objects, device)


def full_graph(num_objects: int, device: torch.device | str | None = None) -> Graph:
    """The (cached) full graph on ``num_objects`` objects."""
    return _cached_graph(num_objects, torch.device(device or "cpu"))


def edges_to_adjacency(
    edges: Tensor, num_objects: int, fill: float = 0, *, dim: int = -1
) -> Tensor:
    """Edge values in receiver-major order -> adjacency matrices, ``fill`` on the diagonal.

    edges: [..., E, *rest] with the edge dimension at ``dim`` -> [..., N, N, *rest].
    The default ``dim=-1`` suits labels [B, E]; pass ``dim=-2`` for probabilities [B, E, K].
    Works for any dtype (integer labels, float probabilities, bool).
    """
    num_edges = num_objects * (num_objects - 1)
    dim = dim % edges.dim() if edges.dim() else 0
    if edges.dim() == 0 or edges.shape[dim] != num_edges:
        raise ValueError(
            f"edges must have E = N(N-1) = {num_edges} entries in dimension {dim} for "
            f"{num_objects} objects, got shape {tuple(edges.shape)}; pass dim= to say which "
            "dimension holds the edges (dim=-2 for [B, E, K])"
        )
    receivers, senders = edge_index(num_objects, edges.device)
    moved = edges.movedim(dim, 0)  # [E, ...]
    flat = moved.new_full((num_objects * num_objects, *moved.shape[1:]), fill)
    flat = flat.index_copy(0, receivers * num_objects + senders, moved)
    return flat.unflatten(0, (num_objects, num_objects)).movedim((0, 1), (dim, dim + 1))


def adjacency_to_edges(adj: Tensor, *, dim: int = -2) -> Tensor:
    """Adjacency matrices -> edge values in receiver-major order, diagonal dropped.

    adj: [..., N, N, *rest] with the receiver dimension at ``dim`` and the sender dimension
    right after it -> [..., E, *rest]. The default ``dim=-2`` suits [B, N, N]; pass
    ``dim=-3`` for [B, N, N, K].
    """
    if adj.dim() < 2:
        raise ValueError(f"adj must have at least 2 dimensions, got shape {tuple(adj.shape)}")
    dim = dim % adj.dim()
    if dim + 1 >= adj.dim() or adj.shape[dim] != adj.shape[dim + 1]:
        raise ValueError(
            f"adj must be square in dimensions {dim} and {dim + 1}, got shape "
            f"{tuple(adj.shape)}; pass dim= to say where the N x N block starts"
        )
    num_objects = adj.shape[dim]
    receivers, senders = edge_index(num_objects, adj.device)
    return adj.flatten(dim, dim + 1).index_select(dim, receivers * num_objects + senders)


def permute_objects_edges(perm: Tensor) -> Tensor:
    """The edge permutation induced by relabelling objects: new object a is old perm[a].

    perm: [N] -> [E] such that ``edges_new = edges_old[..., result, :]`` describes the same
    graph on the relabelled objects.
    """
    num_objects = perm.numel()
    receivers, senders = edge_index(num_objects, perm.device)
    old_receivers, old_senders = perm[receivers], perm[senders]
    # Receiver-major index of (i, j): row i holds N-1 edges, j shifts down past the diagonal.
    return old_receivers * (num_objects - 1) + old_senders - (old_senders > old_receivers).long()
