"""Figures of a study (:mod:`nri_pyro.ablate`): a metric by variant, metrics against a
numeric setting, and a metric against a data setting, one line per prior; failed runs are
marked in red."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from nri_pyro.plots.common import FAILED_COLOR, palette


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
    for (label, points), color in zip(lines.items(), palette(len(lines)), strict=True):
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
