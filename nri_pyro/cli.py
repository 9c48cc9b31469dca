"""The ``nri-pyro`` command."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from nri_pyro.data.simulate import generate_dataset
from nri_pyro.data.systems import SYSTEMS, get_system


def _key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected key=value, got {text!r}")
    return key.strip(), value.strip()


def _add_simulate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "simulate",
        help="simulate a dataset of the NRI paper (springs, charged, kuramoto)",
        description="Simulate train/valid/test splits, chunk by chunk, into a folder. "
        "Defaults are the paper's: 5 objects, 50,000/10,000/10,000 simulations, 49 frames "
        "(99 for test).",
    )
    p.add_argument("system", help=f"one of: {', '.join(SYSTEMS)}")
    p.add_argument("--objects", type=int, default=5, help="objects per system (default 5)")
    p.add_argument("--train", type=int, default=50_000, help="training simulations")
    p.add_argument("--valid", type=int, default=10_000, help="validation simulations")
    p.add_argument("--test", type=int, default=10_000, help="test simulations")
    p.add_argument("--out", help="output folder (default data/{system}{objects})")
    p.add_argument("--frames", type=int, help="frames kept per train/valid trajectory (49)")
    p.add_argument("--test-frames", type=int, help="frames kept per test trajectory (99)")
    p.add_argument(
        "--length",
        type=int,
        help="integration steps per train/valid simulation, as the reference's --length "
        "(a multiple of the sample frequency); an alternative to --frames",
    )
    p.add_argument("--length-test", type=int, help="the same for test (reference: 10000)")
    p.add_argument("--seed", type=int, default=42, help="random seed (default 42)")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    p.add_argument(
        "--format",
        choices=("native", "nri"),
        default="native",
        help="native (nri-pyro) or nri (the reference .npy layout)",
    )
    p.add_argument(
        "--dtype",
        choices=("float64", "float32"),
        default="float64",
        help="integrator arithmetic: float64 as the reference (default), float32 faster",
    )
    p.add_argument("--overwrite", action="store_true", help="replace a dataset in --out")
    p.add_argument("--chunk-size", type=int, help="simulations advanced together")
    p.add_argument(
        "--param",
        action="append",
        type=_key_value,
        default=[],
        metavar="KEY=VALUE",
        help="override a physical parameter, e.g. --param interaction_strength=0.2 "
        "(repeatable; see the system's parameters in the README)",
    )
    p.set_defaults(handler=_run_simulate)


def _run_simulate(args: argparse.Namespace) -> int:
    system = get_system(args.system)
    params = dict(args.param)
    checked = system.params(params)
    frames, test_frames = args.frames, args.test_frames
    if args.length is not None:
        if frames is not None:
            raise ValueError("give either --frames or --length, not both")
        frames = system.frames_from_steps(args.length, checked.sample_freq)
    if args.length_test is not None:
        if test_frames is not None:
            raise ValueError("give either --test-frames or --length-test, not both")
        test_frames = system.frames_from_steps(args.length_test, checked.sample_freq)
    out = args.out or f"data/{args.system}{args.objects}"
    generate_dataset(
        args.system,
        out,
        num_objects=args.objects,
        train=args.train,
        valid=args.valid,
        test=args.test,
        num_frames=frames,
        test_frames=test_frames,
        seed=args.seed,
        device=args.device,
        format=args.format,
        overwrite=args.overwrite,
        chunk_size=args.chunk_size,
        dtype=getattr(torch, args.dtype),
        log=print,
        **params,
    )
    return 0


# The main job's embedded default: a springs set and a network sized for a laptop CPU.
DEFAULT_DATA = {"system": "springs", "num_objects": 5, "train": 8000, "valid": 500, "test": 1000}
DEFAULT_OVERRIDES = [
    "decoder.msg_hidden=64",
    "decoder.msg_out=64",
    "decoder.hidden=64",
    "guide.encoder.hidden=64",
    "train.lr=0.001",
    "train.batch_size=32",
    "train.lr_decay_every=15",
]
DEFAULT_EPOCHS = 20


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train NRI with SVI (no arguments: a small springs run sized for a CPU)",
        description="Train the Pyro NRI model and guide. Without --data, simulates a small "
        "springs dataset (5 objects, {train:,} / {valid:,} / {test:,} trajectories) and, "
        "unless --model or --guide is given, trains a network of hidden size 64 sized for a "
        "CPU; --set and --epochs still apply.".format(**DEFAULT_DATA),
    )
    p.add_argument("--model", help="model spec (YAML); default: the paper's (models/nri.yaml)")
    p.add_argument("--guide", help="guide spec (YAML); default: MLP encoder (guides/mlp.yaml)")
    p.add_argument("--data", help="dataset folder (native or reference .npy layout)")
    p.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
        help="override a spec value: prior.name=sparse, decoder.hidden=64, "
        "guide.temperature=0.5, train.lr=1e-3 (repeatable)",
    )  # fmt: skip
    p.add_argument("--epochs", type=int, help="epochs (default: the spec's, 500)")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    p.add_argument("--out", help="run folder (default runs/<data>-<time>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument("--seed", type=int, help="training seed (train.seed)")
    p.set_defaults(handler=_run_train)


def _run_train(args: argparse.Namespace) -> int:
    from nri_pyro.api import NRI, resolve_specs
    from nri_pyro.data.io import load_dataset
    from nri_pyro.data.simulate import resolve_device, simulate

    overrides = list(args.overrides)
    if args.seed is not None:
        overrides.append(f"train.seed={args.seed}")
    if args.data is None and args.model is None and args.guide is None:
        overrides = DEFAULT_OVERRIDES + overrides
        if args.epochs is None:
            overrides.append(f"train.epochs={DEFAULT_EPOCHS}")
    if args.epochs is not None:
        overrides.append(f"train.epochs={args.epochs}")
    # Everything is checked before any data are made or read.
    resolve_specs(args.model, args.guide, overrides)
    resolve_device(args.device)
    if args.data is None:
        d = DEFAULT_DATA
        print(
            f"no --data: simulating {d['system']} with {d['num_objects']} objects "
            f"({d['train']} / {d['valid']} / {d['test']} trajectories)"
        )
        splits = {
            split: simulate(d["system"], d[split], d["num_objects"], seed=0, split=split,
                            num_frames=49 if split != "test" else 99)
            for split in ("train", "valid", "test")
        }  # fmt: skip
        name = "springs5-default"
    else:
        splits = load_dataset(args.data)
        name = Path(args.data).name
    if "train" not in splits:
        raise ValueError(f"{args.data} has no training split")
    out = Path(args.out or f"runs/{name}-{time.strftime('%Y%m%d-%H%M%S')}")
    nri = NRI(args.model, args.guide, overrides=overrides, device=args.device)
    print(f"training {out} on {args.device}: {nri.config.epochs} epochs")
    nri.fit(splits["train"], splits.get("valid"), out=out, resume=args.resume)
    summary: dict = {"run": str(out)}
    held_out = "test" if "test" in splits else "valid" if "valid" in splits else None
    if held_out is not None:
        summary[held_out] = nri.evaluate(splits[held_out])
        (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        metrics = summary[held_out]
        if "edge_accuracy" in metrics:
            print(f"held-out ({held_out}) edge accuracy: {metrics['edge_accuracy']:.4f}")
    print(f"run saved in {out}")
    return 0


def _add_run_and_data(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="run folder (its best checkpoint) or checkpoint file")
    p.add_argument("--data", required=True, help="dataset folder (a test split alone will do)")
    p.add_argument("--split", default="test", choices=("train", "valid", "test"))
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")


def _load_run_and_split(args: argparse.Namespace):
    from nri_pyro.api import NRI
    from nri_pyro.data.io import load_dataset

    nri = NRI.load(args.run, device=args.device)
    return nri, load_dataset(args.data, splits=(args.split,))[args.split]


def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="held-out metrics of a trained run")
    _add_run_and_data(p)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(handler=_run_evaluate)


def _run_evaluate(args: argparse.Namespace) -> int:
    nri, data = _load_run_and_split(args)
    metrics = nri.evaluate(data)
    if args.json:
        print(json.dumps(metrics))
    else:
        width = max(len(k) for k in metrics)
        for key, value in metrics.items():
            print(f"{key:<{width}}  {value:.6g}")
    return 0


def _add_infer(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("infer", help="write the inferred edge-type probabilities")
    _add_run_and_data(p)
    p.add_argument("--out", required=True, help="output .npz file")
    p.set_defaults(handler=_run_infer)


def _run_infer(args: argparse.Namespace) -> int:
    import numpy as np

    from nri_pyro.nn import edges_to_adjacency

    nri, data = _load_run_and_split(args)
    probs = nri.infer_edges(data)
    adjacency = edges_to_adjacency(probs, data.num_objects, dim=-2)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp.npz")
    np.savez(
        tmp,
        edge_probs=probs.numpy(),
        adjacency_probs=adjacency.numpy(),
        most_likely=adjacency.argmax(-1).numpy(),
    )
    os.replace(tmp, out)
    print(
        f"wrote {out}: edge_probs [S, E, K] = {list(probs.shape)}, adjacency_probs "
        f"[S, N, N, K] (receiver, sender), most_likely [S, N, N]"
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nri-pyro", description="Neural relational inference as a Pyro program."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    _add_simulate(sub)
    _add_train(sub)
    _add_evaluate(sub)
    _add_infer(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except (ValueError, FileExistsError, FileNotFoundError) as err:
        print(f"nri-pyro {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            f"nri-pyro {args.command}: interrupted; nothing was left half-written", file=sys.stderr
        )
        return 130


if __name__ == "__main__":
    sys.exit(main())
