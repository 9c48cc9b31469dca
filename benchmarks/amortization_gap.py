"""The amortization gap of a trained run: its held-out ELBO and edge accuracy before and
after K steps of semi-amortized refinement (nri_pyro.refine), one JSON line per K.

    python benchmarks/amortization_gap.py runs/c5 --preset charged5 --refine 10 30 100
    python benchmarks/amortization_gap.py runs/c5 --data data/charged5 --test 200
    python benchmarks/amortization_gap.py runs/c5q --preset charged5-charges --refine exact

The held-out split is the preset's test split, simulated (seed data.seed, as `nri-pyro
train` made it), or --data's test split; --test keeps its first trajectories (refinement
costs K forward and backward passes per trajectory). Each line: K, minutes, the negative
ELBO per trajectory before (elbo_loss_unrefined) and after (elbo_loss), their difference
(amortization_gap), and edge accuracy before and after. The run's weights never change.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch

from nri_pyro.api import NRI
from nri_pyro.data.io import load_dataset
from nri_pyro.presets import simulate_preset


def _steps(text: str) -> int | str:
    if text == "exact":
        return text
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"--refine takes step counts >= 1 or 'exact', got {text!r}")
    return int(text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", help="a run folder or checkpoint")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--preset", help="simulate this preset's test split")
    source.add_argument("--data", help="a dataset folder with a test split")
    parser.add_argument("--refine", type=_steps, nargs="+", default=[10, 30], metavar="K",
                        help="step counts, or 'exact' (prior.name=charges)")  # fmt: skip
    parser.add_argument("--test", type=int, default=None, help="first N test trajectories")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    nri = NRI.load(args.run, device=args.device)
    if args.preset:
        test = simulate_preset(args.preset, splits=("test",))["test"]
    else:
        test = load_dataset(args.data, splits=("test",))["test"]
    if args.test:
        test = test.subset(slice(0, args.test))
    test = nri.select_model_features(test)
    print(f"# {args.run}: {len(test)} test trajectories, prior {nri.model.prior.name}",
          file=sys.stderr)  # fmt: skip
    for steps in args.refine:
        started = time.perf_counter()
        metrics = nri.evaluate(test, refine=steps)
        row = {"refine": steps, "minutes": round((time.perf_counter() - started) / 60, 2)}
        for key in ("elbo_loss_unrefined", "elbo_loss", "amortization_gap",
                    "edge_accuracy_unrefined", "edge_accuracy"):  # fmt: skip
            if key in metrics:
                row[key] = round(metrics[key], 4)
        print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
