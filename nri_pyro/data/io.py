"""Saving and loading datasets: the native format, with the reference layout as fallback.

A native dataset is a folder with ``meta.json`` (system, parameters, seed, sizes, format
version, training normalisation statistics) and, per split, ``{split}_trajectories.npy``
[S, N, T, D] and ``{split}_adjacency.npy`` [S, N, N]. Where graphs change over time the
adjacency file holds the graph in force at each frame, [S, T, N, N]; ``meta.json`` then
says ``"graphs_per_frame": true`` for the split and format version 2. ``meta.json`` is
written last, so a folder without it is never taken for a complete dataset.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import socket
import tempfile
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nri_pyro.data.dataset import (
    DYNAMIC_FORMAT_VERSION,
    FORMAT_VERSION,
    TrajectoryDataset,
    check_finite,
)
from nri_pyro.data.reference import SPLITS, load_npy, read_reference, reference_files
from nri_pyro.files import atomic_write_text
from nri_pyro.folders import folder_lock, process_running

META = "meta.json"
# Signals whose default action ends the process without clean-up; while a dataset is being
# written they raise instead (see _terminate_like_interrupt).
TERMINATING_SIGNALS = ("SIGTERM", "SIGHUP")

logger = logging.getLogger(__name__)


def _native_paths(folder: Path, split: str) -> tuple[Path, Path]:
    return folder / f"{split}_trajectories.npy", folder / f"{split}_adjacency.npy"


class NativeWriter:
    """Writes one split in the native format, a chunk at a time (memory-mapped).

    The adjacency file is [S, N, N], or [S, T, N, N] with ``per_frame`` (the graph in force
    at each frame); int8 either way.
    """

    def __init__(
        self,
        folder: Path,
        split: str,
        num_sims: int,
        num_objects: int,
        num_frames: int,
        num_features: int,
        *,
        per_frame: bool = False,
    ) -> None:
        traj_path, adj_path = _native_paths(folder, split)
        open_ = np.lib.format.open_memmap
        shape = (num_sims, num_objects, num_frames, num_features)
        graphs = (num_sims, *((num_frames,) if per_frame else ()), num_objects, num_objects)
        self.trajectories = open_(traj_path, "w+", np.float64, shape)
        self.adjacency = open_(adj_path, "w+", np.int8, graphs)

    def write(self, start: int, trajectories: np.ndarray, adjacency: np.ndarray) -> None:
        stop = start + trajectories.shape[0]
        self.trajectories[start:stop] = trajectories
        self.adjacency[start:stop] = adjacency

    def close(self) -> None:
        self.trajectories.flush()
        self.adjacency.flush()


def holds_dataset(folder: str | Path) -> bool:
    """Whether ``folder`` holds a dataset (native or reference layout)."""
    folder = Path(folder)
    return folder.is_dir() and ((folder / META).exists() or bool(reference_files(folder)))


def write_meta(folder: Path, meta: Mapping[str, Any]) -> None:
    atomic_write_text(folder / META, json.dumps(meta, indent=2, sort_keys=True) + "\n")


def save_dataset(
    folder: str | Path, splits: Mapping[str, TrajectoryDataset], *, overwrite: bool = False
) -> Path:
    """Save in-memory splits (e.g. ``{"train": ds}``) as a native dataset folder."""
    if not splits:
        raise ValueError("nothing to save: pass at least one split")
    for name in splits:
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r}; valid splits: {', '.join(SPLITS)}")
    first = next(iter(splits.values()))
    with staging_folder(folder, overwrite=overwrite) as tmp:
        sizes = {}
        for name, ds in splits.items():
            writer = NativeWriter(
                tmp,
                name,
                len(ds),
                ds.num_objects,
                ds.num_frames,
                ds.num_features,
                per_frame=ds.dynamic,
            )
            adjacency = (
                np.zeros((len(ds), ds.num_objects, ds.num_objects), np.int8)
                if ds.adjacency is None
                else ds.adjacency.cpu().numpy()
            )
            writer.write(0, ds.trajectories.detach().cpu().double().numpy(), adjacency)
            writer.close()
            sizes[name] = {
                "num_sims": len(ds),
                "num_frames": ds.num_frames,
                "has_graphs": ds.adjacency is not None,
            }
            if ds.dynamic:
                sizes[name]["graphs_per_frame"] = True
        dynamic = any(ds.dynamic for ds in splits.values())
        meta = {k: v for k, v in first.metadata.items() if k not in ("split",)}
        meta.update(
            format="nri-pyro",
            version=DYNAMIC_FORMAT_VERSION if dynamic else FORMAT_VERSION,
            splits=sizes,
            num_objects=first.num_objects,
        )
        if "format_version" in meta:
            meta["format_version"] = meta["version"]
        write_meta(tmp, meta)
    return Path(folder)


def load_dataset(
    folder: str | Path, splits: tuple[str, ...] | None = None
) -> dict[str, TrajectoryDataset]:
    """Load every split (or the named ones) of a native or reference-layout folder.

    Returns ``{split: TrajectoryDataset}`` with raw (unnormalised) trajectories; the
    training normalisation statistics are in each split's ``metadata["normalization"]``.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such dataset folder")
    meta_path = folder / META
    if not meta_path.exists():
        loaded = read_reference(folder)
    else:
        try:
            meta = json.loads(meta_path.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"{meta_path} is not valid JSON: {err}") from None
        if meta.get("format") == "nri":
            loaded = read_reference(folder, suffix=f"{meta['system']}{meta['num_objects']}")
            for ds in loaded.values():
                ds.metadata.update({k: v for k, v in meta.items() if k != "splits"})
        elif meta.get("format") == "nri-pyro":
            if meta.get("version", 0) > DYNAMIC_FORMAT_VERSION:
                raise ValueError(
                    f"{meta_path}: format version {meta['version']} is newer than this "
                    f"nri-pyro understands ({DYNAMIC_FORMAT_VERSION}); upgrade nri-pyro"
                )
            loaded = {
                name: _load_native_split(folder, name, meta)
                for name in SPLITS
                if name in meta["splits"]
            }
        else:
            raise ValueError(f"{meta_path} does not describe an nri-pyro dataset")
    if splits is not None:
        missing = [s for s in splits if s not in loaded]
        if missing:
            raise FileNotFoundError(
                f"{folder} has no {', '.join(missing)} split (it has: {', '.join(loaded)})"
            )
        loaded = {s: loaded[s] for s in splits}
    return loaded


def _load_native_split(folder: Path, split: str, meta: dict[str, Any]) -> TrajectoryDataset:
    traj_path, adj_path = _native_paths(folder, split)
    for path in (traj_path, adj_path):
        if not path.exists():
            raise FileNotFoundError(f"{path} is missing (listed in {folder / META})")
    x = load_npy(traj_path)
    info = meta["splits"][split]
    expected = (info["num_sims"], meta["num_objects"], info["num_frames"])
    if x.ndim != 4 or x.shape[:3] != expected:
        raise ValueError(
            f"{traj_path} has shape {x.shape}; {META} says [{', '.join(map(str, expected))}, D]"
        )
    trajectories = torch.from_numpy(x)
    check_finite(trajectories, str(traj_path))
    adjacency = None
    if info.get("has_graphs", True):
        a = load_npy(adj_path)
        expected = (x.shape[0], x.shape[1], x.shape[1])
        if info.get("graphs_per_frame", False):  # the graph in force at each frame
            expected = (x.shape[0], x.shape[2], x.shape[1], x.shape[1])
        if a.shape != expected:
            raise ValueError(f"{adj_path} has shape {a.shape}; expected {expected}")
        adjacency = torch.from_numpy(a.astype(np.int64))
    metadata = {k: v for k, v in meta.items() if k != "splits"}
    metadata["split"] = split
    return TrajectoryDataset(trajectories, adjacency, metadata)


def staging_host() -> str:
    """This machine's name as staging folders record it (no dashes, at most 64 characters)."""
    return re.sub(r"[^A-Za-z0-9._]", "_", socket.gethostname())[:64] or "localhost"


def _staging_prefix(folder: Path) -> str:
    """``.{name}.partial-{pid}@{host}-``: a staging folder names the process that owns it,
    so that a later run can tell one that a killed run left from one still being written."""
    return f".{folder.name}.partial-{os.getpid()}@{staging_host()}-"


def remove_stale_partials(folder: str | Path) -> list[Path]:
    """Delete the staging folders of ``folder`` that killed runs left behind (SIGKILL, a
    crash, power loss: nothing ran their clean-up) and return them.

    Only those whose owner, named in the folder's name, is a process of this machine that
    no longer runs. The staging folder of a live run, of a run on another machine (a
    shared file system), of another target or of an older nri-pyro (no owner recorded) is
    kept.
    """
    folder = Path(folder)
    pattern = re.compile(rf"^\.{re.escape(folder.name)}\.partial-(\d+)@([^-]+)-[a-z0-9_]+$")
    if not folder.parent.is_dir():
        return []
    removed = []
    host = staging_host()
    for path in sorted(folder.parent.iterdir()):
        match = pattern.match(path.name)
        if match is None or match.group(2) != host or not path.is_dir():
            continue
        pid = int(match.group(1))
        if process_running(pid):
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
        logger.info("removed %s, left by an earlier run (process %d) that was killed", path, pid)
    return removed


class _Terminated(BaseException):
    """A terminating signal arrived while a dataset was being written."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"received signal {signum}")
        self.signum = signum


@contextmanager
def _terminate_like_interrupt() -> Iterator[None]:
    """Within: SIGTERM and SIGHUP, whose default action ends the process at once, raise an
    exception instead, so that clean-up code runs as it does on Ctrl-C; once it has run, the
    signal is delivered again with its default action, so that the process still ends by it
    (exit status 128 + signal for a shell, -signal for Python's subprocess).

    Handlers that someone else installed (or SIG_IGN) are left alone. Outside the main
    thread, where Python cannot handle signals, nothing changes.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []

    def handler(signum: int, frame: Any) -> None:
        if not caught:  # the first starts the clean-up; repeats must not interrupt it
            caught.append(signum)
            raise _Terminated(signum)

    previous = {}
    for name in TERMINATING_SIGNALS:
        signum = getattr(signal, name, None)
        if signum is not None and signal.getsignal(signum) is signal.SIG_DFL:
            previous[signum] = signal.signal(signum, handler)
    try:
        yield
    except _Terminated as err:
        for signum, old in previous.items():
            signal.signal(signum, old)
        previous = {}
        signal.raise_signal(err.signum)  # ends the process here
        raise SystemExit(128 + err.signum) from None  # unless it was handled meanwhile
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


@contextmanager
def staging_folder(folder: str | Path, *, overwrite: bool) -> Iterator[Path]:
    """Yield a hidden temporary folder beside ``folder``; move its files in on success.

    Refuses, before any work, a folder that already holds a dataset unless ``overwrite``.
    A new or empty target is replaced by one atomic rename; otherwise files are moved in
    one by one with ``meta.json`` last, after the old dataset's files are removed. On
    failure, interruption (Ctrl-C) or termination (SIGTERM, SIGHUP) the staging folder is
    deleted and the target is untouched. Meanwhile the folder is locked
    (:func:`~nri_pyro.folders.folder_lock`): a second writer is refused, naming this one.
    The staging folder's name holds the id of the
    process that writes it, ``.{name}.partial-{pid}@{host}-{random}``: what a run killed
    outright (SIGKILL) leaves, the next run of the same target removes
    (:func:`remove_stale_partials`).
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise FileExistsError(f"{folder} exists and is not a folder")
    if holds_dataset(folder) and not overwrite:
        raise FileExistsError(
            f"{folder} already holds a dataset; choose another --out or pass --overwrite"
        )
    folder.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_partials(folder)
    # One writer at a time (released before a terminating signal ends the process).
    with _terminate_like_interrupt(), folder_lock(folder):
        if holds_dataset(folder) and not overwrite:  # one that finished since the check
            raise FileExistsError(
                f"{folder} already holds a dataset; choose another --out or pass --overwrite"
            )
        tmp = Path(tempfile.mkdtemp(prefix=_staging_prefix(folder), dir=folder.parent))
        try:
            umask = os.umask(0)
            os.umask(umask)
            tmp.chmod(0o777 & ~umask)  # mkdtemp makes it private; the dataset should not be
            yield tmp
            if not folder.exists() or not any(folder.iterdir()):
                if folder.exists():
                    folder.rmdir()
                os.replace(tmp, folder)
                return
            for old in [
                folder / META,
                *(
                    p
                    for s in reference_files(folder).values()
                    for f in s.values()
                    for p in f.values()
                ),
            ]:
                old.unlink(missing_ok=True)
            for split in SPLITS:
                for old in _native_paths(folder, split):
                    old.unlink(missing_ok=True)
            for path in sorted(tmp.iterdir(), key=lambda p: p.name == META):
                os.replace(path, folder / path.name)
            tmp.rmdir()
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
