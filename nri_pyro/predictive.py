"""Posterior predictive rollouts: future trajectories with uncertainty from the edge posterior.

For each trajectory of an observed prefix, ``pyro.infer.Predictive`` samples the guide S
times and runs the model on each draw; the model program returns the edge types its decoder
used, [B, E, K] (the latent slots of a symmetric or shared graph mapped to ordered pairs,
known edges filled in), which ``return_sites=("_RETURN",)`` collects as [S, B, E, K]. Every
draw of the edges is then rolled out by the decoder (``model.rollout``), which gives the
mean of the next frames, and observation noise of the model's sigma can be added on top.
With a fitted :class:`NRI` the data are normalised with the run's statistics on the way in
and the samples are returned in the data's own units.

    samples = posterior_predictive(nri, test, steps=20, num_samples=100)  # [S, B, N, 20, D]
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any, NamedTuple

import torch
from pyro.infer import Predictive
from torch import Tensor, nn

from nri_pyro.api import NRI
from nri_pyro.data.dataset import Normalizer, TrajectoryDataset
from nri_pyro.nn.modes import eval_mode

RETURN_SITE = "_RETURN"  # Pyro's name for a program's return value


class FittedInputs(NamedTuple):
    """A model and guide with the data prepared for them.

    x: [B, N, T, D] as the model reads it (normalised for a fitted NRI), on the CPU or where
    the data were; edges: [B, E] true edge types or None; normalizer: the run's statistics
    (None for a bare model and guide, whose data are taken as already normalised);
    device: where the model and guide live.
    """

    model: Any
    guide: Any
    x: Tensor
    edges: Tensor | None
    normalizer: Normalizer | None
    device: torch.device


def fitted_inputs(fitted: NRI | tuple[Any, Any], data: TrajectoryDataset | Tensor) -> FittedInputs:
    """The model, guide and prepared data of a fitted NRI or of a ``(model, guide)`` pair.

    With an NRI, ``data`` are in the data's own units (a dataset or a tensor [B, N, T, D]) and
    are checked against the run (objects, features) and normalised with its statistics. With
    a pair, ``data`` are used as they are (normalise them as the model was trained).
    """
    if isinstance(fitted, NRI):
        if getattr(fitted, "guide", None) is None or getattr(fitted, "model", None) is None:
            raise ValueError(
                "this NRI has no guide: it has not been fitted or loaded, so there is no "
                "posterior to sample; call fit() or NRI.load(run) first"
            )
        x, edges = fitted._inputs(data)
        return FittedInputs(fitted.model, fitted.guide, x, edges, fitted.normalizer, fitted.device)
    if not isinstance(fitted, tuple) or len(fitted) != 2:
        raise TypeError(
            f"expected a fitted NRI or a (model, guide) pair, got {type(fitted).__name__}"
        )
    model, guide = fitted
    if guide is None:
        raise ValueError(
            "no guide was given: posterior samples need the guide (the encoder) of a run"
        )
    if model is None:
        raise ValueError("no model was given: a (model, guide) pair needs both")
    if isinstance(data, TrajectoryDataset):
        edges = data.edges if data.adjacency is not None else None
        x = data.trajectories
    elif isinstance(data, Tensor):
        x, edges = data, None
    else:
        raise TypeError(
            f"data: expected a TrajectoryDataset or a tensor [B, N, T, D], got "
            f"{type(data).__name__}"
        )
    if x.dim() != 4:
        raise ValueError(
            f"data: expected trajectories [B, N, T, D] (trajectories, objects, frames, "
            f"features), got shape {tuple(x.shape)}"
        )
    return FittedInputs(model, guide, x, edges, None, _device_of(model, guide, default=x.device))


@torch.no_grad()
def posterior_predictive(
    fitted: NRI | tuple[Any, Any],
    data: TrajectoryDataset | Tensor,
    steps: int = 20,
    num_samples: int = 100,
    *,
    prefix_frames: int | None = None,
    hard: bool = True,
    noise: bool = False,
    batch_size: int = 256,
    seed: int | None = 0,
) -> Tensor:
    """S samples of the ``steps`` frames after an observed prefix: [S, B, N, steps, D].

    ``data`` [B, N, T, D] is the observed prefix (its first ``prefix_frames`` frames, default
    all of them): the encoder reads its first frames as in training, and the decoder rolls
    out from its last frame. Each of the ``num_samples`` draws samples the edges from the
    guide (``pyro.infer.Predictive`` over the guide and the model, see the module
    docstring); with ``hard`` (the default) a draw is the one-hot argmax of the guide's
    relaxed sample, which is an exact draw of the categorical edge posterior, else the
    relaxed sample itself. The decoder's rollout is the mean given the edges; ``noise`` adds
    the model's observation noise (Normal(0, sigma) per frame, not fed back into the
    dynamics). A fitted NRI returns the samples in the data's own units (float64); a
    ``(model, guide)`` pair in the units given.
    The result lies on the device of ``data``; the work is done on the model's device.
    ``seed`` fixes the draws without touching the global random state (None: use it).
    """
    if num_samples < 1:
        raise ValueError(f"num_samples: expected at least 1 posterior draw, got {num_samples}")
    if steps < 1:
        raise ValueError(f"steps: expected at least 1 frame to predict, got {steps}")
    if batch_size < 1:
        raise ValueError(f"batch_size: expected a positive integer, got {batch_size}")
    model, guide, x, _, normalizer, device = fitted_inputs(fitted, data)
    out_device = data.trajectories.device if isinstance(data, TrajectoryDataset) else data.device
    if prefix_frames is not None:
        if not 2 <= prefix_frames <= x.shape[2]:
            raise ValueError(
                f"prefix_frames: expected 2..{x.shape[2]} (the frames of the data), "
                f"got {prefix_frames}"
            )
        x = x[:, :, :prefix_frames]
    predictive = Predictive(
        model, guide=guide, num_samples=num_samples, return_sites=(RETURN_SITE,)
    )
    chunks = []
    with eval_mode(model, guide), seeded(seed, device):
        for start in range(0, x.shape[0], batch_size):
            xb = x[start : start + batch_size].to(device)
            z = decoded_edges(  # [S, b, (W,) E, K]
                predictive(xb)[RETURN_SITE], xb, num_samples, dynamic=model.dynamic
            )
            if hard:
                z = nn.functional.one_hot(z.argmax(-1), z.shape[-1]).to(xb.dtype)
            b = xb.shape[0]
            prefix = xb.unsqueeze(0).expand(num_samples, *xb.shape).flatten(0, 1)
            mean = model.rollout(prefix, z.flatten(0, 1), steps)  # [S b, N, steps, D]
            if noise:
                mean = mean + model.sigma.to(mean.dtype) * torch.randn_like(mean)
            chunks.append(mean.unflatten(0, (num_samples, b)))
    samples = torch.cat(chunks, dim=1)
    if normalizer is not None:
        samples = normalizer.invert(samples.double())
    return samples.to(out_device)


def decoded_edges(
    z: Any, x: Tensor, num_samples: int | None = None, *, dynamic: bool = False
) -> Tensor:
    """Checks that a model returned the edges it decoded with: [(S,) B, E, K] for x [B, N, ...]
    ([(S,) B, W, E, K], one graph per window, for a ``dynamic`` model)."""
    b, n = x.shape[:2]
    lead = (b,) if num_samples is None else (num_samples, b)
    windows = 1 if dynamic else 0
    if (
        not isinstance(z, Tensor)
        or z.dim() != len(lead) + 2 + windows
        or z.shape[: len(lead)] != lead
        or z.shape[-2] != n * (n - 1)
    ):
        got = tuple(z.shape) if isinstance(z, Tensor) else type(z).__name__
        shape = "[B, W, E, K]" if dynamic else "[B, E, K]"
        raise ValueError(
            f"the model program must return the edge types its decoder used, {shape} with "
            f"B = {b}, E = {n * (n - 1)} for these data, got {got}"
        )
    return z


@contextlib.contextmanager
def seeded(seed: int | None, device: torch.device) -> Iterator[None]:
    """Draws from a fixed seed without touching the global random state; None: no-op."""
    if seed is None:
        yield
        return
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def _device_of(*modules: Any, default: torch.device) -> torch.device:
    for m in modules:
        if isinstance(m, nn.Module):
            for t in (*m.parameters(), *m.buffers()):
                return t.device
    return default
