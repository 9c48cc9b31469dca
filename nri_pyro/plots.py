"""Figures of a fitted NRI: trajectories, graphs, edge posteriors, training, calibration, ablations.

Every function returns a :class:`matplotlib.figure.Figure` made with the object-oriented API
(no pyplot state, no backend chosen, nothing shown): save it with ``fig.savefig(path)`` or
let a notebook display it. Arrays may be numpy arrays or torch tensors.

Edge conventions are the library's: ``adjacency[i, j]`` is the type of the influence of
sender j on receiver i; flattened edges [E] are receiver-major without the diagonal. Graphs
that change over time have edges per frame, [T, E] (:func:`plot_edges_over_time`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch

from nri_pyro.metrics import EdgeAccumulator, expected_calibration_error
from nri_pyro.nn import edges_to_adjacency

# Validation metrics drawn by plot_training_curves, one panel per group, where present.
CURVE_PANELS = (
    ("loss (per trajectory)", ("train_loss", "valid_elbo_loss")),
    ("validation NLL", ("valid_nll",)),
    ("validation MSE", ("valid_mse",)),
    ("validation edges", ("valid_edge_accuracy", "valid_edge_auroc", "valid_edge_density")),
)
LOG_SCALE_PANELS = ("loss (per trajectory)", "validation MSE")
FAILED_COLOR = "tab:red"


def _array(values: Any, name: str) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().double().numpy()
    try:
        return np.asarray(values, dtype=float)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name}: expected an array of numbers ({err})") from None


def _colors(n: int) -> list[Any]:
    cmap = colormaps["tab10"]
    return [cmap(i % 10) for i in range(n)]


# --- trajectories ------------------------------------------------------------------------
def plot_trajectories(
    truth: Any,
    rollout: Any = None,
    samples: Any = None,
    *,
    start: int | None = None,
    band: float = 0.9,
    max_paths: int = 30,
    title: str | None = None,
) -> Figure:
    """All objects' 2-D positions (the first two features) with predictions over the truth.

    truth: [N, T, D] one trajectory; rollout: [N, steps, D] the model's rollout; samples:
    [S, N, steps, D] posterior predictive draws (:func:`nri_pyro.predictive.
    posterior_predictive`). The predictions cover frames ``start .. start + steps - 1`` of
    the truth (default: its last ``steps`` frames; pass ``start=T`` for predictions beyond
    it). Three panels: the x-y plane (truth, rollout, up to ``max_paths`` sample paths) and
    x and y against the frame with the central ``band`` predictive interval of the samples.
    """
    truth = _array(truth, "truth")
    if truth.ndim != 3 or truth.shape[-1] < 2:
        raise ValueError(
            f"truth: expected one trajectory [N, T, D] with D >= 2 (objects, frames, "
            f"features), got shape {truth.shape}"
        )
    num_objects, num_frames, num_features = truth.shape
    rollout = None if rollout is None else _array(rollout, "rollout")
    samples = None if samples is None else _array(samples, "samples")
    if rollout is not None and rollout.shape[::2] != (num_objects, num_features):
        raise ValueError(
            f"rollout: expected [N, steps, D] = [{num_objects}, steps, {num_features}] like "
            f"the truth, got shape {rollout.shape}"
        )
    if samples is not None and (samples.ndim != 4 or samples.shape[1::2] != truth.shape[::2]):
        raise ValueError(
            f"samples: expected [S, N, steps, D] = [S, {num_objects}, steps, {num_features}] "
            f"like the truth, got shape {samples.shape}"
        )
    steps = {p.shape[-2] for p in (rollout, samples) if p is not None}
    if len(steps) > 1:
        raise ValueError(f"rollout and samples cover different numbers of steps: {sorted(steps)}")
    if not 0 < band < 1:
        raise ValueError(f"band: expected a probability in (0, 1), got {band}")
    num_steps = steps.pop() if steps else 0
    if start is None:
        start = num_frames - num_steps
    if not 0 <= start <= num_frames:
        raise ValueError(
            f"start: expected a frame in 0..{num_frames} (the truth has {num_frames} frames) "
            f"for {num_steps} predicted steps, got {start}"
        )
    predicted = np.arange(start, start + num_steps)
    fig = Figure(figsize=(11, 5.5), layout="constrained")
    axes = fig.subplot_mosaic([["xy", "x"], ["xy", "y"]], width_ratios=[1.2, 1])
    colors = _colors(num_objects)
    for i, color in enumerate(colors):
        axes["xy"].plot(truth[i, :, 0], truth[i, :, 1], color=color, lw=1.5, label=f"object {i}")
        axes["xy"].plot(truth[i, 0, 0], truth[i, 0, 1], "o", color=color, ms=4)
        if samples is not None:
            for path in samples[:max_paths, i]:
                axes["xy"].plot(path[:, 0], path[:, 1], color=color, lw=0.5, alpha=0.15)
        if rollout is not None:
            axes["xy"].plot(rollout[i, :, 0], rollout[i, :, 1], "--", color=color, lw=1.5)
        for feature, key in ((0, "x"), (1, "y")):
            ax = axes[key]
            ax.plot(np.arange(num_frames), truth[i, :, feature], color=color, lw=1.2)
            if samples is not None:
                low, high = np.quantile(
                    samples[:, i, :, feature], [(1 - band) / 2, (1 + band) / 2], 0
                )
                ax.fill_between(predicted, low, high, color=color, alpha=0.25, lw=0)
            if rollout is not None:
                ax.plot(predicted, rollout[i, :, feature], "--", color=color, lw=1.2)
    axes["xy"].set(xlabel="feature 0 (x)", ylabel="feature 1 (y)", aspect="equal")
    axes["xy"].set_title("truth (solid, o = first frame), rollout (dashed)", fontsize=9)
    axes["xy"].legend(fontsize=7, loc="best")
    for key, label in (("x", "x"), ("y", "y")):
        if num_steps:
            axes[key].axvline(start - 0.5, color="0.5", lw=0.8, ls=":")
        axes[key].set(ylabel=label)
    axes["y"].set_xlabel("frame")
    if samples is not None:
        axes["x"].set_title(
            f"band: central {band:.0%} of {samples.shape[0]} posterior predictive samples",
            fontsize=9,
        )
    if title:
        fig.suptitle(title)
    return fig


# --- graphs ------------------------------------------------------------------------------
def _adjacency_probs(probs: Any) -> np.ndarray:
    """[N, N, K] from [N, N, K] or [E, K] edge-type probabilities (diagonal NaN)."""
    p = _array(probs, "probs")
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
    t = _array(truth, "truth")
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
        pos = _array(positions, "positions")
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
    colors = _colors(num_objects)
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
    p = _array(probs, "probs")
    if p.ndim == 2:
        p = p[None]
    if p.ndim != 3:
        raise ValueError(f"probs: expected [B, E, K] or [E, K], got shape {p.shape}")
    names = _edge_names(p.shape[1])
    shown, label = _selected(p, no_edge, edge_type)
    true = None
    if truth is not None:
        t = _array(truth, "truth")
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
    p = _array(probs, "probs")
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
        t = _array(true_types, "true_types")
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


# --- training ----------------------------------------------------------------------------
def read_metrics(run: str | Path) -> list[dict[str, Any]]:
    """The per-epoch records of a run folder's metrics.jsonl (or of that file)."""
    path = Path(run)
    if path.is_dir():
        path = path / "metrics.jsonl"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} does not exist: expected a run folder written by nri-pyro train (it "
            "holds metrics.jsonl, one JSON line per epoch)"
        )
    records = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}, line {number}: not a JSON line ({err})") from None
        if not isinstance(record, dict) or "epoch" not in record:
            raise ValueError(f"{path}, line {number}: expected a JSON object with an 'epoch'")
        records.append(record)
    if not records:
        raise ValueError(f"{path} holds no epochs yet: nothing to plot")
    return records


def plot_training_curves(run: str | Path | Sequence[Mapping[str, Any]]) -> Figure:
    """Training loss and validation metrics by epoch, from a run folder's metrics.jsonl.

    ``run``: a run folder, its metrics.jsonl, or the records themselves (``NRI.history``).
    One panel per group of metrics present: losses, validation NLL, MSE, edge metrics.
    """
    records = read_metrics(run) if isinstance(run, str | Path) else list(run)
    if not records:
        raise ValueError("no training records: nothing to plot")
    epochs = np.array([r["epoch"] for r in records])
    panels = [
        (name, [k for k in keys if any(k in r for r in records)]) for name, keys in CURVE_PANELS
    ]
    panels = [(name, keys) for name, keys in panels if keys]
    fig = Figure(figsize=(4.5 * len(panels), 3.6), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (name, keys) in zip(axes, panels, strict=True):
        lowest = math.inf
        for key in keys:
            values = np.array([r.get(key, np.nan) for r in records], dtype=float)
            ax.plot(epochs, values, "o-", ms=3, label=key.removeprefix("valid_"))
            lowest = min(lowest, np.nanmin(values, initial=math.inf))
        if name in LOG_SCALE_PANELS and lowest > 0:  # losses span orders of magnitude
            ax.set_yscale("log")
        ax.set(title=name, xlabel="epoch")
        ax.legend(fontsize=8)
    return fig


# --- calibration -------------------------------------------------------------------------
def relabel(probs: Any, true_types: Any, anchor_first: bool = False) -> np.ndarray:
    """probs [..., K] with the edge types renamed by the best relabelling against the truth.

    An unsupervised encoder may name the types in any order; this applies
    :meth:`nri_pyro.metrics.EdgeAccumulator.permutation` over all edges given.
    """
    p = torch.as_tensor(_array(probs, "probs"))
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
    p = _array(probs, "probs")
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


# --- ablations ---------------------------------------------------------------------------
def _field(row: Mapping[str, Any], key: str, index: int) -> Any:
    if key not in row:
        raise ValueError(
            f"row {index} ({row.get('variant', '?')!r}): missing {key!r}; it has {sorted(row)}"
        )
    return row[key]


def _number(value: Any) -> float:
    return math.nan if value is None else float(value)


def plot_metric_by_variant(rows: list[dict], metric: str) -> Figure:
    """One bar per variant: the mean of ``metric`` over seeds, error bars the std.

    Each row: {"variant", f"{metric}_mean", f"{metric}_std", "runs", "failed", ...}. A variant
    with failed runs is marked in red with the count; one whose runs all failed (no mean)
    gets a hatched red placeholder bar.
    """
    if not rows:
        raise ValueError("rows: expected at least one variant, got none")
    names, means, stds, runs, failed = [], [], [], [], []
    for index, row in enumerate(rows):
        names.append(str(_field(row, "variant", index)))
        means.append(_number(_field(row, f"{metric}_mean", index)))
        stds.append(_number(row.get(f"{metric}_std", 0.0)))
        runs.append(int(row.get("runs", 0)))
        failed.append(int(row.get("failed", 0)))
    means_a, stds_a = np.array(means), np.nan_to_num(np.array(stds))
    all_failed = np.isnan(means_a)
    fig = Figure(figsize=(max(4.0, 1.1 * len(rows) + 1.5), 4), layout="constrained")
    ax = fig.subplots()
    x = np.arange(len(rows))
    bars = ax.bar(
        x,
        np.nan_to_num(means_a),
        yerr=np.where(all_failed, 0, stds_a),
        capsize=4,
        color="tab:blue",
        alpha=0.8,
    )
    top = np.nanmax(means_a + stds_a) if not all_failed.all() else 1.0
    for i, bar in enumerate(bars):
        if all_failed[i]:
            bar.set(height=0.05 * top, hatch="xx", facecolor="none", edgecolor=FAILED_COLOR)
            ax.annotate(
                "all failed",
                (x[i], 0.05 * top),
                ha="center",
                va="bottom",
                color=FAILED_COLOR,
                fontsize=8,
            )
        elif failed[i]:
            bar.set(edgecolor=FAILED_COLOR, linewidth=2)
            ax.annotate(
                f"{failed[i]} failed",
                (x[i], means_a[i] + stds_a[i]),
                ha="center",
                va="bottom",
                color=FAILED_COLOR,
                fontsize=8,
                xytext=(0, 3),
                textcoords="offset points",
            )
    labels = [f"{n}\n(n={r})" for n, r in zip(names, runs, strict=True)]
    ax.set_xticks(x, labels, rotation=30 if len(rows) > 4 else 0, fontsize=8)
    ax.set(ylabel=metric, title=f"{metric} by variant (mean ± std over seeds)")
    return fig


def plot_against_setting(
    rows: list[dict], key: str, metrics: Sequence[str] = ("edge_accuracy", "edge_density")
) -> Figure:
    """Metrics against the numeric value of one setting, one line with error bars each.

    Each row also has "settings": {key: value}, e.g. {"prior.no_edge": 0.8}; the x axis is
    that value (one row per value). Points are the mean over seeds, bars the std; a value
    with failed runs is marked by a red x on the axis and its count.
    """
    if not rows:
        raise ValueError("rows: expected at least one variant, got none")
    if not metrics:
        raise ValueError("metrics: expected at least one metric name")
    xs = []
    for index, row in enumerate(rows):
        settings = _field(row, "settings", index)
        if not isinstance(settings, Mapping) or key not in settings:
            raise ValueError(
                f"row {index} ({row.get('variant', '?')!r}): its settings have no {key!r}; "
                f"they have {sorted(settings) if isinstance(settings, Mapping) else settings!r}"
            )
        try:
            xs.append(float(settings[key]))
        except (TypeError, ValueError):
            raise ValueError(
                f"row {index} ({row.get('variant', '?')!r}): settings[{key!r}] = "
                f"{settings[key]!r} is not a number, so it cannot be an x axis"
            ) from None
    if len(set(xs)) != len(xs):
        raise ValueError(
            f"two rows have the same {key} ({sorted(xs)}): expected one row per value (the "
            "other settings fixed)"
        )
    order = np.argsort(xs)
    x = np.array(xs)[order]
    fig = Figure(figsize=(5.5, 4), layout="constrained")
    ax = fig.subplots()
    for metric in metrics:
        means = np.array([_number(_field(rows[i], f"{metric}_mean", i)) for i in order])
        stds = np.nan_to_num(np.array([_number(rows[i].get(f"{metric}_std", 0.0)) for i in order]))
        ok = ~np.isnan(means)  # values whose runs all failed have no mean: skip, join the rest
        ax.errorbar(x[ok], means[ok], yerr=stds[ok], marker="o", capsize=4, label=metric)
    for position, i in enumerate(order):
        failed = int(rows[i].get("failed", 0))
        if failed:
            ax.plot(
                x[position],
                0,
                "x",
                color=FAILED_COLOR,
                ms=10,
                clip_on=False,
                transform=ax.get_xaxis_transform(),
            )
            ax.annotate(
                f"{failed} failed",
                (x[position], 0.03),
                xycoords=("data", "axes fraction"),
                ha="center",
                color=FAILED_COLOR,
                fontsize=8,
            )
    ax.set(xlabel=key, ylabel="mean ± std over seeds", title=f"metrics against {key}")
    ax.margins(x=0.1)
    ax.legend(fontsize=8)
    return fig


# Data settings counted in trajectories: drawn on a logarithmic x axis (50 ... 5,000).
COUNT_SETTINGS = ("data.train", "data.valid", "data.test")


def plot_against_data(
    rows: list[dict],
    key: str,
    metric: str = "edge_accuracy",
    *,
    line_by: Sequence[str] = ("spec_variant",),
    log_x: bool | None = None,
) -> Figure:
    """One metric against the value of one data setting, one line per prior.

    Each row (a study's results.csv row) has ``key`` (e.g. "data.train": 500), the
    ``line_by`` fields (by default "spec_variant", the variant without its data settings,
    such as "prior.name=sparse"), f"{metric}_mean" and f"{metric}_std" (over seeds). Rows
    with the same ``line_by`` values make one line, ordered by ``key``, points at the mean,
    error bars the std; a point whose runs all failed is left out and marked by a red x on
    the axis. The x axis is logarithmic for counts of trajectories (``data.train``, ...)
    when all are positive, unless ``log_x`` says otherwise. Two rows of one line with one
    value of ``key`` are an error: another setting varies that ``line_by`` leaves out.
    """
    if not rows:
        raise ValueError("rows: expected at least one variant, got none")
    lines: dict[str, list[tuple[float, int]]] = {}
    for index, row in enumerate(rows):
        value = _field(row, key, index)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(
                f"row {index} ({row.get('variant', '?')!r}): {key} = {value!r} is not a "
                "number, so it cannot be an x axis"
            )
        parts = [str(_field(row, f, index)) if i == 0 else f"{f}={_field(row, f, index)}"
                 for i, f in enumerate(line_by)]  # fmt: skip
        lines.setdefault(", ".join(parts) or metric, []).append((float(value), index))
    for label, points in lines.items():
        xs = [x for x, _ in points]
        if len(set(xs)) != len(xs):
            raise ValueError(
                f"line {label!r} has two rows at {key} = {sorted(xs)}: expected one row per "
                f"value; add the other setting that varies to line_by (now {list(line_by)})"
            )
    every_x = [x for points in lines.values() for x, _ in points]
    if log_x is None:
        log_x = key in COUNT_SETTINGS and min(every_x) > 0
    fig = Figure(figsize=(6, 4.2), layout="constrained")
    ax = fig.subplots()
    for (label, points), color in zip(lines.items(), _colors(len(lines)), strict=True):
        points = sorted(points)
        x = np.array([p[0] for p in points])
        means = np.array([_number(_field(rows[i], f"{metric}_mean", i)) for _, i in points])
        stds = np.array([_number(rows[i].get(f"{metric}_std", 0.0)) for _, i in points])
        ok = ~np.isnan(means)
        ax.errorbar(x[ok], means[ok], yerr=np.nan_to_num(stds[ok]), marker="o", capsize=4,
                    color=color, label=label)  # fmt: skip
        for position in np.flatnonzero(~ok):
            ax.plot(x[position], 0, "x", color=FAILED_COLOR, ms=10, clip_on=False,
                    transform=ax.get_xaxis_transform())  # fmt: skip
    if log_x:  # ticks at the values studied (50, 500, 5000), not at powers of ten
        ax.set_xscale("log")
        ax.minorticks_off()
        ticks = sorted(set(every_x))
        ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
    ax.set(xlabel=key, ylabel=f"{metric} (mean ± std over seeds)",
           title=f"{metric} against {key}")  # fmt: skip
    ax.margins(x=0.08)
    ax.legend(fontsize=8)
    return fig
