"""Encoders and decoders by name, and the facts each class declares about itself.

A component registers beside its class, as priors do, and declares on the class what the
rest of the library needs to know, so that the guide, evaluation and compilation ask the
class instead of checking its type or name::

    @register_encoder("mine")
    class MyEncoder(Encoder):
        min_frames = 3                      # fewest frames it can read
        def __init__(self, num_features, hidden=64, num_edge_types=2): ...
        def edge_features(self, x, graph): ...   # x: [B, N, T, D] -> [B, E, H]
        def output(self, features): ...          # [B, E, H] -> logits [B, E, K]

and ``encoder: {name: mine, hidden: 32}`` in a guide spec (import the module that defines
it first; ``nri-pyro ablate --import`` does so in every run). Constructor arguments named
``num_features``, ``num_edge_types`` (and ``num_frames`` for an encoder that declares
``fixed_frames``) come from the data; the others are the spec's settings, checked against
the signature.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Collection, Mapping
from typing import Any, ClassVar, TypeVar

from torch import Tensor, nn

from nri_pyro.nn.graph import Graph

# Arguments the library fills in from the data, never from a spec.
FROM_DATA = frozenset({"num_features", "num_frames", "num_edge_types"})


class Encoder(nn.Module):
    """Base class of the guide's encoders: trajectories -> per-edge features -> logits.

    ``forward(x: [B, N, T, D], graph) -> logits [B, E, K]`` is ``output(edge_features(x))``;
    a recurrent guide over windows reads the features and ``feature_size`` too.
    """

    name: ClassVar[str] = ""
    # The fewest frames it can read.
    min_frames: ClassVar[int] = 1
    # It reads exactly the frames it was built for (its constructor takes num_frames).
    fixed_frames: ClassVar[bool] = False
    # torch.compile may wrap its forward (nri_pyro.nn.compile_modules).
    compilable: ClassVar[bool] = True

    @property
    def feature_size(self) -> int:
        """H, the width of :meth:`edge_features`."""
        raise NotImplementedError

    def edge_features(self, x: Tensor, graph: Graph) -> Tensor:
        """x: [B, N, T, D] -> the edge features [B, E, H] that the logits are linear in."""
        raise NotImplementedError

    def output(self, features: Tensor) -> Tensor:
        """Edge features [..., E, H] -> logits [..., E, K]."""
        raise NotImplementedError

    def forward(self, x: Tensor, graph: Graph) -> Tensor:
        """x: [B, N, T, D] -> logits [B, E, K]."""
        return self.output(self.edge_features(x, graph))

    def bytes_per_edge(self, num_frames: int) -> int:
        """The widest activations one trajectory's edge keeps alive at once in a forward
        pass over ``num_frames`` frames, in float32 bytes (evaluation sizes its batches by
        it): four H-wide vectors unless a class says otherwise."""
        return 4 * 4 * self.feature_size


class Decoder(nn.Module):
    """Base class of the model's decoders: ``forward(x, edges, graph, prediction_steps)``
    gives the multi-step predictions of x[:, :, 1:]; ``rollout`` its own predictions."""

    name: ClassVar[str] = ""
    # Takes edges that change from step to step, [B, T-1, E, K] (dynamic graphs).
    per_step_edges: ClassVar[bool] = False
    # Its state is the last frame alone: a rollout starts from x_prefix[:, :, -1], [B, N, D]
    # (else from the whole prefix, [B, N, T0, D]).
    markovian: ClassVar[bool] = False
    # torch.compile may wrap its forward (nri_pyro.nn.compile_modules).
    compilable: ClassVar[bool] = True

    def bytes_per_edge(self, num_frames: int, prediction_steps: int) -> int:
        """The widest activations one trajectory's edge keeps alive at once in a forward
        pass over ``num_frames`` frames, in float32 bytes (evaluation sizes its batches by
        it)."""
        raise NotImplementedError


ENCODERS: dict[str, type[Encoder]] = {}
DECODERS: dict[str, type[Decoder]] = {}

C = TypeVar("C", bound=type)


def _add(registry: dict[str, Any], base: type, name: str) -> Callable[[C], C]:
    def add(cls: C) -> C:
        if not (isinstance(cls, type) and issubclass(cls, base)):
            raise TypeError(f"{cls!r} must subclass {base.__name__} to be registered")
        cls.name = name
        registry[name] = cls
        return cls

    return add


def register_encoder(name: str) -> Callable[[C], C]:
    """Class decorator: make an :class:`Encoder` available under ``name`` in guide specs."""
    return _add(ENCODERS, Encoder, name)


def register_decoder(name: str) -> Callable[[C], C]:
    """Class decorator: make a :class:`Decoder` available under ``name`` in model specs."""
    return _add(DECODERS, Decoder, name)


def settings_of(cls: type) -> set[str]:
    """The settings a component class takes from a spec: its constructor's arguments that
    do not come from the data."""
    return set(inspect.signature(cls.__init__).parameters) - FROM_DATA - {"self"}


# Ranges of settings by name, beyond their type; every whole-number setting of a component
# is a width or a count, at least 1.
SETTING_RANGES = {"dropout": (0.0, 1.0)}  # [low, high)


def check_settings(section: str, cls: type, settings: Mapping[str, Any]) -> None:
    """Clear errors for settings of a component class whose type or range is wrong, read
    off its constructor's annotations: ``int`` a whole number >= 1, ``float`` a finite
    number (``dropout`` in [0, 1)), ``bool`` true or false; ``| None`` also allows null."""
    parameters = inspect.signature(cls.__init__).parameters
    for key, value in settings.items():
        if key not in parameters or key in FROM_DATA:
            continue
        kind = str(parameters[key].annotation).replace(" ", "")
        if value is None and kind.endswith("|None"):
            continue
        base = kind.removesuffix("|None")
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        problem = None
        whole = isinstance(value, int) and not isinstance(value, bool)
        if base == "int" and not (whole and value >= 1):
            problem = "a whole number >= 1"
        elif base == "float" and not (number and math.isfinite(value)):
            problem = "a number"
        elif base == "bool" and not isinstance(value, bool):
            problem = "true or false"
        low, high = SETTING_RANGES.get(key, (None, None))
        if problem is None and low is not None and not low <= value < high:
            problem = f"a number in [{low:g}, {high:g})"
        if problem is not None:
            none = " or null" if kind.endswith("|None") else ""
            raise ValueError(f"{section}.{key} must be {problem}{none}, got {value!r}")


def build_encoder(
    settings: Mapping[str, Any], *, num_frames: int, num_features: int, num_edge_types: int
) -> Encoder:
    """The encoder a guide spec's ``encoder`` section names, with its settings."""
    cls = ENCODERS[settings["name"]]
    kwargs = {k: v for k, v in settings.items() if k != "name"}
    if cls.fixed_frames:
        kwargs["num_frames"] = num_frames
    return cls(num_features=num_features, num_edge_types=num_edge_types, **kwargs)


def build_decoder(
    settings: Mapping[str, Any],
    *,
    num_features: int,
    num_edge_types: int,
    exclude: Collection[str] = (),
) -> Decoder:
    """The decoder a model spec's ``decoder`` section names, without the keys in
    ``exclude`` (those the model reads itself, such as prediction_steps)."""
    cls = DECODERS[settings["name"]]
    kwargs = {k: v for k, v in settings.items() if k != "name" and k not in exclude}
    return cls(num_features=num_features, num_edge_types=num_edge_types, **kwargs)
