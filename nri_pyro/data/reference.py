"""The reference NRI file layout, read and written so users can bring the data they have.

Springs and charged: ``loc_{split}_{system}{N}.npy`` and ``vel_...`` of shape [S, T, 2, N]
(float64) and ``edges_...`` [S, N, N] (springs 0/1; charged q_i q_j in {-1, +1}, so its
diagonal is +1). Kuramoto: ``feat_{split}_kuramoto{N}.npy`` [S, N, T, D] and ``edges_...``.
Where graphs change over time (``switch_rate``) the edges file holds the graph in force at
the time of each frame, [S, T, N, N], in the same convention; a reader tells the two apart
by the number of dimensions.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch

from nri_pyro.data.dataset import Normalizer, TrajectoryDataset, check_finite

SPLITS = ("train", "valid", "test")
PARTICLE_SYSTEMS = ("springs", "charged")
_FILE = re.compile(r"^(loc|vel|edges|feat)_(train|valid|test)_([A-Za-z]+)(\d+)\.npy$")


def load_npy(path: Path) -> np.ndarray:
    """``np.load(path)``, with an error that names the file where it cannot be read (a copy
    or a simulate run cut short leaves a truncated file; numpy's message does not say which)."""
    try:
        return np.load(path)
    except (ValueError, OSError, EOFError) as err:
        raise ValueError(
            f"{path} looks truncated or corrupt: it is not a readable .npy file ({err}); "
            "write it again (simulate it anew, or copy it again)"
        ) from None


def reference_files(folder: Path) -> dict[str, dict[str, dict[str, Path]]]:
    """{suffix: {split: {kind: path}}} of the reference-layout files in ``folder``."""
    found: dict[str, dict[str, dict[str, Path]]] = {}
    for path in sorted(Path(folder).glob("*.npy")):
        match = _FILE.match(path.name)
        if match:
            kind, split, system, n = match.groups()
            found.setdefault(f"{system}{n}", {}).setdefault(split, {})[kind] = path
    return found


def reference_name(kind: str, split: str, system: str, num_objects: int) -> str:
    return f"{kind}_{split}_{system}{num_objects}.npy"


def edges_to_types(edges: np.ndarray) -> np.ndarray:
    """Reference edge values to integer types: (e + 1) / 2, truncated, as the reference
    loader does where values are -1/+1 (charged); non-negative integer types are kept."""
    if edges.size and edges.min() < 0:
        return ((edges + 1) / 2).astype(np.int64)
    if not np.array_equal(edges, np.round(edges)):
        raise ValueError("edge files must hold integer edge types (or -1/+1 for charged)")
    return edges.astype(np.int64)


def types_to_edges(adjacency: np.ndarray, system: str) -> np.ndarray:
    """Integer types to the values the reference generator writes for ``system``."""
    if system == "charged":
        edges = (2 * adjacency - 1).astype(np.float64)
        n = edges.shape[-1]
        edges[..., np.arange(n), np.arange(n)] = 1.0  # q_i q_i = +1
        return edges
    if system == "springs":
        return adjacency.astype(np.float64)
    return adjacency.astype(np.int64)


class ReferenceWriter:
    """Writes one split in the reference layout, a chunk at a time (memory-mapped)."""

    def __init__(
        self,
        folder: Path,
        split: str,
        system: str,
        num_sims: int,
        num_objects: int,
        num_frames: int,
        num_features: int,
        *,
        per_frame: bool = False,
    ) -> None:
        self.system = system
        name = lambda kind: folder / reference_name(kind, split, system, num_objects)  # noqa: E731
        open_ = np.lib.format.open_memmap
        if system in PARTICLE_SYSTEMS:
            shape = (num_sims, num_frames, 2, num_objects)
            self.loc = open_(name("loc"), "w+", np.float64, shape)
            self.vel = open_(name("vel"), "w+", np.float64, shape)
        else:
            shape = (num_sims, num_objects, num_frames, num_features)
            self.feat = open_(name("feat"), "w+", np.float64, shape)
        edge_dtype = np.int64 if system not in PARTICLE_SYSTEMS else np.float64
        graphs = (num_sims, *((num_frames,) if per_frame else ()), num_objects, num_objects)
        self.edges = open_(name("edges"), "w+", edge_dtype, graphs)

    def write(self, start: int, trajectories: np.ndarray, adjacency: np.ndarray) -> None:
        """trajectories: [b, N, T, D]; adjacency: [b, N, N] integer types, or [b, T, N, N]
        (the graph in force at each frame) for a writer made ``per_frame``."""
        stop = start + trajectories.shape[0]
        if self.system in PARTICLE_SYSTEMS:
            self.loc[start:stop] = trajectories[..., :2].transpose(0, 2, 3, 1)
            self.vel[start:stop] = trajectories[..., 2:4].transpose(0, 2, 3, 1)
        else:
            self.feat[start:stop] = trajectories
        self.edges[start:stop] = types_to_edges(adjacency, self.system)

    def close(self) -> None:
        for array in (getattr(self, k, None) for k in ("loc", "vel", "feat", "edges")):
            if array is not None:
                array.flush()


def write_reference(folder: str | Path, splits: dict[str, TrajectoryDataset]) -> Path:
    """Write raw (unnormalised) splits in the reference layout, named after their system.

    Springs and charged need features (x, y, vx, vy); any other system is written as
    ``feat_`` files under its metadata's ``system`` name. Per-frame truth is written as
    edges [S, T, N, N].
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for split, ds in splits.items():
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; valid splits: {', '.join(SPLITS)}")
        if ds.adjacency is None:
            raise ValueError(f"the {split} split has no graphs; the reference layout needs edges")
        system = ds.metadata.get("system", "custom")
        if system in PARTICLE_SYSTEMS and ds.num_features != 4:
            raise ValueError(f"{system} data need 4 features (x, y, vx, vy), got {ds.num_features}")
        writer = ReferenceWriter(
            folder,
            split,
            system,
            len(ds),
            ds.num_objects,
            ds.num_frames,
            ds.num_features,
            per_frame=ds.dynamic,
        )
        writer.write(0, ds.trajectories.detach().cpu().double().numpy(), ds.adjacency.cpu().numpy())
        writer.close()
    return folder


def read_reference(folder: str | Path, suffix: str | None = None) -> dict[str, TrajectoryDataset]:
    """Read every split present in a reference-layout folder.

    Positions and velocities become features (x, y, vx, vy); edge values become integer
    types, [S, N, N], or [S, T, N, N] where the edges file holds one graph per frame.
    Normalisation statistics are fitted on the training split where there is one
    (positions and velocities each with one scalar min/max) and stored in each split's
    metadata. ``suffix`` (e.g. ``"springs5"``) picks one dataset where a folder holds several.
    """
    folder = Path(folder)
    found = reference_files(folder)
    if not found:
        raise FileNotFoundError(
            f"{folder}: no dataset found; expected meta.json (an nri-pyro dataset) or reference "
            "files such as loc_train_springs5.npy, vel_train_springs5.npy, edges_train_springs5.npy"
        )
    if suffix is None:
        if len(found) > 1:
            raise ValueError(
                f"{folder} holds several reference datasets ({', '.join(sorted(found))}); "
                "pick one with suffix="
            )
        suffix = next(iter(found))
    if suffix not in found:
        raise FileNotFoundError(f"{folder}: no reference files with suffix {suffix!r}")
    match = re.match(r"([A-Za-z]+)(\d+)$", suffix)
    system, num_objects = match.group(1), int(match.group(2))
    needed = ("loc", "vel", "edges") if system in PARTICLE_SYSTEMS else ("feat", "edges")
    splits: dict[str, TrajectoryDataset] = {}
    for split in SPLITS:
        files = found[suffix].get(split)
        if files is None:
            continue
        for kind in needed:
            if kind not in files:
                raise FileNotFoundError(
                    f"{folder / reference_name(kind, split, system, num_objects)} is missing: "
                    f"a {system} split needs {', '.join(needed)} files"
                )
        splits[split] = _read_split(files, split, system, num_objects)
    if "train" in splits and system in PARTICLE_SYSTEMS:
        stats = Normalizer.fit(splits["train"].trajectories, ((0, 1), (2, 3))).to_dict()
        for dataset in splits.values():
            dataset.metadata["normalization"] = stats
    return splits


def _read_split(
    files: dict[str, Path], split: str, system: str, num_objects: int
) -> TrajectoryDataset:
    def load(kind: str) -> np.ndarray:
        return load_npy(files[kind])

    edges = load("edges")
    if system in PARTICLE_SYSTEMS:
        loc, vel = load("loc"), load("vel")
        if loc.ndim != 4 or loc.shape[2] != 2 or loc.shape[3] != num_objects:
            raise ValueError(
                f"{files['loc']} has shape {loc.shape}; expected [S, T, 2, {num_objects}]"
            )
        if vel.shape != loc.shape:
            raise ValueError(
                f"{files['vel']} has shape {vel.shape}; expected {loc.shape} like {files['loc']}"
            )
        trajectories = np.concatenate([loc, vel], axis=2).transpose(0, 3, 1, 2)
    else:
        trajectories = load("feat")
        if trajectories.ndim != 4 or trajectories.shape[1] != num_objects:
            raise ValueError(
                f"{files['feat']} has shape {trajectories.shape}; expected [S, {num_objects}, T, D]"
            )
    expected = (trajectories.shape[0], num_objects, num_objects)
    per_frame = (trajectories.shape[0], trajectories.shape[2], num_objects, num_objects)
    if edges.shape not in (expected, per_frame):
        raise ValueError(
            f"{files['edges']} has shape {edges.shape}; expected {expected} (one graph per "
            f"trajectory) or {per_frame} (one graph per frame)"
        )
    adjacency = edges_to_types(edges)
    n = num_objects
    adjacency[..., np.arange(n), np.arange(n)] = 0
    x = torch.from_numpy(np.ascontiguousarray(trajectories, dtype=np.float64))
    check_finite(x, str(files["feat" if "feat" in files else "loc"]))
    metadata = {
        "system": system,
        "split": split,
        "source": "reference-layout",
        "num_objects": num_objects,
    }
    return TrajectoryDataset(x, torch.from_numpy(adjacency), metadata)
