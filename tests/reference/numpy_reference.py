"""A plain one-simulation-at-a-time NumPy version of the three simulators.

It follows the reference generator's algorithm step by step, written as the reference
writes it (one simulation, [2, N] arrays, ``np.subtract.outer`` for pair differences).
Two uses: the baseline that ``benchmarks/simulate.py`` measures the batched simulators
against, and an independent check in the tests that the batched torch code computes the
same trajectories from the same initial state.
"""

from __future__ import annotations

import numpy as np

from nri_pyro.data.kuramoto import KuramotoParams
from nri_pyro.data.particles import ChargedParams, SpringsParams


def _clamp(loc: np.ndarray, vel: np.ndarray, box: float) -> None:
    over = loc > box
    loc[over] = 2 * box - loc[over]
    vel[over] = -np.abs(vel[over])
    under = loc < -box
    loc[under] = -2 * box - loc[under]
    vel[under] = np.abs(vel[under])


def particles_one(
    loc0: np.ndarray,
    vel0: np.ndarray,
    pair_strength: np.ndarray,
    num_frames: int,
    params: SpringsParams | ChargedParams,
    inverse_cube: bool,
) -> np.ndarray:
    """One simulation. loc0, vel0: [2, N]; pair_strength: [N, N] (zero diagonal), the factor
    of (x_i - x_j) in the force on i: -k A_ij for springs, k q_i q_j (/|r|^3) for charged.

    Returns [N, T, 4] with features (x, y, vx, vy).
    """
    loc, vel = loc0.copy(), vel0.copy()
    n = loc.shape[1]
    dt, box, max_f = params.dt, params.box_size, params.max_force
    out = np.zeros((num_frames, 4, n))

    def force(loc: np.ndarray) -> np.ndarray:
        dx = np.subtract.outer(loc[0], loc[0])
        dy = np.subtract.outer(loc[1], loc[1])
        size = pair_strength
        if inverse_cube:
            dist2 = dx**2 + dy**2
            np.fill_diagonal(dist2, 1.0)
            size = pair_strength / dist2**1.5
        f = np.stack([(size * dx).sum(-1), (size * dy).sum(-1)])
        return np.clip(f, -max_f, max_f)

    _clamp(loc, vel, box)
    vel += dt * force(loc)
    frame = 0
    for step in range(1, (num_frames + 1) * params.sample_freq):
        loc += dt * vel
        _clamp(loc, vel, box)
        if step % params.sample_freq == 0:
            out[frame, :2], out[frame, 2:] = loc, vel
            frame += 1
        vel += dt * force(loc)
    return out.transpose(2, 0, 1)


def springs_one(init: dict, index: int, num_frames: int, params: SpringsParams) -> np.ndarray:
    """Simulation ``index`` of a :func:`~nri_pyro.data.particles.springs_initial` batch."""
    adjacency = init["adjacency"][index].numpy().astype(np.float64)
    return particles_one(
        init["loc"][index].numpy(),
        init["vel"][index].numpy(),
        -params.interaction_strength * adjacency,
        num_frames,
        params,
        inverse_cube=False,
    )


def charged_one(init: dict, index: int, num_frames: int, params: ChargedParams) -> np.ndarray:
    """Simulation ``index`` of a :func:`~nri_pyro.data.particles.charged_initial` batch."""
    q = init["charges"][index].numpy()
    strength = params.interaction_strength * np.outer(q, q)
    np.fill_diagonal(strength, 0.0)
    return particles_one(
        init["loc"][index].numpy(),
        init["vel"][index].numpy(),
        strength,
        num_frames,
        params,
        inverse_cube=True,
    )


def kuramoto_phases_one(
    omega: np.ndarray,
    phase0: np.ndarray,
    coupling: np.ndarray,
    num_steps: int,
    params: KuramotoParams,
) -> np.ndarray:
    """Phases of one simulation on the fine grid by classical RK4: [num_steps + 1, N]."""
    k = params.coupling * coupling
    h = params.dt / params.substeps

    def velocity(phi: np.ndarray) -> np.ndarray:
        return omega + (k * np.sin(phi[None, :] - phi[:, None])).sum(1)

    phis = np.zeros((num_steps + 1, omega.shape[0]))
    phi = phase0.copy()
    phis[0] = phi
    for step in range(1, num_steps + 1):
        for _ in range(params.substeps):
            k1 = velocity(phi)
            k2 = velocity(phi + 0.5 * h * k1)
            k3 = velocity(phi + 0.5 * h * k2)
            k4 = velocity(phi + h * k3)
            phi = phi + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
        phis[step] = phi
    return phis


def kuramoto_features(
    phis: np.ndarray,
    omega: np.ndarray,
    coupling: np.ndarray,
    num_frames: int,
    params: KuramotoParams,
) -> np.ndarray:
    """The reference's four features from fine-grid phases [S_fine, N]: [N, T, 4]."""
    window = max(params.window_frames, num_frames)
    idx = np.arange(window) * params.sample_freq
    frames, after = phis[idx], phis[idx + 1]

    def min_max(x: np.ndarray) -> np.ndarray:
        low, high = x.min(0), x.max(0)
        return 2 * (x - low) / np.maximum(high - low, np.finfo(np.float64).tiny) - 1

    speed = min_max((after - frames) / params.dt) * (coupling.sum(1) > 0)
    omega_feature = 2 * (omega - params.freq_min) / (params.freq_max - params.freq_min) - 1
    feats = np.stack(
        [speed, np.sin(frames), min_max(frames), np.broadcast_to(omega_feature, frames.shape)], -1
    )
    return feats[:num_frames].transpose(1, 0, 2)


def kuramoto_one(init: dict, index: int, num_frames: int, params: KuramotoParams) -> np.ndarray:
    """Simulation ``index`` of a :func:`~nri_pyro.data.kuramoto.kuramoto_initial` batch."""
    omega = init["omega"][index].numpy()
    coupling = init["adjacency"][index].numpy().astype(np.float64)
    window = max(params.window_frames, num_frames)
    phis = kuramoto_phases_one(
        omega, init["phase"][index].numpy(), coupling, (window - 1) * params.sample_freq + 1, params
    )
    return kuramoto_features(phis, omega, coupling, num_frames, params)


ONE_AT_A_TIME = {"springs": springs_one, "charged": charged_one, "kuramoto": kuramoto_one}
