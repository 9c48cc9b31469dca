"""Scale: SVI step time and peak memory of NRI on large systems, ours against dense one-hot.

For each number of objects N, one training step (TraceMeanField_ELBO, Adam; MLP encoder
and decoder) of the same network, once with indexed message passing (ours: O(E H) memory,
and messages recomputed above ``recompute_threshold``) and once with the reference's
dense one-hot incidence matrices ([E, N] matmuls, every activation kept), each in its own
subprocess so that peak memory is its own. Peak memory is that of a training step above
what data and parameters take (resident memory on the CPU, allocated memory on CUDA).

Every run is capped at ``--memory-budget-gb``: a run that needs more fails with a clear row
instead of taking the machine down. When the dense formulation's memory, extrapolated from
the two largest sizes measured so far (a E + b E N, E = N(N-1)), exceeds the budget, it is
not run at full batch: it runs at a batch that fits and its memory and time are scaled up
linearly, marked '~' (or, when not even batch 1 fits, the prediction is printed).
``--compile`` also times ours with the encoder and decoder under torch.compile (never
Pyro's ELBO) and prints the effect next to eager; a failure to compile is printed as such.

    python benchmarks/scale.py                             # N = 5 ... 100, batch 16, CPU
    python benchmarks/scale.py --objects 5 20 --hidden 64 --compile
    python benchmarks/scale.py --device cuda --batch 128 --memory-budget-gb 60
"""

from __future__ import annotations

import argparse
import sys

import torch
from _common import predict_memory, ratio, run_isolated

from nri_pyro.nn import recompute_threshold


def _measure(args: argparse.Namespace, n: int, **config) -> dict:
    """One configuration in its own process, capped at the memory budget."""
    settings = {
        "objects": n, "device": args.device, "batch": args.batch, "frames": args.frames,
        "hidden": args.hidden, "steps": args.steps, "memory_cap_gb": args.memory_budget_gb,
        "threads": args.threads,
    }  # fmt: skip
    result = run_isolated({**settings, **config}, timeout=args.timeout)
    if result.get("out_of_memory"):
        result["error"] = f"over budget: {result['error']}"
    return result


def _dense(args: argparse.Namespace, n: int, points: list) -> dict:
    """The dense formulation at N, or, when its memory extrapolated from the sizes measured
    so far exceeds the budget, an estimate from a smaller batch scaled up linearly (memory
    and time of a step grow with the batch), or the prediction alone."""
    predicted = predict_memory(points, n)
    budget_mb = args.memory_budget_gb * 1024
    if predicted is None or predicted <= budget_mb:
        result = _measure(args, n, dense=True)
        if "peak_mb" in result:
            points.append((n, result["peak_mb"]))
        return result
    over = f"over budget (predicted {predicted / 1024:.1f} GB from N = {points[-2][0]}, "
    over += f"{points[-1][0]})"
    small = int(args.batch * budget_mb / (2 * predicted))
    if small < 1:
        return {"skipped": over, "peak_mb": predicted, "estimated": True}
    result = _measure(args, n, dense=True, batch=small)
    if "error" in result:
        return {"skipped": f"{over}; at batch {small}: {result['error']}", "peak_mb": predicted,
                "estimated": True}  # fmt: skip
    factor = args.batch / small
    points.append((n, result["peak_mb"] * factor))
    return {
        "seconds_per_step": result["seconds_per_step"] * factor,
        "peak_mb": result["peak_mb"] * factor,
        "estimated": True,
        "skipped": f"{over}: not run at batch {args.batch}; measured at batch {small} "
        f"({result['peak_mb'] / 1024:.2f} GB, {result['seconds_per_step']:.1f} s/step) and "
        f"scaled by {factor:g}",
    }


def _cell(result: dict) -> tuple[str, str]:
    """(seconds per step, GB) columns of a result; '~' marks an estimate."""
    mark = "~" if result.get("estimated") else ""
    seconds = f"{mark}{result['seconds_per_step']:.3f}" if "seconds_per_step" in result else "-"
    memory = f"{mark}{result['peak_mb'] / 1024:.2f}" if "peak_mb" in result else "-"
    return seconds, memory


def _ratio(dense: dict, ours: dict, key: str) -> str:
    if key not in dense or key not in ours:
        return "-"
    return f"{'~' if dense.get('estimated') else ''}{ratio(dense[key], ours[key]):.1f}x"


def _threshold(device: str) -> str:
    """The automatic recomputation threshold, in words (a CUDA device is not touched here:
    the runs need its memory)."""
    if torch.device(device).type != "cpu":
        return "a quarter of the device's memory"
    return f"{recompute_threshold(device) / 2**30:.1f} GiB (a quarter of the machine's memory)"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, nargs="+", default=[5, 10, 20, 50, 100])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--frames", type=int, default=49)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--steps", type=int, default=3, help="timed steps after a warm-up")
    parser.add_argument("--memory-budget-gb", type=float, default=8.0)
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds per run")
    parser.add_argument(
        "--threads", type=int, help="CPU threads per run (default: torch's); 1 is steadier"
    )
    parser.add_argument("--compile", action="store_true", help="also time ours under torch.compile")
    args = parser.parse_args()
    print(
        f"device {args.device}, batch {args.batch}, T {args.frames}, hidden {args.hidden}, "
        f"torch {torch.__version__}, {args.threads or torch.get_num_threads()} threads, "
        f"{args.steps} timed "
        f"steps, memory budget {args.memory_budget_gb:g} GB per run\n"
        f"ours: indexed message passing, messages recomputed in the backward pass when a "
        f"forward pass would keep more than {_threshold(args.device)} of them\n"
        f"dense: the reference's one-hot incidence matmuls, every activation kept"
    )
    header = (
        f"\n{'N':>4}{'E':>7}{'ours s/step':>13}{'ours GB':>9}{'dense s/step':>14}"
        f"{'dense GB':>10}{'time d/o':>10}{'memory d/o':>12}"
    )
    if args.compile:
        header += f"{'compiled s/step':>17}{'eager/compiled':>16}{'compile s':>11}"
    print(header)
    dense_points: list = []
    notes = []
    for n in args.objects:
        ours = _measure(args, n)
        dense = _dense(args, n, dense_points)
        (ours_s, ours_gb), (dense_s, dense_gb) = _cell(ours), _cell(dense)
        time_ratio = _ratio(dense, ours, "seconds_per_step")
        memory_ratio = _ratio(dense, ours, "peak_mb")
        row = (
            f"{n:>4}{n * (n - 1):>7}{ours_s:>13}{ours_gb:>9}{dense_s:>14}{dense_gb:>10}"
            f"{time_ratio:>10}{memory_ratio:>12}"
        )
        if args.compile:
            compiled = _measure(args, n, compile=True) if "seconds_per_step" in ours else {}
            if "seconds_per_step" in compiled:
                speedup = ratio(ours["seconds_per_step"], compiled["seconds_per_step"])
                row += (
                    f"{compiled['seconds_per_step']:>17.3f}{speedup:>15.2f}x"
                    f"{compiled['warmup_seconds']:>11.0f}"
                )
            else:
                reason = compiled.get("error") or compiled.get("skipped") or "ours did not run"
                row += f"{'-':>17}{'-':>16}{'-':>11}"
                notes.append(f"N={n} compiled: {reason}")
        print(row, flush=True)
        for name, result in (("ours", ours), ("dense", dense)):
            reason = result.get("error") or result.get("skipped")
            if reason:
                notes.append(f"N={n} {name}: {reason}")
    for note in notes:
        print(note)
    print(
        "\ntime d/o, memory d/o: dense / ours; '~' marks an estimate (see the notes). "
        "compile s: the warm-up steps, compilation included."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
