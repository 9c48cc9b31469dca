"""Model, guide and training specs: YAML files resolved against defaults, with overrides.

A spec names components and their settings; this module checks every key once, before
any work, and maps names to classes through small registries. Overrides address a key by
its dotted path: ``prior.name=sparse`` and ``decoder.hidden=64`` in the model spec,
``guide.encoder.hidden=64`` in the guide spec, ``train.lr=1e-3`` in the training settings.
Values are parsed as YAML (``1e-3``, ``true``, ``[0.9, 0.1]``).
"""

from __future__ import annotations

import copy
import os
from collections.abc import Iterable, Mapping
from dataclasses import fields
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from nri_pyro.checkpoints import differences  # noqa: F401 - specs compare with it too
from nri_pyro.model import DECODER_SCHEME_KEYS
from nri_pyro.nn import DECODERS, ENCODERS
from nri_pyro.nn.registry import check_settings, settings_of
from nri_pyro.priors import build_prior
from nri_pyro.structure import GRAPH_DEFAULTS, GraphStructure, check_dynamic
from nri_pyro.train_config import PRECISIONS, SELECT_METRICS, TrainConfig  # noqa: F401

MODEL_DEFAULTS: dict[str, Any] = {
    "edge_types": 2,
    "decoder": {"name": "mlp", "prediction_steps": 10},
    "likelihood": {
        "variance": 5e-5,
        "learn_variance": False,
        "per_feature": False,
        "min_variance": 1e-6,  # the floor of a learned variance
    },
    "prior": {"name": "uniform"},
    "graph": dict(GRAPH_DEFAULTS),
}
GUIDE_DEFAULTS: dict[str, Any] = {
    "encoder": {"name": "mlp"},
    "temperature": 0.5,
    "hard": False,
    # A dynamic graph (the model's graph.dynamic): frames the encoder reads on each side of
    # a window (null: 0).
    "window_context": None,
    # A dynamic graph: a bidirectional GRU over the windows, per edge, so that every
    # window's logits read the whole trajectory ({hidden: H}; null: each window alone).
    "recurrent": None,
}


# Kinds of YAML file, their shipped folder (nri_pyro/configs/...) and what messages call them.
CONFIG_KINDS = {"model": ("models", "model spec"), "guide": ("guides", "guide spec"),
                "preset": ("presets", "preset")}  # fmt: skip
YAML_SUFFIXES = (".yaml", ".yml")


def config_folder(name: str) -> Path:
    """A folder of shipped YAML files (models, guides, presets), inside the installed package."""
    return Path(str(resources.files("nri_pyro") / "configs" / name))


def spec_folder(kind: str) -> Path:
    """Where the shipped files of ``kind`` ("model", "guide" or "preset") are."""
    return config_folder(CONFIG_KINDS[kind][0])


def spec_names(kind: str) -> list[str]:
    """The names of the shipped files of ``kind``."""
    return sorted(p.stem for p in spec_folder(kind).glob("*.yaml"))


def is_path(ref: str | Path) -> bool:
    """Whether a reference to a spec or preset is a path rather than a name: a path has a
    .yaml/.yml suffix or a folder in it (``mine.yaml``, ``./mine``, ``specs/mine``); a name
    never does (``nri``, ``springs5``). A :class:`~pathlib.Path` object is always a path."""
    if isinstance(ref, Path):
        return True
    return "/" in ref or os.sep in ref or Path(ref).suffix in YAML_SUFFIXES


def find_config(kind: str, ref: Any, *, beside: Path | None = None) -> Path:
    """The file a name or path refers to: the one rule for specs, presets and their bases.

    - A path (:func:`is_path`) is that file; a relative one is read from the folder of the
      file that names it (``beside``; the working folder on the command line).
    - A name is a file ``NAME.yaml`` beside the file that names it, else the shipped one.
      On the command line (no ``beside``) a name is only ever a shipped file, so a file or
      folder in the working folder never shadows a shipped name.
    """
    what = CONFIG_KINDS[kind][1]
    if isinstance(ref, bool) or not isinstance(ref, (str, Path)) or not str(ref).strip():
        raise ValueError(
            f"a {what} must be given by name or path (a string), got {ref!r}"
            + (f" in {beside}" if beside is not None else "")
        )
    if is_path(ref):
        path = Path(ref).expanduser()
        if beside is not None and not path.is_absolute():
            path = beside / path
        if path.is_dir():
            raise ValueError(f"{what} {path} is a folder; expected a YAML file")
        if not path.exists():
            raise FileNotFoundError(f"{what} file {path} does not exist")
        return path
    if beside is not None and (beside / f"{ref}.yaml").is_file():
        return beside / f"{ref}.yaml"
    shipped = spec_folder(kind) / f"{ref}.yaml"
    if shipped.is_file():
        return shipped
    local = Path(f"{ref}.yaml")
    hint = f"; for the file {local} here, write ./{local}" if local.is_file() else ""
    raise FileNotFoundError(
        f"unknown {what} {ref!r}; valid {what}s: {', '.join(spec_names(kind))} (or a path to a "
        f"YAML file: a path has a .yaml suffix or a slash){hint}"
    )


def load_yaml(path: str | Path | Mapping[str, Any] | None) -> dict[str, Any]:
    """A spec from a YAML file (or a dict, or nothing)."""
    if path is None:
        return {}
    if isinstance(path, Mapping):
        return copy.deepcopy(dict(path))
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"spec file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ValueError(f"{path} is not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a mapping of settings, got {type(data).__name__}")
    return _number(data)


def load_chain(
    kind: str, ref: str | Path | Mapping[str, Any], *, beside: Path | None = None
) -> list[tuple[Path | None, dict[str, Any]]]:
    """A spec or preset and its ``base:`` chain, base first: ``[(file, settings without
    base)]`` (file None for a mapping given in code). Every reference in the chain is found
    by :func:`find_config`, relative to the file that names it. A chain that returns to a
    file is an error."""
    chain: list[tuple[Path | None, dict[str, Any]]] = []
    seen: list[Path] = []
    while True:
        if isinstance(ref, Mapping):
            path, data = None, copy.deepcopy(dict(ref))
        else:
            path = find_config(kind, ref, beside=beside)
            if path.resolve() in seen:
                what = CONFIG_KINDS[kind][1]
                raise ValueError(
                    f"{what} {path} names itself as a base (directly or through others)"
                )
            seen.append(path.resolve())
            data = load_yaml(path)
        chain.append((path, data))
        ref = data.pop("base", None)
        if ref is None:
            return chain[::-1]
        beside = path.parent if path is not None else None


def load_spec(kind: str, spec: str | Path | Mapping[str, Any] | None) -> dict[str, Any]:
    """A model or guide spec (a mapping, a path or a shipped name: :func:`find_config`) with
    its ``base`` chain merged in: a spec may name a base (``base: nri``, a name or a path,
    found beside it first) and list only what it changes."""
    if spec is None:
        return {}
    merged: dict[str, Any] = {}
    for _, data in load_chain(kind, spec):
        merged = merge(merged, data)
    return merged


def merge(defaults: Mapping[str, Any], spec: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(dict(defaults))
    for key, value in spec.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            # A component section whose name changes starts from its new defaults.
            if "name" in value and value["name"] != out[key].get("name"):
                out[key] = copy.deepcopy(dict(value))
            else:
                out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _check_component(section: str, spec: Mapping[str, Any], registry: dict[str, type],
                     extra: Iterable[str] = ()) -> None:  # fmt: skip
    name = spec.get("name")
    if name not in registry:
        raise ValueError(
            f"unknown {section}.name {name!r}; valid names: {', '.join(sorted(registry))}"
        )
    valid = settings_of(registry[name]) | {"name", *extra}
    unknown = sorted(set(spec) - valid)
    if unknown:
        raise ValueError(
            f"unknown key(s) {', '.join(f'{section}.{k}' for k in unknown)} for {section} "
            f"{name!r}; valid keys: {', '.join(sorted(valid))}"
        )
    check_settings(section, registry[name], spec)


def _check_keys(where: str, spec: Mapping[str, Any], defaults: Mapping[str, Any]) -> None:
    unknown = sorted(set(spec) - set(defaults))
    if unknown:
        raise ValueError(
            f"unknown key(s) {', '.join(unknown)} in the {where}; "
            f"valid keys: {', '.join(sorted(defaults))}"
        )


def resolve_model_spec(spec: Mapping[str, Any]) -> dict[str, Any]:
    """Model spec merged with defaults and checked: unknown keys and names are errors."""
    _check_keys("model spec", spec, MODEL_DEFAULTS)
    resolved = merge(MODEL_DEFAULTS, spec)
    _check_component("decoder", resolved["decoder"], DECODERS, DECODER_SCHEME_KEYS)
    _check_keys("model spec's likelihood", resolved["likelihood"], MODEL_DEFAULTS["likelihood"])
    k = resolved["edge_types"]
    if not isinstance(k, int) or k < 2:
        raise ValueError(f"edge_types must be an integer >= 2, got {k!r}")
    variance = resolved["likelihood"]["variance"]
    if isinstance(variance, bool) or not isinstance(variance, (int, float)) or not variance > 0:
        raise ValueError(f"likelihood.variance must be a positive number, got {variance!r}")
    for key in ("learn_variance", "per_feature"):
        if not isinstance(resolved["likelihood"][key], bool):
            raise ValueError(
                f"likelihood.{key} must be true or false, got {resolved['likelihood'][key]!r}"
            )
    floor = resolved["likelihood"]["min_variance"]
    if isinstance(floor, bool) or not isinstance(floor, (int, float)) or not floor > 0:
        raise ValueError(
            f"likelihood.min_variance (the floor of a learned variance) must be a positive "
            f"number, such as 1e-6, got {floor!r}"
        )
    if resolved["likelihood"]["learn_variance"] and not variance > floor:
        raise ValueError(
            f"likelihood.variance ({variance!r}), where a learned variance starts, must lie "
            f"above likelihood.min_variance ({floor!r}), its floor: raise the variance or "
            f"lower the floor"
        )
    steps = resolved["decoder"].get("prediction_steps", 10)
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"decoder.prediction_steps must be an integer >= 1, got {steps!r}")
    prior = build_prior(resolved["prior"], k)  # checks the prior's name and settings
    structure = GraphStructure(resolved["graph"], k)  # checks the structure's settings
    check_dynamic(prior, structure, DECODERS[resolved["decoder"]["name"]])
    return resolved


def _positive(value: Any) -> bool:
    """Whether ``value`` is a positive finite number (not a bool)."""
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    return number and 0 < value < float("inf")


def _whole(value: Any, least: int) -> bool:
    """Whether ``value`` is an integer (not a bool) of at least ``least``."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= least


def resolve_guide_spec(spec: Mapping[str, Any]) -> dict[str, Any]:
    """Guide spec merged with defaults and checked."""
    _check_keys("guide spec", spec, GUIDE_DEFAULTS)
    resolved = merge(GUIDE_DEFAULTS, spec)
    _check_component("encoder", resolved["encoder"], ENCODERS)
    if not _positive(resolved["temperature"]):
        raise ValueError(f"temperature must be a positive number, got {resolved['temperature']!r}")
    if not isinstance(resolved["hard"], bool):
        raise ValueError(f"hard must be true or false, got {resolved['hard']!r}")
    context = resolved["window_context"]
    if context is not None and not _whole(context, 0):
        raise ValueError(f"window_context must be an integer >= 0, got {context!r}")
    recurrent = resolved["recurrent"]
    if recurrent is not None:
        if not isinstance(recurrent, Mapping) or set(recurrent) - {"hidden"}:
            raise ValueError(
                f"recurrent must be null or a mapping {{hidden: H}}, got {recurrent!r}"
            )
        hidden = recurrent.get("hidden", 64)
        if not _whole(hidden, 1):
            raise ValueError(f"recurrent.hidden must be an integer >= 1, got {hidden!r}")
        resolved["recurrent"] = {"hidden": hidden}
    return resolved


def resolve_train_config(spec: Mapping[str, Any]) -> TrainConfig:
    valid = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(spec) - valid)
    if unknown:
        raise ValueError(
            f"unknown training setting(s) {', '.join(unknown)}; valid: {', '.join(sorted(valid))}"
        )
    return TrainConfig(**spec)


def parse_override(text: str) -> tuple[list[str], Any]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ValueError(f"--set expects key=value, got {text!r}")
    try:
        parsed = yaml.safe_load(value) if value.strip() else None
    except yaml.YAMLError:
        parsed = value
    return key.strip().split("."), _number(parsed)


def _number(value: Any) -> Any:
    """YAML 1.1 reads 1e-3 (no dot) as a string; a number is meant, here and in lists."""
    if isinstance(value, str):
        try:
            return float(value) if value.strip().lower() not in ("nan", "inf", "-inf") else value
        except ValueError:
            return value
    if isinstance(value, list):
        return [_number(v) for v in value]
    if isinstance(value, dict):
        return {k: _number(v) for k, v in value.items()}
    return value


def apply_overrides(
    model: dict[str, Any],
    guide: dict[str, Any],
    train: dict[str, Any],
    overrides: Iterable[str],
) -> None:
    """Apply ``key=value`` overrides in place (before resolving).

    ``guide.``- and ``train.``-prefixed keys go to the guide spec and the training
    settings; anything else addresses the model spec. A key that exists nowhere is an
    error that names the valid keys at that level (a prior's own settings are checked
    when the prior is built, since they depend on its name).

    The result does not depend on the order of the overrides: a component's ``name``
    (``prior.name=sparse``) is applied first, so that its section starts from the new
    component's settings, and the other keys after it. Of two values for one key, the later
    one wins.
    """
    parsed = [(text, *parse_override(text)) for text in overrides]
    renames = [p for p in parsed if _names_component(p[1])]
    for text, path, value in [*renames, *(p for p in parsed if not _names_component(p[1]))]:
        if path[0] == "guide":
            target, defaults, path = guide, GUIDE_DEFAULTS, path[1:]
        elif path[0] == "train":
            target, path = train, path[1:]
            defaults = {f.name: None for f in fields(TrainConfig)}
        elif path[0] == "model":
            target, defaults, path = model, MODEL_DEFAULTS, path[1:]
        else:
            target, defaults = model, MODEL_DEFAULTS
        if not path:
            raise ValueError(f"--set {text!r} names no key")
        section = target.get(path[0])
        renamed = path[1:] == ["name"] and path[0] in ("prior", "decoder", "encoder")
        if renamed and isinstance(section, dict) and section.get("name") != value:
            # Another component: its settings start from its own defaults.
            target[path[0]] = {}
        _set_path(target, defaults, path, value, text)


def _names_component(path: list[str]) -> bool:
    """Whether an override's key is a component's name (``prior.name``, ``guide.encoder.name``)."""
    if path[0] in ("model", "guide"):
        path = path[1:]
    return len(path) == 2 and path[0] in ("prior", "decoder", "encoder") and path[1] == "name"


def _set_path(target: dict, defaults: Mapping, path: list[str], value: Any, text: str) -> None:
    head, rest = path[0], path[1:]
    open_section = defaults is None  # component sections take the component's own keys
    if not open_section and head not in defaults and head not in target:
        raise ValueError(
            f"--set {text!r}: no key {head!r} here; valid keys: {', '.join(sorted(defaults))}"
        )
    if not rest:
        target[head] = value
        return
    child = target.get(head)
    if child is None:
        child = target[head] = {}
    if not isinstance(child, dict):
        raise ValueError(f"--set {text!r}: {head!r} is a value, not a section")
    child_defaults = defaults.get(head) if isinstance(defaults, Mapping) else None
    _set_path(child, None if head in ("prior", "decoder", "encoder") else child_defaults,
              rest, value, text)  # fmt: skip
