"""Figures of a fit over time: trajectories (truth, rollouts, posterior predictive samples)
and the training curves of a run folder."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from nri_pyro.plots.common import as_array, palette

# Validation metrics drawn by plot_training_curves, one panel per group, where present.
CURVE_PANELS = (
    ("loss (per trajectory)", ("train_loss", "valid_elbo_loss")),
    ("validation NLL", ("valid_nll",)),
    ("validation MSE", ("valid_mse",)),
    ("validation edges", ("valid_edge_accuracy", "valid_edge_auroc", "valid_edge_density")),
)
LOG_SCALE_PANELS = ("loss (per trajectory)", "validation MSE")


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
    truth = as_array(truth, "truth")
    if truth.ndim != 3 or truth.shape[-1] < 2:
        raise ValueError(
            f"truth: expected one trajectory [N, T, D] with D >= 2 (objects, frames, "
            f"features), got shape {truth.shape}"
        )
    num_objects, num_frames, num_features = truth.shape
    rollout = None if rollout is None else as_array(rollout, "rollout")
    samples = None if samples is None else as_array(samples, "samples")
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
    colors = palette(num_objects)
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
