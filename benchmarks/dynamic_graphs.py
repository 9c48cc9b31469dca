"""Static NRI against graphs that change over time, on switching springs, at equal CPU time.

    python benchmarks/dynamic_graphs.py --minutes 12                     # switch_rate 0.2
    python benchmarks/dynamic_graphs.py --minutes 4 --switch-rate 0      # nothing switches
    python benchmarks/dynamic_graphs.py --variants markov --set prior.stay=0.8

Simulates springs with 5 objects whose edges flip at random times (``switch_rate`` flips
per edge per time unit, a Poisson process; 0 gives the paper's static data), then trains
each variant on the same data for the same wall-clock budget (epochs until the budget has
passed) and evaluates it on held-out trajectories of the training length (49 frames), per
frame: edge accuracy and AUROC with the best relabelling over the whole set, and switch
times found within +-W frames (precision, recall). The variants are presets:

- ``static``: springs5, one graph per trajectory (its network and recipe);
- ``markov``: springs5-switching, a graph per window of 4 frames under the sticky Markov
  prior, the encoder reading each window and a GRU over the windows;
- ``independent``: springs5-switching with independent windows (the uniform prior).

``--set`` changes every variant, ``--set-dynamic`` the two dynamic ones. It prints one
JSON line per epoch (validation metrics) and per finished variant (test metrics), then a
table. Simulation time is not counted in the budget.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch

from nri_pyro.api import NRI
from nri_pyro.data.dataset import normalizer_for, prepare
from nri_pyro.data.simulate import simulate
from nri_pyro.evaluation import evaluate
from nri_pyro.guide import NRIGuide
from nri_pyro.model import NRIModel
from nri_pyro.training import Trainer

VARIANTS = {
    "static": ("springs5", []),
    "markov": ("springs5-switching", []),
    "independent": ("springs5-switching", ["prior.name=uniform"]),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=12.0,
                        help="training budget per variant (12)")  # fmt: skip
    parser.add_argument("--switch-rate", type=float, default=0.2,
                        help="flips per edge per time unit (0.2: about one per edge in 49 "
                        "frames; 0: static data)")  # fmt: skip
    parser.add_argument("--variants", nargs="+", default=["static", "markov"],
                        choices=list(VARIANTS))  # fmt: skip
    parser.add_argument("--train", type=int, default=8000, help="training trajectories")
    parser.add_argument("--valid", type=int, default=500, help="validation trajectories")
    parser.add_argument("--test", type=int, default=1000, help="test trajectories")
    parser.add_argument("--set", action="append", default=[], dest="overrides",
                        metavar="KEY=VALUE", help="change a value of every variant")  # fmt: skip
    parser.add_argument("--set-dynamic", action="append", default=[], metavar="KEY=VALUE",
                        help="change a value of the dynamic variants only")  # fmt: skip
    parser.add_argument("--threads", type=int, default=2, help="torch threads (2)")
    parser.add_argument("--seed", type=int, default=0, help="data and training seed")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    params = {"switch_rate": args.switch_rate}
    splits = {
        split: simulate("springs", size, seed=args.seed, split=split, **params)
        for split, size in (("train", args.train), ("valid", args.valid), ("test", args.test))
    }
    truth = splits["test"].adjacency
    per_pair = truth.diff(dim=1).ne(0).sum((1, 2, 3)).double() / 2 if truth.dim() == 4 else None
    switches = 0.0 if per_pair is None else round(float(per_pair.mean()), 2)
    # The best that one graph per trajectory can score per frame: each pair's majority type.
    on = splits["test"].edges.double().mean(1) if truth.dim() == 4 else None
    best_static = 1.0 if on is None else float(torch.maximum(on, 1 - on).mean())
    print(json.dumps({
        "simulated_s": round(time.perf_counter() - start, 1), "switch_rate": args.switch_rate,
        "test_switches_per_trajectory": switches,
        "best_static_graph_accuracy": round(best_static, 4),
    }), flush=True)  # fmt: skip
    normalizer = normalizer_for(splits["train"])
    data = {k: prepare(v, normalizer) for k, v in splits.items()}
    results = {}
    for name in args.variants:
        preset, changes = VARIANTS[name]
        if name != "static":
            changes = [*changes, *args.set_dynamic]
        nri = NRI(preset=preset, seed=args.seed,
                  overrides=[*changes, *args.overrides, "train.progress=false"])  # fmt: skip
        x = data["train"][0]
        torch.manual_seed(args.seed)
        model = NRIModel(nri.model_spec, x.shape[3])
        guide = NRIGuide.for_model(nri.guide_spec, model, x.shape[2], x.shape[1])
        trainer = Trainer(model, guide, data["train"], data["valid"], nri.config,
                          normalizer=normalizer)  # fmt: skip
        began = time.perf_counter()
        for epoch in range(nri.config.epochs):
            loss = trainer.train_epoch(epoch)
            minutes = (time.perf_counter() - began) / 60
            valid = evaluate(model, guide, *data["valid"])
            print(json.dumps({
                "variant": name, "epoch": epoch + 1, "minutes": round(minutes, 2),
                "loss": round(loss, 1), "acc": round(valid["edge_accuracy"], 4),
                "recall": round(valid.get("switch_recall", float("nan")), 3),
            }), flush=True)  # fmt: skip
            if minutes > args.minutes:
                break
        test = evaluate(model, guide, *data["test"])
        results[name] = {"epochs": epoch + 1, "minutes": round(minutes, 2), **{
            k: test[k] for k in ("edge_accuracy", "edge_auroc", "switch_precision",
                                 "switch_recall", "switches_true", "switches_detected")
            if k in test
        }}  # fmt: skip
        print(json.dumps({"variant": name, "test": results[name]}), flush=True)
    changed = " ".join([*args.overrides, *args.set_dynamic]) or "none"
    print(f"\nswitching springs5, switch_rate {args.switch_rate}, {args.train} training "
          f"trajectories; changes: {changed}; per-frame test metrics (the best one graph per "
          f"trajectory could score: {best_static:.3f})")  # fmt: skip
    print("| variant | epochs | minutes | edge accuracy | AUROC | switch precision | recall |")
    print("|---|---|---|---|---|---|---|")
    for name, r in results.items():
        print(f"| {name} | {r['epochs']} | {r['minutes']} | {r['edge_accuracy']:.3f} | "
              f"{r['edge_auroc']:.3f} | {r.get('switch_precision', float('nan')):.3f} | "
              f"{r.get('switch_recall', float('nan')):.3f} |")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
