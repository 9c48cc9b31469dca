"""The ``nri-pyro`` command."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

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
    p.set_defaults(run=_run_simulate)


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nri-pyro", description="Neural relational inference as a Pyro program."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    _add_simulate(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args)
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
