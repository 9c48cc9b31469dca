"""What the benchmarks share: one SVI training step of NRI, measured in a fresh subprocess.

``run_isolated(config)`` runs ``measure(config)`` in a child Python (this file, run as a
script) so that peak memory is the configuration's own, and turns a child that fails, runs
out of memory, is killed or runs too long into a result with an ``error`` instead of an
exception. A config is a dict with the keys of ``DEFAULTS``.
"""

from __future__ import annotations

import json
import math
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

DEFAULTS: dict[str, Any] = {
    "objects": 5,
    "dense": False,  # the reference's dense one-hot incidence matrices instead of indexing
    "device": "cpu",
    "batch": 128,
    "frames": 49,
    "hidden": 256,
    "steps": 5,  # timed steps, after one warm-up step (two when compiling)
    "compile": False,  # torch.compile the encoder and decoder modules
    "memory_cap_gb": None,  # the child fails with out-of-memory above this much step memory
    "threads": None,  # torch's CPU threads (None: its default); 1 is steadier on a busy machine
}
NUM_TRAJECTORIES = 5000  # the dataset size the ELBO is scaled to (a typical epoch)


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _virtual_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmSize:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmSize in /proc/self/status")


def _cap_memory(device: Any, cap_gb: float, base_bytes: float) -> None:
    """Make allocations beyond ``cap_gb`` above the current use fail with out-of-memory."""
    import torch

    cap = cap_gb * 2**30
    if device.type == "cuda":
        total = torch.cuda.get_device_properties(device).total_memory
        index = device.index if device.index is not None else torch.cuda.current_device()
        torch.cuda.set_per_process_memory_fraction(min(1.0, (base_bytes + cap) / total), index)
    else:  # address space: what is mapped now (libraries, threads, data) plus the cap
        limit = _virtual_bytes() + int(cap)
        resource.setrlimit(resource.RLIMIT_AS, (limit, resource.getrlimit(resource.RLIMIT_AS)[1]))


def measure(config: dict[str, Any]) -> dict[str, Any]:
    """Seconds per SVI step (wall and CPU) and the step's peak memory above data and
    parameters: peak resident memory on the CPU, peak allocated memory on CUDA."""
    import pyro
    import torch

    from nri_pyro.api import build

    cfg = {**DEFAULTS, **config}
    if cfg["threads"] is not None:
        torch.set_num_threads(cfg["threads"])
    torch.manual_seed(0)
    dev = torch.device(cfg["device"])
    shape = (cfg["batch"], cfg["objects"], cfg["frames"], 4)
    x = torch.randn(shape, device=dev).cumsum(2) * 0.05
    hidden = cfg["hidden"]
    overrides = [f"decoder.{k}={hidden}" for k in ("msg_hidden", "msg_out", "hidden")]
    model, guide = build(None, None, x, overrides=[*overrides, f"guide.encoder.hidden={hidden}"])
    model.to(dev), guide.to(dev)
    if cfg["dense"]:  # the reference's incidence matmuls, every activation kept
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
        from reference.dense_graph import dense_graph  # the tests' reference

        model.graph_for = guide.graph_for = dense_graph
        model.decoder.recompute_messages = False
    if cfg["compile"]:
        from nri_pyro.nn import compile_modules

        compile_modules(model), compile_modules(guide)
    loss_fn = pyro.infer.TraceMeanField_ELBO()(model, guide)
    optimizer = torch.optim.Adam(loss_fn.parameters(), lr=5e-4)

    def step() -> None:
        loss = loss_fn(x, num_trajectories=NUM_TRAJECTORIES) / NUM_TRAJECTORIES
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    torch.ones(64, 64, device=dev) @ torch.ones(64, 64, device=dev)  # start the threads
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
        base = torch.cuda.memory_allocated(dev) / 2**20
    else:
        base = _rss_mb()  # data and parameters, before any activation exists
    if cfg["memory_cap_gb"] is not None:
        _cap_memory(dev, cfg["memory_cap_gb"], base * 2**20)
    start = time.perf_counter()
    for _ in range(2 if cfg["compile"] else 1):  # warm-up (and compilation)
        step()
    sync()
    first = time.perf_counter() - start
    times, cpu_start = [], time.process_time()
    for _ in range(cfg["steps"]):
        start = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - start)
    cpu_seconds = (time.process_time() - cpu_start) / cfg["steps"]
    if dev.type == "cuda":
        peak = torch.cuda.max_memory_allocated(dev) / 2**20 - base
    else:
        peak = _rss_mb() - base
    return {
        "seconds_per_step": sum(times) / len(times),
        "min_seconds_per_step": min(times),  # the least disturbed, on a shared machine
        "cpu_seconds_per_step": cpu_seconds,
        "peak_mb": peak,
        "warmup_seconds": first,
    }


def _out_of_memory(err: BaseException) -> bool:
    text = str(err).lower()
    return isinstance(err, MemoryError) or any(
        s in text
        for s in ("out of memory", "can't allocate memory", "not enough memory", "bad_alloc")
    )


def _child(config: dict[str, Any]) -> dict[str, Any]:
    try:
        return measure(config)
    except BaseException as err:  # report it as a row, whatever it is
        cap = config.get("memory_cap_gb")
        if _out_of_memory(err):
            where = f"the {cap:g} GB cap" if cap is not None else "the machine's memory"
            return {"error": f"out of memory at {where}", "out_of_memory": True}
        message = str(err).strip().splitlines()
        return {"error": f"{type(err).__name__}: {message[0] if message else ''}"[:300]}


def run_isolated(config: dict[str, Any], timeout: float | None = None) -> dict[str, Any]:
    """``measure(config)`` in a fresh Python process; failures come back as ``error``."""
    cmd = [sys.executable, __file__, json.dumps({**DEFAULTS, **config})]
    try:
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:g} s"}
    if result.returncode < 0:
        signal = -result.returncode
        hint = " (out of memory?)" if signal == 9 else ""
        return {"error": f"killed by signal {signal}{hint}", "out_of_memory": signal == 9}
    lines = result.stdout.strip().splitlines()
    try:
        return json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError):
        tail = result.stderr.strip().splitlines()
        return {"error": tail[-1][:300] if tail else f"exit status {result.returncode}"}


def predict_memory(points: list[tuple[int, float]], num_objects: int) -> float | None:
    """Peak memory at ``num_objects`` from measured (N, MB) points: fits a E + b E N
    (E = N(N-1): per-edge activations, and the dense formulation's [E, N] incidence
    products) through the last two points; None with fewer than two."""
    if len(points) < 2:
        return None
    (n1, m1), (n2, m2) = points[-2:]
    per_edge1, per_edge2 = m1 / (n1 * (n1 - 1)), m2 / (n2 * (n2 - 1))  # = a + b N
    b = max(0.0, (per_edge2 - per_edge1) / (n2 - n1)) if n2 != n1 else 0.0
    a = max(0.0, per_edge2 - b * n2)
    return (a + b * num_objects) * num_objects * (num_objects - 1)


def ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator > 0 else math.inf


if __name__ == "__main__":
    print(json.dumps(_child(json.loads(sys.argv[1]))))
