"""Learning curves of runs side by side (e.g. one preset's seeds): did any collapse?

    python benchmarks/seed_curves.py runs/c5-s0 runs/c5-s1 runs/c5-s2 --out docs/charged5_seeds.png

Reads each run folder's metrics.jsonl and prints a markdown table: per run, the
validation edge accuracy every --every epochs, its best and last, the largest drop of
validation accuracy from its running best (a collapse shows here, as the issue's run fell
from 0.705 to 0.63), the largest epoch-to-epoch jump of the training loss, and the steps
the step guard skipped (and why: loss or gradient). With --out it draws validation edge
accuracy and training loss against epochs, one line per run. --save writes every run's
per-epoch curve to a CSV, which later calls read in place of run folders that are gone
(a .csv argument: every run in it), so a figure can grow seed by seed across sittings:

    python benchmarks/seed_curves.py runs/c5-s2 --save docs/charged5_seeds.csv
    python benchmarks/seed_curves.py docs/charged5_seeds.csv runs/c5-s3 --out ...
"""

from __future__ import annotations

import argparse
import csv
import itertools
import sys
from pathlib import Path

from nri_pyro.plots.fits import read_metrics

CSV_FIELDS = ("run", "epoch", "valid_edge_accuracy", "train_loss", "seconds",
              "skipped_loss", "skipped_gradient")  # fmt: skip


def runs_of(path: Path) -> list[tuple[str, list[dict]]]:
    """(name, per-epoch records) of a run folder, or of every run in a saved CSV."""
    if path.suffix != ".csv":
        return [(path.name, read_metrics(path))]
    runs: dict[str, list[dict]] = {}
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            runs.setdefault(row["run"], []).append({
                "valid_edge_accuracy": float(row["valid_edge_accuracy"]),
                "train_loss": float(row["train_loss"]), "seconds": float(row["seconds"]),
                "skipped_steps": int(row["skipped_loss"]) + int(row["skipped_gradient"]),
                "skipped_for": {"loss": int(row["skipped_loss"]),
                                "gradient": int(row["skipped_gradient"])},
            })  # fmt: skip
    return list(runs.items())


def save(runs: list[tuple[str, list[dict]]], path: Path) -> None:
    """Every run's per-epoch curve, one row per epoch (CSV_FIELDS)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(CSV_FIELDS)
        for name, records in runs:
            for epoch, r in enumerate(records, 1):
                why = r.get("skipped_for", {})
                writer.writerow([name, epoch, r.get("valid_edge_accuracy", float("nan")),
                                 r["train_loss"], r.get("seconds", float("nan")),
                                 why.get("loss", 0), why.get("gradient", 0)])  # fmt: skip


def summary(name: str, records: list[dict], every: int) -> dict:
    acc = [r.get("valid_edge_accuracy", float("nan")) for r in records]
    loss = [r["train_loss"] for r in records]
    best, drop = -1.0, 0.0
    for a in acc:
        best = max(best, a)
        drop = max(drop, best - a)
    jumps = [later / earlier for earlier, later in itertools.pairwise(loss)]
    skipped = sum(int(r.get("skipped_steps", 0)) for r in records)
    why: dict | None = {"loss": 0, "gradient": 0}
    if not any("skipped_for" in r for r in records):
        why = None  # a run from before the records said why
    for r in records if why is not None else ():
        for key in why:
            why[key] += int(r.get("skipped_for", {}).get(key, 0))
    return {
        "run": name, "epochs": len(records),
        "curve": " ".join(f"{acc[i]:.3f}" for i in range(every - 1, len(acc), every)),
        "best": max(acc), "last": acc[-1], "drop": drop, "jump": max(jumps, default=1.0),
        "skipped": skipped, "why": why, "acc": acc, "loss": loss,
    }  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run folders or saved .csv files")
    parser.add_argument("--every", type=int, default=5, help="table column every N epochs")
    parser.add_argument("--out", type=Path, help="write the figure here (.png)")
    parser.add_argument("--save", type=Path, help="write every run's curve here (.csv)")
    args = parser.parse_args()
    runs = [run for path in args.runs for run in runs_of(path)]
    names = [name for name, _ in runs]
    if len(set(names)) < len(names):
        parser.error(f"two runs share a name: {', '.join(sorted(names))}")
    rows = [summary(name, records, args.every) for name, records in runs]
    if args.save:
        save(runs, args.save)
    print(f"| run | epochs | validation accuracy every {args.every} epochs | best | last | "
          "largest drop from best | largest training-loss jump | skipped steps (loss / "
          "gradient) |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        why = r["why"]
        reasons = "not recorded" if why is None else f"{why['loss']} / {why['gradient']}"
        print(f"| {r['run']} | {r['epochs']} | {r['curve']} | {r['best']:.3f} | "
              f"{r['last']:.3f} | {r['drop']:.3f} | x{r['jump']:.2f} | {r['skipped']} "
              f"({reasons}) |")  # fmt: skip
    if args.out:
        from matplotlib.figure import Figure

        fig = Figure(figsize=(10, 4))
        acc_ax, loss_ax = fig.subplots(1, 2)
        for r in rows:
            epochs = range(1, r["epochs"] + 1)
            acc_ax.plot(epochs, r["acc"], label=r["run"])
            loss_ax.plot(epochs, r["loss"], label=r["run"])
        acc_ax.set(xlabel="epoch", ylabel="validation edge accuracy")
        loss_ax.set(xlabel="epoch", ylabel="training loss (negative ELBO per trajectory)",
                    yscale="log")  # fmt: skip
        acc_ax.legend()
        fig.tight_layout()
        args.out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(args.out, dpi=100)
        print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
