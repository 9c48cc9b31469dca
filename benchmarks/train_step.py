"""SVI step time and peak memory: indexed message passing against a dense one-hot one.

The same network (the paper's: hidden 256, MLP encoder and decoder, batch 128, T = 49),
once with gather/scatter over the edge index (ours, O(B E H) memory) and once with the
reference's dense one-hot incidence matrices ([E, N] matmuls, O(N^3)), each in a fresh
subprocess so that peak memory is its own. Prints seconds per step, seconds per epoch of
5,000 trajectories, peak memory of a training step above what data and parameters take
(peak resident memory on the CPU, peak allocated memory on CUDA), and ratios.

    python benchmarks/train_step.py                     # N = 5, 10, 20 on the CPU
    python benchmarks/train_step.py --objects 5 10 20 50 --device cuda
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(
    num_objects: int, dense: bool, device: str, batch: int, hidden: int, steps: int
) -> dict:
    import pyro

    from nri_pyro.api import build

    torch.manual_seed(0)
    dev = torch.device(device)
    x = (torch.randn(batch, num_objects, 49, 4).cumsum(2) * 0.05).to(dev)
    overrides = [f"decoder.{k}={hidden}" for k in ("msg_hidden", "msg_out", "hidden")]
    model, guide = build(None, None, x, overrides=[*overrides, f"guide.encoder.hidden={hidden}"])
    model.to(dev), guide.to(dev)
    model.dense = guide.dense = dense
    loss_fn = pyro.infer.TraceMeanField_ELBO()(model, guide)
    optimizer = torch.optim.Adam(loss_fn.parameters(), lr=5e-4)

    def step() -> None:
        loss = loss_fn(x, num_trajectories=5000) / 5000
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    base = _rss_mb()  # data and parameters, before any activation exists
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
        base = torch.cuda.memory_allocated(dev) / 2**20
    step()  # warm-up
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    seconds = (time.perf_counter() - start) / steps
    peak = torch.cuda.max_memory_allocated(dev) / 2**20 if dev.type == "cuda" else _rss_mb() - base
    return {"seconds_per_step": seconds, "peak_mb": peak}


def run_isolated(args: argparse.Namespace, num_objects: int, dense: bool) -> dict:
    cmd = [
        sys.executable, __file__, "--child", str(num_objects), str(int(dense)),
        "--device", args.device, "--batch", str(args.batch), "--hidden", str(args.hidden),
        "--steps", str(args.steps),
    ]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        return {"error": result.stderr.strip().splitlines()[-1] if result.stderr else "failed"}
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, nargs="+", default=[5, 10, 20])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--child", nargs=2, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        n, dense = args.child
        print(json.dumps(measure(n, bool(dense), args.device, args.batch, args.hidden, args.steps)))
        return 0
    print(
        f"device {args.device}, batch {args.batch}, T 49, hidden {args.hidden}, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.steps} timed steps"
    )
    print(
        f"\n{'N':>4}{'ours s/step':>13}{'dense s/step':>14}{'speed-up':>10}"
        f"{'ours s/epoch':>14}{'ours MB':>10}{'dense MB':>10}{'memory ratio':>14}"
    )
    for n in args.objects:
        ours = run_isolated(args, n, dense=False)
        dense = run_isolated(args, n, dense=True)
        if "error" in ours:
            print(f"{n:>4}  ours failed: {ours['error']}")
            continue
        epoch = ours["seconds_per_step"] * 5000 / args.batch
        if "error" in dense:
            print(f"{n:>4}{ours['seconds_per_step']:>13.3f}{'failed':>14}{'':>10}{epoch:>14.1f}"
                  f"{ours['peak_mb']:>10.0f}  dense: {dense['error']}")  # fmt: skip
            continue
        print(
            f"{n:>4}{ours['seconds_per_step']:>13.3f}{dense['seconds_per_step']:>14.3f}"
            f"{dense['seconds_per_step'] / ours['seconds_per_step']:>9.2f}x{epoch:>14.1f}"
            f"{ours['peak_mb']:>10.0f}{dense['peak_mb']:>10.0f}"
            f"{dense['peak_mb'] / max(ours['peak_mb'], 1e-9):>13.2f}x"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
