"""Validation edge accuracy against wall-clock minutes for one recipe: the tuning experiments.

    python benchmarks/learning_curve.py charged5 --minutes 3
    python benchmarks/learning_curve.py charged5 --minutes 3 --guide mlp --set train.lr=1e-3

Simulates the preset's training and validation splits, then trains with the preset's specs
and settings (changed by --model, --guide and --set, as `nri-pyro train` does) and prints one
JSON line per epoch: minutes since the start (simulation included), training loss,
validation edge accuracy, AUROC and MSE. It stops after the epoch that passes --minutes, or
at the preset's last epoch: a fixed time budget, so that recipes are compared at equal CPU
time. The docs' tuning table (docs/tuning.md) was measured with it, one run at a time.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch

from nri_pyro.api import NRI
from nri_pyro.data.dataset import normalizer_for, prepare
from nri_pyro.evaluation import evaluate
from nri_pyro.guide import NRIGuide
from nri_pyro.model import NRIModel
from nri_pyro.presets import load_preset, simulate_preset
from nri_pyro.training import Trainer


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("preset", help="a preset name or file, e.g. charged5")
    parser.add_argument("--minutes", type=float, default=3.0, help="wall-clock budget (3)")
    parser.add_argument("--model", help="a model spec that replaces the preset's")
    parser.add_argument("--guide", help="a guide spec that replaces the preset's")
    parser.add_argument("--set", action="append", default=[], dest="overrides",
                        metavar="KEY=VALUE", help="change a spec or training value")  # fmt: skip
    parser.add_argument("--train", type=int, help="training trajectories (default: the preset's)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (2)")
    parser.add_argument("--tag", default="", help="a label printed on every line")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    preset = load_preset(args.preset)
    if args.train is not None:
        preset.data["train"] = args.train
    nri = NRI(args.model, args.guide, preset=preset,
              overrides=[*args.overrides, "train.progress=false"])  # fmt: skip
    start = time.perf_counter()
    splits = simulate_preset(preset, splits=("train", "valid"))
    normalizer = normalizer_for(splits["train"])
    train, valid = prepare(splits["train"], normalizer), prepare(splits["valid"], normalizer)
    x = train[0]
    torch.manual_seed(nri.config.seed)
    model = NRIModel(nri.model_spec, x.shape[3])
    guide = NRIGuide.for_model(nri.guide_spec, model, x.shape[2], x.shape[1])
    trainer = Trainer(model, guide, train, valid, nri.config, normalizer=normalizer)
    print(f"# {args.tag} {preset.describe()}; --set {' '.join(args.overrides)}", flush=True)
    for epoch in range(nri.config.epochs):
        loss = trainer.train_epoch(epoch)
        metrics = evaluate(model, guide, *valid)
        minutes = (time.perf_counter() - start) / 60
        print(json.dumps({
            "tag": args.tag, "epoch": epoch + 1, "minutes": round(minutes, 2),
            "loss": round(loss, 1), "acc": round(metrics["edge_accuracy"], 4),
            "auroc": round(metrics["edge_auroc"], 4), "mse": metrics["mse"],
        }), flush=True)  # fmt: skip
        if minutes > args.minutes:
            break
    return 0


if __name__ == "__main__":
    sys.exit(main())
