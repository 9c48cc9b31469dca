"""A study's runs: the variants it compares (and the options that name them) and its seeds.

``--vary KEY=V1,V2`` (:func:`parse_vary`) gives values to combine, ``--variant "LABEL:
key=value ..."`` (:func:`parse_variant`) an explicit set of overrides; :func:`variants`
makes every combination, each a :class:`Variant` with its label, its folder name (``slug``),
its spec overrides and its data settings (``data.*``, :mod:`nri_pyro.study_data`); every
variant runs with every seed (:func:`check_seeds`). The study itself is
:class:`nri_pyro.ablate.Study`.
"""

from __future__ import annotations

import itertools
import json
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from nri_pyro.specs import parse_override
from nri_pyro.study_data import is_data_key


@dataclass
class Variant:
    """One run configuration of a study: ``settings`` {key: value}, the varied values of one
    combination; for an explicit variant (``--variant``) also its ``name`` and its own
    overrides ``fixed`` {key: value}, applied with them."""

    settings: dict[str, Any]
    name: str | None = None
    fixed: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        parts = [] if self.name is None else [self.name]
        return ", ".join(parts + [f"{k}={show_value(v)}" for k, v in self.settings.items()])

    @property
    def all_settings(self) -> dict[str, Any]:
        """Every override of this variant: its own, then the varied values."""
        return {**self.fixed, **self.settings}

    @property
    def overrides(self) -> list[str]:
        """The spec overrides (``--set`` form); data settings (``data.*``) are not among
        them: they choose the data the variant trains on (:attr:`data_settings`)."""
        return [f"{k}={json.dumps(v)}" for k, v in self.all_settings.items() if not is_data_key(k)]

    @property
    def data_settings(self) -> dict[str, Any]:
        """The data settings of this variant, {"data.train": 50, ...} (:mod:`nri_pyro.
        study_data`); empty where it trains on the study's data as they are."""
        return {k: v for k, v in self.all_settings.items() if is_data_key(k)}

    @property
    def spec_label(self) -> str:
        """The label without the data settings: what one line of a figure against a data
        setting stands for (one per prior); "base" for a variant of data settings alone."""
        parts = [] if self.name is None else [self.name]
        parts += [f"{k}={show_value(v)}" for k, v in self.settings.items() if not is_data_key(k)]
        return ", ".join(parts) or "base"

    @property
    def slug(self) -> str:
        parts = [] if self.name is None else [self.name]
        parts += [f"{k}-{show_value(v)}" for k, v in self.settings.items()]
        text = "_".join(parts) or "base"
        return "".join(c if c.isalnum() or c in "-_." else "-" for c in text)


def show_value(value: Any) -> str:
    """How a setting's value is written in labels, folder names and table cells."""
    return json.dumps(value) if isinstance(value, (list, dict)) else str(value)


def parse_variant(text: str) -> Variant:
    """``"LABEL: key=value key=value"`` -> an explicit variant: its label and overrides.

    The overrides are split like a shell line (quote a value with spaces:
    ``graph.dynamic='{window: 7}'``) and parsed as ``--set`` values are (YAML). A variant
    with no overrides (``"static:"``) is the specs as given."""
    label, sep, body = text.partition(":")
    label = label.strip()
    if not sep or not label or "=" in label:
        raise ValueError(
            f"--variant expects 'LABEL: key=value key=value ...' (a label, a colon, then "
            f"overrides), got {text!r}"
        )
    try:
        items = shlex.split(body)
    except ValueError as err:
        raise ValueError(f"--variant {label!r}: {err} in {body.strip()!r}") from None
    fixed: dict[str, Any] = {}
    for item in items:
        key, eq, _ = item.partition("=")
        if not eq or not key.strip():
            raise ValueError(f"--variant {label!r}: expected key=value, got {item!r}")
        path, value = parse_override(item)
        key = ".".join(path)
        if key in fixed:
            raise ValueError(f"--variant {label!r} sets {key!r} twice")
        fixed[key] = value
    return Variant({}, name=label, fixed=fixed)


def parse_vary(texts: Sequence[str]) -> list[tuple[str, list[Any]]]:
    """``key=v1,v2,...`` -> (key, [v1, v2, ...]); values are YAML, commas inside brackets
    belong to one value (``prior.probs=[0.9,0.1],[0.5,0.5]``)."""
    out: list[tuple[str, list[Any]]] = []
    for text in texts:
        key, sep, values = text.partition("=")
        if not sep or not key.strip() or not values.strip():
            raise ValueError(f"--vary expects key=value1,value2,..., got {text!r}")
        parts = _split_top_level(values)
        parsed = [parse_override(f"{key}={part}")[1] for part in parts]
        if len(set(map(json.dumps, parsed))) != len(parsed):
            raise ValueError(f"--vary {text!r} repeats a value")
        if any(key.strip() == k for k, _ in out):
            raise ValueError(f"--vary names {key.strip()!r} twice")
        out.append((key.strip(), parsed))
    return out


def _split_top_level(text: str) -> list[str]:
    parts, depth, current = [], 0, ""
    for char in text:
        depth += char in "[{"
        depth -= char in "]}"
        if char == "," and depth == 0:
            parts.append(current.strip())
            current = ""
        else:
            current += char
    parts.append(current.strip())
    if any(not p for p in parts):
        raise ValueError(f"--vary has an empty value in {text!r}")
    return parts


def variants(
    vary: Sequence[tuple[str, list[Any]]], explicit: Sequence[Variant] = ()
) -> list[Variant]:
    """Every combination of the varied values, in the order given; with ``explicit``
    variants, each of them with every combination (a key may not be in both)."""
    keys = [k for k, _ in vary]
    combos = [
        dict(zip(keys, combo, strict=True))
        for combo in itertools.product(*(values for _, values in vary))
    ]
    if not explicit:
        return [Variant(settings) for settings in combos]
    labels = [v.name for v in explicit]
    for name in labels:
        if labels.count(name) > 1:
            raise ValueError(f"two variants are labelled {name!r}; give each its own label")
    for variant in explicit:
        both = sorted(set(variant.fixed) & set(keys))
        if both:
            raise ValueError(
                f"--variant {variant.name!r} sets {', '.join(both)}, which --vary also varies: "
                "set a key in one place"
            )
    return [
        Variant(dict(settings), name=v.name, fixed=dict(v.fixed))
        for v in explicit
        for settings in combos
    ]


def check_seeds(seeds: Any) -> list[int]:
    """The seeds of a study: ``seeds`` seeds from 0 (a count), or the list given (distinct
    whole numbers >= 0: a seed given twice would count one run twice in the table)."""
    if isinstance(seeds, int) and not isinstance(seeds, bool):
        if seeds < 1:
            raise ValueError(f"seeds must be at least 1 (a count of seeds), got {seeds}")
        return list(range(seeds))
    if isinstance(seeds, (str, bytes)) or not isinstance(seeds, Sequence):
        raise ValueError(
            f"seeds must be a count (a whole number >= 1) or a list of seeds such as [0, 1], "
            f"got {seeds!r}"
        )
    bad = [s for s in seeds if not isinstance(s, int) or isinstance(s, bool) or s < 0]
    if not seeds or bad:
        raise ValueError(
            f"seeds must be a non-empty list of whole numbers >= 0, got {list(seeds)!r}"
        )
    repeated = sorted({s for s in seeds if list(seeds).count(s) > 1})
    if repeated:
        raise ValueError(
            f"seeds {list(seeds)} name seed(s) {', '.join(map(str, repeated))} more than "
            "once: each would count one run twice in the table; give distinct seeds"
        )
    return list(seeds)
