"""Where an SVI training step's time goes: wall time, aten operations, and the share of the
step spent outside arithmetic, per case, optionally side by side with an older commit.

    python benchmarks/step_overhead.py                        # every case, this checkout
    python benchmarks/step_overhead.py tiny minimal --against HEAD~3
    python benchmarks/step_overhead.py paper dynamic --device cuda

A step is the library's own (``Trainer.train_epoch`` over ``--steps`` minibatches of random
walks shaped as the case's data: batch indexing, the ELBO, backward, clipping, Adam), run in
a fresh child process with ``--threads`` CPU threads (default 1). Per case it prints:

- ``ms/step``: the median wall time of ``--repeats`` timed epochs, divided by their steps;
- ``aten ops``: aten operations per step, every one the profiler records (nested calls
  included, as ``torch.profiler`` counts them);
- ``outside``: the share of the (profiled) step not spent inside arithmetic kernels. On the
  CPU, arithmetic is the self time of the aten operations that compute (everything but
  views, reshapes, allocations, copies of scalars to Python and the like), which still
  includes each one's dispatch, so this share is a lower bound, and of the kernels
  torch.compile generated (``--set train.compile=true``: counted apart, as "compiled
  kernels"); on CUDA it is one minus the time the GPU was busy with kernels;
- which ELBO path the steps took (``fast``: the trace-free MeanFieldLoss; ``pyro``;
  ``--set train.elbo=pyro`` forces Pyro's);
- on CUDA, ``launches`` (kernels per step) and ``busy ms`` (merged kernel time per step).

``--against REV`` measures the commit REV the same way in the same sitting (its package,
from ``git archive``, first on the child's path) and prints the ratios new / old.

Cases (``--set`` changes every one):

- ``tiny``: hidden 16, batch 8 (springs, 5 objects; the MLP encoder and decoder);
- ``minimal``: hidden 4, batch 1;
- ``cpu``: the springs5 preset's network (hidden 64, batch 32, symmetric graph);
- ``paper``: the paper's network (springs5-paper: hidden 256, batch 128);
- ``dynamic``: springs5-switching (a graph per window of 4 frames, the Markov prior, a GRU
  over the windows).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["decoder.msg_hidden={h}", "decoder.msg_out={h}", "decoder.hidden={h}",
         "guide.encoder.hidden={h}", "train.batch_size={b}"]  # fmt: skip
CASES: dict[str, tuple[str, list[str]]] = {
    "tiny": ("springs5-paper", [s.format(h=16, b=8) for s in SMALL]),
    "minimal": ("springs5-paper", [s.format(h=4, b=1) for s in SMALL]),
    "cpu": ("springs5", []),
    "paper": ("springs5-paper", []),
    "dynamic": ("springs5-switching", []),
}
# aten operations that compute nothing: views, metadata, allocation, scalars to Python
NOT_ARITHMETIC = {
    "aten::view", "aten::as_strided", "aten::reshape", "aten::_reshape_alias", "aten::t",
    "aten::transpose", "aten::permute", "aten::expand", "aten::unsqueeze", "aten::squeeze",
    "aten::select", "aten::slice", "aten::narrow", "aten::unbind", "aten::split",
    "aten::chunk", "aten::detach", "aten::alias", "aten::lift_fresh", "aten::resolve_conj",
    "aten::resolve_neg", "aten::_unsafe_view", "aten::unflatten", "aten::flatten",
    "aten::empty", "aten::empty_strided", "aten::empty_like", "aten::item",
    "aten::_local_scalar_dense", "aten::to", "aten::numpy_T", "aten::is_nonzero",
    "aten::result_type", "aten::is_same_size", "aten::set_",
    "aten::_has_compatible_shallow_copy_type",
}  # fmt: skip


def measure(config: dict[str, Any]) -> dict[str, Any]:
    """The child's measurement of one case (run with this file as a script)."""
    import time

    import torch
    from torch.profiler import ProfilerActivity, profile

    from nri_pyro.api import NRI, build
    from nri_pyro.data.dataset import Normalizer
    from nri_pyro.data.systems import get_system
    from nri_pyro.training import Trainer

    torch.set_num_threads(config["threads"])
    import torch._inductor.config as inductor_config

    # train.compile: the generated CPU kernels appear in the profile (as "cpp_fused_...")
    inductor_config.cpp.enable_kernel_profile = True
    torch.manual_seed(0)
    dev = torch.device(config["device"])
    preset, changes = CASES[config["case"]]
    nri = NRI(preset=preset, overrides=[*changes, *config["overrides"]], progress=False)
    system = get_system(nri.preset.system)  # springs: every feature, one shape
    steps, batch = config["steps"], nri.config.batch_size
    shape = (nri.preset.num_objects, nri.preset.data["frames"] or 49, len(system.feature_names))
    x = torch.randn(batch * steps, *shape).cumsum(2) * 0.05
    model, guide = build(nri.model_spec, nri.guide_spec, x)
    model.to(dev), guide.to(dev)
    normalizer = Normalizer.fit(x, system.norm_groups)
    trainer = Trainer(model, guide, (x, None), None, nri.config, normalizer=normalizer,
                      device=dev)  # fmt: skip

    def epoch() -> float:
        start = time.perf_counter()
        trainer.train_epoch(0)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        return time.perf_counter() - start

    epoch()  # warm-up
    times = [epoch() / steps for _ in range(config["repeats"])]
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.type == "cuda" else [])
    with profile(activities=activities) as prof:
        profiled = epoch()
    events = prof.events()
    aten = [e for e in events if e.name.startswith("aten::") and e.device_type.name == "CPU"]
    # kernels that torch.compile generated for the CPU: arithmetic, but no aten operation
    generated = [e for e in events if "cpp_fused" in e.name and e.device_type.name == "CPU"]
    out = {
        "ms_per_step": 1e3 * statistics.median(times),
        "aten_ops": len(aten) / steps,
        "generated_kernels": len(generated) / steps,
        "elbo": getattr(trainer, "elbo_path", "pyro"),  # before the fast path: Pyro's
        "threads": torch.get_num_threads(),
        "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
    }
    if dev.type == "cuda":
        kernels = sorted(
            (e.time_range.start, e.time_range.end) for e in events if e.device_type.name == "CUDA"
        )
        busy, end = 0.0, -float("inf")  # merged intervals, in microseconds
        for start, stop in kernels:
            if stop > end:
                busy += stop - max(start, end)
                end = stop
        out["launches"] = len(kernels) / steps
        out["busy_ms"] = busy / 1e3 / steps
        out["outside"] = 1 - busy / 1e6 / profiled
    else:
        arithmetic = sum(e.self_cpu_time_total for e in aten if e.name not in NOT_ARITHMETIC)
        arithmetic += sum(e.self_cpu_time_total for e in generated)
        out["outside"] = 1 - arithmetic / 1e6 / profiled
    return out


def _run(config: dict[str, Any], package: Path | None) -> dict[str, Any]:
    """``measure(config)`` in a child process (``package``: a folder holding the nri_pyro to
    import instead of this checkout's); failures come back as ``{"error": ...}``."""
    env = dict(os.environ)
    if package is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(package), env.get("PYTHONPATH", "")])
    proc = subprocess.run(
        [sys.executable, __file__, "--child", json.dumps(config)],
        capture_output=True, text=True, env=env, cwd=package or ROOT,
    )  # fmt: skip
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"error": f"exit {proc.returncode}: {tail}"}
    return json.loads(lines[-1])


def _archive(rev: str, into: Path) -> Path:
    """The package of commit ``rev``, extracted under ``into``."""
    archive = subprocess.run(["git", "archive", rev, "nri_pyro"], cwd=ROOT, capture_output=True,
                             check=False)  # fmt: skip
    if archive.returncode != 0:
        raise SystemExit(f"step_overhead: git archive {rev} failed: {archive.stderr.decode()}")
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return into


def _row(name: str, r: dict[str, Any]) -> str:
    if "error" in r:
        return f"{name:<16}failed: {r['error']}"
    row = f"{name:<16}{r['ms_per_step']:>10.2f}{r['aten_ops']:>10.0f}{100 * r['outside']:>9.0f}%"
    if "launches" in r:
        row += f"{r['launches']:>10.0f}{r['busy_ms']:>9.2f}"
    if r.get("generated_kernels"):
        row += f"  + {r['generated_kernels']:.0f} compiled kernels"
    if "elbo" in r:
        row += f"  ({r['elbo']} ELBO)"
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("cases", nargs="*", help=f"of {', '.join(CASES)} (default: all)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=10, help="minibatches per timed epoch")
    parser.add_argument("--repeats", type=int, default=3, help="timed epochs (median)")
    parser.add_argument("--set", action="append", default=[], dest="overrides",
                        help="a key=value change of every case")  # fmt: skip
    parser.add_argument("--against", metavar="REV", help="also measure this commit")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(json.loads(args.child))))
        return 0
    unknown = [c for c in args.cases if c not in CASES]
    if unknown:
        parser.error(f"unknown case(s) {', '.join(unknown)}; valid: {', '.join(CASES)}")
    if args.steps < 1 or args.repeats < 1 or args.threads < 1:
        parser.error("--steps, --repeats and --threads must be at least 1")
    import torch

    print(f"torch {torch.__version__}, device {args.device}, {args.threads} thread(s), "
          f"{args.steps} steps an epoch, median of {args.repeats} epochs")  # fmt: skip
    header = f"{'case':<16}{'ms/step':>10}{'aten ops':>10}{'outside':>10}"
    if args.device.startswith("cuda"):
        header += f"{'launches':>10}{'busy ms':>9}"
    print(header)
    with tempfile.TemporaryDirectory() as tmp:
        old = None if args.against is None else _archive(args.against, Path(tmp))
        for case in args.cases or list(CASES):
            config = {"case": case, "overrides": args.overrides, "device": args.device,
                      "threads": args.threads, "steps": args.steps,
                      "repeats": args.repeats}  # fmt: skip
            new = _run(config, None)
            print(_row(case, new), flush=True)
            if old is None:
                continue
            before = _run(config, old)
            print(_row(f"  {args.against}", before), flush=True)
            if "error" not in new and "error" not in before:
                print(f"  {'new / old':<14}{new['ms_per_step'] / before['ms_per_step']:>10.2f}"
                      f"{new['aten_ops'] / before['aten_ops']:>10.2f}", flush=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
