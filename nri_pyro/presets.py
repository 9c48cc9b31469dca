"""Named recipes: the data, model, guide and training settings of one experiment.

A preset is a YAML file in ``nri_pyro/configs/presets`` (shipped with the package; readable
and copyable, like the spec files in ``models/`` and ``guides/``), or a path to one's own::

    # charged particles, 5 objects, sized for a 2-core CPU
    base: charged5-paper          # optional: a preset whose values this one changes
    data:                         # what `nri-pyro train --preset` simulates without --data
      system: charged
      objects: 5
      train: 8000
      valid: 500
      test: 1000
      params: {}                  # physical parameters (the paper's by default)
      seed: 0
    model:                        # a model spec by name or path, or its changes:
      base: nri                   #   the spec they apply to (a name or a path)
      decoder: {hidden: 64}
    guide: mlp                    # a guide spec by name or path (or changes, as model)
    train: {epochs: 30, lr: 2.0e-3}

A preset holds only what it changes: mappings merge key by key over its base (a value that
is a name or path replaces the base's), down to the spec files. :func:`load_preset`
resolves the chain and checks every key before any work; :func:`simulate_preset` makes a
preset's data (seed ``data.seed``, the paper's frame counts and split streams, the
reference's normalisation statistics).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nri_pyro.data.dataset import Normalizer, TrajectoryDataset
from nri_pyro.data.features import feature_mismatch
from nri_pyro.data.systems import get_system
from nri_pyro.specs import (
    load_chain,
    merge,
    resolve_guide_spec,
    resolve_model_spec,
    resolve_train_config,
    spec_folder,
    spec_names,
)

DEFAULT_PRESET = "springs5"  # `nri-pyro train` with no arguments
ABLATE_DEFAULT_PRESET = "springs5-quick"  # `nri-pyro ablate` without --preset
PRESET_KEYS = ("base", "data", "model", "guide", "train")
DATA_KEYS = ("system", "objects", "train", "valid", "test", "frames", "test_frames",
             "params", "seed", "features")  # fmt: skip
DATA_DEFAULTS: dict[str, Any] = {
    "params": {}, "seed": 0, "frames": None, "test_frames": None, "features": None
}  # fmt: skip


def preset_folder() -> Path:
    """Where the shipped presets are (inside the installed package)."""
    return spec_folder("preset")


def preset_names() -> list[str]:
    """The names of the shipped presets."""
    return spec_names("preset")


@dataclass
class Preset:
    """A resolved preset: its name, where it was read, and its sections.

    ``model`` and ``guide`` are spec mappings (the base file's settings with the preset's
    changes merged in); ``data`` has every key of :data:`DATA_KEYS`; ``train`` holds
    training settings (:class:`~nri_pyro.train_config.TrainConfig` keys).
    """

    name: str
    path: Path
    data: dict[str, Any]
    model: dict[str, Any]
    guide: dict[str, Any]
    train: dict[str, Any]
    sources: dict[str, str] = field(default_factory=dict)  # the spec files it builds on

    @property
    def system(self) -> str:
        return self.data["system"]

    @property
    def num_objects(self) -> int:
        return self.data["objects"]

    def describe(self) -> str:
        """One line: the preset, the spec files under it, and its data."""
        d = self.data
        return (
            f"preset {self.name} ({self.path}): model {self.sources['model']}, guide "
            f"{self.sources['guide']}; data {d['system']} with {d['objects']} objects "
            f"({d['train']:,} / {d['valid']:,} / {d['test']:,} trajectories, seed {d['seed']})"
            + ("" if d["features"] is None else f", features {', '.join(d['features'])}")
        )

    def to_dict(self) -> dict[str, Any]:
        """Everything that makes the preset's runs what they are (for run records)."""
        return {
            "name": self.name, "data": self.data, "model": self.model, "guide": self.guide,
            "train": self.train,
        }  # fmt: skip

    def check_data(self, data: TrajectoryDataset, where: str = "the data") -> None:
        """A clear error when ``data`` are not of this preset's system and size, or lack a
        feature it reads (``data.features``, else all of its system's; found by name, see
        :func:`~nri_pyro.data.features.feature_mismatch`)."""
        system = data.metadata.get("system", "custom")
        features = self.data["features"] or list(get_system(self.system).feature_names)
        problems = []
        if system != self.system:
            problems.append(f"system {system!r}")
        if data.num_objects != self.num_objects:
            problems.append(f"{data.num_objects} objects")
        same_system = system == self.system
        mismatch = feature_mismatch(data, features, self.system) if same_system else None
        if mismatch is not None:
            problems.append(mismatch)
        if problems:
            raise ValueError(
                f"preset {self.name} is for {self.system} with {self.num_objects} objects and "
                f"the features {', '.join(features)}, but {where} have {', '.join(problems)}: "
                f"choose the preset for these data (valid presets: {', '.join(preset_names())}), "
                "or --preset none to train with the spec files alone"
            )


def _as_changes(value: Any, section: str, path: Path) -> dict[str, Any]:
    """A model or guide section as a mapping: a name or path becomes {base: it}, a path read
    from the preset's folder."""
    if value is None:
        return {}
    if isinstance(value, (str, Path)):
        return {"base": str(value), "_beside": path.parent}
    if isinstance(value, Mapping):
        changes = copy.deepcopy(dict(value))
        if "base" in changes:
            changes["_beside"] = path.parent
        return changes
    raise ValueError(
        f"{path}: {section} must be a spec name, a path or a mapping of changes, got {value!r}"
    )


def _chain(name_or_path: str | Path) -> tuple[dict, Path]:
    """The preset merged over its bases (found by the one rule of
    :func:`~nri_pyro.specs.find_config`), and the first file's path."""
    merged: dict[str, Any] = {}
    chain = load_chain("preset", name_or_path)
    for path, raw in chain:
        unknown = sorted(set(raw) - set(PRESET_KEYS))
        if unknown:
            raise ValueError(
                f"{path}: unknown key(s) {', '.join(unknown)}; valid keys: {', '.join(PRESET_KEYS)}"
            )
        for section in ("model", "guide"):
            if section in raw:
                changes = _as_changes(raw[section], section, path)
                base_changes = merged.get(section, {})
                merged[section] = changes if "base" in changes else merge(base_changes, changes)
        for section in ("data", "train"):
            value = raw.get(section)
            if value is None:
                continue
            if not isinstance(value, Mapping):
                raise ValueError(f"{path}: {section} must be a mapping, got {value!r}")
            merged[section] = merge(merged.get(section, {}), value)
    return merged, chain[-1][0]


def _resolve_spec(changes: dict[str, Any], kind: str, path: Path) -> tuple[dict, str]:
    """The spec a model or guide section means (its base file with its changes), checked."""
    changes = dict(changes)
    beside = changes.pop("_beside", None)
    base = changes.pop("base", "nri" if kind == "model" else "mlp")
    spec: dict[str, Any] = {}
    for _, data in load_chain(kind, base, beside=beside):
        spec = merge(spec, data)
    spec = merge(spec, changes)
    try:
        (resolve_model_spec if kind == "model" else resolve_guide_spec)(spec)
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None
    source = str(base) if not changes else f"{base} with {_count(changes)} change(s)"
    return spec, source


def _count(changes: Mapping[str, Any]) -> int:
    return sum(_count(v) if isinstance(v, Mapping) else 1 for v in changes.values())


def check_data_settings(data: Mapping[str, Any], where: str | Path) -> None:
    """Refuse a preset's data section (merged over :data:`DATA_DEFAULTS`) that names an
    unknown key, lacks a needed one, or holds a value its system cannot simulate; ``where``
    (the preset's file, or what changed it) starts each message."""
    unknown = sorted(set(data) - set(DATA_KEYS))
    if unknown:
        raise ValueError(
            f"{where}: unknown data key(s) {', '.join(unknown)}; valid: {', '.join(DATA_KEYS)}"
        )
    missing = [k for k in ("system", "objects", "train", "valid", "test") if k not in data]
    if missing:
        raise ValueError(f"{where}: the data section needs {', '.join(missing)}")
    if not isinstance(data["params"], Mapping):
        raise ValueError(
            f"{where}: data.params must be a mapping of physical parameters such as "
            f"{{noise: 0.01}}, got {data['params']!r}"
        )
    try:
        system = get_system(data["system"])
        system.params(data["params"])  # checks the physical parameters by name and type
    except (ValueError, TypeError) as err:
        raise ValueError(f"{where}: data: {err}") from None
    # At least 2 objects (one pair) and 1 training trajectory; the rest may be 0 (no split).
    for key, least in (("objects", 2), ("train", 1), ("valid", 0), ("test", 0), ("seed", 0)):
        value = data[key]
        if not isinstance(value, int) or isinstance(value, bool) or value < least:
            raise ValueError(
                f"{where}: data.{key} must be a whole number >= {least}, got {value!r}"
            )
    for key in ("frames", "test_frames"):
        value = data[key]
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or value < 2
        ):
            raise ValueError(
                f"{where}: data.{key} must be a whole number >= 2 (frames per trajectory) or "
                f"null for the system's default, got {value!r}"
            )
    if data["features"] is not None:
        try:
            system.feature_indices(data["features"])
        except ValueError as err:
            raise ValueError(f"{where}: data.features: {err}") from None


def load_preset(name_or_path: str | Path) -> Preset:
    """A preset by name (``charged5``, ``kuramoto10-paper``, ...) or path, resolved and
    checked: unknown names, keys and settings are errors that list the valid ones."""
    raw, path = _chain(name_or_path)
    name = (
        Path(name_or_path).stem
        if str(name_or_path).endswith((".yaml", ".yml"))
        else str(name_or_path)
    )
    data = {**DATA_DEFAULTS, **raw.get("data", {})}
    check_data_settings(data, path)
    model, model_source = _resolve_spec(raw.get("model", {}), "model", path)
    guide, guide_source = _resolve_spec(raw.get("guide", {}), "guide", path)
    train = dict(raw.get("train", {}))
    try:
        resolve_train_config(train)
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None
    return Preset(
        name, path, data, model, guide, train, {"model": model_source, "guide": guide_source}
    )


def split_frames(data: Mapping[str, Any], split: str) -> int:
    """Frames per trajectory of a split of a resolved data section: ``test_frames`` for the
    test split and ``frames`` for the others, else the system's defaults (49, and 99 for
    test, for the paper's systems)."""
    frames = data["test_frames"] if split == "test" else data["frames"]
    if frames is not None:
        return frames
    system = get_system(data["system"])
    return system.test_frames if split == "test" else system.train_frames


def simulate_preset(
    preset: str | Path | Preset,
    *,
    splits: tuple[str, ...] = ("train", "valid", "test"),
    device: Any = None,
    progress: bool = False,
) -> dict[str, TrajectoryDataset]:
    """A preset's data, simulated in memory: ``{"train", "valid", "test"}`` datasets.

    Seed ``data.seed`` and each split's own stream (the same simulations as ``nri-pyro
    simulate`` writes with that seed), 49 frames (99 for test) unless the preset says
    otherwise, on ``device``; every split carries the training split's normalisation
    statistics, taken as the reference does (one min and max per group of features).
    """
    from nri_pyro.data.simulate import simulate

    p = preset if isinstance(preset, Preset) else load_preset(preset)
    d = p.data
    system = get_system(d["system"])
    out = {}
    for split in splits:
        if not d[split]:
            continue
        out[split] = simulate(
            d["system"], d[split], d["objects"], split_frames(d, split), seed=d["seed"],
            split=split,
            device=device, progress=progress, **d["params"],
        )  # fmt: skip
    if "train" in out and system.norm_groups:
        stats = Normalizer.fit(out["train"].trajectories, system.norm_groups).to_dict()
        for data in out.values():
            data.metadata["normalization"] = stats
    return out
