"""Reproduce the paper's Table 1 with the presets: train, evaluate, tabulate, plot.

    python benchmarks/reproduce.py                         # every CPU preset, 1 seed
    python benchmarks/reproduce.py springs5 charged5 --seeds 2
    python benchmarks/reproduce.py charged5-paper --device cuda --out reproduce-gpu

Each (preset, seed) is one `nri-pyro train --preset P --seed S` run in its own process and
folder, OUT/P/seedS (S is the training seed: every seed trains on the preset's data, drawn
with its data.seed), timed from start to finish: simulation, training and evaluation on the
preset's held-out test split with the paper's protocol (best relabelling of edge types,
weighted by sample; rollout MSE after 1, 10 and 20 steps from frame 49 of the 99-frame test
trajectories). A finished run is reused when the command runs again, so the table can be
built over several sittings; an interrupted run resumes from its last checkpoint. Beside
each run folder, OUT/P/seedS.json records the resolved preset it ran and OUT/P/seedS.log
its output: a folder that holds a run of other settings is refused, never mixed into the
table. The table (results.md, results.csv)
says how many seeds each row has and puts the paper's full-scale figure beside it; the
figure (learning_curves.png) draws held-out (validation) edge accuracy against wall-clock
minutes, one curve per preset and seed.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

from nri_pyro.checkpoints import differences
from nri_pyro.folders import FolderInUseError, folder_lock
from nri_pyro.presets import load_preset, preset_names

CPU_PRESETS = (
    "springs5", "charged5", "kuramoto5", "springs10", "charged10", "kuramoto10",
    "charged5-charges",  # system knowledge: its own row, never the unstructured charged5's
)  # fmt: skip
# Kipf et al. (2018), Table 1 (unsupervised NRI, edge accuracy %) and Table 2 (NRI with the
# learned graph, prediction MSE after 1 / 10 / 20 steps, 5 objects): 500 epochs of 50,000
# trajectories on a GPU. As recalled in the project's reference notes.
PAPER_ACCURACY = {
    ("springs", 5): 99.9, ("charged", 5): 82.1, ("kuramoto", 5): 96.0,
    ("springs", 10): 98.4, ("charged", 10): 70.8, ("kuramoto", 10): 75.7,
}  # fmt: skip
PAPER_MSE = {
    ("springs", 5): (3.1e-8, 3.3e-6, 2.13e-5),
    ("charged", 5): (1.05e-3, 3.2e-3, 7.06e-3),
    ("kuramoto", 5): (1.4e-2, 2.0e-2, 3.3e-2),
}


def run_one(preset: str, seed: int, out: Path, device: str, threads: int | None) -> dict:
    """Train and evaluate one (preset, seed) unless its folder holds the finished run."""
    resolved = load_preset(preset)
    folder = out / resolved.name / f"seed{seed}"
    record = {"preset": resolved.to_dict(), "seed": seed}
    record_path, log_path = folder.with_suffix(".json"), folder.with_suffix(".log")
    summary_path = folder / "summary.json"
    resume = False
    if record_path.exists():
        before = json.loads(record_path.read_text())
        # A key a newer preset format added with the value None matches its absence.
        differ = [key for key, _, _ in differences(before, record)]
        if differ:
            raise SystemExit(
                f"{folder} holds a run of other settings ({', '.join(differ)} differ from "
                f"preset {preset} now); remove it or choose another --out"
            )
        if summary_path.exists():
            print(f"{preset} seed {seed}: finished before, reused ({folder})", flush=True)
            return json.loads(summary_path.read_text())
        resume = (folder / "checkpoint_last.pt").exists()
    elif folder.exists():
        raise SystemExit(
            f"{folder} exists but {record_path} does not: not a reproduce run; move it"
        )
    folder.parent.mkdir(parents=True, exist_ok=True)
    record_path.write_text(json.dumps(record, indent=1) + "\n")
    cmd = [sys.executable, "-m", "nri_pyro.cli", "train", "--preset", preset, "--seed",
           str(seed), "--out", str(folder), "--device", device]  # fmt: skip
    if resume:
        cmd.append("--resume")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}  # the log follows the run, line by line
    if threads is not None:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    print(f"{preset} seed {seed}: {'resuming' if resume else 'training'} in {folder}", flush=True)
    start = time.perf_counter()
    with log_path.open("a") as log:
        code = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env).returncode
    if code != 0 or not summary_path.exists():
        raise SystemExit(f"{preset} seed {seed} failed (exit {code}); see {log_path}")
    summary = json.loads(summary_path.read_text())
    # The process's wall time where the run was one sitting; a resumed run's earlier sitting
    # is unknown, so its time is then the epochs' own plus this sitting's simulation.
    summary["seconds"]["wall"] = round(time.perf_counter() - start, 2) if not resume else None
    summary_path.write_text(json.dumps(summary, indent=2) + "\n")
    accuracy = summary["test"]["edge_accuracy"]
    print(f"{preset} seed {seed}: held-out edge accuracy {accuracy:.4f}", flush=True)
    return summary


def _minutes(summary: dict) -> float:
    """Wall-clock minutes of a run: simulation, training and evaluation."""
    wall = summary["seconds"].get("wall")
    if wall is not None:
        return wall / 60
    lines = (Path(summary["run"]) / "metrics.jsonl").read_text().splitlines()
    epochs = sum(json.loads(line)["seconds"] for line in lines if line.strip())
    return (summary["seconds"]["data"] + epochs) / 60


def _uses(preset) -> str:
    """What a row's runs used: the prior (marked when it encodes knowledge of the system,
    so that such a row is never read as the unstructured model's), the guide's encoder,
    and the refinement of the held-out evaluation (the preset's train.eval_refine: 0 is the
    encoder's own logits, "exact" a node-level prior's exact posterior)."""
    from nri_pyro.priors import PRIORS

    prior = preset.model["prior"]["name"]
    knowledge = " (system knowledge)" if PRIORS[prior].system_knowledge else ""
    refine = preset.train.get("eval_refine") or 0
    return f"prior {prior}{knowledge}, encoder {preset.guide['encoder']['name']}, refine {refine}"


def _skipped_steps(summary: dict) -> int:
    """Training steps that train.step_guard skipped, over every epoch of a run."""
    path = Path(summary["run"]) / "metrics.jsonl"
    if not path.exists():
        return 0
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return sum(int(line.get("skipped_steps", 0)) for line in lines)


def _mean_std(values: list[float]) -> tuple[float, float]:
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, float("nan")
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def table(results: dict[str, list[dict]]) -> list[dict]:
    rows = []
    for preset, summaries in results.items():
        p = load_preset(preset)
        key = (p.system, p.num_objects)
        tests = [s["test"] for s in summaries]
        acc = _mean_std([t["edge_accuracy"] for t in tests])
        minutes = [_minutes(s) for s in summaries]
        paper_mse = PAPER_MSE.get(key, (math.nan,) * 3)
        rows.append({
            "preset": p.name, "system": p.system, "objects": p.num_objects,
            "uses": _uses(p), "seeds": len(summaries),
            "skipped_steps": " / ".join(str(_skipped_steps(s)) for s in summaries),
            "edge_acc": acc[0], "edge_acc_std": acc[1],
            "auroc": _mean_std([t["edge_auroc"] for t in tests])[0],
            **{f"mse_{k}": _mean_std([t[f"mse_{k}"] for t in tests])[0] for k in (1, 10, 20)},
            "minutes": sum(minutes) / len(minutes),
            # Each seed's own: a sitting that shared the CPU with other work is slower, and a
            # mean would hide which one it was.
            "minutes_per_seed": " / ".join(f"{m:.1f}" for m in minutes),
            "paper_edge_acc": PAPER_ACCURACY.get(key, math.nan) / 100,
            **{f"paper_mse_{k}": v for k, v in zip((1, 10, 20), paper_mse, strict=True)},
        })  # fmt: skip
    return rows


def markdown(rows: list[dict]) -> str:
    lines = [
        "| preset | uses | system | objects | seeds | edge accuracy | AUROC | MSE 1 | MSE 10 "
        "| MSE 20 | wall time (per seed) | skipped steps (per seed) | paper (full scale, GPU): "
        "accuracy; MSE 1 / 10 / 20 |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        std = "" if math.isnan(r["edge_acc_std"]) else f" ± {r['edge_acc_std']:.3f}"
        paper_mse = (
            "" if math.isnan(r["paper_mse_1"])
            else "; " + " / ".join(f"{r[f'paper_mse_{k}']:.3g}" for k in (1, 10, 20))
        )  # fmt: skip
        lines.append(
            f"| {r['preset']} | {r['uses']} | {r['system']} | {r['objects']} | {r['seeds']} | "
            f"{r['edge_acc']:.3f}{std} | {r['auroc']:.3f} | {r['mse_1']:.2g} | "
            f"{r['mse_10']:.2g} | {r['mse_20']:.2g} | {r['minutes_per_seed']} min | "
            f"{r['skipped_steps']} | {r['paper_edge_acc']:.3f}{paper_mse} |"
        )
    return "\n".join(lines) + "\n"


def learning_curves(results: dict[str, list[dict]], out: Path, path: Path) -> None:
    """Held-out (validation) edge accuracy against wall-clock minutes, per preset and seed."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4.5))
    ax = fig.add_subplot()
    colors = {"springs": "tab:blue", "charged": "tab:red", "kuramoto": "tab:green"}
    styles = {5: "-", 10: "--"}
    for preset, summaries in results.items():
        p = load_preset(preset)
        for i, summary in enumerate(summaries):
            lines = (Path(summary["run"]) / "metrics.jsonl").read_text().splitlines()
            records = [json.loads(line) for line in lines if line.strip()]
            elapsed = summary["seconds"]["data"]
            xs, ys = [], []
            for r in records:
                elapsed += r["seconds"]
                xs.append(elapsed / 60)
                ys.append(r.get("valid_edge_accuracy", math.nan))
            ax.plot(xs, ys, styles.get(p.num_objects, ":"), color=colors.get(p.system),
                    alpha=0.9 if i == 0 else 0.4, label=preset if i == 0 else None)  # fmt: skip
    ax.axhline(0.5, color="grey", lw=0.5)
    ax.set_xlabel("wall-clock minutes (simulation and training, 2-core CPU)")
    ax.set_ylabel("validation edge accuracy")
    ax.set_ylim(0.45, 1.0)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "presets", nargs="*", default=list(CPU_PRESETS),
        help=f"presets to run (default: the CPU ones, {', '.join(CPU_PRESETS)})",
    )  # fmt: skip
    parser.add_argument("--seeds", type=int, default=1, help="seeds per preset (default 1)")
    parser.add_argument("--out", default="reproduce", help="folder of runs and tables")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, help="torch threads per run (default: all)")
    parser.add_argument(
        "--table-only", action="store_true", help="tabulate the finished runs, train nothing"
    )  # fmt: skip
    args = parser.parse_args()
    unknown = [p for p in args.presets if p not in preset_names() and not Path(p).exists()]
    if unknown:
        parser.error(f"unknown preset(s) {', '.join(unknown)}; valid: {', '.join(preset_names())}")
    if args.seeds < 1:
        parser.error("--seeds must be at least 1")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    try:  # one process at a time writes OUT (its runs are this one's children)
        with folder_lock(out):
            return _reproduce(args, out)
    except FolderInUseError as err:
        raise SystemExit(f"reproduce: error: {err}") from None


def _reproduce(args: argparse.Namespace, out: Path) -> int:
    results: dict[str, list[dict]] = {}
    for preset in args.presets:
        for seed in range(args.seeds):
            summary_path = out / load_preset(preset).name / f"seed{seed}" / "summary.json"
            if args.table_only:
                if summary_path.exists():
                    results.setdefault(preset, []).append(json.loads(summary_path.read_text()))
                continue
            summary = run_one(preset, seed, out, args.device, args.threads)
            results.setdefault(preset, []).append(summary)
    if not results:
        print("no finished runs to tabulate")
        return 1
    rows = table(results)
    text = markdown(rows)
    print()
    print(text)
    (out / "results.md").write_text(text)
    with (out / "results.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    learning_curves(results, out, out / "learning_curves.png")
    print(f"wrote {out / 'results.md'}, {out / 'results.csv'} and {out / 'learning_curves.png'}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # the run in progress resumes from its last checkpoint
        print(
            "reproduce: interrupted; finished runs are kept and the interrupted one resumes "
            "when the command runs again",
            file=sys.stderr,
        )
        sys.exit(130)
