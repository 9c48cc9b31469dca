"""Checkpoints and run folders: what a checkpoint holds, how it is read back, and which
folders a run may write into.

A checkpoint (written atomically, :func:`~nri_pyro.files.atomic_save`) holds the specs,
weights, data shape and normalisation statistics (:func:`model_state`); a run's
checkpoints add the optimiser, scheduler and RNG states, the epoch and the best value, so
that a resumed run continues exactly.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from nri_pyro.data.dataset import Normalizer
from nri_pyro.files import atomic_save
from nri_pyro.folders import check_output_folder
from nri_pyro.guide import NRIGuide
from nri_pyro.model import NRIModel
from nri_pyro.train_config import TrainConfig

CHECKPOINT_FORMAT = "nri-pyro-checkpoint"
CHECKPOINT_VERSION = 1
# The files every run folder holds from its start: what tells a run folder from another.
RUN_FILES = ("model.yaml", "guide.yaml", "train.yaml")

__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_VERSION",
    "RUN_FILES",
    "atomic_save",
    "build_from_checkpoint",
    "check_run_folder",
    "load_checkpoint",
    "model_state",
]


def check_run_folder(folder: str | Path, resume: bool = False) -> Path | None:
    """Check a run folder before training; return the checkpoint to resume (None: a new run).

    Refused: a file; a non-empty folder that is not a run (training would overwrite or append
    to the files there: model.yaml, metrics.jsonl, summary.json); a finished or interrupted
    run without ``resume``; ``resume`` without a checkpoint."""
    folder = Path(folder)
    check_output_folder(folder, "an nri-pyro run folder", marks=RUN_FILES)
    last = folder / "checkpoint_last.pt"
    if resume:
        if not last.exists():
            raise FileNotFoundError(f"nothing to resume: {last} does not exist")
        return last
    if last.exists():
        raise FileExistsError(
            f"{folder} already holds a run; pass --resume to continue it or choose another --out"
        )
    return None


def load_checkpoint(path: str | Path, *, require: tuple[str, ...] = ()) -> dict[str, Any]:
    """A checkpoint written by :class:`Trainer` (or ``NRI.save``), with clear errors for
    anything else: one that lacks what rebuilds the model (specs, weights, data shape,
    statistics), or the keys in ``require`` (e.g. the optimizer's state, for resuming)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # any unpickling failure means the same thing
        raise ValueError(
            f"{path} is not a readable checkpoint ({type(err).__name__}: {err})"
        ) from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not an nri-pyro checkpoint")
    if state.get("version", 0) > CHECKPOINT_VERSION:
        raise ValueError(f"{path} was written by a newer nri-pyro (format {state['version']})")
    needed = ("model_spec", "guide_spec", "train_config", "data", "normalization",
              "model_state", "guide_state", *require)  # fmt: skip
    missing = [key for key in needed if key not in state]
    data = state.get("data")
    if isinstance(data, dict):
        shape = ("num_objects", "num_frames", "num_features")
        missing += [f"data.{key}" for key in shape if key not in data]
    if missing:
        raise ValueError(
            f"{path} lacks {', '.join(missing)}: it carries the nri-pyro checkpoint tag but "
            "not what a checkpoint written by nri-pyro holds (a truncated or hand-made file?)"
        )
    return state


def model_state(
    model: NRIModel,
    guide: NRIGuide,
    config: TrainConfig,
    normalizer: Normalizer,
    data_info: dict[str, Any],
) -> dict[str, Any]:
    """What rebuilds a trained model and guide: specs, weights, data shape, statistics."""
    return {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "model_spec": model.spec,
        "guide_spec": guide.spec,
        "train_config": asdict(config),
        "data": data_info,
        "normalization": normalizer.to_dict(),
        "model_state": model.state_dict(),
        "guide_state": guide.state_dict(),
    }


def build_from_checkpoint(state: dict[str, Any], device: torch.device) -> tuple[NRIModel, NRIGuide]:
    info = state["data"]
    model = NRIModel(state["model_spec"], info["num_features"]).to(device)
    guide = NRIGuide.for_model(
        state["guide_spec"], model, info["num_frames"], info["num_objects"]
    ).to(device)
    model.load_state_dict(state["model_state"])
    guide.load_state_dict(state["guide_state"])
    return model, guide


def differences(
    before: Mapping[str, Any], after: Mapping[str, Any], prefix: str = ""
) -> list[tuple[str, Any, Any]]:
    """``(dotted key, value before, value after)`` for every key whose value differs, nested
    mappings compared key by key (a key missing on one side has the value None there)."""
    out = []
    for key in sorted(set(before) | set(after), key=str):
        was, now = before.get(key), after.get(key)
        if isinstance(was, Mapping) and isinstance(now, Mapping):
            out += differences(was, now, f"{prefix}{key}.")
        elif was != now:
            out.append((f"{prefix}{key}", was, now))
    return out
