"""Mixed precision: float32 against bf16 autocast of the networks (train.precision), trained
from the same seed on the same simulated springs data; prints time per epoch (and the
ratio) and the held-out edge accuracy and rollout MSE of each.

bf16 pays on GPUs with bf16 tensor cores; a CPU without bf16 instructions emulates it
(slower), but the accuracy columns still answer "does bf16 keep accuracy".

    python benchmarks/precision.py                          # CPU-sized
    python benchmarks/precision.py --device cuda --train 20000 --hidden 256 --epochs 20
"""

from __future__ import annotations

import argparse
import time

import torch

from nri_pyro import simulate
from nri_pyro.api import NRI


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--objects", type=int, default=5)
    parser.add_argument("--train", type=int, default=1000, help="training trajectories")
    parser.add_argument("--test", type=int, default=200, help="test trajectories (99 frames)")
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=5e-3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    start = time.perf_counter()
    train = simulate("springs", args.train, args.objects, seed=0, device=args.device)
    test = simulate("springs", args.test, args.objects, seed=0, split="test", num_frames=99,
                    device=args.device)  # fmt: skip
    print(
        f"springs {args.objects} objects, {args.train} train / {args.test} test trajectories "
        f"(simulated in {time.perf_counter() - start:.1f} s); hidden {args.hidden}, "
        f"{args.epochs} epochs, batch {args.batch}, lr {args.lr:g}, seed {args.seed}, "
        f"device {args.device}, torch {torch.__version__}"
    )
    print(f"\n{'precision':>10}{'s/epoch':>10}{'edge acc':>10}{'mse 1':>10}{'mse 10':>10}"
          f"{'mse 20':>10}")  # fmt: skip
    seconds = {}
    for precision in ("float32", "bfloat16"):
        hidden = [f"decoder.{k}={args.hidden}" for k in ("msg_hidden", "msg_out", "hidden")]
        nri = NRI(
            overrides=[
                *hidden, f"guide.encoder.hidden={args.hidden}", f"train.precision={precision}",
                f"train.batch_size={args.batch}", f"train.lr={args.lr}", "train.progress=false",
                f"train.seed={args.seed}",
            ],
            device=args.device,
        )  # fmt: skip
        nri.fit(train, epochs=args.epochs)
        # The first epoch includes warm-up (kernel selection, caches): left out.
        epochs = nri.history[1:] or nri.history
        seconds[precision] = sum(r["seconds"] for r in epochs) / len(epochs)
        m = nri.evaluate(test)
        print(
            f"{precision:>10}{seconds[precision]:>10.2f}{m['edge_accuracy']:>10.4f}"
            f"{m['mse_1']:>10.2e}{m['mse_10']:>10.2e}{m['mse_20']:>10.2e}",
            flush=True,
        )
    print(f"\nfloat32 / bfloat16 time per epoch: {seconds['float32'] / seconds['bfloat16']:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
