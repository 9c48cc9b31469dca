"""Simulating datasets: in memory for notebooks, or chunked to disk for the paper's sizes.

Seeding: simulations are drawn in fixed blocks of ``SEED_BLOCK``; block b of split s under
seed k has its own generator, seeded from (k, s, b). So the splits are independent (the
test split does not change when the training split grows), the first S simulations of a
split start from the same states whatever the total, and the initial states do not depend
on the chunk size or the device (they are drawn on the CPU in float64). The trajectories
then agree to rounding: a batch of another size or another device may round the last bit
differently in vectorised kernels, which charged particles, being chaotic, amplify over
a few time units.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from nri_pyro._version import __version__
from nri_pyro.data.dataset import (
    DYNAMIC_FORMAT_VERSION,
    FORMAT_VERSION,
    Normalizer,
    TrajectoryDataset,
)
from nri_pyro.data.io import NativeWriter, staging_folder, write_meta
from nri_pyro.data.reference import SPLITS, ReferenceWriter
from nri_pyro.data.switching import concat_initial
from nri_pyro.data.systems import System, get_system
from nri_pyro.devices import resolve_device
from nri_pyro.logs import progress_bar

logger = logging.getLogger(__name__)

SEED_BLOCK = 1000
# Frames a trajectory needs for training and evaluation: the model predicts every frame
# from the ones before it (nri_pyro.model.check_trajectories refuses fewer).
MIN_TRAIN_FRAMES = 2
_SPLIT_STREAM = {"train": 0, "valid": 1, "test": 2}


def _block_generator(seed: int, split: str, block: int) -> torch.Generator:
    state = np.random.SeedSequence([seed, _SPLIT_STREAM[split], block]).generate_state(2)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


def default_chunk_size(system: System, device: torch.device) -> int:
    """Simulations advanced together per thread: a few thousand on a CPU (measured best:
    springs and Kuramoto 4,000, charged 8,000, whose pair GEMMs like wider matrices);
    a GPU wants them all at once."""
    return 50_000 if device.type == "cuda" else system.cpu_chunk


def _check_sizes(num_objects: int, num_frames: int, **sizes: int) -> None:
    if not isinstance(num_objects, int) or num_objects < 2:
        raise ValueError(f"the number of objects must be at least 2, got {num_objects!r}")
    if not isinstance(num_frames, int) or num_frames < 1:
        raise ValueError(f"the number of frames must be at least 1, got {num_frames!r}")
    for name, size in sizes.items():
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise ValueError(f"{name} must be a non-negative whole number, got {size!r}")


class _Blocks:
    """Draws one split's simulations block by block and integrates them chunk by chunk."""

    def __init__(
        self,
        system: System,
        params: Any,
        num_objects: int,
        num_frames: int,
        seed: int,
        split: str,
        device: torch.device,
        dtype: torch.dtype,
        graph: Tensor | None = None,
    ) -> None:
        self.system, self.params, self.graph = system, params, graph
        self.num_objects, self.num_frames = num_objects, num_frames
        self.seed, self.split, self.device, self.dtype = seed, split, device, dtype
        self.dynamic = system.switches(params)

    def chunk(self, start: int, stop: int) -> tuple[Tensor, Tensor]:
        """Simulations [start, stop) (block-aligned start): trajectories [b, N, T, D] on the
        device and, on the CPU, adjacency [b, N, N] (long), or where graphs change over time
        the graph in force at each frame, [b, T, N, N] (int8)."""
        inits, gens, counts = [], [], []
        # Flip times are drawn over the simulated time, so only switching systems need it.
        extra = {"num_frames": self.num_frames} if self.dynamic else {}
        for block_start in range(start, stop, SEED_BLOCK):
            count = min(SEED_BLOCK, stop - block_start)
            gen = _block_generator(self.seed, self.split, block_start // SEED_BLOCK)
            # Every block draws its full size so that its first simulations never depend
            # on how many of them are kept.
            init = self.system.initial(SEED_BLOCK, self.num_objects, self.params, gen, **extra)
            if self.graph is not None:  # one system observed many times
                init["adjacency"] = self.graph.expand_as(init["adjacency"]).clone()
            inits.append({k: v[:count] for k, v in init.items()})
            gens.append(gen)
            counts.append(count)
        init = concat_initial(inits)
        traj = self.system.run(
            init, self.num_frames, self.params, device=self.device, dtype=self.dtype
        )
        if self.params.noise > 0:
            # Observation noise, drawn per block from the block's own stream.
            eps = torch.cat(
                [
                    torch.randn((SEED_BLOCK, *traj.shape[1:]), generator=g, dtype=torch.float64)[:c]
                    for g, c in zip(gens, counts, strict=True)
                ]
            )
            traj = traj + self.params.noise * eps.to(traj.device, traj.dtype)
        if self.dynamic:
            return traj, self.system.frame_adjacency(init, self.num_frames, self.params)
        return traj, init["adjacency"]

    def chunks(self, num_sims: int, chunk: int) -> Iterator[tuple[int, Tensor, Tensor]]:
        """(start, trajectories, adjacency) for every chunk of the split, in order.

        On the CPU, chunks run in as many threads as torch has intra-op threads, each
        single-threaded: the per-step ops are small, and whole chunks side by side use the
        cores better than splitting every small op. The thread setting is restored after.
        """
        starts = range(0, num_sims, chunk)
        workers = min(torch.get_num_threads(), len(starts))
        if self.device.type != "cpu" or workers < 2:
            for start in starts:
                yield start, *self.chunk(start, min(start + chunk, num_sims))
            return
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            with ThreadPoolExecutor(workers) as pool:
                pending: deque = deque()
                try:
                    for start in starts:
                        pending.append(
                            (start, pool.submit(self.chunk, start, min(start + chunk, num_sims)))
                        )
                        if len(pending) > workers:
                            first, future = pending.popleft()
                            yield first, *future.result()
                    while pending:
                        first, future = pending.popleft()
                        yield first, *future.result()
                except BaseException:  # interrupted or abandoned: wait for no queued chunk
                    for _, future in pending:
                        future.cancel()
                    raise
        finally:
            torch.set_num_threads(threads)


def simulate(
    system: str,
    num_sims: int,
    num_objects: int = 5,
    num_frames: int | None = None,
    *,
    seed: int = 0,
    split: str = "train",
    device: str | torch.device | None = None,
    dtype: torch.dtype = torch.float64,
    chunk_size: int | None = None,
    progress: bool = False,
    graph: Tensor | Sequence[Sequence[int]] | None = None,
    **params: Any,
) -> TrajectoryDataset:
    """Simulate ``num_sims`` trajectories of ``system`` in memory.

    ``num_frames`` defaults to the paper's training length (49). Physical parameters
    (``interaction_strength``, ``edge_prob``, ``box_size``, ``noise``, ``sample_freq``, ...)
    are keyword arguments with the paper's values as defaults. ``split`` picks the seed
    stream, so ``simulate(..., split="test")`` gives the test simulations that
    :func:`generate_dataset` would write with the same seed. ``graph`` (an N x N 0/1
    adjacency, springs and Kuramoto) fixes one graph for every simulation: one system
    observed many times from different initial states (with ``switch_rate`` its edges
    then flip as the parameter says). Trajectories are raw (not normalised), [S, N, T, D]
    on ``device``; graphs [S, N, N] on the same device, or with ``switch_rate`` > 0
    (springs, Kuramoto) the graph in force at the time of each frame, [S, T, N, N].

    Example::

        data = simulate("springs", 1000, num_objects=5, seed=0)
    """
    sys_ = get_system(system)
    parameters = sys_.params(params)
    num_frames = sys_.train_frames if num_frames is None else num_frames
    _check_sizes(num_objects, num_frames, num_sims=num_sims)
    if split not in _SPLIT_STREAM:
        raise ValueError(f"unknown split {split!r}; valid splits: {', '.join(SPLITS)}")
    dev = resolve_device(device)
    fixed = _check_graph(sys_, parameters, graph, num_objects)
    blocks = _Blocks(sys_, parameters, num_objects, num_frames, seed, split, dev, dtype, fixed)
    chunk = _round_chunk(chunk_size or default_chunk_size(sys_, dev))
    trajs, adjs = [], []
    with progress_bar(total=num_sims, enabled=progress, unit="sim", desc=system) as bar:
        for _, traj, adj in blocks.chunks(num_sims, chunk):
            trajs.append(traj)
            adjs.append(adj)
            bar.update(traj.shape[0])
    shape = (0, num_objects, num_frames, len(sys_.feature_names))
    trajectories = torch.cat(trajs) if trajs else torch.empty(shape, dtype=dtype, device=dev)
    graph_shape: tuple[int, ...] = (num_objects, num_objects)
    if blocks.dynamic:
        graph_shape = (num_frames, *graph_shape)
    adjacency = torch.cat(adjs) if adjs else torch.empty(0, *graph_shape)
    metadata = _metadata(sys_, parameters, num_objects, seed)
    metadata["split"] = split
    return TrajectoryDataset(trajectories, adjacency.to(dev), metadata)


def _check_graph(system: System, params: Any, graph: Any, num_objects: int) -> Tensor | None:
    """A fixed graph for every simulation, checked: [N, N] 0/1, zero diagonal."""
    if graph is None:
        return None
    if system.name == "charged":
        raise ValueError(
            "charged graphs follow from the particles' random charges and cannot be fixed; "
            "use springs or kuramoto for a fixed graph"
        )
    adjacency = torch.as_tensor(graph).long().cpu()
    if adjacency.shape != (num_objects, num_objects):
        raise ValueError(
            f"graph must be an N x N adjacency for {num_objects} objects, got shape "
            f"{tuple(adjacency.shape)}"
        )
    if ((adjacency != 0) & (adjacency != 1)).any() or adjacency.diagonal().any():
        raise ValueError("graph must hold 0/1 entries with a zero diagonal")
    directed = system.name == "kuramoto" and getattr(params, "directed", False)
    if not directed and not torch.equal(adjacency, adjacency.T):
        raise ValueError(f"{system.name} graphs are undirected here: graph must be symmetric")
    return adjacency


def _round_chunk(chunk: int) -> int:
    if chunk < 1:
        raise ValueError(f"chunk_size must be positive, got {chunk}")
    return max(SEED_BLOCK, chunk // SEED_BLOCK * SEED_BLOCK)


def _metadata(system: System, params: Any, num_objects: int, seed: int) -> dict[str, Any]:
    dynamic = system.switches(params)
    return {
        "system": system.name,
        "params": dataclasses.asdict(params),
        "seed": seed,
        "num_objects": num_objects,
        "feature_names": list(system.feature_names),
        "nri_pyro_version": __version__,
        "format_version": DYNAMIC_FORMAT_VERSION if dynamic else FORMAT_VERSION,
    }


def generate_dataset(
    system: str,
    out: str | Path,
    *,
    num_objects: int = 5,
    train: int = 50_000,
    valid: int = 10_000,
    test: int = 10_000,
    num_frames: int | None = None,
    test_frames: int | None = None,
    seed: int = 42,
    device: str | torch.device | None = None,
    format: str = "native",
    overwrite: bool = False,
    dtype: torch.dtype = torch.float64,
    chunk_size: int | None = None,
    progress: bool = True,
    **params: Any,
) -> Path:
    """Simulate train/valid/test splits and write them to ``out``, chunk by chunk.

    The paper's sizes are the defaults (50,000 / 10,000 / 10,000; 49 frames, 99 for test).
    ``format="native"`` writes the nri-pyro format; ``"nri"`` the reference .npy layout
    (with a meta.json beside it that records the seed and parameters). Normalisation
    statistics of the training split are computed as it is written. ``dtype`` is the
    arithmetic of the integrator (float64 as the reference; float32 is faster and differs
    by rounding); files are float64 either way. Every split written needs at least 2
    frames (what training needs), checked before any work. The folder appears only when
    complete; an interrupted or terminated call leaves it as it was, and removes what a
    killed earlier call of the same ``out`` left behind. Returns the folder, which
    :func:`~nri_pyro.data.io.load_dataset` reads. With ``switch_rate`` > 0 (springs,
    Kuramoto) the true graphs are written per frame, [S, T, N, N] (the graph in force at
    the time of each frame), in both formats.
    """
    sys_ = get_system(system)
    parameters = sys_.params(params)
    num_frames = sys_.train_frames if num_frames is None else num_frames
    test_frames = sys_.test_frames if test_frames is None else test_frames
    _check_sizes(num_objects, num_frames, train=train, valid=valid, test=test)
    _check_sizes(num_objects, test_frames)
    for name, option, frames_, used in (
        ("num_frames", "--frames or --length", num_frames, train + valid),
        ("test_frames", "--test-frames or --length-test", test_frames, test),
    ):
        if used and frames_ < MIN_TRAIN_FRAMES:
            raise ValueError(
                f"a dataset to train on needs at least {MIN_TRAIN_FRAMES} frames per "
                f"trajectory (the model predicts each frame from the one before it; a CNN "
                f"encoder needs 14), got {name} = {frames_} ({option})"
            )
    if format not in ("native", "nri"):
        raise ValueError(f"unknown format {format!r}; valid formats: native, nri")
    if train + valid + test == 0:
        raise ValueError("all split sizes are 0: nothing to simulate")
    dev = resolve_device(device)
    chunk = _round_chunk(chunk_size or default_chunk_size(sys_, dev))
    sizes = {"train": train, "valid": valid, "test": test}
    frames = {"train": num_frames, "valid": num_frames, "test": test_frames}
    num_features = len(sys_.feature_names)
    dynamic = sys_.switches(parameters)
    running_low = [np.inf] * len(sys_.norm_groups)
    running_high = [-np.inf] * len(sys_.norm_groups)
    started = time.perf_counter()
    with (
        staging_folder(out, overwrite=overwrite) as tmp,
        progress_bar(
            total=train + valid + test, enabled=progress, unit="sim", desc=f"{system} {out}"
        ) as bar,
    ):
        for split in SPLITS:
            if sizes[split] == 0:
                continue
            shape = (sizes[split], num_objects, frames[split], num_features)
            writer: NativeWriter | ReferenceWriter
            if format == "native":
                writer = NativeWriter(tmp, split, *shape, per_frame=dynamic)
            else:
                writer = ReferenceWriter(tmp, split, system, *shape, per_frame=dynamic)
            blocks = _Blocks(sys_, parameters, num_objects, frames[split], seed, split, dev, dtype)
            for start, traj, adj in blocks.chunks(sizes[split], chunk):
                traj = traj.cpu()
                if split == "train":
                    for g, group in enumerate(sys_.norm_groups):
                        values = traj[..., list(group)]
                        running_low[g] = min(running_low[g], float(values.min()))
                        running_high[g] = max(running_high[g], float(values.max()))
                writer.write(start, traj.numpy(), adj.numpy())
                bar.update(traj.shape[0])
            writer.close()
        meta = _metadata(sys_, parameters, num_objects, seed)
        meta.update(
            format="nri-pyro" if format == "native" else "nri",
            version=DYNAMIC_FORMAT_VERSION if dynamic else FORMAT_VERSION,
            splits={
                s: {
                    "num_sims": sizes[s],
                    "num_frames": frames[s],
                    "has_graphs": True,
                    **({"graphs_per_frame": True} if dynamic else {}),
                }
                for s in SPLITS
                if sizes[s]
            },
            seconds=round(time.perf_counter() - started, 3),
            device=str(dev),
        )
        if train:
            stats = Normalizer.from_running(sys_.norm_groups, running_low, running_high)
            meta["normalization"] = stats.to_dict()
        write_meta(tmp, meta)
    logger.info(
        f"wrote {train + valid + test} {system} simulations to {out} "
        f"in {time.perf_counter() - started:.1f} s"
    )
    return Path(out)
