"""benchmarks/seed_curves.py: a run's curve saved to CSV reads back as the run did, so a
seeds figure can grow across sittings whose run folders are gone."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from common import ENV

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "seed_curves.py"


def _run(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True,
                          text=True, env=ENV)  # fmt: skip


def _fake_run(folder: Path, accuracies: list[float], losses: list[float]) -> Path:
    folder.mkdir()
    lines = [
        {"epoch": e, "train_loss": loss, "valid_edge_accuracy": acc, "seconds": 1.5,
         "skipped_steps": e % 2, "skipped_for": {"loss": 0, "gradient": e % 2}}
        for e, (acc, loss) in enumerate(zip(accuracies, losses, strict=True), 1)
    ]  # fmt: skip
    (folder / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    return folder


def test_a_saved_curve_reads_back_as_its_run_and_names_are_unique(tmp_path):
    run = _fake_run(tmp_path / "s0", [0.6, 0.7, 0.65, 0.72], [100.0, 90.0, 180.0, 80.0])
    direct = _run(run, "--every", "2", "--save", tmp_path / "curves.csv")
    assert direct.returncode == 0, direct.stderr
    row = direct.stdout.strip().splitlines()[-1]
    # accuracy every 2 epochs, best, last, the drop 0.70 -> 0.65, the loss jump x2, skipped
    assert row == "| s0 | 4 | 0.700 0.720 | 0.720 | 0.720 | 0.050 | x2.00 | 2 (0 / 2) |"
    saved = _run(tmp_path / "curves.csv", "--every", "2", "--out", tmp_path / "fig.png")
    assert saved.returncode == 0, saved.stderr
    assert saved.stdout.strip().splitlines()[-1] == row
    assert (tmp_path / "fig.png").stat().st_size > 0
    twice = _run(tmp_path / "curves.csv", run)
    assert twice.returncode == 2 and "two runs share a name" in twice.stderr
