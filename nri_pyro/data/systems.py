"""The registry of simulated systems: what each one needs, by name."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from nri_pyro.data.kuramoto import (
    KuramotoParams,
    kuramoto_frame_adjacency,
    kuramoto_initial,
    kuramoto_run,
)
from nri_pyro.data.particles import (
    ChargedParams,
    SpringsParams,
    charged_initial,
    charged_run,
    springs_frame_adjacency,
    springs_initial,
    springs_run,
)
from nri_pyro.data.switching import max_switch_rate

PARTICLE_FEATURES = ("x", "y", "vx", "vy")
KURAMOTO_FEATURES = ("dphi_dt", "sin_phi", "phase", "omega")


@dataclass(frozen=True)
class System:
    """One simulated system of the NRI paper.

    ``initial`` draws graphs and initial states on the CPU from a generator; ``run``
    integrates them on any device and returns clean trajectories [B, N, T, D].
    ``norm_groups`` lists the feature indices that share one scalar min/max when the
    reference normalises a dataset (positions together, velocities together).
    ``frames_dropped`` is 1 where the reference drops the initial frame.
    ``frame_adjacency(init, num_frames, params)`` gives the graph in force at each frame,
    [B, T, N, N], for the systems whose graphs can change over time (``switch_rate``);
    None for the others.
    """

    name: str
    params_type: type
    initial: Callable[..., dict]
    run: Callable[..., Any]
    feature_names: tuple[str, ...]
    norm_groups: tuple[tuple[int, ...], ...]
    frames_dropped: int
    train_frames: int = 49
    test_frames: int = 99
    cpu_chunk: int = 4_000
    frame_adjacency: Callable[..., Any] | None = None

    def params(self, overrides: Mapping[str, Any] | None = None) -> Any:
        """The paper's parameters with ``overrides`` applied, checked by name and type.

        Values given as strings (from the command line) are converted to the field's type.
        """
        defaults = self.params_type()
        fields = {f.name: type(getattr(defaults, f.name)) for f in dataclasses.fields(defaults)}
        checked = {}
        for key, value in (overrides or {}).items():
            if key not in fields:
                raise ValueError(
                    f"unknown parameter {key!r} for system {self.name!r}; "
                    f"valid parameters: {', '.join(sorted(fields))}"
                )
            checked[key] = _coerce(key, value, fields[key])
        params = dataclasses.replace(defaults, **checked)
        _check_params(self.name, params)
        return params

    def switches(self, params: Any) -> bool:
        """Whether graphs change over time under ``params`` (a ``switch_rate`` > 0): the
        truth is then stored per frame, [S, T, N, N]."""
        return self.frame_adjacency is not None and getattr(params, "switch_rate", 0.0) > 0

    def feature_indices(self, names: Sequence[str]) -> list[int]:
        """The positions of the named features (a chosen subset, in the given order)."""
        if isinstance(names, str) or not names or len(set(names)) != len(names):
            raise ValueError(
                f"features must be a list of distinct names of {self.name}'s features "
                f"({', '.join(self.feature_names)}), got {names!r}"
            )
        unknown = [n for n in names if n not in self.feature_names]
        if unknown:
            raise ValueError(
                f"{self.name} has no feature(s) {', '.join(map(repr, unknown))}; its features: "
                f"{', '.join(self.feature_names)}"
            )
        return [self.feature_names.index(n) for n in names]

    def frames_from_steps(self, steps: int, sample_freq: int) -> int:
        """Frames kept from ``steps`` integration steps (the reference's ``--length``)."""
        if steps <= 0 or steps % sample_freq != 0:
            raise ValueError(
                f"{self.name}: the number of steps must be a positive multiple of the sample "
                f"frequency {sample_freq}, got {steps}"
            )
        frames = steps // sample_freq - self.frames_dropped
        if frames < 1:
            raise ValueError(f"{self.name}: {steps} steps keep no frame at all")
        return frames


def _coerce(key: str, value: Any, kind: type) -> Any:
    if kind is bool and isinstance(value, str):
        lowered = value.strip().lower()
        if lowered not in {"true", "false", "1", "0", "yes", "no"}:
            raise ValueError(f"parameter {key!r} expects true or false, got {value!r}")
        return lowered in {"true", "1", "yes"}
    if kind is bool and not isinstance(value, bool):
        raise ValueError(f"parameter {key!r} expects true or false, got {value!r}")
    try:
        converted = kind(value)
    except (TypeError, ValueError):
        raise ValueError(f"parameter {key!r} expects a {kind.__name__}, got {value!r}") from None
    if kind is int and isinstance(value, float) and value != converted:
        raise ValueError(f"parameter {key!r} expects a whole number, got {value!r}")
    return converted


def _check_params(name: str, params: Any) -> None:
    values = dataclasses.asdict(params)
    for key in ("dt", "box_size", "max_force", "vel_norm"):
        if key in values and not values[key] > 0:
            raise ValueError(f"{name}: {key} must be positive, got {values[key]}")
    for key in ("loc_std", "noise", "interaction_strength", "coupling"):
        if key in values and not values[key] >= 0:
            raise ValueError(f"{name}: {key} must be non-negative, got {values[key]}")
    for key in ("edge_prob", "charge_prob"):
        if key in values and not 0 <= values[key] <= 1:
            raise ValueError(f"{name}: {key} must lie in [0, 1], got {values[key]}")
    for key in ("sample_freq", "window_frames", "substeps"):
        if key in values and values[key] < 1:
            raise ValueError(f"{name}: {key} must be at least 1, got {values[key]}")
    if "switch_rate" in values and not (
        values["switch_rate"] >= 0 and math.isfinite(values["switch_rate"])
    ):
        raise ValueError(
            f"{name}: switch_rate (edge flips per pair per unit of simulated time) must be a "
            f"finite non-negative number, got {values['switch_rate']}"
        )
    if "switch_rate" in values:
        _check_switch_rate(name, values["switch_rate"], values["sample_freq"], values["dt"])
    if "freq_min" in values and not values["freq_min"] < values["freq_max"]:
        raise ValueError(f"{name}: freq_min must be below freq_max, got {values}")


def _check_switch_rate(name: str, rate: float, sample_freq: int, dt: float) -> None:
    """Refuse a rate above :func:`~nri_pyro.data.switching.max_switch_rate`, before any work."""
    limit = max_switch_rate(sample_freq, dt)
    if rate > limit:
        raise ValueError(
            f"{name}: switch_rate must be at most {limit:g} (edge flips per pair per unit of "
            f"simulated time: one per frame interval of sample_freq * dt = {sample_freq * dt:g} "
            f"on average; faster switching cannot be seen in the frames, and its flip times "
            f"outgrow the memory), got {rate:g}: give a switch_rate of at most {limit:g}"
        )


SYSTEMS: dict[str, System] = {
    "springs": System(
        "springs",
        SpringsParams,
        springs_initial,
        springs_run,
        PARTICLE_FEATURES,
        ((0, 1), (2, 3)),
        frames_dropped=1,
        frame_adjacency=springs_frame_adjacency,
    ),
    "charged": System(
        "charged",
        ChargedParams,
        charged_initial,
        charged_run,
        PARTICLE_FEATURES,
        ((0, 1), (2, 3)),
        frames_dropped=1,
        cpu_chunk=8_000,
    ),
    # The reference Kuramoto features are already scaled per simulation: no dataset-wide
    # normalisation.
    "kuramoto": System(
        "kuramoto",
        KuramotoParams,
        kuramoto_initial,
        kuramoto_run,
        KURAMOTO_FEATURES,
        (),
        frames_dropped=0,
        frame_adjacency=kuramoto_frame_adjacency,
    ),
}


def get_system(name: str) -> System:
    """The system registered under ``name``; a clear error lists the valid names."""
    try:
        return SYSTEMS[name]
    except KeyError:
        raise ValueError(
            f"unknown system {name!r}; valid systems: {', '.join(sorted(SYSTEMS))}"
        ) from None
