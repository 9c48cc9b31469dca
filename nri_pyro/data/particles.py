"""Springs and charged particles in a 2-D box, batched over simulations.

The physics, integrator and frame sampling follow the reference generator of NRI exactly
(see nri-facts.md): symplectic Euler with a half kick before the loop, elastic walls,
every force component clipped, one frame kept every ``sample_freq`` steps and the
initial frame dropped.

Internally every state tensor keeps the simulations in the *last* dimension
(``[2, N, B]``): the per-step work is a handful of element-wise ops whose innermost loop
then runs over thousands of simulations, which is what makes a CPU fast here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from nri_pyro.data.switching import (
    check_horizon,
    flip_steps,
    graphs_at_steps,
    initial_flip_times,
    switch_pairs,
    switcher,
)

Force = Callable[[Tensor], Tensor]


@dataclass(frozen=True)
class SpringsParams:
    """Springs: Hooke forces with zero rest length along the edges of a random graph.

    ``switch_rate`` (default 0: a fixed graph) makes the graph change during a trajectory:
    every unordered pair flips its spring on or off (0 <-> 1, both directions together, so
    the graph stays symmetric) at the events of its own Poisson process of ``switch_rate``
    flips per unit of simulated time (frames are ``sample_freq * dt`` = 0.1 apart). A flip
    takes effect at the first integration step (of ``dt``) at or after its time. Flips are
    drawn up to the time of the last frame, so springs5 with 49 frames (4.9 time units,
    10 pairs) has about 10 * 4.9 * switch_rate switches per trajectory: switch_rate=0.02
    gives about one. With a rate > 0 the true graphs are stored per frame ([S, T, N, N]).
    """

    box_size: float = 5.0
    loc_std: float = 0.5
    vel_norm: float = 0.5
    interaction_strength: float = 0.1
    edge_prob: float = 0.5
    dt: float = 0.001
    sample_freq: int = 100
    max_force: float = 100.0
    noise: float = 0.0
    switch_rate: float = 0.0


@dataclass(frozen=True)
class ChargedParams:
    """Charged particles: Coulomb forces between every pair, charges +1 or -1."""

    box_size: float = 5.0
    loc_std: float = 1.0
    vel_norm: float = 0.5
    interaction_strength: float = 1.0
    charge_prob: float = 0.5
    dt: float = 0.001
    sample_freq: int = 100
    max_force: float = 100.0
    noise: float = 0.0


def _initial_motion(
    num_sims: int, num_objects: int, loc_std: float, vel_norm: float, generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """Positions N(0, loc_std^2) and velocities of random direction and speed exactly vel_norm.

    Returns loc, vel: [B, 2, N] float64 on the CPU (the reference's per-simulation layout).
    """
    loc = torch.randn(num_sims, 2, num_objects, generator=generator, dtype=torch.float64) * loc_std
    vel = torch.randn(num_sims, 2, num_objects, generator=generator, dtype=torch.float64)
    vel = vel * vel_norm / vel.norm(dim=1, keepdim=True)
    return loc, vel


def springs_initial(
    num_sims: int,
    num_objects: int,
    params: SpringsParams,
    generator: torch.Generator,
    num_frames: int | None = None,
) -> dict[str, Tensor]:
    """Random symmetric 0/1 spring graphs and initial states, on the CPU.

    Each unordered pair is connected with probability ``edge_prob``; adjacency: [B, N, N],
    the graph at the start. With ``switch_rate`` > 0 the flip times of every unordered pair
    (in ``torch.triu_indices`` order) are drawn last, over the time of frame ``num_frames``
    (which must then be given): ``flip_times`` [B, P, M] and ``switch_horizon`` [B], as
    :mod:`nri_pyro.data.switching` describes. With ``switch_rate`` = 0 nothing more is drawn.
    """
    upper = torch.rand(num_sims, num_objects, num_objects, generator=generator) < params.edge_prob
    upper = torch.triu(upper, diagonal=1)
    adjacency = (upper | upper.transpose(1, 2)).long()
    loc, vel = _initial_motion(num_sims, num_objects, params.loc_std, params.vel_norm, generator)
    init = {"loc": loc, "vel": vel, "adjacency": adjacency}
    if params.switch_rate > 0:
        num_pairs = num_objects * (num_objects - 1) // 2
        init.update(initial_flip_times(
            "springs", params.switch_rate, num_frames,
            lambda frames: _springs_last_step(frames, params) * params.dt, num_sims, num_pairs,
            generator,
        ))  # fmt: skip
    return init


def _springs_last_step(num_frames: int, params: SpringsParams) -> int:
    """The integration step of the last frame kept (frame t is step (t + 1) * sample_freq)."""
    return num_frames * params.sample_freq


def springs_frame_adjacency(
    init: dict[str, Tensor], num_frames: int, params: SpringsParams
) -> Tensor:
    """The graph in force at the time of each frame: [B, T, N, N] int8, on the CPU.

    Frame t is the state after step (t + 1) * ``sample_freq``; its graph is the one whose
    forces act at that step (the initial graph with every flip at a step <= that applied).
    Without flip times in ``init`` every frame has the initial graph.
    """
    adjacency = init["adjacency"]
    query = [(t + 1) * params.sample_freq for t in range(num_frames)]
    if "flip_times" not in init:
        return adjacency.to(torch.int8).unsqueeze(1).repeat(1, num_frames, 1, 1)
    last_step = _springs_last_step(num_frames, params)
    check_horizon(init, last_step, params.dt, "springs")
    steps = flip_steps(init["flip_times"], params.dt, last_step)
    pairs = switch_pairs(adjacency.shape[-1], "upper")
    return graphs_at_steps(adjacency, steps, pairs, True, query)


def charged_initial(
    num_sims: int, num_objects: int, params: ChargedParams, generator: torch.Generator
) -> dict[str, Tensor]:
    """Random charges (+1 with probability ``charge_prob``) and initial states, on the CPU.

    The edge type of (i, j) is 1 when q_i q_j = +1 (repel) and 0 when -1 (attract);
    the diagonal is 0. charges: [B, N], adjacency: [B, N, N].
    """
    positive = torch.rand(num_sims, num_objects, generator=generator) < params.charge_prob
    charges = positive.double() * 2 - 1
    adjacency = (charges.unsqueeze(2) * charges.unsqueeze(1) > 0).long()
    adjacency.diagonal(dim1=1, dim2=2).zero_()
    loc, vel = _initial_motion(num_sims, num_objects, params.loc_std, params.vel_norm, generator)
    return {"loc": loc, "vel": vel, "charges": charges, "adjacency": adjacency}


def reflect_initial(loc: Tensor, vel: Tensor, box_size: float) -> tuple[Tensor, Tensor]:
    """The reference's wall rule, as applied to the initial state.

    A coordinate beyond +box is mirrored (2 box - x) and its velocity set to -|v|; beyond
    -box, mirrored (-2 box - x) and set to +|v|.
    """
    over, under = loc > box_size, loc < -box_size
    loc = torch.where(over, 2 * box_size - loc, torch.where(under, -2 * box_size - loc, loc))
    vel = torch.where(over, -vel.abs(), torch.where(under, vel.abs(), vel))
    return loc, vel


def _reflect_step(loc: Tensor, vel: Tensor, box_size: float) -> tuple[Tensor, Tensor]:
    """The wall rule inside the loop, in fewer ops than :func:`reflect_initial`.

    A coordinate can only leave the box during a drift of dt * v from inside it, so its
    velocity points outwards and the reference's "-|v| beyond +box, +|v| beyond -box" is
    exactly -v. The mirrored position clamp(x) + (clamp(x) - x) equals 2 box - x to the bit
    (the difference is exact), and v - 2 v = -v exactly.
    """
    inside = loc.clamp(-box_size, box_size)
    inward = inside - loc  # 0 inside the box
    hit = inward.abs().sign_()  # 1.0 where a wall was crossed
    return inside.add_(inward), vel.addcmul(vel, hit, value=-2.0)


def integrate(
    loc: Tensor,
    vel: Tensor,
    force: Force,
    num_frames: int,
    *,
    dt: float,
    sample_freq: int,
    box_size: float,
    max_force: float,
    progress: Callable[[int], None] | None = None,
    switch: Callable[[int], None] | None = None,
) -> Tensor:
    """Symplectic Euler with walls, exactly as the reference generator steps.

    loc, vel: [2, N, B] (already on their device); force(loc) -> [2, N, B], unclipped.
    The loop runs ``(num_frames + 1) * sample_freq - 1`` steps and keeps the state at every
    ``sample_freq``-th step; the initial state is not kept. ``switch(step)``, where given,
    is called before the force of each step (step 0 is the initial half kick) so that the
    force of that step uses the graph in force at it.
    Returns [num_frames, 2 (loc, vel), 2 (x, y), N, B].
    """
    num_steps = (num_frames + 1) * sample_freq
    out = loc.new_empty((num_frames, 2, *loc.shape))
    loc, vel = reflect_initial(loc, vel, box_size)
    if switch is not None:
        switch(0)
    vel = torch.add(vel, force(loc).clamp(-max_force, max_force), alpha=dt)
    frame = 0
    for step in range(1, num_steps):
        loc = torch.add(loc, vel, alpha=dt)
        loc, vel = _reflect_step(loc, vel, box_size)
        if step % sample_freq == 0:
            out[frame, 0] = loc
            out[frame, 1] = vel
            frame += 1
            if progress is not None:
                progress(frame)
        if switch is not None:
            switch(step)
        vel = vel.add_(force(loc).clamp_(-max_force, max_force), alpha=dt)
    return out


def _to_output(frames: Tensor) -> Tensor:
    """[T, 2, 2, N, B] -> trajectories [B, N, T, 4] with features (x, y, vx, vy)."""
    num_frames, _, _, num_objects, num_sims = frames.shape
    return frames.permute(4, 3, 0, 1, 2).reshape(num_sims, num_objects, num_frames, 4)


def _batch_last(t: Tensor, device: torch.device, dtype: torch.dtype) -> Tensor:
    """[B, ...] on the CPU -> [..., B] on ``device``."""
    return t.to(device=device, dtype=dtype).movedim(0, -1).contiguous()


def springs_run(
    init: dict[str, Tensor],
    num_frames: int,
    params: SpringsParams,
    *,
    device: torch.device,
    dtype: torch.dtype = torch.float64,
    progress: Callable[[int], None] | None = None,
) -> Tensor:
    """Integrate springs from :func:`springs_initial`'s state. Returns [B, N, T, 4].

    Where ``init`` holds flip times, the graph changes during the run: the force of each
    step uses the graph in force at that step (see :func:`springs_frame_adjacency`).
    """
    adjacency = _batch_last(init["adjacency"], device, dtype)  # [N, N, B]
    stiffness = _stiffness(adjacency, params.interaction_strength).unsqueeze(0)  # [1,N,N,B]

    def force(loc: Tensor) -> Tensor:
        return (stiffness * loc.unsqueeze(1)).sum(2)

    switch = None
    if "flip_times" in init:
        last_step = _springs_last_step(num_frames, params)
        check_horizon(init, last_step, params.dt, "springs")
        steps = flip_steps(init["flip_times"], params.dt, last_step)
        pairs = switch_pairs(adjacency.shape[0], "upper")

        def update(sims: Tensor) -> None:
            # The same arithmetic as for the whole batch, on the simulations that changed.
            stiffness[0, :, :, sims] = _stiffness(
                adjacency[:, :, sims], params.interaction_strength
            )

        switch = switcher(steps, pairs, True, last_step, adjacency, update)

    frames = integrate(
        _batch_last(init["loc"], device, dtype),
        _batch_last(init["vel"], device, dtype),
        force,
        num_frames,
        dt=params.dt,
        sample_freq=params.sample_freq,
        box_size=params.box_size,
        max_force=params.max_force,
        progress=progress,
        switch=switch,
    )
    return _to_output(frames)


def _stiffness(adjacency: Tensor, strength: float) -> Tensor:
    """K = -k (diag(degree) - A) from adjacency [N, N, B]: [N, N, B], so that the spring
    force F_i = -k sum_j A_ij (x_i - x_j) = sum_j K_ij x_j."""
    laplacian = torch.diag_embed(adjacency.sum(1).T).permute(1, 2, 0) - adjacency
    return (-strength * laplacian).contiguous()


def pair_incidence(num_objects: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    """Signed incidence of the unordered pairs i < j: [N, P], +1 at i and -1 at j.

    Only the simulator uses it: with simulations in the last dimension, all pair
    differences, and all summed pair forces, are then one GEMM each per step. That costs
    O(N^3) per simulation and step but only four ops, which is what counts at the sizes
    of the paper (a loop of O(N) slice ops measured slower at N = 5 and 10).
    """
    first, second = torch.triu_indices(num_objects, num_objects, 1, device=device)
    pairs = torch.arange(first.numel(), device=device)
    incidence = torch.zeros(num_objects, first.numel(), device=device, dtype=dtype)
    incidence[first, pairs] = 1.0
    incidence[second, pairs] = -1.0
    return incidence


def charged_run(
    init: dict[str, Tensor],
    num_frames: int,
    params: ChargedParams,
    *,
    device: torch.device,
    dtype: torch.dtype = torch.float64,
    progress: Callable[[int], None] | None = None,
) -> Tensor:
    """Integrate charged particles from :func:`charged_initial`'s state. Returns [B, N, T, 4]."""
    num_objects = init["loc"].shape[-1]
    incidence = pair_incidence(num_objects, device, dtype)  # [N, P]
    first, second = torch.triu_indices(num_objects, num_objects, 1)
    charges = init["charges"]
    pair_charge = _batch_last(charges[:, first] * charges[:, second], device, dtype)  # [P, B]
    strength = params.interaction_strength * pair_charge

    def force(loc: Tensor) -> Tensor:
        # F_i = k sum_j q_i q_j (x_i - x_j) / |x_i - x_j|^3, once per unordered pair (i, j):
        # +f on i and -f on j.
        diff = torch.matmul(incidence.T, loc)  # [2, P, B]: x_i - x_j
        dist2 = torch.addcmul(diff[0] * diff[0], diff[1], diff[1])  # [P, B]
        return torch.matmul(incidence, diff.mul_(dist2.rsqrt().div_(dist2).mul_(strength)))

    frames = integrate(
        _batch_last(init["loc"], device, dtype),
        _batch_last(init["vel"], device, dtype),
        force,
        num_frames,
        dt=params.dt,
        sample_freq=params.sample_freq,
        box_size=params.box_size,
        max_force=params.max_force,
        progress=progress,
    )
    return _to_output(frames)
