"""Trajectory datasets: one split of trajectories, its true graphs, and its metadata."""

from __future__ import annotations

import operator
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

# The native format of static datasets (one graph per trajectory, [S, N, N] files).
FORMAT_VERSION = 1
# Datasets with per-frame truth ([S, T, N, N] files) are marked with the next version, so
# that an nri-pyro which knows only version 1 refuses them with a clear message.
DYNAMIC_FORMAT_VERSION = 2


@dataclass(frozen=True)
class Normalizer:
    """Min-max scaling to [-1, 1] as the reference loader does it.

    Each group of feature indices shares one scalar minimum and maximum, taken over the
    whole training split (all objects, frames and the group's features); features in no
    group pass through unchanged. The same statistics are applied to every split.
    """

    groups: tuple[tuple[int, ...], ...]
    low: tuple[float, ...]
    high: tuple[float, ...]

    @classmethod
    def fit(cls, trajectories: Tensor, groups: Sequence[Sequence[int]]) -> Normalizer:
        """Statistics of ``trajectories`` [S, N, T, D]."""
        low = tuple(float(trajectories[..., list(g)].min()) for g in groups)
        high = tuple(float(trajectories[..., list(g)].max()) for g in groups)
        return cls(tuple(tuple(int(i) for i in g) for g in groups), low, high)

    @classmethod
    def from_running(
        cls, groups: Sequence[Sequence[int]], low: Sequence[float], high: Sequence[float]
    ) -> Normalizer:
        return cls(tuple(tuple(g) for g in groups), tuple(low), tuple(high))

    def _scale(self, x: Tensor, forward: bool) -> Tensor:
        x = x.clone()
        for group, low, high in zip(self.groups, self.low, self.high, strict=True):
            idx = list(group)
            span = high - low if high > low else 1.0
            if forward:
                x[..., idx] = (x[..., idx] - low) * (2.0 / span) - 1.0
            else:
                x[..., idx] = (x[..., idx] + 1.0) * (span / 2.0) + low
        return x

    def apply(self, x: Tensor) -> Tensor:
        """Normalise x [..., D]."""
        return self._scale(x, forward=True)

    def invert(self, x: Tensor) -> Tensor:
        """Back to the original units."""
        return self._scale(x, forward=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "groups": [list(g) for g in self.groups],
            "low": list(self.low),
            "high": list(self.high),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Normalizer:
        return cls.from_running(d["groups"], d["low"], d["high"])


@dataclass
class TrajectoryDataset(torch.utils.data.Dataset):
    """One split: trajectories [S, N, T, D], true edge types and metadata.

    The truth is static, ``adjacency`` [S, N, N], or per frame, [S, T, N, N] with T the
    trajectories' frames (graphs that change over time, :attr:`dynamic`).
    ``adjacency[s, i, j]`` (static) or ``adjacency[s, t, i, j]`` (per frame: the graph in
    force at the time of frame t) is the type of the influence of object j (sender) on
    object i (receiver), an integer in 0..K-1; ``None`` where the graphs are unknown.
    Items are ``(trajectories[s], adjacency[s])`` pairs, or trajectories alone without
    graphs. Metadata holds the system, its parameters, the seed and the version of the
    format, and, under ``"normalization"``, the training statistics of the dataset it came
    from.
    """

    trajectories: Tensor
    adjacency: Tensor | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        x = self.trajectories
        if not isinstance(x, Tensor):
            self.trajectories = x = torch.as_tensor(x)
        if x.dim() != 4:
            raise ValueError(
                f"trajectories must have shape [S, N, T, D] (simulations, objects, frames, "
                f"features), got {tuple(x.shape)}"
            )
        if not x.is_floating_point():
            raise ValueError(f"trajectories must be floating point, got {x.dtype}")
        if x.shape[1] < 2:
            raise ValueError(f"a graph needs at least 2 objects, got {x.shape[1]}")
        if self.adjacency is not None:
            a = torch.as_tensor(self.adjacency)
            static = (x.shape[0], x.shape[1], x.shape[1])
            per_frame = (x.shape[0], x.shape[2], x.shape[1], x.shape[1])
            if tuple(a.shape) not in (static, per_frame):
                raise ValueError(
                    f"adjacency must have shape [S, N, N] = {list(static)} (one graph per "
                    f"trajectory) or [S, T, N, N] = {list(per_frame)} (one graph per frame) "
                    f"to match the trajectories {list(x.shape)}, got {list(a.shape)}"
                )
            if a.is_floating_point() and not torch.equal(a, a.round()):
                raise ValueError("adjacency must hold integer edge types")
            if a.numel() and a.min() < 0:
                raise ValueError(f"edge types must be >= 0, got minimum {int(a.min())}")
            self.adjacency = a.long()

    @classmethod
    def from_arrays(
        cls, trajectories: Any, adjacency: Any = None, **metadata: Any
    ) -> TrajectoryDataset:
        """Wrap a user's arrays: trajectories [S, N, T, D] and optionally adjacency [S, N, N]
        (static) or [S, T, N, N] (the graph in force at each frame)."""
        x = torch.as_tensor(trajectories)
        if not x.is_floating_point():
            x = x.double()
        check_finite(x)
        a = None if adjacency is None else torch.as_tensor(adjacency)
        return cls(x, a, {"system": "custom", **metadata})

    def __len__(self) -> int:
        return self.trajectories.shape[0]

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor] | Tensor:
        if self.adjacency is None:
            return self.trajectories[index]
        return self.trajectories[index], self.adjacency[index]

    @property
    def dynamic(self) -> bool:
        """Whether the truth is per frame ([S, T, N, N]); False for static truth and for a
        dataset without graphs."""
        return self.adjacency is not None and self.adjacency.dim() == 4

    @property
    def num_objects(self) -> int:
        return self.trajectories.shape[1]

    @property
    def num_frames(self) -> int:
        return self.trajectories.shape[2]

    @property
    def num_features(self) -> int:
        return self.trajectories.shape[3]

    @property
    def edges(self) -> Tensor:
        """Edge types flattened to [S, N(N-1)] in the reference order (receiver outer,
        sender inner, diagonal skipped); [S, T, N(N-1)] in the same order for per-frame
        truth (:attr:`dynamic`)."""
        if self.adjacency is None:
            raise ValueError("this dataset has no true graphs")
        n = self.num_objects
        off_diagonal = ~torch.eye(n, dtype=torch.bool, device=self.adjacency.device)
        return self.adjacency[..., off_diagonal]

    @property
    def normalizer(self) -> Normalizer | None:
        stats = self.metadata.get("normalization")
        return None if stats is None else Normalizer.from_dict(stats)

    def normalized(self, normalizer: Normalizer | None = None) -> TrajectoryDataset:
        """A copy scaled by ``normalizer`` (default: the training statistics in metadata)."""
        normalizer = normalizer or self.normalizer
        if normalizer is None:
            raise ValueError(
                "no normalisation statistics: pass a Normalizer, e.g. Normalizer.fit on the "
                "training split"
            )
        bad = [i for g in normalizer.groups for i in g if i >= self.num_features]
        if bad:
            raise ValueError(
                f"the normalisation statistics name feature {bad[0]}, but the trajectories "
                f"have {self.num_features} features"
            )
        metadata = {**self.metadata, "normalization": normalizer.to_dict(), "normalized": True}
        return TrajectoryDataset(normalizer.apply(self.trajectories), self.adjacency, metadata)

    def select_features(self, indices: Sequence[int]) -> TrajectoryDataset:
        """A copy with only the features at ``indices`` (in that order). Stored normalisation
        statistics are kept for the groups whose features are all kept, renumbered; if a
        group is cut, they are dropped (the training statistics are then fitted anew). The
        metadata's ``feature_names`` become those of the features kept."""
        indices = [int(i) for i in indices]
        if not indices or any(not 0 <= i < self.num_features for i in indices):
            raise ValueError(
                f"feature indices must lie in 0..{self.num_features - 1}, got {indices}"
            )
        metadata = {**self.metadata, "features_kept": indices}
        names = metadata.get("feature_names")
        if names is not None and len(names) == self.num_features:  # they name the kept ones
            metadata["feature_names"] = [names[i] for i in indices]
        stats = metadata.pop("normalization", None)
        if stats is not None:
            position = {old: new for new, old in enumerate(indices)}
            groups = [g for g in stats["groups"] if any(i in position for i in g)]
            if all(all(i in position for i in g) for g in groups):
                kept = [k for k, g in enumerate(stats["groups"]) if g in groups]
                metadata["normalization"] = {
                    "groups": [[position[i] for i in stats["groups"][k]] for k in kept],
                    "low": [stats["low"][k] for k in kept],
                    "high": [stats["high"][k] for k in kept],
                }
        return TrajectoryDataset(
            self.trajectories[..., indices].contiguous(), self.adjacency, metadata
        )

    def to(self, device: torch.device | str) -> TrajectoryDataset:
        """A copy on ``device`` (trajectories and truth)."""
        adjacency = None if self.adjacency is None else self.adjacency.to(device)
        return TrajectoryDataset(self.trajectories.to(device), adjacency, dict(self.metadata))

    def subset(self, index: slice | Tensor) -> TrajectoryDataset:
        """The trajectories at ``index`` (along S), with their truth (static or per frame)."""
        adjacency = None if self.adjacency is None else self.adjacency[index]
        return TrajectoryDataset(self.trajectories[index], adjacency, dict(self.metadata))

    def first_frames(self, num_frames: int) -> TrajectoryDataset:
        """A copy with the first ``num_frames`` frames of every trajectory; per-frame truth
        is cut the same way, static truth is kept."""
        try:
            if isinstance(num_frames, bool):
                raise TypeError
            num_frames = operator.index(num_frames)
        except TypeError:
            raise ValueError(f"num_frames must be a whole number, got {num_frames!r}") from None
        if not 1 <= num_frames <= self.num_frames:
            raise ValueError(
                f"num_frames must lie in 1..{self.num_frames} (the trajectories' frames), "
                f"got {num_frames}"
            )
        adjacency = self.adjacency
        if self.dynamic:
            adjacency = adjacency[:, :num_frames].contiguous()
        return TrajectoryDataset(
            self.trajectories[:, :, :num_frames].contiguous(), adjacency, dict(self.metadata)
        )

    def edge_type_frequencies(self, num_types: int | None = None) -> Tensor:
        """Fraction of ordered pairs (and of frames, for per-frame truth) of each edge
        type: [K]."""
        edges = self.edges
        k = num_types or int(edges.max()) + 1
        return torch.bincount(edges.flatten(), minlength=k).double() / max(edges.numel(), 1)

    def __repr__(self) -> str:
        s, n, t, d = self.trajectories.shape
        graphs = "no graphs" if self.adjacency is None else "with graphs"
        if self.dynamic:
            graphs = "with graphs per frame"
        system = self.metadata.get("system", "?")
        return (
            f"TrajectoryDataset({system}: {s} x {n} objects x {t} frames x {d} features, {graphs})"
        )


def check_finite(x: Tensor, what: str = "trajectories") -> None:
    """Raise a clear error where ``x`` holds NaN or infinite values."""
    bad = ~torch.isfinite(x)
    if bool(bad.any()):
        first = [int(i) for i in bad.nonzero()[0]]
        raise ValueError(
            f"{what} contain {int(bad.sum())} NaN or infinite values (first at index {first})"
        )


def check_trajectories(x: Tensor, num_features: int | None = None) -> None:
    """Clear errors for trajectories the model cannot use: x must be [B, N, T, D]."""
    if not isinstance(x, Tensor):
        raise TypeError(f"trajectories must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 4:
        raise ValueError(
            f"trajectories must have shape [B, N, T, D] (batch, objects, frames, features), "
            f"got {tuple(x.shape)}"
        )
    if x.shape[1] < 2 or x.shape[2] < 2:
        raise ValueError(f"need at least 2 objects and 2 frames, got shape {tuple(x.shape)}")
    if num_features is not None and x.shape[3] != num_features:
        raise ValueError(f"the model was built for {num_features} features, got {x.shape[3]}")
    # (A compiled training step checks its minibatch before the compiled part:
    # nri_pyro.objectives.MeanFieldLoss; this data-dependent check would split its graph.)
    if not torch.compiler.is_compiling() and not torch.isfinite(x).all():
        raise ValueError("trajectories contain NaN or infinite values")


def normalizer_for(train: TrajectoryDataset) -> Normalizer:
    """The training statistics: those stored with the data, else fitted per feature."""
    if train.normalizer is not None:
        return train.normalizer
    groups = tuple((i,) for i in range(train.num_features))
    return Normalizer.fit(train.trajectories, groups)


def prepare(data: TrajectoryDataset, normalizer: Normalizer) -> tuple[Tensor, Tensor | None]:
    """Normalised float32 trajectories [S, N, T, D] and flattened true edges [S, E] (or None;
    [S, T, E] for graphs that change over time)."""
    check_trajectories(data.trajectories)
    x = normalizer.apply(data.trajectories.double()).float()
    edges = data.edges if data.adjacency is not None else None
    return x, edges


def batch_slices(num: int, size: int) -> list[slice]:
    """Consecutive slices of at most ``size`` items that cover ``range(num)``."""
    return [slice(i, min(i + size, num)) for i in range(0, num, size)]
