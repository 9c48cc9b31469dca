"""Helpers shared by tests: networks too small to matter, random graphs, and commands run
in processes of their own."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from nri_pyro.nn import adjacency_to_edges

ROOT = Path(__file__).resolve().parents[1]
# The package of this checkout, whatever another checkout has installed.
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "TQDM_DISABLE": "1"}


def tiny(width: int, *settings: str) -> list[str]:
    """``--set`` overrides that make every hidden layer ``width`` wide, then ``settings``
    (e.g. ``"train.batch_size=16"``)."""
    layers = ("decoder.msg_hidden", "decoder.msg_out", "decoder.hidden", "guide.encoder.hidden")
    return [*(f"{layer}={width}" for layer in layers), *settings]


def random_graph_data(batch: int = 6, n: int = 4, frames: int = 12, seed: int = 0):
    """Smooth random trajectories x [B, N, T, 4] and random symmetric graphs [B, E]."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, n, frames, 4, generator=g).cumsum(2) * 0.05
    upper = torch.triu(torch.randint(0, 2, (batch, n, n), generator=g), 1)
    edges = adjacency_to_edges(upper + upper.transpose(1, 2))
    return x, edges


def start(*args: str, script: Path | None = None) -> subprocess.Popen:
    """``nri-pyro ARGS`` (or ``python SCRIPT ARGS``) in a process group of its own, so that
    :func:`interrupt` reaches its children too."""
    command = [sys.executable, *([str(script)] if script else ["-m", "nri_pyro.cli"]), *args]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=ENV, start_new_session=True)  # fmt: skip


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 60) -> None:
    """Until ``path`` exists; fails if ``proc`` ends first or the time is up."""
    end = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"ended before {path} appeared: {proc.communicate()}")
        if time.monotonic() > end:
            interrupt(proc)
            raise AssertionError(f"{path} did not appear within {timeout} s")
        time.sleep(0.05)


def interrupt(proc: subprocess.Popen, timeout: float = 60) -> tuple[int, str, str]:
    """Ctrl-C to the process and its children; its exit status, stdout and stderr."""
    os.killpg(proc.pid, signal.SIGINT)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
    return proc.returncode, out, err
