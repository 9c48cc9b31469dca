"""benchmarks/reproduce.py: runs presets, reuses finished runs, refuses runs of other settings."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from common import ENV, interrupt, start, wait_for

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "reproduce.py"
TINY = {
    "base": "charged5",
    "data": {"train": 24, "valid": 8, "test": 8, "frames": 16, "test_frames": 80},
    "model": {"decoder": {"msg_hidden": 8, "msg_out": 8, "hidden": 8}},
    "guide": {"encoder": {"hidden": 8}},
    "train": {"epochs": 2, "batch_size": 8},
}


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, env=ENV
    )


def test_reproduce_tabulates_reuses_finished_runs_and_refuses_changed_settings(tmp_path):
    preset = tmp_path / "tiny.yaml"
    preset.write_text(json.dumps(TINY))
    out = tmp_path / "table"
    first = _run(str(preset), "--out", str(out), "--threads", "1")
    assert first.returncode == 0, first.stderr
    row = next(line for line in first.stdout.splitlines() if line.startswith("| tiny |"))
    assert "| charged | 5 | 1 |" in row and "0.821" in row  # one seed; the paper's 82.1 beside it
    summary = json.loads((out / "tiny" / "seed0" / "summary.json").read_text())
    assert summary["seconds"]["wall"] > 0 and 0 <= summary["test"]["edge_accuracy"] <= 1
    for name in ("results.md", "results.csv", "learning_curves.png"):
        assert (out / name).stat().st_size > 0
    again = _run(str(preset), "--out", str(out))
    assert again.returncode == 0 and "finished before, reused" in again.stdout
    TINY["train"]["lr"] = 0.01
    preset.write_text(json.dumps(TINY))
    changed = _run(str(preset), "--out", str(out))
    assert changed.returncode != 0
    assert "holds a run of other settings (preset.train.lr differ" in changed.stderr
    assert _run("charged7").returncode != 0


def test_ctrl_c_is_one_line_and_status_130_and_a_second_reproduce_is_refused(tmp_path):
    preset = tmp_path / "tiny.yaml"
    preset.write_text(json.dumps({**TINY, "train": {**TINY["train"], "epochs": 100000}}))
    out = tmp_path / "table"
    first = start(str(preset), "--out", str(out), "--threads", "1", script=SCRIPT)
    wait_for(out / "tiny" / "seed0.log", first)
    second = _run(str(preset), "--out", str(out))
    assert second.returncode != 0 and "Traceback" not in second.stderr
    assert f"{out} is being written by another process (process {first.pid} on" in second.stderr
    code, _, err = interrupt(first)
    assert code == 130
    assert err.strip().splitlines() == [
        "reproduce: interrupted; finished runs are kept and the interrupted one resumes when "
        "the command runs again"
    ]
