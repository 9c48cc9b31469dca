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

from nri_pyro.data.switching import (
    check_horizon,
    ever_connected,
    flip_steps,
    graphs_at_steps,
    initial_flip_times,
    switch_pairs,
    switcher,
)


@dataclass(frozen=True)
class KuramotoParams:
    """Kuramoto: phases, intrinsic frequencies U[freq_min, freq_max), 0/1 couplings.

    ``switch_rate`` (default 0: a fixed graph) makes the couplings change during a
    trajectory: every ordered pair (receiver i, sender j) flips k_ij (0 <-> 1) at the events
    of its own Poisson process of ``switch_rate`` flips per unit of simulated time (frames
    are ``sample_freq * dt`` = 0.1 apart); with ``directed=False`` every unordered pair
    flips, k_ij and k_ji together. A flip takes effect at the first point of the fine grid
    (of ``dt``) at or after its time: the Runge-Kutta steps from that point on use the
    flipped couplings. Flips are drawn over the whole simulated window (frame
    ``max(window_frames, num_frames) - 1``, 9.9 time units by default, since the features
    are scaled over it), so kuramoto5 (20 ordered pairs) has about 20 * 9.9 * switch_rate
    flips per simulation, about 20 * 4.8 * switch_rate of them within 49 kept frames.
    With a rate > 0 the true graphs are stored per frame ([S, T, N, N]).
    """

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
    switch_rate: float = 0.0


def kuramoto_initial(
    num_sims: int,
    num_objects: int,
    params: KuramotoParams,
    generator: torch.Generator,
    num_frames: int | None = None,
) -> dict[str, Tensor]:
    """Couplings k_ij ~ Bernoulli(edge_prob) (receiver i, sender j, zero diagonal; mirrored
    from the lower triangle when undirected), omega ~ U[freq_min, freq_max), phi(0) ~ U[0, 2 pi).

    adjacency: [B, N, N] long (the couplings at the start); omega, phase: [B, N] float64,
    on the CPU. With ``switch_rate`` > 0 the flip times of every switchable pair (directed:
    the ordered pairs receiver-major; undirected: the lower triangle, mirrored) are drawn
    last, over the window simulated for ``num_frames`` frames (which must then be given):
    ``flip_times`` [B, P, M] and ``switch_horizon`` [B], as :mod:`nri_pyro.data.switching`
    describes. With ``switch_rate`` = 0 nothing more is drawn.
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
    init = {
        "adjacency": coupled.long(),
        "omega": omega * spread + params.freq_min,
        "phase": phase * 2 * math.pi,
    }
    if params.switch_rate > 0:
        num_pairs = len(switch_pairs(num_objects, _pair_kind(params)))
        init.update(initial_flip_times(
            "kuramoto", params.switch_rate, num_frames,
            lambda frames: _last_point(frames, params) * params.dt, num_sims, num_pairs, generator,
        ))  # fmt: skip
    return init


def _pair_kind(params: KuramotoParams) -> str:
    return "ordered" if params.directed else "lower"


def _last_point(num_frames: int, params: KuramotoParams) -> int:
    """The last point of the fine grid a Runge-Kutta step starts from: the one of the last
    frame of the window (whose forward difference takes one more step)."""
    return (max(params.window_frames, num_frames) - 1) * params.sample_freq


def kuramoto_frame_adjacency(
    init: dict[str, Tensor], num_frames: int, params: KuramotoParams
) -> Tensor:
    """The couplings in force at the time of each frame: [B, T, N, N] int8, on the CPU.

    Frame t is the state at fine-grid point t * ``sample_freq`` (frame 0 the initial
    state); its graph is the one the Runge-Kutta step from that point uses (the initial
    couplings with every flip at a point <= that applied). Without flip times in ``init``
    every frame has the initial couplings.
    """
    adjacency = init["adjacency"]
    if "flip_times" not in init:
        return adjacency.to(torch.int8).unsqueeze(1).repeat(1, num_frames, 1, 1)
    last_point = _last_point(num_frames, params)
    check_horizon(init, last_point, params.dt, "kuramoto")
    steps = flip_steps(init["flip_times"], params.dt, last_point)
    pairs = switch_pairs(adjacency.shape[-1], _pair_kind(params))
    query = [t * params.sample_freq for t in range(num_frames)]
    return graphs_at_steps(adjacency, steps, pairs, not params.directed, query)


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

    Where ``init`` holds flip times, the couplings change during the run: each Runge-Kutta
    step of the fine grid uses the couplings in force at the point it starts from (see
    :func:`kuramoto_frame_adjacency`), and an oscillator counts as driven (its d phi/dt
    feature is kept) when it has a sender at some point of the window.
    """
    window = max(params.window_frames, num_frames)
    coupling = params.coupling * init["adjacency"].to(device=device, dtype=dtype)
    coupling = coupling.permute(1, 2, 0).contiguous()  # [N (receiver), N (sender), B]
    omega = init["omega"].to(device=device, dtype=dtype).T.contiguous()  # [N, B]
    phase = init["phase"].to(device=device, dtype=dtype).T.contiguous()
    driven = (coupling.sum(1) > 0).to(dtype)  # [N, B]: has at least one sender

    switch = None
    if "flip_times" in init:
        last_point = _last_point(num_frames, params)
        check_horizon(init, last_point, params.dt, "kuramoto")
        flip_at = flip_steps(init["flip_times"], params.dt, last_point)
        pairs = switch_pairs(coupling.shape[0], _pair_kind(params))
        mirrored = not params.directed
        adjacency = init["adjacency"].to(device=device, dtype=dtype).permute(1, 2, 0).contiguous()

        def update(sims: Tensor) -> None:
            # The same arithmetic as for the whole batch, on the simulations that changed.
            coupling[:, :, sims] = params.coupling * adjacency[:, :, sims]

        switch = switcher(flip_at, pairs, mirrored, last_point, adjacency, update)
        ever = ever_connected(init["adjacency"], flip_at, pairs, mirrored, last_point)
        ever = params.coupling * ever.to(device=device, dtype=dtype).permute(1, 2, 0)
        driven = (ever.sum(1) > 0).to(dtype)

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
            if switch is not None:
                switch(frame * params.sample_freq + sub)
            phi = rk4(phi)
            if sub == 0:
                after[frame] = phi
        if progress is not None:
            progress(frame + 1)

    speed = _min_max((after - frames) / params.dt, dim=0) * driven
    unwrapped = _min_max(frames, dim=0)
    omega_feature = 2 * (omega - params.freq_min) / (params.freq_max - params.freq_min) - 1
    features = torch.stack(
        [speed, frames.sin(), unwrapped, omega_feature.expand_as(frames)], dim=-1
    )  # [T, N, B, 4]
    return features[:num_frames].permute(2, 1, 0, 3).contiguous()  # [B, N, T, 4]
