"""The ``nri-pyro`` command: one job, the command line. Each subcommand's parser and its
handler stand side by side (``_add_train`` / ``_run_train``, ...), which is why the file is
longer than most; the work itself is done by the library's functions they call."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path

import torch

from nri_pyro.data.simulate import generate_dataset
from nri_pyro.data.systems import SYSTEMS, get_system
from nri_pyro.distributed import DistributedError
from nri_pyro.evidence import METHODS as EVIDENCE_METHODS
from nri_pyro.files import atomic_write, atomic_write_text
from nri_pyro.folders import FolderInUseError, check_output_folder, folder_lock
from nri_pyro.logs import log_to
from nri_pyro.presets import (
    ABLATE_DEFAULT_PRESET,
    DEFAULT_PRESET,
    Preset,
    load_preset,
    preset_names,
    simulate_preset,
)

logger = logging.getLogger("nri_pyro.cli")  # also when run as __main__


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
    p.add_argument(
        "--no-progress", dest="progress", action="store_false",
        help="no progress bar (by default one is drawn on a terminal, never into a log file)",
    )  # fmt: skip
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
        progress=args.progress,
        **params,
    )
    return 0


def _add_spec_options(p: argparse.ArgumentParser) -> None:
    """Options that train and ablate share."""
    p.add_argument(
        "--preset",
        help="a named recipe of data, specs and training settings (shipped: "
        f"{', '.join(preset_names())}), a preset file, or 'none' for the spec files and the "
        "paper's recipe alone (then --data is needed)",
    )  # fmt: skip
    p.add_argument(
        "--model", help="model spec, a shipped name (nri, nri_sparse, ...) or a YAML file: "
        "replaces the preset's model spec",
    )  # fmt: skip
    p.add_argument(
        "--guide", help="guide spec, a shipped name (mlp, cnn, relational) or a YAML file: "
        "replaces the preset's guide spec",
    )  # fmt: skip
    p.add_argument(
        "--data", help="dataset folder (native or reference .npy layout); default: simulate "
        "the preset's data",
    )  # fmt: skip
    p.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
        help="override a spec value: prior.name=sparse, decoder.hidden=64, "
        "guide.temperature=0.5, train.lr=1e-3 (repeatable)",
    )  # fmt: skip
    p.add_argument("--epochs", type=int, help="epochs (default: the preset's)")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")


def _preset(args: argparse.Namespace, default: str) -> Preset | None:
    """The preset the options name (``default`` when none), or None for --preset none."""
    name = args.preset or default
    if name == "none":
        if args.data is None:
            raise ValueError("--preset none trains on --data alone: give --data")
        return None
    return load_preset(name)


def _overrides(args: argparse.Namespace) -> list[str]:
    """--set values, then --seed and --epochs (which win)."""
    overrides = list(args.overrides)
    if getattr(args, "seed", None) is not None:
        overrides.append(f"train.seed={args.seed}")
    if args.epochs is not None:
        overrides.append(f"train.epochs={args.epochs}")
    return overrides


def _describe(preset: Preset | None, args: argparse.Namespace) -> str:
    """What a run uses, in one line: its preset (or none), spec files and data."""
    parts = ["no preset" if preset is None else preset.describe()]
    for kind in ("model", "guide"):
        given = getattr(args, kind)
        if given is not None:
            parts.append(f"--{kind} {given} replaces the preset's {kind} spec")
    if args.data is not None:
        parts.append(f"data from {args.data}")
    if args.overrides:
        parts.append(f"--set {' '.join(args.overrides)}")
    return "; ".join(parts)


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help=f"train NRI with SVI (no arguments: --preset {DEFAULT_PRESET}, sized for a CPU)",
        description="Train the Pyro NRI model and guide on a preset's data (simulated) or on "
        f"--data. Without --preset: {DEFAULT_PRESET} (springs, 5 objects, a network sized "
        "for a CPU). --model and --guide replace the preset's specs; --set, --epochs and "
        "--seed change its values. The first line printed says what the run uses.",
    )
    _add_spec_options(p)
    p.add_argument("--out", help="run folder (default runs/<preset or data>-<time>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument("--seed", type=int, help="training seed (train.seed)")
    p.add_argument(
        "--dist-timeout", type=float, default=300.0, metavar="SECONDS",
        help="under torchrun: how long a process waits for the others to join and at each "
        "exchange before it fails (default 300)",
    )  # fmt: skip
    p.set_defaults(handler=_run_train)


def _run_train(args: argparse.Namespace) -> int:
    from nri_pyro import distributed
    from nri_pyro.api import NRI
    from nri_pyro.checkpoints import check_run_folder
    from nri_pyro.data.io import load_dataset
    from nri_pyro.devices import resolve_device

    started = time.perf_counter()
    # Everything is checked before any data are made or read.
    # Under torchrun only rank 0 reads the folder (it writes it; the others may not see it).
    if args.out is not None and os.environ.get("RANK", "0") == "0":
        check_run_folder(args.out, args.resume)
    elif args.resume and args.out is None:
        raise ValueError("--resume continues the run in --out: give --out")
    preset = _preset(args, DEFAULT_PRESET)
    overrides = _overrides(args)
    device = resolve_device(args.device)
    nri = NRI(args.model, args.guide, preset=preset, overrides=overrides, device=device)
    # Under torchrun: join the other processes (each trains on its shard of every batch).
    run = distributed.from_environment(device, timeout_s=args.dist_timeout)
    if run is not None:
        device = run.device
    nri.device = device
    say = logger.info if run is None or run.is_main else (lambda *_: None)  # rank 0 speaks
    say(_describe(preset, args))
    if args.data is None:
        assert preset is not None
        splits = simulate_preset(preset)
        name = preset.name
    else:
        splits = load_dataset(args.data)
        name = Path(args.data).name
        if "train" not in splits:
            raise ValueError(f"{args.data} has no training split")
        if preset is not None:
            preset.check_data(splits["train"], f"the data in {args.data}")
    data_seconds = time.perf_counter() - started
    # Rank 0's default folder name (its clock) for every process.
    out = args.out or f"runs/{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    out = Path(distributed.broadcast(run, out))
    where = str(device) if run is None else f"{run.world_size} processes ({run.backend})"
    say(f"training {out} on {where}: {nri.config.epochs} epochs")
    try:
        nri.fit(splits["train"], splits.get("valid"), out=out, resume=args.resume,
                data_parallel=run, held_out={"test": splits.get("test")})  # fmt: skip
    finally:
        if run is not None:
            distributed.finish()
    if run is not None and not run.is_main:
        return 0
    summary: dict = {"run": str(out), "preset": None if preset is None else preset.name}
    # What a prior like prior.name=charges assumes about the system (None: nothing):
    # results with it are never to be read as the unstructured model's.
    knowledge = nri.model.prior.system_knowledge
    summary["system_knowledge"] = knowledge
    held_out = "test" if "test" in splits else "valid" if "valid" in splits else None
    if held_out is not None:
        summary[held_out] = nri.evaluate(splits[held_out])
    summary["seconds"] = {
        "data": round(data_seconds, 2), "total": round(time.perf_counter() - started, 2)
    }  # fmt: skip
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    if held_out is not None and "edge_accuracy" in summary[held_out]:
        say(f"held-out ({held_out}) edge accuracy: {summary[held_out]['edge_accuracy']:.4f}"
            + ("" if knowledge is None else f" (uses knowledge of the system: {knowledge})"))
    say(f"run saved in {out}")
    return 0


def _add_ablate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "ablate",
        help="a prior ablation study: every combination of --vary values (and --variant "
        "sets) and seeds",
        description="Train every combination of the --vary values (with every --variant, "
        "when given) with every seed, evaluate "
        "each run on held-out data (edge accuracy, AUROC, density, rollout MSE, -ELBO, log "
        "evidence by importance sampling with Pareto k; on data whose graphs change over "
        "time, per-frame edge metrics and switch-time precision and recall) and write a "
        "table (markdown and "
        "CSV) and figures. Finished runs are skipped when the command runs again; failed "
        f"runs are reported, not dropped. Without --preset: {ABLATE_DEFAULT_PRESET} (springs "
        "with 5 objects, 2,000 training trajectories and a small network, so that a study of "
        "a few variants and seeds fits in minutes on a CPU); without --data, the preset's "
        "data are simulated once and shared by every run (once per data setting where "
        "--vary or --variant sets data.* keys).",
    )
    _add_spec_options(p)
    p.add_argument(
        "--vary", action="append", default=[], metavar="KEY=V1,V2,...",
        help="a spec key and its values, e.g. prior.name=uniform,sparse,dirichlet or "
        "prior.no_edge=0.5,0.8,0.95, or a data key of the preset (without --data): "
        "data.train=50,500,5000 (training trajectories), data.frames (observed length), "
        "data.objects, data.params.noise (observation noise), data.params.edge_prob (true "
        "density), ... (repeatable: all combinations; each data setting is simulated once "
        "and shared, and scored on one test set)",
    )  # fmt: skip
    p.add_argument(
        "--variant", action="append", default=[], dest="variants",
        metavar="'LABEL: KEY=VALUE ...'",
        help="an explicit variant, settings that change together: a label, a colon, then "
        "overrides on top of the specs, e.g. 'static: prior.name=uniform' and 'markov: "
        "prior.name=markov prior.stay=0.9 graph.dynamic.window=7' (repeatable; with --vary, "
        "every variant is run with every combination of its values; give --vary, --variant "
        "or both)",
    )  # fmt: skip
    p.add_argument("--seeds", type=int, default=2, help="seeds per variant (default 2)")
    p.add_argument("--jobs", type=int, default=1, help="runs at once (default 1)")
    p.add_argument("--out", help="study folder (default studies/<time>)")
    p.add_argument("--threads", type=int, help="torch threads per run (default: cores / jobs)")
    p.add_argument(
        "--import", action="append", default=[], dest="imports", metavar="MODULE",
        help="a module to import in every run first, e.g. one that registers custom priors",
    )  # fmt: skip
    p.add_argument(
        "--evidence-samples", type=int, default=64,
        help="importance samples (or annealed chains) per held-out trajectory for the log "
        "evidence (default 64)",
    )  # fmt: skip
    p.add_argument(
        "--evidence-method", default="auto", choices=EVIDENCE_METHODS,
        help="the held-out log evidence: auto (exact where the graphs are few, else local), "
        "annealed (annealed importance sampling: slower, trustworthy Pareto k with a "
        "likelihood as broad as the data's noise) or one of exact, guide, mixture, "
        "stratified, local (default auto; nri_pyro.evidence says what each does)",
    )  # fmt: skip
    p.add_argument(
        "--evidence-trajectories", type=int, metavar="N",
        help="score the log evidence on the first N held-out trajectories only (default all)",
    )  # fmt: skip
    p.set_defaults(handler=_run_ablate)


def _run_ablate(args: argparse.Namespace) -> int:
    from nri_pyro.ablate import Study

    preset = _preset(args, ABLATE_DEFAULT_PRESET)
    logger.info(_describe(preset, args))
    out = Path(args.out or f"studies/{time.strftime('%Y%m%d-%H%M%S')}")
    study = Study(
        args.vary, out=out, variants=args.variants, preset=preset, model_spec=args.model,
        guide_spec=args.guide,
        seeds=args.seeds, overrides=_overrides(args), data=args.data, device=args.device,
        jobs=args.jobs,
        evidence_samples=args.evidence_samples, evidence_method=args.evidence_method,
        evidence_trajectories=args.evidence_trajectories, threads=args.threads,
        imports=args.imports,
    )  # fmt: skip
    result = study.run()
    failed = sum(row["failed"] for row in result.variants)
    return 1 if failed else 0


def _add_run_and_data(p: argparse.ArgumentParser, data_required: bool = True) -> None:
    p.add_argument("run", help="run folder (its best checkpoint) or checkpoint file")
    p.add_argument(
        "--data", required=data_required, help="dataset folder (a test split alone will do)"
    )
    p.add_argument("--split", default="test", choices=("train", "valid", "test"))
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")


def _load_run_and_split(args: argparse.Namespace):
    from nri_pyro.api import NRI
    from nri_pyro.data.io import load_dataset

    nri = NRI.load(args.run, device=args.device)
    data = load_dataset(args.data, splits=(args.split,))[args.split]
    # The features the model reads, by name: plots draw them beside its predictions.
    where = f"the trajectories of the {args.split} split in {args.data}"
    return nri, nri.select_model_features(data, where)


def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="held-out metrics of a trained run")
    _add_run_and_data(p)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    _add_refine(p, run_default=True)
    p.set_defaults(handler=_run_evaluate)


def _refine_count(text: str) -> int | str:
    if text.strip() == "exact":
        return "exact"
    try:
        steps = int(text)
    except ValueError:
        steps = -1
    if steps < 0 or str(steps) != text.strip():
        raise argparse.ArgumentTypeError(
            f"--refine takes a whole number of refinement steps >= 0 or 'exact', got {text!r}"
        )
    return steps


def _add_refine(p: argparse.ArgumentParser, run_default: bool = False) -> None:
    default = (
        "Default: the run's train.eval_refine (none unless its preset sets it, as "
        "charged5-charges does: exact)" if run_default else "Default 0: the encoder's logits"
    )  # fmt: skip
    p.add_argument(
        "--refine", type=_refine_count, default=None if run_default else 0, metavar="K",
        help="refine each trajectory's edge logits with K Adam steps on its own ELBO before "
        "reading them (semi-amortized inference; the run's weights do not change). "
        "evaluate adds the ELBO and edge accuracy before refinement and the amortization "
        "gap. 'exact': a node-level prior's (prior.name=charges) exact posterior over its "
        f"graphs; 0: the encoder's logits. {default}",
    )  # fmt: skip


def _run_evaluate(args: argparse.Namespace) -> int:
    import math

    if args.json:  # stdout holds the JSON object alone: messages go to stderr
        log_to(sys.stderr)
    try:
        nri, data = _load_run_and_split(args)
        metrics = nri.evaluate(data, refine=args.refine)
    finally:
        if args.json:
            log_to()
    if args.json:  # NaN (e.g. switch_precision with no switch detected) is null in JSON
        print(json.dumps({k: None if isinstance(v, float) and math.isnan(v) else v
                          for k, v in metrics.items()}))  # fmt: skip
    else:
        width = max(len(k) for k in metrics)
        for key, value in metrics.items():
            shown = value if isinstance(value, str) else f"{value:.6g}"
            print(f"{key:<{width}}  {shown}")
    knowledge = nri.model.prior.system_knowledge
    if knowledge is not None:  # on stderr: --json's stdout holds the object alone
        print(f"prior {nri.model.prior.name} uses knowledge of the system: {knowledge}",
              file=sys.stderr)
    return 0


def _add_infer(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("infer", help="write the inferred edge-type probabilities")
    _add_run_and_data(p)
    p.add_argument("--out", required=True, help="output .npz file")
    _add_refine(p)
    p.set_defaults(handler=_run_infer)


def _run_infer(args: argparse.Namespace) -> int:
    import numpy as np

    from nri_pyro.nn import edges_to_adjacency

    out = Path(args.out)
    if out.suffix != ".npz" or out.is_dir():
        raise ValueError(f"--out {out} must name a .npz file (an existing one is replaced)")
    nri, data = _load_run_and_split(args)
    probs = nri.infer_edges(data, refine=args.refine)  # [S, E, K]; dynamic: [S, W, E, K]
    adjacency = edges_to_adjacency(probs, data.num_objects, dim=-2)
    out.parent.mkdir(parents=True, exist_ok=True)
    arrays = {
        "edge_probs": probs.numpy(),
        "adjacency_probs": adjacency.numpy(),
        "most_likely": adjacency.argmax(-1).numpy(),
        "refine_steps": np.array(args.refine),  # whether (how far) the logits were refined
    }
    if nri.model.dynamic:  # one graph per window, and each frame's (its window's)
        frame_probs = nri.infer_edges(data, per_frame=True)  # [S, T, E, K]
        arrays["frame_edge_probs"] = frame_probs.numpy()
        window_of = nri.window_of_frames(data.num_frames)
        arrays["window_of_frame"] = window_of.numpy()
    atomic_write(out, lambda tmp: np.savez(tmp, **arrays))
    if nri.model.dynamic:
        logger.info(
            f"wrote {out}: a graph per window of {nri.window} frames: "
            f"edge_probs [S, W, E, K] = {list(probs.shape)}, frame_edge_probs [S, T, E, K] = "
            f"{list(frame_probs.shape)}, adjacency_probs [S, W, N, N, K] (receiver, sender), "
            f"most_likely [S, W, N, N], window_of_frame [T] (each frame's window)"
        )
    else:
        logger.info(
            f"wrote {out}: edge_probs [S, E, K] = {list(probs.shape)}, adjacency_probs "
            f"[S, N, N, K] (receiver, sender), most_likely [S, N, N]"
        )
    return 0


def _add_plot(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "plot",
        help="write the standard figures of a trained run as PNG files",
        description="Training curves of a run folder; with --data also, for a few trajectories "
        "of the split, the inferred graph beside the true one, the edge probability matrix, "
        "a calibration diagram and the trajectories with the rollout and a posterior "
        "predictive band. Graphs that change over time (a model with graph.dynamic, or a "
        "split with per-frame truth): the edge probabilities against time beside the truth "
        "(edges_over_time_<i>) and a per-frame calibration diagram, in place of the one-graph "
        "figures.",
    )
    _add_run_and_data(p, data_required=False)
    p.add_argument("--out", required=True, help="output folder for the PNG files")
    p.add_argument(
        "--trajectories", type=int, default=3, help="trajectories drawn one by one (default 3)"
    )
    p.add_argument(
        "--samples", type=int, default=50, help="posterior samples per predictive band (50)"
    )
    p.set_defaults(handler=_run_plot)


def _run_plot(args: argparse.Namespace) -> int:
    from nri_pyro import plots
    from nri_pyro.predictive import posterior_predictive

    if args.trajectories < 1 or args.samples < 1:
        raise ValueError("--trajectories and --samples must be at least 1")
    # Figures replace their namesakes: a folder of anything else (a run, a study) is refused.
    check_output_folder(args.out, "a folder of figures", patterns=("*.png",))
    run = Path(args.run)
    if not run.exists():
        raise FileNotFoundError(f"run {run} does not exist")
    metrics = run / "metrics.jsonl" if run.is_dir() else run.parent / "metrics.jsonl"
    figures = {}  # Figures are drawn and saved without pyplot, so no backend is needed.
    if run.is_dir() or metrics.exists():
        figures["training_curves"] = plots.plot_training_curves(metrics)
    else:
        logger.info(f"no {metrics} beside the checkpoint: no training curves")
    if args.data is not None:
        nri, data = _load_run_and_split(args)
        num = min(args.trajectories, len(data))
        anchor = bool(getattr(nri.model.decoder, "skip_first", False))
        if nri.model.dynamic or data.dynamic:
            figures.update(_figures_over_time(nri, data, num, anchor, args.split))
        else:
            figures.update(_figures_of_graphs(nri, data, num, anchor, args.split))
        # The evaluation protocol's rollout: the encoder reads the first frames, the decoder
        # predicts on its own after them, against the truth where the data go on.
        prefix = min(nri.guide.num_frames + 1, data.num_frames)
        steps = min(20, data.num_frames - prefix) or 20
        shown = data.subset(slice(0, num))
        observed = shown.trajectories[:, :, :prefix]
        samples = posterior_predictive(nri, observed, steps, args.samples)
        rollout = nri.predict(observed, steps)
        for b in range(num):
            figures[f"trajectories_{b}"] = plots.plot_trajectories(
                shown.trajectories[b, :, : prefix + steps], rollout[b], samples[:, b],
                start=prefix, title=f"{args.split} trajectory {b}",
            )  # fmt: skip
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name, fig in figures.items():
        atomic_write(out / f"{name}.png", lambda tmp, fig=fig: fig.savefig(tmp, dpi=100))
    logger.info(f"wrote {len(figures)} figures to {out}: {', '.join(figures)}")
    return 0


def _figures_of_graphs(nri, data, num: int, anchor: bool, split: str) -> dict:
    """One graph per trajectory: calibration, the edge probability matrix, and each drawn
    trajectory's inferred graph beside the true one."""
    from nri_pyro import plots
    from nri_pyro.nn import edges_to_adjacency

    figures = {}
    probs = nri.infer_edges(data)  # [S, E, K]
    if data.adjacency is not None:
        probs = torch.from_numpy(plots.relabel(probs, data.edges, anchor)).float()
        figures["calibration"] = plots.plot_calibration(
            probs, data.edges, relabel_types=False, title=split
        )
    truth = data.edges[:50] if data.adjacency is not None else None
    figures["edge_probs"] = plots.plot_edge_probs(probs[:50], truth)
    adjacency = edges_to_adjacency(probs[:num], data.num_objects, dim=-2)
    for b in range(num):
        true_graph = None if data.adjacency is None else data.adjacency[b]
        figures[f"graph_{b}"] = plots.plot_graph(
            adjacency[b], true_graph, data.trajectories[b, :, 0, :2],
            title=f"{split} trajectory {b} (positions at frame 0)",
        )  # fmt: skip
    return figures


def _figures_over_time(nri, data, num: int, anchor: bool, split: str) -> dict:
    """Graphs that change over time (a dynamic model, or per-frame truth): per-frame edge
    probabilities [S, T, E, K] (a static model's one graph at every frame), relabelled
    against the per-frame truth over the whole split as the evaluation does; calibration
    over every (trajectory, frame, edge), and each drawn trajectory's probabilities against
    time beside the truth. The one-graph figures (edge_probs, graph_<b>) are skipped."""
    from nri_pyro import plots

    figures = {}
    probs = nri.infer_edges(data, per_frame=True)  # [S, T, E, K]
    truth = None
    if data.adjacency is not None:
        truth = data.edges  # [S, T, E], or [S, E]: one graph per trajectory, every frame
        if truth.dim() == 2:
            truth = truth[:, None].expand(-1, probs.shape[1], -1)
        probs = torch.from_numpy(plots.relabel(probs, truth, anchor)).float()
        figures["calibration"] = plots.plot_calibration(
            probs, truth, relabel_types=False, title=f"{split}, per frame"
        )
    model = (
        f"windows of {nri.window} frames" if nri.model.dynamic
        else "static graph"
    )  # fmt: skip
    for b in range(num):
        figures[f"edges_over_time_{b}"] = plots.plot_edges_over_time(
            probs[b], None if truth is None else truth[b],
            title=f"{split} trajectory {b} ({model})",
        )  # fmt: skip
    why = "the model's graph changes over time" if nri.model.dynamic else (
        "the split's true graphs change over time"
    )  # fmt: skip
    logger.info(
        f"{why}: edges_over_time_<i> drawn; edge_probs and graph_<i> (one graph per "
        "trajectory) skipped"
    )
    return figures


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nri-pyro", description="Neural relational inference as a Pyro program."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    _add_simulate(sub)
    _add_train(sub)
    _add_ablate(sub)
    _add_evaluate(sub)
    _add_infer(sub)
    _add_plot(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    log_to()  # the library's messages as plain lines on stdout
    try:
        folder = _folder_written(args)
        with nullcontext() if folder is None else folder_lock(folder):
            return args.handler(args)
    except OSError as err:  # ours say what to do; the system's say where it failed
        message = str(err) if err.errno is None else _system_error(err, getattr(args, "out", None))
        print(f"nri-pyro {args.command}: error: {message}", file=sys.stderr)
        return 2
    except (ValueError, DistributedError, FolderInUseError) as err:
        print(f"nri-pyro {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            f"nri-pyro {args.command}: interrupted; nothing was left half-written", file=sys.stderr
        )
        return 130


def _folder_written(args: argparse.Namespace) -> str | None:
    """The --out folder a command writes, held locked while it runs; None where there is no
    folder to lock (none given yet, a file, written by another rank under torchrun) or the
    library locks it (a dataset, while it is written: see nri_pyro.data.io.staging_folder)."""
    if args.command not in ("train", "ablate", "plot") or args.out is None:
        return None
    if args.command == "train" and os.environ.get("RANK", "0") != "0":
        return None
    return args.out


def _system_error(err: OSError, out: str | None) -> str:
    """One line for what the operating system refused (a read-only folder, a full disk, a
    file size limit): what failed, and where (the file, else the --out it was written in)."""
    where = err.filename if err.filename is not None else "a file"
    if err.filename is None and out is not None:
        where = f"a file in {out}"
    return (
        f"could not write or read {where}: {err.strerror or err}; check the folder's "
        "permissions and the free disk space, then run the command again (files are written "
        "whole or not at all)"
    )


if __name__ == "__main__":
    sys.exit(main())
