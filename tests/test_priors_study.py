"""benchmarks/priors_study.py --report: the prior study's report is rebuilt from the rows it
saved, carries the sections of regimes it has no rows for, and computes its statements."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

from common import ENV

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "priors_study.py"
HALF = "Half of the pairs interact, no observation noise"
HEAD = (
    "| train | prior | seeds | accuracy | Δ accuracy | AUROC | Δ AUROC | density | "
    "learned freq | log evidence | k > 0.7 |\n|---|---|---|---|---|---|---|---|---|---|---|"
)
SYMMETRIC = (
    "| 200 | symmetric | 3 | 0.603 ± 0.087 | 0.039 ± 0.047 | 0.657 ± 0.111 | 0.054 ± 0.073 | "
    "0.637 ± 0.023 | — | -4842.4 ± 2441.2 | 0.93 ± 0.06 |"
)
UNIFORM = (
    "| 200 | uniform | 3 | 0.564 ± 0.049 | 0.000 ± 0.000 | 0.602 ± 0.060 | 0.000 ± 0.000 | "
    "0.585 ± 0.022 | — | -4128.7 ± 2509.6 | 0.98 ± 0.02 |"
)
PREVIOUS = f"""# When do priors matter? A measured answer

## {HALF}

12 of 12 runs finished.

{HEAD}
{SYMMETRIC}
{UNIFORM}

## In plain words

- {HALF}: the structural priors changed edge accuracy by at most 3.9 points.
"""

# (prior, seed): accuracy, log evidence; the Dirichlet's learned density 0.16 and 0.18
ROWS = {
    ("uniform", 0): (0.90, 100.0), ("uniform", 1): (0.92, 110.0),
    ("sparse-matched", 0): (0.96, 120.0), ("sparse-matched", 1): (0.97, 130.0),
    ("sparse-mismatched", 0): (0.85, 90.0), ("sparse-mismatched", 1): (0.86, 95.0),
    ("dirichlet", 0): (0.93, 115.0), ("dirichlet", 1): (0.94, 118.0),
}  # fmt: skip


def _saved_rows(path: Path) -> None:
    keys = ["regime", "spec_variant", "seed", "status", "data.train", "edge_accuracy",
            "edge_auroc", "edge_density", "learned_edge_freq", "log_evidence",
            "pareto_k_over_0.7", "nll", "evidence_method", "evidence_trajectories"]  # fmt: skip
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(keys)
        for (prior, seed), (accuracy, evidence) in ROWS.items():
            learned = 0.16 + 0.02 * seed if prior == "dirichlet" else ""
            writer.writerow(["sparse-5000", prior, seed, "ok", 5000, accuracy, accuracy, 0.2,
                             learned, evidence, 0.05, 30.0, "local", 40])  # fmt: skip


def _report(out: Path, path: Path) -> str:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--out", str(out), "--report", str(path)],
        capture_output=True, text=True, env=ENV,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return path.read_text()


def test_the_report_is_rebuilt_from_saved_rows_and_carries_what_it_cannot_rebuild(tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "priors.md").write_text(PREVIOUS)
    _saved_rows(docs / "priors_runs.csv")
    text = _report(tmp_path / "no-study-here", docs / "priors.md")
    # The saved rows' regime: its table and paired differences from uniform, computed
    assert "| 5000 | sparse-matched | 2 | 0.965 ± 0.007 | 0.055 ± 0.007 |" in text
    assert "sparse-5000/5000 (sparse-matched, +5.5 ± 0.7 over 2 seeds)" in text
    assert "evidence prefers the matched prior in 2 of 2 seeds, accuracy in 2 of 2" in text
    assert "sparse-5000/5000: 0.170 ± 0.014 (truth 0.15, off by 0.020)" in text
    assert "Largest loss: sparse-mismatched in the sparse-5000 regime" in text
    assert ("- sparse-5000: pooled over its 8 runs, 95% of the 320 scored test trajectories "
            "have Pareto k at most 0.7; 0 of the runs flag more than 10%.") in text  # fmt: skip
    # The regime without rows: its section and its plain-words line kept, marked as carried
    half = text.split(f"## {HALF}")[1].split("## ")[0]
    assert half.count("Carried from the previous report") == 1
    assert SYMMETRIC in half and UNIFORM in half
    assert f"- {HALF}: the structural priors changed edge accuracy by at most 3.9" in text
    # A regime with neither runs nor a previous section says that nothing ran
    assert "0 of 0 runs finished." in text
    # Rebuilt again from what it wrote: the same report, not a second carried mark
    assert _report(tmp_path / "no-study-here", docs / "priors.md") == text
    with (docs / "priors_runs.csv").open() as f:
        assert len(list(csv.DictReader(f))) == len(ROWS)
