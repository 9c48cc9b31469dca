"""The graph's structure: which latent slots a graph of N objects has, how they map to the
ordered edges, which edges are known, and how a dynamic graph's frames fall into windows.

The ``graph:`` section of a model spec (:class:`GraphStructure`) holds modifiers that
compose with any edge prior (:mod:`nri_pyro.priors`): ``symmetric`` (one latent per
unordered pair, used in both directions), ``shared`` (one graph for all trajectories, a
global latent), ``known`` (observed edges that condition the edge site: ``adjacency`` for
the same known entries in every trajectory, or ``fraction`` of the training data's true
edges revealed, for semi-supervised training) and ``dynamic`` (``{window: W}``: a graph per
window of W frames, for graphs that change over time).

The window rule lives here once (:meth:`GraphStructure.window_spans`): window w covers
frames [w W, (w + 1) W), and the last window also takes the T mod W frames left over. The
model, the guide, evaluation and the CLI all ask the structure.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
from torch import Tensor

from nri_pyro.nn.graph import edge_index


class EdgeLayout:
    """The latent slots of a graph on N objects and how they map to the ordered edges.

    Without symmetry a slot is an ordered pair (E = N(N-1) slots, receiver-major). With
    symmetry a slot is an unordered pair {i, j}, i < j (U = N(N-1)/2 slots), and both
    directions read the same slot. ``edge_slot`` [E] gives each ordered edge's slot;
    ``slot_edges`` [U, 2] each slot's ordered edges ((i, j) and (j, i); twice the same
    edge without symmetry).
    """

    def __init__(self, num_objects: int, symmetric: bool, device: torch.device | str) -> None:
        # Built on the CPU whatever torch's default device, then moved (every tensor is
        # given its device: torch.compile traces no device context).
        cpu = torch.device("cpu")
        n = num_objects
        receivers, senders = edge_index(n, cpu)
        edge_id = torch.full((n, n), -1, dtype=torch.long, device=cpu)
        edge_id[receivers, senders] = torch.arange(n * (n - 1), device=cpu)
        if symmetric:
            low, high = torch.minimum(receivers, senders), torch.maximum(receivers, senders)
            first, second = torch.triu_indices(n, n, offset=1, device=cpu)
            slot_id = torch.full((n, n), -1, dtype=torch.long, device=cpu)
            slot_id[first, second] = torch.arange(first.numel(), device=cpu)
            edge_slot = slot_id[low, high]
            slot_edges = torch.stack([edge_id[first, second], edge_id[second, first]], dim=1)
        else:
            edge_slot = torch.arange(n * (n - 1), device=cpu)
            slot_edges = edge_slot.unsqueeze(1).expand(-1, 2)
        self.num_objects, self.symmetric = n, symmetric
        self.num_edges = n * (n - 1)
        self.num_slots = slot_edges.shape[0]
        self.edge_slot = edge_slot.to(device)
        self.slot_edges = slot_edges.contiguous().to(device)

    def to_edges(self, slots: Tensor, dim: int = -2) -> Tensor:
        """Slot values [..., U, ...] -> ordered-edge values [..., E, ...] along ``dim``."""
        return slots.index_select(dim, self.edge_slot) if self.symmetric else slots

    def logits_to_slots(self, logits: Tensor) -> Tensor:
        """Ordered-edge logits [..., E, K] -> slot logits [..., U, K]: the mean of the two
        directions' logits (a symmetric guide reads the evidence of both)."""
        if not self.symmetric:
            return logits
        pair = logits.index_select(-2, self.slot_edges.reshape(-1))
        return pair.unflatten(-2, (self.num_slots, 2)).mean(-2)

    def known_to_slots(self, values: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """Known ordered edges (values, mask: [..., E]) -> per slot ([..., U]).

        A slot is known when either direction is; where both are, they must agree.
        """
        if not self.symmetric:
            return values, mask
        v = values.index_select(-1, self.slot_edges.reshape(-1)).unflatten(-1, (-1, 2))
        m = mask.index_select(-1, self.slot_edges.reshape(-1)).unflatten(-1, (-1, 2))
        if bool((m.all(-1) & (v[..., 0] != v[..., 1])).any()):
            raise ValueError(
                "graph.symmetric: known edges must have the same type in both directions, "
                "but some (i, j) and (j, i) differ"
            )
        return torch.where(m[..., 0], v[..., 0], v[..., 1]), m.any(-1)


GRAPH_DEFAULTS: dict[str, Any] = {
    "symmetric": False, "shared": False, "known": None, "dynamic": None,
}  # fmt: skip


class GraphStructure:
    """The ``graph:`` section of a model spec, checked, shared by the model and the guide.

    - ``symmetric``: one latent per unordered pair, used in both directions.
    - ``shared``: one graph for all trajectories (a global latent, with a pooled guide).
    - ``known``: ``{adjacency: [[...]]}``, an N x N matrix of known types with null (or -1)
      where unknown, the same for every trajectory; or ``{fraction: f, seed: s}``, a fixed
      random fraction f of each training trajectory's true edges revealed in training
      (semi-supervised NRI; needs labelled training data).
    """

    def __init__(self, settings: dict[str, Any] | None, num_edge_types: int) -> None:
        settings = {**GRAPH_DEFAULTS, **(settings or {})}
        unknown = sorted(set(settings) - set(GRAPH_DEFAULTS))
        if unknown:
            raise ValueError(
                f"unknown key(s) {', '.join(f'graph.{k}' for k in unknown)}; valid keys: "
                f"{', '.join(f'graph.{k}' for k in GRAPH_DEFAULTS)}"
            )
        for key in ("symmetric", "shared"):
            if not isinstance(settings[key], bool):
                raise ValueError(f"graph.{key} must be true or false, got {settings[key]!r}")
        self.symmetric: bool = settings["symmetric"]
        self.shared: bool = settings["shared"]
        self.num_edge_types = num_edge_types
        self.adjacency: Tensor | None = None
        self.fraction = 0.0
        self.seed = 0
        known = self.known = settings["known"]
        if known is not None:
            self._read_known(known)
        self.window: int | None = None
        if settings["dynamic"] is not None:
            self._read_dynamic(settings["dynamic"])
        if self.shared and self.fraction > 0:
            raise ValueError(
                "graph.known.fraction reveals edges per trajectory, but graph.shared has one "
                "graph for all of them; give graph.known.adjacency instead"
            )

    def _read_dynamic(self, dynamic: Any) -> None:
        window = dynamic.get("window") if isinstance(dynamic, dict) else None
        if not isinstance(dynamic, dict) or set(dynamic) != {"window"}:
            raise ValueError(
                f"graph.dynamic must be {{window: W}} (frames per window), got {dynamic!r}"
            )
        if isinstance(window, bool) or not isinstance(window, int) or window < 1:
            raise ValueError(f"graph.dynamic.window must be a positive integer, got {window!r}")
        if self.shared:
            raise ValueError(
                "graph.dynamic gives every trajectory its own graph per window, graph.shared "
                "one graph for all trajectories and times: choose one"
            )
        if self.known is not None:
            raise ValueError(
                "graph.known is not supported with graph.dynamic: known edges are given for "
                "a whole trajectory, a dynamic graph has one per window"
            )
        self.window = window

    def num_windows(self, num_frames: int) -> int:
        """Windows of a trajectory of ``num_frames`` frames: max(1, T // W)."""
        if self.window is None:
            raise ValueError("the graph is static (no graph.dynamic): it has no windows")
        return max(1, num_frames // self.window)

    def window_index(self, frames: Tensor, num_windows: int) -> Tensor:
        """The window of each frame index in ``frames`` among ``num_windows`` windows:
        min(t // W, num_windows - 1). This is the window rule, and the only place that
        states it: window w covers frames [w W, (w + 1) W), the last window also the frames
        left over (so ``num_windows`` may be a longer trajectory's count)."""
        if self.window is None:
            raise ValueError("the graph is static (no graph.dynamic): it has no windows")
        return (frames // self.window).clamp(max=num_windows - 1)

    def window_of_frames(self, num_frames: int, device: torch.device | str) -> Tensor:
        """The window of each frame of a trajectory of ``num_frames`` frames: [T]."""
        frames = torch.arange(num_frames, device=device)
        return self.window_index(frames, self.num_windows(num_frames))

    def window_spans(self, num_frames: int, device: torch.device | str) -> Tensor:
        """The first frame and one past the last of every window of a trajectory of
        ``num_frames`` frames: [W, 2] (from :meth:`window_of_frames`)."""
        window = self.window_of_frames(num_frames, device)
        count = self.num_windows(num_frames)
        frames = torch.arange(num_frames, device=device)
        starts = torch.full((count,), num_frames, device=device, dtype=frames.dtype)
        starts = starts.scatter_reduce(0, window, frames, reduce="amin")
        ends = torch.cat([starts[1:], starts.new_tensor([num_frames])])
        return torch.stack([starts, ends], dim=1)

    def _read_known(self, known: Any) -> None:
        valid = {"adjacency", "fraction", "seed"}
        if not isinstance(known, dict) or not known or set(known) - valid:
            raise ValueError(
                "graph.known must be {adjacency: N x N matrix with null where unknown} or "
                f"{{fraction: f, seed: s}}, got {known!r}"
            )
        if "adjacency" in known and "fraction" in known:
            raise ValueError("graph.known takes adjacency or fraction, not both")
        if "adjacency" in known:
            self.adjacency = _known_adjacency(known["adjacency"], self.num_edge_types)
            return
        fraction, seed = known.get("fraction"), known.get("seed", 0)
        if isinstance(fraction, bool) or not isinstance(fraction, (int, float)):
            raise ValueError(f"graph.known.fraction must be a number in [0, 1], got {fraction!r}")
        if not 0 <= fraction <= 1:
            raise ValueError(f"graph.known.fraction must lie in [0, 1], got {fraction!r}")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"graph.known.seed must be an integer, got {seed!r}")
        self.fraction, self.seed = float(fraction), seed

    def settings(self) -> dict[str, Any]:
        known = None
        if self.adjacency is not None:
            adj = self.adjacency.tolist()
            known = {"adjacency": [[None if v < 0 else v for v in row] for row in adj]}
        elif self.fraction > 0:
            known = {"fraction": self.fraction, "seed": self.seed}
        dynamic = None if self.window is None else {"window": self.window}
        return {"symmetric": self.symmetric, "shared": self.shared, "known": known,
                "dynamic": dynamic}  # fmt: skip

    def check_objects(self, num_objects: int) -> None:
        """Clear errors for settings that do not fit graphs of ``num_objects`` objects."""
        if self.adjacency is not None and self.adjacency.shape[0] != num_objects:
            n = self.adjacency.shape[0]
            raise ValueError(
                f"graph.known.adjacency is {n} x {n} but the data have {num_objects} objects"
            )
        if self.adjacency is not None and self.symmetric:
            EdgeLayout(num_objects, True, "cpu").known_to_slots(*self._known_edges())

    def layout(self, num_objects: int, device: torch.device | str) -> EdgeLayout:
        return _layout(num_objects, self.symmetric, torch.device(device))

    def _known_edges(self) -> tuple[Tensor, Tensor]:
        """The spec's known adjacency as ordered edges: values, mask [E]."""
        assert self.adjacency is not None
        n = self.adjacency.shape[0]
        off_diagonal = ~torch.eye(n, dtype=torch.bool, device=self.adjacency.device)
        values = self.adjacency[off_diagonal]
        return values.clamp(min=0), values >= 0

    def known_slots(
        self, edges: Tensor | None, edge_mask: Tensor | None, layout: EdgeLayout, batch: int
    ) -> tuple[Tensor, Tensor] | None:
        """Known types and mask per slot, [B, U] ([1, U] for a shared graph), from the
        spec's known adjacency and the edges passed at call time; None when none are."""
        device = layout.edge_slot.device
        values = mask = None
        if self.adjacency is not None:
            self.check_objects(layout.num_objects)
            v, m = self._known_edges()
            values = v.to(device).expand(batch, -1)
            mask = m.to(device).expand(batch, -1)
        if edges is not None:
            if self.shared:
                raise ValueError(
                    "a shared graph takes known edges from graph.known.adjacency in the model "
                    "spec, not per trajectory at call time"
                )
            call_mask = torch.ones_like(edges, dtype=torch.bool) if edge_mask is None else edge_mask
            if values is None:
                values, mask = edges, call_mask
            else:
                values = torch.where(call_mask, edges, values)
                mask = call_mask | mask
        if values is None:
            return None
        values, mask = layout.known_to_slots(values, mask)
        return (values[:1], mask[:1]) if self.shared else (values, mask)

    def training_mask(self, num_trajectories: int, num_objects: int) -> Tensor | None:
        """Which training edges are revealed under ``known.fraction``: [S, E] bool, fixed by
        the seed (per unordered pair when symmetric); None when the fraction is 0."""
        if self.fraction <= 0:
            return None
        layout = self.layout(num_objects, "cpu")
        generator = torch.Generator().manual_seed(self.seed)
        revealed = torch.rand(num_trajectories, layout.num_slots, generator=generator, device="cpu")
        return layout.to_edges(revealed < self.fraction, dim=-1)


def check_dynamic(prior: Any, structure: GraphStructure, decoder: type) -> None:
    """Clear errors for a prior (an :class:`~nri_pyro.priors.EdgePrior`; this module sits
    below the priors) or decoder class that does not fit the graph's structure: a prior
    over windows needs windows, a prior over per-object latents (``node_level``) one
    static, unshared graph per trajectory without known edges, and windows need a decoder
    whose class declares ``per_step_edges`` (it takes edges that change from step to
    step)."""
    if prior.dynamic_only and structure.window is None:
        raise ValueError(
            f"prior.name={prior.name} is a prior over how edges change between windows: it "
            f"needs a dynamic graph, graph.dynamic: {{window: W}}"
        )
    if getattr(prior, "node_level", False):
        parts = [
            (structure.window is not None, "a dynamic graph (graph.dynamic)"),
            (structure.shared, "a shared graph (graph.shared)"),
            (structure.known is not None, "known edges (graph.known)"),
        ]
        used = [what for on, what in parts if on]
        if used:
            raise ValueError(
                f"prior.name={prior.name} draws a latent per object and makes every edge a "
                f"function of them, one graph per trajectory: it does not take "
                f"{' or '.join(used)}"
            )
    if structure.window is not None and not getattr(decoder, "per_step_edges", False):
        name = getattr(decoder, "name", decoder.__name__)
        raise ValueError(
            f"graph.dynamic needs a decoder that takes edges that change per step (such as "
            f"mlp); decoder.name is {name!r}"
        )


@functools.lru_cache(maxsize=64)
def _layout(num_objects: int, symmetric: bool, device: torch.device) -> EdgeLayout:
    return EdgeLayout(num_objects, symmetric, device)


def _known_adjacency(adjacency: Any, num_edge_types: int) -> Tensor:
    """An N x N matrix of known types (null or -1 where unknown, diagonal ignored)."""
    rows = adjacency if isinstance(adjacency, (list, tuple)) else None
    n = len(rows) if rows is not None else 0
    if n < 2 or any(not isinstance(r, (list, tuple)) or len(r) != n for r in rows):
        raise ValueError(
            "graph.known.adjacency must be a square N x N matrix (a list of N lists of N "
            "entries: the known type of sender j's influence on receiver i, null if unknown)"
        )
    out = torch.full((n, n), -1, dtype=torch.long)
    for i, row in enumerate(rows):
        for j, value in enumerate(row):
            if i == j or value is None or value == -1:
                continue
            integer = isinstance(value, int) and not isinstance(value, bool)
            if not integer or not 0 <= value < num_edge_types:
                raise ValueError(
                    f"graph.known.adjacency[{i}][{j}] = {value!r}: known types must be integers "
                    f"in 0..{num_edge_types - 1} (null or -1 where unknown)"
                )
            out[i, j] = value
    return out
