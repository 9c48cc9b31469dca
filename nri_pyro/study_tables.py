"""A study's tables: the metrics it reports, their mean and spread over seeds, and the
files that hold them (results.md, results.csv, runs.csv), written by
:meth:`nri_pyro.ablate.Study.collect`.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nri_pyro.files import atomic_write
from nri_pyro.study_data import DATA_PREFIX
from nri_pyro.study_variants import show_value

# Held-out metrics in the table, in order: (key, label).
TABLE_METRICS = (
    ("edge_accuracy", "edge acc"),
    ("edge_auroc", "AUROC"),
    ("edge_density", "density"),
    ("mse_1", "MSE 1"),
    ("mse_10", "MSE 10"),
    ("mse_20", "MSE 20"),
    ("elbo_loss", "-ELBO"),
    ("log_evidence", "log evidence"),
    ("pareto_k", "Pareto k"),
    ("pareto_k_over_0.7", "k > 0.7"),
)
# Metrics in the table only where a run has them: switch-time detection, on data whose
# graphs change over time (NaN where nothing was detected: no precision).
OPTIONAL_METRICS = (
    ("switch_precision", "switch prec"),
    ("switch_recall", "switch recall"),
)
# Summarized (results.csv) where present, not in the table.
EXTRA_METRICS = ("learned_edge_freq", "switches_true", "switches_detected")
# The table marks a log evidence (†) when more than this share of trajectories has k > 0.7.
UNTRUSTED_K_SHARE = 0.1


@dataclass
class AblationResult:
    """A study's table: one row per variant (mean and std over seeds) and one per run."""

    variants: list[dict[str, Any]]
    runs: list[dict[str, Any]]
    out: Path
    figures: list[Path] = field(default_factory=list)

    def to_markdown(self) -> str:
        return markdown_table(self.variants)

    def _repr_markdown_(self) -> str:
        return self.to_markdown()

    def __str__(self) -> str:
        return self.to_markdown()


def summarize(runs: list[dict[str, Any]], labels: Sequence[str]) -> list[dict[str, Any]]:
    """Per variant: runs finished, failed, and mean / std over seeds of every metric (NaN
    values, e.g. the switch precision of a run that detected no switch, left out; NaN
    where no run has a value). Optional metrics (:data:`OPTIONAL_METRICS`,
    :data:`EXTRA_METRICS`) only where some run has them."""
    optional = [k for k, _ in OPTIONAL_METRICS] + [k for k in EXTRA_METRICS]
    present = [k for k in optional if any(k in r for r in runs if r["status"] == "ok")]
    rows = []
    for label in labels:
        mine = [r for r in runs if r["variant"] == label]
        ok = [r for r in mine if r["status"] == "ok"]
        row: dict[str, Any] = {
            "variant": label,
            "runs": len(ok),
            "failed": sum(r["status"].startswith("failed") for r in mine),
            "not_run": sum(r["status"] == "not run" for r in mine),
        }
        errors = [r["status"][len("failed: ") :] for r in mine if r["status"].startswith("failed")]
        if errors:
            row["errors"] = "; ".join(sorted(set(errors)))
        keys = [k for k, _ in TABLE_METRICS] + ["learned_edge_freq"]
        keys += [k for k in present if k not in keys]
        for key in keys:
            values = [r[key] for r in ok if isinstance(r.get(key), (int, float))]
            values = [v for v in values if not math.isnan(v)]
            if not values:
                row[f"{key}_mean"] = row[f"{key}_std"] = math.nan
                continue
            mean = sum(values) / len(values)
            spread = [(v - mean) ** 2 for v in values if math.isfinite(v)]
            var = sum(spread) / (len(values) - 1) if len(values) > 1 and math.isfinite(mean) else 0
            row[f"{key}_mean"], row[f"{key}_std"] = mean, math.sqrt(var)
        rows.append(row)
    return rows


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """The variant table: mean ± std over seeds, failed runs counted; the switch-time
    metrics where a row has them ("—" where no run has a value); the data settings
    (``data.*`` columns of a study that varies its data) after the label."""
    metrics = list(TABLE_METRICS) + [
        (key, label) for key, label in OPTIONAL_METRICS if any(f"{key}_mean" in r for r in rows)
    ]
    data_columns = list(dict.fromkeys(k for r in rows for k in r if k.startswith(DATA_PREFIX)))
    header = ["variant", *data_columns, "runs"] + [label for _, label in metrics]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        runs = f"{row['runs']}"
        if row.get("failed"):
            runs += f" ({row['failed']} failed)"
        if row.get("not_run"):
            runs += f" ({row['not_run']} not run)"
        cells = [row["variant"], *(show_value(row.get(key, "")) for key in data_columns), runs]
        for key, _ in metrics:
            mean = row.get(f"{key}_mean", math.nan)
            cells.append("—" if math.isnan(mean) else f"{_fmt(mean)} ± {_fmt(row[f'{key}_std'])}")
            if key == "log_evidence" and _untrusted(row):
                cells[-1] += " †"
        lines.append("| " + " | ".join(cells) + " |")
    if any(_untrusted(row) for row in rows):
        lines.append(
            f"\n† more than {UNTRUSTED_K_SHARE:.0%} of held-out trajectories have Pareto k > 0.7: "
            f"that log evidence cannot be trusted, nor compared"
        )
    failed = [r for r in rows if r.get("errors")]
    for row in failed:
        lines.append(f"\nFailed runs of {row['variant']}: {row['errors']}")
    return "\n".join(lines)


def _untrusted(row: dict[str, Any]) -> bool:
    """Whether a row's log evidence rests on too many heavy-tailed estimates."""
    return row.get("pareto_k_over_0.7_mean", math.nan) > UNTRUSTED_K_SHARE


def _fmt(value: float) -> str:
    if value == 0 or 1e-3 <= abs(value) < 1e4:
        return f"{value:.4g}"
    return f"{value:.3e}"


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    keys: list[str] = []
    for row in rows:
        keys += [k for k in row if k not in keys]

    def write(tmp: Path) -> None:
        with tmp.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=keys)
            writer.writeheader()
            for row in rows:
                writer.writerow({k: _cell(v) for k, v in row.items()})

    atomic_write(path, write)


def _cell(value: Any) -> Any:
    return json.dumps(value) if isinstance(value, dict) else value
