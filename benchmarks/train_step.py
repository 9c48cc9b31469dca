"""SVI step time and peak memory: indexed message passing against a dense one-hot one.

The same network (the paper's: hidden 256, MLP encoder and decoder, batch 128, T = 49),
once with gather/scatter over the edge index (ours, O(B E H) memory) and once with the
reference's dense one-hot incidence matrices ([E, N] matmuls: O(N^3) time), each in a fresh
subprocess so that peak memory is its own. Prints seconds per step (wall clock, and the
process's CPU time, which other work on a shared machine disturbs less), seconds per epoch
of 5,000 trajectories, peak memory of a training step above what data and parameters take
(peak resident memory on the CPU, peak allocated memory on CUDA), and ratios. With
``--repeats R`` every configuration runs R times, interleaved, and the medians are printed;
``--threads 1`` gives steadier figures on a machine that other jobs share.

    python benchmarks/train_step.py                     # N = 5, 10, 20 on the CPU
    python benchmarks/train_step.py --objects 5 10 20 50 --device cuda
"""

from __future__ import annotations

import argparse
import statistics
import sys

import torch
from _common import NUM_TRAJECTORIES, ratio, run_isolated


def _median(results: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in results)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, nargs="+", default=[5, 10, 20])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument(
        "--threads", type=int, help="CPU threads per run (default: torch's); 1 is steadier"
    )
    args = parser.parse_args()
    print(
        f"device {args.device}, batch {args.batch}, T 49, hidden {args.hidden}, "
        f"torch {torch.__version__}, {args.threads or torch.get_num_threads()} threads, "
        f"{args.steps} timed "
        f"steps, median of {args.repeats} run(s)"
    )
    print(
        f"\n{'N':>4}{'ours s/step':>13}{'(cpu s)':>9}{'dense s/step':>14}{'(cpu s)':>9}"
        f"{'speed-up':>10}{'ours s/epoch':>14}{'ours MB':>10}{'dense MB':>10}"
        f"{'memory ratio':>14}"
    )
    for n in args.objects:
        runs: dict[bool, list[dict]] = {False: [], True: []}
        errors: dict[bool, str] = {}
        for _ in range(args.repeats):
            for dense in (False, True):
                config = {
                    "objects": n, "dense": dense, "device": args.device, "batch": args.batch,
                    "hidden": args.hidden, "steps": args.steps, "threads": args.threads,
                }  # fmt: skip
                result = run_isolated(config)
                if "error" in result:
                    errors[dense] = result["error"]
                else:
                    runs[dense].append(result)
        if not runs[False]:
            print(f"{n:>4}  ours failed: {errors[False]}")
            continue
        ours = {k: _median(runs[False], k) for k in runs[False][0]}
        epoch = ours["seconds_per_step"] * NUM_TRAJECTORIES / args.batch
        row = f"{n:>4}{ours['seconds_per_step']:>13.3f}{ours['cpu_seconds_per_step']:>9.2f}"
        if not runs[True]:
            print(f"{row}{'failed':>14}{'':>19}{epoch:>14.1f}{ours['peak_mb']:>10.0f}"
                  f"  dense: {errors[True]}")  # fmt: skip
            continue
        dense = {k: _median(runs[True], k) for k in runs[True][0]}
        print(
            f"{row}{dense['seconds_per_step']:>14.3f}{dense['cpu_seconds_per_step']:>9.2f}"
            f"{ratio(dense['seconds_per_step'], ours['seconds_per_step']):>9.2f}x"
            f"{epoch:>14.1f}{ours['peak_mb']:>10.0f}{dense['peak_mb']:>10.0f}"
            f"{ratio(dense['peak_mb'], ours['peak_mb']):>13.2f}x"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
