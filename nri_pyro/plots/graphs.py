"""Figures of a fit's inferred graph: the graph drawn with its edge probabilities, the
probabilities per edge and over time (graphs that change over time), and their calibration
against the true edge types."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch

from nri_pyro.metrics import EdgeAccumulator, expected_calibration_error
from nri_pyro.nn import edges_to_adjacency
from nri_pyro.plots.common import as_array, palette


# --- graphs ------------------------------------------------------------------------------
def _adjacency_probs(probs: Any) -> np.ndarray:
    """[N, N, K] from [N, N, K] or [E, K] edge-type probabilities (diagonal NaN)."""
    p = as_array(probs, "probs")
    if p.ndim == 2:
        num_objects = (1 + math.isqrt(1 + 4 * p.shape[0])) // 2
        if num_objects * (num_objects - 1) != p.shape[0]:
            raise ValueError(
                f"probs: [E, K] needs E = N(N-1) edges for some N, got E = {p.shape[0]}"
            )
        p = edges_to_adjacency(torch.from_numpy(p), num_objects, math.nan, dim=-2).numpy()
    if p.ndim != 3 or p.shape[0] != p.shape[1]:
        raise ValueError(
            f"probs: expected edge-type probabilities [N, N, K] or [E, K], got shape {p.shape}"
        )
    p = p.copy()
    p[np.eye(p.shape[0], dtype=bool)] = np.nan
    return p


def _true_adjacency(truth: Any, num_objects: int) -> np.ndarray:
    t = as_array(truth, "truth")
    if t.ndim == 1:
        if t.shape[0] != num_objects * (num_objects - 1):
            raise ValueError(
                f"truth: expected {num_objects * (num_objects - 1)} edges for {num_objects} "
                f"objects like probs, got {t.shape[0]}"
            )
        t = edges_to_adjacency(torch.from_numpy(t), num_objects, math.nan).numpy()
    if t.shape != (num_objects, num_objects):
        raise ValueError(
            f"truth: expected true edge types [N, N] = [{num_objects}, {num_objects}] (or "
            f"[E]) like probs, got shape {t.shape}"
        )
    return t


def _selected(p: np.ndarray, no_edge: int, edge_type: int | None) -> tuple[np.ndarray, str]:
    k = p.shape[-1]
    for name, value in (("no_edge", no_edge), ("edge_type", edge_type)):
        if value is not None and not 0 <= value < k:
            raise ValueError(f"{name}: expected an edge type in 0..{k - 1}, got {value}")
    if edge_type is not None:
        return p[..., edge_type], f"p(edge type {edge_type})"
    return 1.0 - p[..., no_edge], "p(edge present)"


def plot_graph(
    probs: Any,
    truth: Any = None,
    positions: Any = None,
    *,
    no_edge: int = 0,
    edge_type: int | None = None,
    min_prob: float = 0.05,
    title: str | None = None,
) -> Figure:
    """The inferred graph of one trajectory beside the true one.

    probs: [N, N, K] or [E, K] edge-type probabilities; truth: [N, N] (or [E]) true types;
    positions: [N, 2] the objects' positions at a chosen frame. Heatmaps show p(edge
    present) = 1 - p(``no_edge``), or p(``edge_type``) when given, receivers in rows and
    senders in columns; the node-link panel draws an arrow sender -> receiver for each pair
    with probability >= ``min_prob``, its width and opacity by the probability (true edges
    dotted grey underneath).
    """
    p = _adjacency_probs(probs)
    num_objects = p.shape[0]
    shown, label = _selected(p, no_edge, edge_type)
    true = None
    if truth is not None:
        t = _true_adjacency(truth, num_objects)
        true = (t == edge_type) if edge_type is not None else (t != no_edge)
        true = np.where(np.eye(num_objects, dtype=bool), np.nan, true.astype(float))
    pos = None
    if positions is not None:
        pos = as_array(positions, "positions")
        if pos.shape != (num_objects, 2):
            raise ValueError(
                f"positions: expected [N, 2] = [{num_objects}, 2] for {num_objects} objects "
                f"like probs, got shape {pos.shape}"
            )
    panels = (
        ["inferred"]
        + (["true"] if true is not None else [])
        + (["graph"] if pos is not None else [])
    )
    fig = Figure(figsize=(4.2 * len(panels) + 1, 4), layout="constrained")
    axes = dict(zip(panels, fig.subplots(1, len(panels), squeeze=False)[0], strict=True))
    image = None
    for key, values, name in (("inferred", shown, f"inferred {label}"), ("true", true, "true")):
        if key not in axes:
            continue
        ax = axes[key]
        image = ax.imshow(values, vmin=0, vmax=1, cmap="viridis")
        ax.set(title=name, xlabel="sender j", ylabel="receiver i")
        ax.set_xticks(range(num_objects))
        ax.set_yticks(range(num_objects))
    fig.colorbar(image, ax=[axes[k] for k in ("inferred", "true") if k in axes], shrink=0.8)
    if pos is not None:
        _draw_graph(axes["graph"], shown, true, pos, min_prob)
        axes["graph"].set_title(f"{label} >= {min_prob:g} (width, opacity)", fontsize=9)
    if title:
        fig.suptitle(title)
    return fig


def _draw_graph(
    ax: Any, shown: np.ndarray, true: np.ndarray | None, pos: np.ndarray, min_prob: float
) -> None:
    """Arrows sender j -> receiver i, curved so that i -> j and j -> i stay apart."""
    num_objects = shown.shape[0]
    colors = palette(num_objects)
    if true is not None:
        for i, j in zip(*np.nonzero(np.nan_to_num(true) > 0.5), strict=True):
            ax.plot(pos[[i, j], 0], pos[[i, j], 1], ":", color="0.6", lw=1, zorder=1)
    for i in range(num_objects):
        for j in range(num_objects):
            if i == j or not shown[i, j] >= min_prob:
                continue
            ax.add_patch(
                FancyArrowPatch(
                    tuple(pos[j]),
                    tuple(pos[i]),
                    arrowstyle="-|>",
                    mutation_scale=12,
                    connectionstyle="arc3,rad=0.15",
                    lw=0.5 + 3 * shown[i, j],
                    alpha=float(np.clip(shown[i, j], 0.1, 1)),
                    color="k",
                    shrinkA=8,
                    shrinkB=8,
                    zorder=2,
                )
            )
    ax.scatter(pos[:, 0], pos[:, 1], s=160, c=colors, zorder=3, edgecolors="k")
    for i, (x, y) in enumerate(pos):
        ax.annotate(str(i), (x, y), ha="center", va="center", fontsize=8, zorder=4)
    ax.set(xlabel="x", ylabel="y", aspect="equal")
    ax.margins(0.2)


def _edge_names(num_edges: int) -> list[str]:
    """The names "j>i" (sender j, receiver i) of E = N(N-1) receiver-major edges."""
    num_objects = (1 + math.isqrt(1 + 4 * num_edges)) // 2
    if num_objects * (num_objects - 1) != num_edges:
        raise ValueError(f"probs: needs E = N(N-1) edges for some N, got E = {num_edges}")
    receivers, senders = np.nonzero(~np.eye(num_objects, dtype=bool))
    return [f"{j}>{i}" for i, j in zip(receivers, senders, strict=True)]


def plot_edge_probs(
    probs: Any,
    truth: Any = None,
    *,
    no_edge: int = 0,
    edge_type: int | None = None,
    title: str | None = None,
) -> Figure:
    """Edge posterior probabilities as a matrix: trajectories in rows, edges in columns.

    probs: [B, E, K] (or [E, K] for one trajectory); truth: [B, E] (or [E]) true types,
    drawn as a second matrix. Shows p(edge present) = 1 - p(``no_edge``), or p(``edge_type``).
    Columns are the ordered pairs "j>i" (sender j, receiver i), receiver-major.
    """
    p = as_array(probs, "probs")
    if p.ndim == 2:
        p = p[None]
    if p.ndim != 3:
        raise ValueError(f"probs: expected [B, E, K] or [E, K], got shape {p.shape}")
    names = _edge_names(p.shape[1])
    shown, label = _selected(p, no_edge, edge_type)
    true = None
    if truth is not None:
        t = as_array(truth, "truth")
        t = t[None] if t.ndim == 1 else t
        if t.shape != shown.shape:
            raise ValueError(
                f"truth: expected true edge types [B, E] = {list(shown.shape)} like probs, got "
                f"shape {t.shape}"
            )
        true = (t == edge_type) if edge_type is not None else (t != no_edge)
    panels = [(f"inferred {label}", shown)] + (
        [("true", true.astype(float))] if true is not None else []
    )
    fig = Figure(
        figsize=(max(5.0, 0.25 * p.shape[1] + 2), 1.5 + 2.5 * len(panels)), layout="constrained"
    )
    axes = fig.subplots(len(panels), 1, squeeze=False)[:, 0]
    image = None
    for ax, (name, values) in zip(axes, panels, strict=True):
        image = ax.imshow(
            values, vmin=0, vmax=1, cmap="viridis", aspect="auto", interpolation="nearest"
        )
        ax.set(title=name, ylabel="trajectory")
        if len(names) <= 42:
            ax.set_xticks(range(len(names)), names, rotation=90, fontsize=7)
    axes[-1].set_xlabel("edge (sender > receiver)")
    fig.colorbar(image, ax=list(axes), shrink=0.8)
    if title:
        fig.suptitle(title)
    return fig


# Up to this many edges, plot_edges_over_time draws one panel of lines per edge by default.
MAX_LINE_PANELS = 8


def plot_edges_over_time(
    probs: Any,
    true_types: Any = None,
    edges: Sequence[int] | None = None,
    *,
    no_edge: int = 0,
    edge_type: int | None = None,
    kind: str = "auto",
    title: str | None = None,
) -> Figure:
    """Inferred edge probabilities of one trajectory against the frame, beside the truth.

    probs: [T, E, K] per-frame edge-type probabilities, shown as p(edge present) =
    1 - p(``no_edge``), or p(``edge_type``) when given; or [T, E], already that probability.
    true_types: [T, E] per-frame true types, shown as 1 where the type is not ``no_edge``
    (or is ``edge_type``), else 0. edges: the indices (0..E-1, receiver-major, named "j>i"
    for sender j, receiver i) to show; default all. ``kind="lines"`` gives one panel per
    edge, the probability as a line and the truth as a dashed step line; ``"heatmap"`` two
    aligned matrices, edges in rows and frames in columns (inferred above, truth below);
    ``"auto"`` lines for up to ``MAX_LINE_PANELS`` edges, else heatmaps.
    """
    p = as_array(probs, "probs")
    if p.ndim == 3:
        shown, label = _selected(p, no_edge, edge_type)
    elif p.ndim == 2:
        shown, label = p, "p(edge)"  # no_edge / edge_type then only read the truth
    else:
        raise ValueError(
            f"probs: expected one trajectory's per-frame probabilities [T, E, K] (frames, "
            f"edges, edge types) or [T, E] (p(edge)), got shape {p.shape}; for a batch "
            f"[S, T, E, K], pass probs[s]"
        )
    num_frames, num_edges = shown.shape
    if num_frames == 0:
        raise ValueError("probs: expected at least one frame, got none")
    names = _edge_names(num_edges)
    if not np.all((shown >= 0) & (shown <= 1)):
        raise ValueError(
            f"probs: expected probabilities in [0, 1], got values in [{np.min(shown):.4g}, "
            f"{np.max(shown):.4g}] (or NaN)"
        )
    true = None
    if true_types is not None:
        t = as_array(true_types, "true_types")
        if t.shape != shown.shape:
            raise ValueError(
                f"true_types: expected per-frame true edge types [T, E] = {list(shown.shape)} "
                f"like probs, got shape {t.shape}"
            )
        true = ((t == edge_type) if edge_type is not None else (t != no_edge)).astype(float)
    if edges is None:
        edges = list(range(num_edges))
    edges = list(edges)
    bad = [e for e in edges if isinstance(e, bool) or not isinstance(e, int | np.integer)
           or not 0 <= e < num_edges]  # fmt: skip
    if not edges or bad:
        raise ValueError(
            f"edges: expected one or more edge indices in 0..{num_edges - 1}, got "
            f"{bad if bad else 'none'}"
        )
    if kind == "auto":
        kind = "lines" if len(edges) <= MAX_LINE_PANELS else "heatmap"
    if kind not in ("lines", "heatmap"):
        raise ValueError(f"kind: expected 'auto', 'lines' or 'heatmap', got {kind!r}")
    frames = np.arange(num_frames)
    if kind == "lines":
        fig = Figure(figsize=(7, 0.4 + 1.1 * len(edges)), layout="constrained")
        axes = fig.subplots(len(edges), 1, sharex=True, squeeze=False)[:, 0]
        for ax, e in zip(axes, edges, strict=True):
            ax.plot(frames, shown[:, e], color="tab:blue", lw=1.5, label=f"inferred {label}")
            if true is not None:
                ax.step(frames, true[:, e], where="mid", color="k", ls="--", lw=1, label="true")
            ax.set_ylim(-0.05, 1.05)
            ax.set_ylabel(names[e], rotation=0, ha="right", va="center")
        axes[0].legend(fontsize=7, loc="upper right", ncols=2)
        axes[-1].set_xlabel("frame")
    else:
        panels = [(f"inferred {label}", shown[:, edges].T)] + (
            [("true", true[:, edges].T)] if true is not None else []
        )
        fig = Figure(
            figsize=(max(5.0, 0.12 * num_frames + 2), 1 + len(panels) * (0.6 + 0.16 * len(edges))),
            layout="constrained",
        )
        axes = fig.subplots(len(panels), 1, sharex=True, squeeze=False)[:, 0]
        image = None
        for ax, (name, values) in zip(axes, panels, strict=True):
            image = ax.imshow(
                values, vmin=0, vmax=1, cmap="viridis", aspect="auto", interpolation="nearest"
            )
            ax.set(title=name, ylabel="edge (sender > receiver)")
            if len(edges) <= 42:
                ax.set_yticks(range(len(edges)), [names[e] for e in edges], fontsize=7)
        axes[-1].set_xlabel("frame")
        fig.colorbar(image, ax=list(axes), shrink=0.8)
    if title:
        fig.suptitle(title)
    return fig


# --- calibration -------------------------------------------------------------------------
def relabel(probs: Any, true_types: Any, anchor_first: bool = False) -> np.ndarray:
    """probs [..., K] with the edge types renamed by the best relabelling against the truth.

    An unsupervised encoder may name the types in any order; this applies
    :meth:`nri_pyro.metrics.EdgeAccumulator.permutation` over all edges given.
    """
    p = torch.as_tensor(as_array(probs, "probs"))
    t = torch.as_tensor(np.asarray(true_types)).long()
    accumulator = EdgeAccumulator()
    accumulator.update(p.reshape(1, -1, p.shape[-1]), t.reshape(1, -1))
    mapping = accumulator.permutation(anchor_first)  # mapping[predicted] = true
    return p[..., np.argsort(mapping)].numpy()


def plot_calibration(
    probs: Any,
    true_types: Any,
    *,
    num_bins: int = 10,
    relabel_types: bool = True,
    anchor_first: bool = False,
    title: str | None = None,
) -> Figure:
    """Reliability diagram of edge-type probabilities, with the ECE in the title.

    probs: [..., K] (e.g. [B, E, K]); true_types: [...]. The top-label confidence is binned
    into ``num_bins`` equal-width bins, as :func:`nri_pyro.metrics.
    expected_calibration_error` does; the upper panel shows each bin's accuracy against its
    mean confidence, the lower one how many edges fall in it. ``relabel_types`` first renames
    the types by the best relabelling (type 0 fixed with ``anchor_first``).
    """
    p = as_array(probs, "probs")
    t = np.asarray(true_types.cpu() if isinstance(true_types, torch.Tensor) else true_types)
    if p.ndim < 2 or t.shape != p.shape[:-1]:
        raise ValueError(
            f"expected probs [..., K] and true_types [...] with matching leading dimensions, "
            f"got probs {p.shape} and true_types {t.shape}"
        )
    if relabel_types:
        p = relabel(p, t, anchor_first)
    ece = expected_calibration_error(torch.as_tensor(p), torch.as_tensor(t).long(), num_bins)
    confidence = p.max(-1).reshape(-1)
    correct = (p.argmax(-1) == t).reshape(-1)
    # The bins of expected_calibration_error: (b / n, (b + 1) / n], bin 0 also takes 0.
    bins = np.clip(np.ceil(confidence * num_bins).astype(int) - 1, 0, num_bins - 1)
    counts = np.bincount(bins, minlength=num_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        accuracy = np.bincount(bins, weights=correct, minlength=num_bins) / counts
        mean_confidence = np.bincount(bins, weights=confidence, minlength=num_bins) / counts
    edges = np.linspace(0, 1, num_bins + 1)
    fig = Figure(figsize=(5, 6), layout="constrained")
    ax, ax_count = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    ax.bar(
        edges[:-1],
        np.nan_to_num(accuracy),
        width=1 / num_bins,
        align="edge",
        edgecolor="k",
        alpha=0.7,
        label="accuracy",
    )
    ax.plot(mean_confidence, accuracy, "o", color="tab:orange", label="mean confidence")
    ax.plot([0, 1], [0, 1], "--", color="0.4", label="perfect calibration")
    ax.set(ylabel="accuracy", xlim=(0, 1), ylim=(0, 1))
    ax.set_title(f"{title + ': ' if title else ''}ECE = {ece:.4f}")
    ax.legend(fontsize=8, loc="upper left")
    ax_count.bar(edges[:-1], counts, width=1 / num_bins, align="edge", edgecolor="k")
    ax_count.set(xlabel="confidence (top edge-type probability)", ylabel="edges")
    return fig
