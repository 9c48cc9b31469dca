"""The data of a study: ``data.*`` keys that vary the data a preset simulates, and the
record (:func:`data_source`) and shape (:func:`data_shape`) of what its runs train on.

A study (:mod:`nri_pyro.ablate`) may vary the preset's data beside its specs:
``data.train`` (training trajectories), ``data.valid``, ``data.test``, ``data.frames`` (the
observed length: frames of the training and validation trajectories), ``data.test_frames``,
``data.objects``, ``data.seed`` and the system's physical parameters ``data.params.NAME``
(``data.params.noise``, the observation noise; ``data.params.edge_prob``, the true density;
...). Such a key is no spec key: it picks the data a variant trains and is scored on.

Each distinct data setting is simulated once, into ``OUT/data/<slug>`` (:func:`data_slug`),
and shared by every variant and seed that uses it, so priors compared at one data setting
see the same training, validation and test data. Every split draws from its own seed stream
(:func:`nri_pyro.data.simulate.simulate`), block by block, so:

- the validation and test trajectories do not depend on ``data.train``: a row trained on 50
  trajectories is scored on the very test set of a row trained on 5,000 (and the training
  sets are nested: the 50 are the first 50 of the 5,000);
- ``data.frames`` changes the training and validation trajectories, not the test ones
  (``data.test_frames``).

Normalisation statistics come from each setting's own training split (as
:func:`nri_pyro.presets.simulate_preset` fits them), as a user with that much data would
normalise: rows with different training sizes score the same test trajectories, each
scaled by its own statistics.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from nri_pyro.data.systems import get_system
from nri_pyro.folders import folder_digest
from nri_pyro.presets import Preset, check_data_settings, split_frames

DATA_PREFIX = "data."
# The keys of a preset's data section a study may vary (and data.params.NAME); the system
# and the features are the data's kind, not a setting of it: choose another preset.
VARIABLE_DATA_KEYS = ("train", "valid", "test", "frames", "test_frames", "objects", "seed")


def is_data_key(key: str) -> bool:
    """Whether a study's key names a data setting (``data.train``) rather than a spec key."""
    return key == "data" or key.startswith(DATA_PREFIX)


def data_keys(system: str) -> list[str]:
    """Every data key a study may vary for ``system``: ``data.train`` ... and
    ``data.params.NAME`` for each of its physical parameters."""
    params = [f.name for f in dataclasses.fields(get_system(system).params_type)]
    return [DATA_PREFIX + k for k in VARIABLE_DATA_KEYS] + [f"data.params.{p}" for p in params]


def check_data_key(key: str, preset: Preset | None, data: Path | None) -> None:
    """Refuse a data key that names nothing a study can vary, or that cannot vary because
    the study trains on files (``data``) rather than on the preset's simulated data."""
    if data is not None:
        raise ValueError(
            f"{key} cannot vary with --data {data}: a dataset folder holds fixed files, which "
            f"the study cannot simulate again with another {key}; drop --data so that the "
            "study simulates the preset's data for each setting (choose the system and its "
            "other settings with --preset), or vary spec keys only"
        )
    if preset is None:
        raise ValueError(
            f"{key} varies the data a preset simulates, but the study has no preset: give "
            "--preset (its data section is the base of every data setting)"
        )
    valid = data_keys(preset.system)
    if key not in valid:
        raise ValueError(
            f"unknown data key {key!r}; a study varies preset {preset.name}'s "
            f"{preset.system} data by: {', '.join(valid)}"
        )


def data_with(preset: Preset, changes: Mapping[str, Any], where: str) -> dict[str, Any]:
    """The preset's data section with ``changes`` ({"data.train": 50, "data.params.noise":
    0.01}, keys checked by :func:`check_data_key`) applied, checked as a preset's data are
    (whole numbers of at least 2 objects and 1 training trajectory, physical parameters in
    range), and test trajectories no shorter than the training ones (the encoder reads the
    training length): a bad value is an error that starts with ``where``."""
    data = copy.deepcopy(preset.data)
    for key, value in changes.items():
        path = key.split(".")[1:]
        if path[0] == "params":
            data["params"] = {**data["params"], path[1]: value}
        else:
            data[path[0]] = value
    check_data_settings(data, where)
    frames, test_frames = data_value(data, "data.frames"), data_value(data, "data.test_frames")
    if data["test"] and test_frames < frames:
        raise ValueError(
            f"{where}: data.frames={frames} is longer than the test trajectories "
            f"(data.test_frames={test_frames}), but the encoder reads the training length of "
            f"every held-out trajectory: give data.test_frames >= {frames} (as a setting of "
            "the preset or a data key beside data.frames), or fewer data.frames"
        )
    return data


def data_value(data: Mapping[str, Any], key: str) -> Any:
    """The value of data key ``key`` in a resolved data section: the system's default where
    the section leaves it to the system (a physical parameter, ``frames: null``)."""
    path = key.split(".")[1:]
    if path[0] == "params":
        return getattr(get_system(data["system"]).params(data["params"]), path[1])
    if path[0] in ("frames", "test_frames"):
        return split_frames(data, "test" if path[0] == "test_frames" else "train")
    return data[path[0]]


def data_slug(data: Mapping[str, Any], keys: Sequence[str]) -> str:
    """A folder name for a data setting: its values of the data keys a study varies
    (``train-50_params.noise-0.01`` for ``keys`` ["data.train", "data.params.noise"]), so
    that two settings share a folder exactly when they simulate the same data."""
    text = "_".join(f"{key.removeprefix(DATA_PREFIX)}-{data_value(data, key)}" for key in keys)
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in text or "preset")


def data_source(preset: Preset | None, data: Path | None) -> dict[str, Any]:
    """What a study's runs train on, as its study.json records it: the digest of the files
    of the data folder given, or the data settings of the preset whose data it simulates."""
    if data is not None:
        return {"folder": str(data), "digest": folder_digest(data)}
    assert preset is not None
    return {"simulated": preset.data}


def data_shape(
    preset: Preset | None, train: Any, features: Sequence[str] | None
) -> tuple[int, int, int] | None:
    """[N, T, D] of the training data (given, or the preset's to simulate); None if unknown."""
    if train is not None:
        n, t, d = train.num_objects, train.num_frames, train.num_features
    elif preset is not None:
        n, t = preset.num_objects, split_frames(preset.data, "train")
        d = len(get_system(preset.system).feature_names)
    else:
        return None
    return n, t, len(features) if features else d
