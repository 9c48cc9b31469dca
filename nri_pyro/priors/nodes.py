"""Priors whose edges are a function of latents per object: ``charges``.

In the charged-particles system every object carries a charge of +1 or -1 and the type of
a pair is the product of the two charges (repel for equal signs, attract for opposite
ones). Of the 2 ** (N(N-1)/2) graphs an edge-wise prior allows, only 2 ** (N-1) are
possible: every triangle holds an even number of "opposite" edges. :class:`ChargePrior`
says exactly that, as a generative model per trajectory:

    s_0 = A,  s_i ~ Categorical(1/2, 1/2) over {A, B}  (i = 1 .. N-1)
    z_ij = "same" type   if s_i = s_j,  the other type otherwise

Object 0's sign is fixed, because flipping every sign gives the same graph. Which edge
type equal signs take (``same``) is given, or (``same: null``, the default) a latent of
its own per trajectory: an unsupervised model's types have no names, and the decoder may
learn either meaning for type 1.

The latent is written in one of two ways (``inference``), the same prior either way:

- ``joint`` (up to :data:`MAX_JOINT_OBJECTS` objects by default): one relaxed one-hot
  ``signs`` [B, G] over the G equally likely assignments (2 ** (N-1) signs, times 2
  labellings with ``same: null``); the edges are the assignments' graphs weighted by it.
  The guide is the encoder's edge-wise posterior restricted to these graphs
  (:meth:`ChargePrior.node_logits`), an exact joint posterior, not a factorised one;
- ``mean_field``: a relaxed one-hot sign per object, ``signs`` [B, N-1, 2]; an edge is
  P(s_i = s_j) = <s_i, s_j>. The guide treats the encoder's log-odds that a pair has
  equal signs as the couplings of an Ising model anchored at object 0, and a few sweeps
  of mean field give each object's sign. Any N, one labelling.

Either way each relaxed edge lies on the simplex and equals the hard one at one-hot
latents, and the encoder and decoder of the edge-wise model are reused as they are.

Using this prior is using knowledge of the system: results with it are labelled so
(:data:`ChargePrior.system_knowledge`). It does not apply to springs or Kuramoto, whose
graphs are not balanced: on training data whose true graphs contradict it, training
refuses to start (:meth:`ChargePrior.check_truth`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from nri_pyro.distributions import EdgeTypes
from nri_pyro.nn.graph import edge_index, edges_to_adjacency
from nri_pyro.priors.base import EdgePrior, register_prior

SIGNS_SITE = "signs"
# inference: auto writes the latent as one categorical over the sign assignments up to
# this many objects (2,048 of one labelling, 4,096 of both), as a sign per object beyond
# (with prior.same set: mean field has one labelling).
MAX_JOINT_OBJECTS = 12


@register_prior("charges")
class ChargePrior(EdgePrior):
    """Edge types from a latent sign per object (two edge types only).

    Args:
        num_edge_types: must be 2.
        temperature: relaxation of the latent's prior density (the "concrete" objective).
        same: the edge type of a pair with equal signs (1 for the charged system's stored
            labels, where 1 is "repel"); the other type is a pair of opposite signs. null
            (the default): either, a latent of its own per trajectory with probability 1/2
            each (the 2 ** N graphs of both labellings), so that the decoder may give the
            types either meaning: an unsupervised model's types have no names, and with one
            labelling fixed, a decoder that happens to read type 1 as "attract" leaves the
            prior no graph that fits (the truth's attracting pairs do not form groups).
            Joint inference only.
        inference: how the latent is written and inferred. "joint": one categorical over
            the 2 ** (N-1) sign assignments (the site ``signs`` [B, 2 ** (N-1)]), whose
            guide is the encoder's edge-wise posterior restricted to the balanced graphs,
            exact and joint; "mean_field": a sign per object (``signs`` [B, N-1, 2]),
            inferred by mean field from the pair evidence (:meth:`node_logits`), for any N;
            "auto": joint up to :data:`MAX_JOINT_OBJECTS` objects, else mean field. The
            prior is the same distribution either way: every assignment equally likely.
        iterations: the mean-field sweeps (with ``inference: mean_field``).
    """

    node_level = True
    site = SIGNS_SITE
    system_knowledge = "edge types are the product of two per-object signs (charges)"
    INFERENCE = ("auto", "joint", "mean_field")

    def __init__(
        self, num_edge_types: int, temperature: float = 0.5, same: int | None = None,
        inference: str = "auto", iterations: int = 5,
    ) -> None:  # fmt: skip
        super().__init__(num_edge_types, temperature)
        if num_edge_types != 2:
            raise ValueError(
                f"prior.name=charges makes every edge type the product of two signs, so the "
                f"model must have 2 edge types (equal and opposite signs), but edge_types is "
                f"{num_edge_types}"
            )
        if same not in (0, 1, None) or isinstance(same, bool):
            raise ValueError(
                f"prior.same (the edge type of a pair with equal signs) must be 0, 1 or null "
                f"(either), got {same!r}"
            )
        if same is None and inference == "mean_field":
            raise ValueError(
                "prior.inference=mean_field infers a sign per object for one labelling: set "
                "prior.same to 0 or 1 (the edge type of a pair with equal signs)"
            )
        if inference not in self.INFERENCE:
            raise ValueError(
                f"prior.inference must be one of {', '.join(self.INFERENCE)}, got {inference!r}"
            )
        if not isinstance(iterations, int) or isinstance(iterations, bool) or iterations < 1:
            raise ValueError(
                f"prior.iterations (the guide's mean-field sweeps) must be an integer >= 1, "
                f"got {iterations!r}"
            )
        self.same = same
        self.inference = inference
        self.iterations = iterations

    def joint(self, num_objects: int) -> bool:
        """Whether the latent of ``num_objects`` objects is one categorical over the sign
        assignments (else a sign per object)."""
        if self.inference != "auto":
            return self.inference == "joint"
        if num_objects > MAX_JOINT_OBJECTS and self.same is None:
            raise ValueError(
                f"prior.name=charges on {num_objects} objects: more than {MAX_JOINT_OBJECTS} "
                f"are inferred by mean field, a sign per object, which needs one labelling: "
                f"set prior.same to 0 or 1 (the edge type of a pair with equal signs), or "
                f"prior.inference=joint for all {2**num_objects:,} assignments"
            )
        return num_objects <= MAX_JOINT_OBJECTS

    def num_graphs(self, num_objects: int) -> int:
        """The graphs the prior allows on ``num_objects`` objects, each equally likely:
        2 ** (N-1) for one labelling, 2 ** N for either (``same: null``; for N = 2 the
        two labellings' graphs coincide, each counted twice)."""
        return 2 ** (num_objects - (self.same is not None))

    def probs(self, like: Tensor) -> Tensor:
        """Each edge's marginal type probabilities under the prior: 1/2 each."""
        return torch.full((2,), 0.5, device=like.device, dtype=like.dtype)

    def node_distribution(self, like: Tensor, batch: int, num_objects: int) -> EdgeTypes:
        """p(s) of ``batch`` trajectories: [B, G] over the G assignments (joint: the signs,
        and with ``same: null`` the labelling), or [B, N-1] relaxed one-hot signs of
        objects 1 .. N-1 (mean field); every assignment equally likely."""
        if self.joint(num_objects):
            count = self.num_graphs(num_objects)
            probs = torch.full((count,), 1.0 / count, device=like.device, dtype=like.dtype)
            return EdgeTypes(self.temperature, probs=probs).expand([batch])
        return self.distribution(self.probs(like), [batch, num_objects - 1])

    def edges(self, latent: Tensor, num_objects: int) -> Tensor:
        """The latent (relaxed, one-hot, or probabilities; [..., G] joint, [..., N-1, 2]
        mean field) -> the ordered edges' types [..., E, 2], receiver-major. Given
        probabilities, each edge's marginal."""
        if self.joint(num_objects):
            table = self.assignment_edges(num_objects, latent)[..., 1]  # [G, E]
            # a convex combination of 0s and 1s, to rounding: clamped, so that both
            # types' probabilities lie in [0, 1] and sum to 1 exactly
            return _pair(torch.clamp(latent @ table, 0.0, 1.0))
        return _sign_edges(latent, self.same)

    def assignment_edges(self, num_objects: int, like: Tensor) -> Tensor:
        """The one-hot edge types [G, E, 2] of every assignment g = 0 .. G - 1 (bit i-1 of
        g: object i's sign is B; with ``same: null`` bit N-1 the labelling, 0: equal signs
        are type 1), on ``like``'s device and dtype."""
        n = num_objects
        codes = torch.arange(2 ** (n - 1), device=like.device)
        bits = (codes[:, None] >> torch.arange(n - 1, device=like.device)) & 1
        signs = torch.nn.functional.one_hot(bits, 2).to(like.dtype)
        if self.same is not None:
            return _sign_edges(signs, self.same)
        return torch.cat([_sign_edges(signs, 1), _sign_edges(signs, 0)])

    def node_logits(self, edge_logits: Tensor) -> Tensor:
        """The guide's logits of the latent from its encoder's edge logits [B, E, 2]:
        [B, 2 ** (N-1)] (joint) or [B, N-1, 2] (mean field).

        Joint: log q(g) = sum over the pairs of the encoder's log-probability of the
        type that assignment g gives the pair (the mean over both directions), up to a
        constant: the encoder's edge-wise posterior restricted to the balanced graphs.

        Mean field: a_ij, the log-odds that i and j have equal signs (the ``same`` type's
        logit minus the other's, averaged over both directions), are the couplings of an
        Ising model p(s) ~ exp(sum_{i<j} a_ij [s_i = s_j]) with object 0 fixed at A;
        ``iterations`` sweeps of mean field (all objects at once, from m_0 = 1 and
        m_i = 0, m = P(A) - P(B)) give each object's log-odds of A, sum_j a_ij m_j."""
        n = _objects(edge_logits.shape[-2])
        if self.joint(n):  # mean field has a labelling (same is 0 or 1)
            log_q = torch.log_softmax(edge_logits, -1).flatten(-2)  # [B, E * 2]
            table = self.assignment_edges(n, edge_logits).flatten(1)  # [G, E * 2]
            return 0.5 * log_q @ table.T
        log_odds = edge_logits[..., self.same] - edge_logits[..., 1 - self.same]  # [B, E]
        a = edges_to_adjacency(log_odds, n)  # [B, N, N], zero diagonal
        a = 0.5 * (a + a.transpose(-1, -2))
        m = torch.zeros_like(a[..., 0])  # [B, N]
        m[..., 0] = 1.0
        anchor = m.clone()
        for _ in range(self.iterations):
            field = (a @ m.unsqueeze(-1)).squeeze(-1)  # log-odds of A, per object
            m = torch.cat([anchor[..., :1], torch.tanh(0.5 * field[..., 1:])], dim=-1)
        half = 0.5 * field[..., 1:]
        return torch.stack([half, -half], dim=-1)

    def check_truth(self, edges: Tensor, num_objects: int) -> None:
        """Refuse training data [S, E] whose true graphs no signs can produce (springs,
        Kuramoto): with this prior the model could never fit them."""
        if edges is None or edges.dim() != 2 or not len(edges):
            return
        adjacency = edges_to_adjacency(edges.long(), num_objects)  # [S, N, N]
        labelling = "either type" if self.same is None else f"type {self.same}"
        if not bool((adjacency == adjacency.transpose(-1, -2)).all()):
            problem = "some (i, j) and (j, i) have different types (the graphs are directed)"
        else:
            unbalanced = {same: _unbalanced(adjacency == same) for same in (0, 1)}
            if self.same is None:
                bad = unbalanced[0] & unbalanced[1]
            else:
                bad = unbalanced[self.same]
            if not bool(bad.any()):
                return
            problem = (
                f"{int(bad.sum())} of {len(edges)} training graphs are not balanced (the first "
                f"is trajectory {int(bad.nonzero()[0])}: no signs give its pairs of "
                f"{labelling} for equal signs)"
            )
            if self.same is not None and not bool(unbalanced[1 - self.same].any()):
                problem += f"; with prior.same={1 - self.same} they would all be balanced"
        raise ValueError(
            "prior.name=charges makes every edge type the product of two per-object signs "
            f"(charged particles, {labelling} for equal signs), but the training data's true "
            f"graphs contradict it: {problem}. It does not apply to springs or Kuramoto: use "
            "an edge-wise prior there (uniform, sparse, dirichlet)"
        )

    def settings(self) -> dict[str, Any]:
        return {
            **super().settings(), "same": self.same, "inference": self.inference,
            "iterations": self.iterations,
        }  # fmt: skip


def _pair(type_1: Tensor) -> Tensor:
    """P(type 1) [..., E] -> both types' probabilities [..., E, 2]."""
    return torch.stack([1.0 - type_1, type_1], dim=-1)


def _sign_edges(signs: Tensor, same: int) -> Tensor:
    """Signs of objects 1 .. N-1 [..., N-1, 2] (object 0's is A) -> the edges' types
    [..., E, 2]: type ``same`` with probability P(equal signs) = <s_i, s_j>."""
    anchor = torch.zeros_like(signs[..., :1, :])
    anchor[..., 0] = 1.0
    full = torch.cat([anchor, signs], dim=-2)  # [..., N, 2]
    receivers, senders = edge_index(full.shape[-2], full.device)
    equal = (full.index_select(-2, receivers) * full.index_select(-2, senders)).sum(-1)
    return _pair(equal if same == 1 else 1.0 - equal)


def _unbalanced(equal: Tensor) -> Tensor:
    """Which graphs [S, N, N] of "equal signs" pairs (the diagonal is read as True) no
    signs explain: [S].
    The signs that could: object j's is A iff its pair with object 0 is equal."""
    equal = equal | torch.eye(equal.shape[-1], dtype=torch.bool, device=equal.device)
    signs = equal[:, 0, :]
    implied = signs.unsqueeze(-1) == signs.unsqueeze(-2)
    return (implied != equal).flatten(1).any(-1)


def _objects(num_edges: int) -> int:
    """N from E = N(N-1)."""
    n = round((1 + (1 + 4 * num_edges) ** 0.5) / 2)
    if n * (n - 1) != num_edges:
        raise ValueError(f"{num_edges} edges are not the N(N-1) ordered pairs of any N")
    return n
