"""Graphs that change over time: edges that flip their type at the events of a Poisson process.

With ``switch_rate`` > 0 every switchable pair of a simulation flips its edge type
(0 <-> 1) at the events of its own Poisson process of ``switch_rate`` flips per unit of
simulated time, independent of every other pair. A flip at time tau takes effect at the
first integration step at or after tau, step ``ceil(tau / dt)``: from that step on, the
forces (or couplings) are those of the flipped graph. The graph "in force at step s" is
therefore the initial graph with every pair flipped as often as it has flips at steps
<= s.

The flip times are drawn on the CPU, with the generator that draws the initial graphs,
after every other draw of the initial state, over a horizon that covers every step whose
graph can matter (so a dataset with the same seed starts from the same graphs and states
whatever the rate). Given the horizon H, the number of flips of a pair is Poisson(rate H)
and the times are uniform on (0, H], in ascending order: the events of a homogeneous
Poisson process on (0, H]. They are kept in the initial state as

- ``flip_times``: [B, P, M] float64, per simulation and switchable pair, ascending, padded
  with +inf (M is the largest number of flips of any pair in the batch);
- ``switch_horizon``: [B] float64, the horizon H the times were drawn for.

A switchable pair (i, j) is the entry adjacency[i, j] (i the receiver, j the sender); a
mirrored pair flips adjacency[j, i] together with it, so that undirected graphs stay
symmetric.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

FLIP_KEYS = ("flip_times", "switch_horizon")


def switch_pairs(num_objects: int, kind: str) -> Tensor:
    """The switchable pairs (receiver i, sender j): [P, 2] long, in a fixed order.

    ``kind``: ``"upper"``, i < j row-major (springs; mirrored), ``"lower"``, i > j row-major
    (undirected Kuramoto, whose graph mirrors its lower triangle; mirrored), or
    ``"ordered"``, every i != j receiver-major (directed Kuramoto).
    """
    if kind == "upper":
        pairs = torch.triu_indices(num_objects, num_objects, 1)
    elif kind == "lower":
        pairs = torch.tril_indices(num_objects, num_objects, -1)
    elif kind == "ordered":
        off_diagonal = ~torch.eye(num_objects, dtype=torch.bool)
        pairs = off_diagonal.nonzero().T
    else:
        raise ValueError(
            f"unknown kind of switchable pairs {kind!r}; expected upper, lower or ordered"
        )
    return pairs.T.contiguous()


def max_switch_rate(sample_freq: int, dt: float) -> float:
    """The largest ``switch_rate``: one flip per pair per frame interval (``sample_freq * dt``
    time units) on average. Faster switching makes no sense for data sampled in frames: a
    pair would flip between two frames more often than not, so the graphs the frames show
    would not follow the forces. It also bounds memory: the flip times are [B, P, M] with M
    about ``rate * horizon`` per pair, so at this rate M is about the frames of the run and
    they take no more room than the per-frame truth [B, T, N, N] (a rate of 1e6 would need
    about 100 GB for 96 simulations)."""
    return 1.0 / (sample_freq * dt)


def draw_flip_times(
    num_sims: int, num_pairs: int, rate: float, horizon: float, generator: torch.Generator
) -> dict[str, Tensor]:
    """Poisson flip times on (0, horizon] of rate ``rate`` for every simulation and pair.

    Draws the counts (Poisson(rate * horizon) per simulation and pair), then M uniforms per
    simulation and pair (M the largest count), from ``generator`` on the CPU. Returns
    ``{"flip_times": [B, P, M], "switch_horizon": [B]}`` float64 (see the module docstring).
    """
    if not rate >= 0 or not math.isfinite(rate):
        raise ValueError(f"switch_rate must be a finite non-negative rate, got {rate}")
    mean = torch.full((num_sims, num_pairs), rate * horizon, dtype=torch.float64)
    counts = torch.poisson(mean, generator=generator).long()
    width = int(counts.max()) if counts.numel() else 0
    uniform = torch.rand(num_sims, num_pairs, width, generator=generator, dtype=torch.float64)
    times = (1 - uniform) * horizon  # (0, horizon]: no flip at time 0 itself
    times = torch.where(torch.arange(width) < counts.unsqueeze(-1), times, math.inf)
    return {
        "flip_times": times.sort(-1).values,
        "switch_horizon": torch.full((num_sims,), horizon, dtype=torch.float64),
    }


def initial_flip_times(
    system: str, rate: float, num_frames: int | None, horizon_of: Callable[[int], float],
    num_sims: int, num_pairs: int, generator: torch.Generator,
) -> dict[str, Tensor]:  # fmt: skip
    """The flip times of ``system``'s initial state (:func:`draw_flip_times`), drawn over the
    horizon ``horizon_of(num_frames)`` of a run of ``num_frames`` frames."""
    if num_frames is None or num_frames < 1:
        raise ValueError(
            f"{system} with switch_rate > 0 draws flip times over the frames of the run: pass "
            f"num_frames (at least 1) to {system}_initial, got {num_frames!r}"
        )
    return draw_flip_times(num_sims, num_pairs, rate, horizon_of(num_frames), generator)


def check_horizon(init: dict[str, Tensor], last_step: int, dt: float, what: str) -> None:
    """Refuse flip times drawn for a shorter simulation than the one asked for."""
    horizon = init["switch_horizon"]
    needed = last_step * dt
    if horizon.numel() and float(horizon.min()) < needed * (1 - 1e-12):
        raise ValueError(
            f"{what}: the flip times were drawn for {float(horizon.min()):g} time units, but "
            f"this run needs {needed:g}; draw the initial state with num_frames set to the "
            "frames of the run"
        )


def flip_steps(flip_times: Tensor, dt: float, last_step: int) -> Tensor:
    """The step at which each flip takes effect: the first step s with s * dt >= tau (in
    float64, so ``ceil(tau / dt)`` corrected where the division rounded up): [B, P, M] long.

    Steps are capped at ``last_step`` (the horizon's step; the cap only guards the rounding
    for a flip drawn at the horizon itself); padding (+inf) becomes ``last_step + 1``, a
    step that never comes.
    """
    finite = torch.isfinite(flip_times)
    times = torch.where(finite, flip_times.double(), 0.0)
    steps = torch.ceil(times / dt)
    steps = torch.where((steps - 1) * dt >= times, steps - 1, steps).clamp(0, last_step)
    return torch.where(finite, steps.long(), last_step + 1)


def concat_initial(inits: Sequence[dict[str, Tensor]]) -> dict[str, Tensor]:
    """Concatenate initial states along the simulations; flip times of different widths M
    are padded with +inf to the widest."""
    out = {}
    for key in inits[0]:
        parts = [init[key] for init in inits]
        if key == "flip_times":
            width = max(p.shape[-1] for p in parts)
            parts = [
                torch.nn.functional.pad(p, (0, width - p.shape[-1]), value=math.inf) for p in parts
            ]
        out[key] = torch.cat(parts)
    return out


def graphs_at_steps(
    adjacency: Tensor, steps: Tensor, pairs: Tensor, mirrored: bool, query: Sequence[int]
) -> Tensor:
    """The graphs in force at each of the ``query`` steps: [B, len(query), N, N] int8.

    adjacency: [B, N, N] the graphs at step 0 (0/1); steps: [B, P, M] from
    :func:`flip_steps`; pairs: [P, 2] from :func:`switch_pairs`. The graph at step s has
    every pair flipped once per flip at a step <= s (so twice is no change).
    """
    base = adjacency.to(torch.int8)
    out = base.unsqueeze(1).repeat(1, len(query), 1, 1)
    receivers, senders = pairs[:, 0], pairs[:, 1]
    for t, step in enumerate(query):
        odd = ((steps <= step).sum(-1) % 2).to(torch.int8)  # [B, P]
        out[:, t, receivers, senders] ^= odd
        if mirrored:
            out[:, t, senders, receivers] ^= odd
    return out


def ever_connected(
    adjacency: Tensor, steps: Tensor, pairs: Tensor, mirrored: bool, last_step: int
) -> Tensor:
    """Whether each entry is 1 in some graph in force at steps 0..last_step: [B, N, N] bool.

    A pair that flips at least once by ``last_step`` is 1 before or after its first flip.
    """
    flipped = (steps <= last_step).any(-1)  # [B, P]
    ever = adjacency.bool().clone()
    receivers, senders = pairs[:, 0], pairs[:, 1]
    ever[:, receivers, senders] |= flipped
    if mirrored:
        ever[:, senders, receivers] |= flipped
    return ever


def switcher(
    steps: Tensor,
    pairs: Tensor,
    mirrored: bool,
    last_step: int,
    adjacency: Tensor,
    update: Callable[[Tensor], None],
) -> Callable[[int], None]:
    """A callback for the integrators: ``switch(step)`` applies the flips of ``step``.

    adjacency: [N, N, B] (simulations last) on the integration device, flipped in place
    (1 - a) at the pairs that flip an odd number of times at that step; ``update(sims)``
    is then called with the indices of the simulations whose graph changed (on the
    device), to rebuild what the forces derive from the graph. The schedule is built once,
    on the CPU, from ``steps`` [B, P, M] of :func:`flip_steps`; flips after ``last_step``
    are left out.
    """
    num_sims, num_pairs, _ = steps.shape
    sim, pair, slot = (steps <= last_step).nonzero(as_tuple=True)
    when = steps[sim, pair, slot]
    # One key per (step, simulation, pair); a pair that flips twice in one step is no change.
    key = (when * num_sims + sim) * num_pairs + pair
    key, count = torch.unique(key, return_counts=True)  # sorted by step, then simulation
    key = key[count % 2 == 1]
    when, rest = key // (num_sims * num_pairs), key % (num_sims * num_pairs)
    sim, pair = rest // num_pairs, rest % num_pairs
    device = adjacency.device
    schedule: dict[int, tuple[Tensor, Tensor, Tensor, Tensor]] = {}
    start = 0
    flip_at, sizes = torch.unique_consecutive(when, return_counts=True)
    for step, size in zip(flip_at.tolist(), sizes.tolist(), strict=True):
        s, p = sim[start : start + size], pair[start : start + size]
        start += size
        schedule[step] = (
            pairs[p, 0].to(device),
            pairs[p, 1].to(device),
            s.to(device),
            torch.unique(s).to(device),
        )

    def switch(step: int) -> None:
        event = schedule.get(step)
        if event is None:
            return
        receivers, senders, sims, changed = event
        adjacency[receivers, senders, sims] = 1 - adjacency[receivers, senders, sims]
        if mirrored:
            adjacency[senders, receivers, sims] = 1 - adjacency[senders, receivers, sims]
        update(changed)

    return switch
