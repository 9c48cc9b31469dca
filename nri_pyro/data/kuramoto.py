"""Kuramoto oscillators with random (directed by default) coupling, batched over simulations.

d phi_i/dt = omega_i + c * sum_j k_ij sin(phi_j - phi_i), with i the receiver and j the
sender, as in nri-facts.md. The reference generator integrates with an adaptive
Dormand-Prince solver on a fine grid (dt = 0.01); here a fixed-step classical Runge-Kutta
(4th order) on the same grid advances every simulation at once and matches the adaptive
solver to well below the features' resolution (see tests/test_kuramoto.py).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class KuramotoParams:
    """Kuramoto: phases, intrinsic frequencies U[freq_min, freq_max), 0/1 couplings."""

    coupling: float = 1.0
    edge_prob: float = 0.5
    directed: bool = True
    freq_min: float = 1.0
    freq_max: float = 10.0
    dt: float = 0.01
    sample_freq: int = 10
    window_frames: int = 100
    substeps: int = 1
    noise: float = 0.0


def kuramoto_initial(
    num_sims: int, num_objects: int, params: KuramotoParams, generator: torch.Generator
) -> dict[str, Tensor]:
    """Couplings k_ij ~ Bernoulli(edge_prob) (receiver i, sender j, zero diagonal; mirrored
    from the lower triangle when undirected), omega ~ U[freq_min, freq_max), phi(0) ~ U[0, 2 pi).

    adjacency: [B, N, N] long; omega, phase: [B, N] float64, on the CPU.
    """
    coupled = torch.rand(num_sims, num_objects, num_objects, generator=generator) < params.edge_prob
    if params.directed:
        coupled = coupled & ~torch.eye(num_objects, dtype=torch.bool)
    else:
        lower = torch.tril(coupled, diagonal=-1)
        coupled = lower | lower.transpose(1, 2)
    spread = params.freq_max - params.freq_min
    omega = torch.rand(num_sims, num_objects, generator=generator, dtype=torch.float64)
    phase = torch.rand(num_sims, num_objects, generator=generator, dtype=torch.float64)
    return {
        "adjacency": coupled.long(),
        "omega": omega * spread + params.freq_min,
        "phase": phase * 2 * math.pi,
    }


def _min_max(x: Tensor, dim: int) -> Tensor:
    """Scale to [-1, 1] along ``dim`` (a constant series maps to -1, as 0/0 is avoided)."""
    low = x.amin(dim, keepdim=True)
    high = x.amax(dim, keepdim=True)
    return 2 * (x - low) / (high - low).clamp_min(torch.finfo(x.dtype).tiny) - 1


def kuramoto_run(
    init: dict[str, Tensor],
    num_frames: int,
    params: KuramotoParams,
    *,
    device: torch.device,
    dtype: torch.dtype = torch.float64,
    progress: Callable[[int], None] | None = None,
) -> Tensor:
    """Integrate and build the reference's four features. Returns [B, N, T, 4].

    Features in order: d phi/dt (forward difference over the fine step, min-max scaled per
    simulation and oscillator, 0 for an oscillator nobody drives), sin(phi), the unwrapped
    phase (min-max scaled), omega mapped from [freq_min, freq_max] to [-1, 1]. Min and max
    are taken over ``max(window_frames, num_frames)`` frames, then the series is cut.
    """
    window = max(params.window_frames, num_frames)
    coupling = params.coupling * init["adjacency"].to(device=device, dtype=dtype)
    coupling = coupling.permute(1, 2, 0).contiguous()  # [N (receiver), N (sender), B]
    omega = init["omega"].to(device=device, dtype=dtype).T.contiguous()  # [N, B]
    phase = init["phase"].to(device=device, dtype=dtype).T.contiguous()

    def velocity(phi: Tensor) -> Tensor:
        # sum_j k_ij sin(phi_j - phi_i) = cos(phi_i) (K sin phi)_i - sin(phi_i) (K cos phi)_i
        sin, cos = phi.sin(), phi.cos()
        drive_sin = (coupling * sin.unsqueeze(0)).sum(1)
        drive_cos = (coupling * cos.unsqueeze(0)).sum(1)
        return omega + cos * drive_sin - sin * drive_cos

    h = params.dt / params.substeps

    def rk4(phi: Tensor) -> Tensor:
        for _ in range(params.substeps):
            k1 = velocity(phi)
            k2 = velocity(phi + 0.5 * h * k1)
            k3 = velocity(phi + 0.5 * h * k2)
            k4 = velocity(phi + h * k3)
            phi = phi + (h / 6) * (k1 + 2 * k2 + 2 * k3 + k4)
        return phi

    # Phases on the fine grid at every kept frame and one fine step after it.
    frames = phase.new_empty((window, *phase.shape))
    after = phase.new_empty((window, *phase.shape))
    phi = phase
    for frame in range(window):
        frames[frame] = phi
        # After the last frame only the step for its forward difference is needed.
        steps = 1 if frame == window - 1 else params.sample_freq
        for sub in range(steps):
            phi = rk4(phi)
            if sub == 0:
                after[frame] = phi
        if progress is not None:
            progress(frame + 1)

    driven = (coupling.sum(1) > 0).to(dtype)  # [N, B]: has at least one sender
    speed = _min_max((after - frames) / params.dt, dim=0) * driven
    unwrapped = _min_max(frames, dim=0)
    omega_feature = 2 * (omega - params.freq_min) / (params.freq_max - params.freq_min) - 1
    features = torch.stack(
        [speed, frames.sin(), unwrapped, omega_feature.expand_as(frames)], dim=-1
    )  # [T, N, B, 4]
    return features[:num_frames].permute(2, 1, 0, 3).contiguous()  # [B, N, T, 4]
