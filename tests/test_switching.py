"""Graphs that change over time (switch_rate): simulation, per-frame truth, files, bad input."""

import hashlib
import json
import math

import numpy as np
import pytest
import torch

from nri_pyro import (
    Normalizer,
    TrajectoryDataset,
    generate_dataset,
    load_dataset,
    save_dataset,
    simulate,
)
from nri_pyro.cli import main
from nri_pyro.data.reference import read_reference, write_reference
from nri_pyro.data.systems import get_system

CPU = torch.device("cpu")
FREE = {"box_size": 1e6, "max_force": 1e12}  # no walls, no clipping


def _digest(*arrays):
    d = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else a)
        d.update(str(a.dtype).encode() + str(a.shape).encode())
        d.update(a.tobytes())
    return d.hexdigest()[:16]


def _init(system, num_sims, seed=0, num_objects=5, num_frames=None, **params):
    sys_ = get_system(system)
    p = sys_.params(params)
    gen = torch.Generator().manual_seed(seed)
    extra = {} if num_frames is None else {"num_frames": num_frames}
    return sys_, p, sys_.initial(num_sims, num_objects, p, gen, **extra)


# ----------------------------------------------------------------------------------------
# switch_rate = 0 changes nothing

# Digests computed with the code before switch_rate existed (same calls as below). The random
# draws and the springs arithmetic (additions, products, clamps) are exact on any CPU; the
# Kuramoto and charged arithmetic (sin, cos, rsqrt, BLAS) may round the last bit differently
# on another CPU, so their trajectories are compared rounded to 6 decimals. Bit for bit, all
# three were checked equal on the machine that wrote this test.
BEFORE = {
    "charged/init": "bb34bb4de588c705",
    "kuramoto/init": "3da095b0ed839724",
    "springs/init": "046afa0f0787ac92",
    "charged/simulate-round6": "913521fea3df6047",
    "kuramoto/simulate-round6": "d87429631d36299d",
    "springs/simulate": "519de8cbb2af2018",
    "springs/noise": "65807a3d2e51bfcb",
    "springs/native": "3b7af00126e45826",
    "springs/nri": "7e1ac02cd3f128f3",
    "springs/graph": "fe4da25da02572fc",
}


@pytest.mark.parametrize("system", ["springs", "charged", "kuramoto"])
def test_without_switching_the_random_draws_are_those_of_before(system):
    s = get_system(system)
    init = s.initial(7, 5, s.params(), torch.Generator().manual_seed(11))
    assert _digest(*[init[k] for k in sorted(init)]) == BEFORE[f"{system}/init"]
    ds = simulate(system, 12, num_objects=4, num_frames=9, seed=5, split="valid")
    assert ds.adjacency.shape == (12, 4, 4) and not ds.dynamic
    rounded = np.round(ds.trajectories.numpy(), 6)
    if system == "springs":
        assert _digest(ds.trajectories, ds.adjacency) == BEFORE["springs/simulate"]
    else:
        assert _digest(rounded, ds.adjacency) == BEFORE[f"{system}/simulate-round6"]


def test_without_switching_springs_datasets_are_bit_for_bit_those_of_before(tmp_path):
    ds = simulate("springs", 5, num_objects=3, num_frames=4, seed=2, noise=0.01)
    assert _digest(ds.trajectories, ds.adjacency) == BEFORE["springs/noise"]
    graph = [[0, 1, 0], [1, 0, 1], [0, 1, 0]]
    ds = simulate("springs", 4, num_objects=3, num_frames=5, seed=0, graph=graph)
    assert _digest(ds.trajectories, ds.adjacency) == BEFORE["springs/graph"]
    for fmt in ("native", "nri"):
        folder = generate_dataset(
            "springs", tmp_path / fmt, train=6, valid=3, test=3, num_frames=5, test_frames=8,
            seed=1, format=fmt, progress=False,
        )  # fmt: skip
        files = sorted(folder.glob("*.npy"))
        digest = _digest(*[np.frombuffer(f.read_bytes(), np.uint8) for f in files])
        assert digest == BEFORE[f"springs/{fmt}"]
        meta = json.loads((folder / "meta.json").read_text())
        assert meta["version"] == 1 and meta["params"]["switch_rate"] == 0.0
        assert all("graphs_per_frame" not in s for s in meta["splits"].values())


@pytest.mark.parametrize("system", ["springs", "kuramoto"])
def test_switching_draws_flips_after_the_same_initial_state(system):
    _, _, still = _init(system, 50, seed=4)
    _, _, moving = _init(system, 50, seed=4, num_frames=49, switch_rate=0.3)
    assert set(moving) == {*still, "flip_times", "switch_horizon"}
    for key in still:
        assert torch.equal(still[key], moving[key]), key


def test_a_dataset_written_before_switch_rate_existed_still_loads(tmp_path):
    for fmt in ("native", "nri"):
        folder = generate_dataset(
            "kuramoto", tmp_path / fmt, train=4, valid=2, test=2, num_frames=5, test_frames=7,
            format=fmt, progress=False,
        )  # fmt: skip
        meta = json.loads((folder / "meta.json").read_text())
        del meta["params"]["switch_rate"]  # what an older nri-pyro wrote
        (folder / "meta.json").write_text(json.dumps(meta))
        splits = load_dataset(folder)
        assert splits["test"].adjacency.shape == (2, 5, 5)
        assert not splits["test"].dynamic
        assert get_system("kuramoto").params(splits["test"].metadata["params"]).switch_rate == 0


# ----------------------------------------------------------------------------------------
# per-frame truth and the rate of flips


def test_springs_truth_is_per_frame_symmetric_and_frame_sampling_is_unchanged():
    data = simulate("springs", 30, num_frames=49, seed=1, switch_rate=0.5)
    a = data.adjacency
    assert data.dynamic and a.shape == (30, 49, 5, 5) and a.dtype == torch.long
    assert torch.equal(a, a.transpose(2, 3))
    assert (a.diagonal(dim1=2, dim2=3) == 0).all()
    assert set(a.unique().tolist()) <= {0, 1}
    assert (a[:, 1:] != a[:, :-1]).any()  # graphs do change
    assert data.edges.shape == (30, 49, 20)
    off = ~torch.eye(5, dtype=torch.bool)
    assert torch.equal(data.edges[:, 7], a[:, 7][:, off])  # receiver-major, as static
    # Frame sampling as without switching (the first frame dropped): a trajectory whose
    # graph never switched is the one simulated without switching, bit for bit.
    rare = simulate("springs", 30, num_frames=49, seed=1, switch_rate=0.01)
    still = simulate("springs", 30, num_frames=49, seed=1)
    same = (rare.adjacency == still.adjacency[:, None]).all(-1).all(-1).all(-1)
    assert 0 < int(same.sum()) < 30
    assert torch.equal(rare.trajectories[same], still.trajectories[same])
    assert not torch.equal(rare.trajectories[~same], still.trajectories[~same])
    test = simulate("springs", 3, num_frames=99, seed=1, split="test", switch_rate=0.02)
    assert test.adjacency.shape == (3, 99, 5, 5)


def test_kuramoto_truth_is_per_frame_directed_or_mirrored():
    data = simulate("kuramoto", 20, num_frames=49, seed=2, switch_rate=0.5)
    a = data.adjacency
    assert a.shape == (20, 49, 5, 5) and (a.diagonal(dim1=2, dim2=3) == 0).all()
    assert not torch.equal(a, a.transpose(2, 3))
    assert (a[:, 1:] != a[:, :-1]).any()
    # Frame 0 is the initial state (nothing dropped): its graph is the initial one.
    sys_, p, init = _init("kuramoto", 20, seed=2, num_frames=49, switch_rate=0.5)
    assert torch.equal(sys_.frame_adjacency(init, 49, p)[:, 0].long(), init["adjacency"])
    undirected = simulate("kuramoto", 20, num_frames=99, seed=2, switch_rate=0.5, directed=False)
    u = undirected.adjacency
    assert u.shape == (20, 99, 5, 5) and torch.equal(u, u.transpose(2, 3))
    assert (u[:, 1:] != u[:, :-1]).any()


def _changes_within_bounds(truth, pairs_mask, rate, interval):
    """Changes of the truth between consecutive frames against the Poisson process: a pair
    changes over an interval when it flips an odd number of times, with probability
    (1 - exp(-2 rate interval)) / 2, independently over disjoint intervals."""
    changed = (truth[:, 1:] != truth[:, :-1])[..., pairs_mask]
    n = changed.numel()
    p = (1 - np.exp(-2 * rate * interval)) / 2
    return abs(float(changed.sum()) - n * p) < 5 * np.sqrt(n * p * (1 - p))


@pytest.mark.parametrize(
    "system, params, num_pairs, horizon",
    [
        ("springs", {}, 10, 4.9),  # to the time of the last of 49 frames
        ("kuramoto", {}, 20, 9.9),  # over the 100-frame window
        ("kuramoto", {"directed": False}, 10, 9.9),
    ],
)
def test_flips_come_at_the_poisson_rate(system, params, num_pairs, horizon):
    rate = 0.5
    sys_, p, init = _init(system, 4000, seed=3, num_frames=49, switch_rate=rate, **params)
    times = init["flip_times"]
    assert times.shape[:2] == (4000, num_pairs)
    assert torch.allclose(init["switch_horizon"], torch.tensor(horizon, dtype=torch.float64))
    flips = times[torch.isfinite(times)]
    expected = 4000 * num_pairs * rate * horizon  # Poisson: variance = mean
    assert abs(flips.numel() - expected) < 5 * np.sqrt(expected)
    assert 0 < float(flips.min()) and float(flips.max()) <= horizon
    mean_se = horizon / np.sqrt(12 * flips.numel())  # uniform on (0, horizon]
    assert abs(float(flips.mean()) - horizon / 2) < 5 * mean_se
    # Times of each pair come in order, padding (+inf) last.
    assert (times[..., 1:] >= times[..., :-1]).all()
    # The per-frame truth changes between frames as often as the process says.
    truth = sys_.frame_adjacency(init, 49, p)
    if system == "springs" or not p.directed:
        pairs_mask = torch.ones(5, 5, dtype=torch.bool).triu(1)
    else:
        pairs_mask = ~torch.eye(5, dtype=torch.bool)
    assert _changes_within_bounds(truth, pairs_mask, rate, 0.1)


def test_simulated_datasets_switch_at_the_poisson_rate():
    rate = 0.3
    data = simulate("springs", 400, num_frames=49, seed=8, switch_rate=rate)
    assert _changes_within_bounds(data.adjacency, torch.ones(5, 5).bool().triu(1), rate, 0.1)
    # About 10 * 4.9 * rate switches per springs5 trajectory of 49 frames (the docstring).
    _, _, init = _init("springs", 2000, seed=8, num_frames=49, switch_rate=0.02)
    per_trajectory = float(torch.isfinite(init["flip_times"]).sum()) / 2000
    assert abs(per_trajectory - 0.98) < 5 * np.sqrt(0.98 / 2000)


# ----------------------------------------------------------------------------------------
# the dynamics follow the switched graph


def _graph_at(adjacency0, flip_times, pairs, mirrored, step, dt):
    """Numpy: the graph in force at ``step`` (every flip at the first step s with
    s dt >= tau applied)."""
    a = adjacency0.copy()
    for p, (i, j) in enumerate(pairs):
        taus = flip_times[p][np.isfinite(flip_times[p])]
        first = np.ceil(taus / dt)
        first = np.where((first - 1) * dt >= taus, first - 1, first)
        if int((first <= step).sum()) % 2:
            a[i, j] = 1 - a[i, j]
            if mirrored:
                a[j, i] = 1 - a[j, i]
    return a


def _springs_numpy(init, index, num_frames, p):
    """One springs simulation, step by step, with the graph in force at each step."""
    loc, vel = init["loc"][index].numpy().copy(), init["vel"][index].numpy().copy()
    a0 = init["adjacency"][index].numpy()
    n = a0.shape[0]
    pairs = list(zip(*np.triu_indices(n, 1), strict=True))
    times = init["flip_times"][index].numpy()

    def clamp():
        for over, sign in ((loc > p.box_size, 1), (loc < -p.box_size, -1)):
            loc[over] = sign * 2 * p.box_size - loc[over]
            vel[over] = -sign * np.abs(vel[over])

    def force(step):
        a = _graph_at(a0, times, pairs, True, step, p.dt)
        f = [(-p.interaction_strength * a * np.subtract.outer(c, c)).sum(-1) for c in loc]
        return np.clip(np.stack(f), -p.max_force, p.max_force)

    out, graphs = [], []
    clamp()
    vel += p.dt * force(0)
    for step in range(1, (num_frames + 1) * p.sample_freq):
        loc += p.dt * vel
        clamp()
        if step % p.sample_freq == 0:
            out.append(np.concatenate([loc.T, vel.T], -1))
            graphs.append(_graph_at(a0, times, pairs, True, step, p.dt))
        vel += p.dt * force(step)
    return np.stack(out, 1), np.stack(graphs)  # [N, T, 4], [T, N, N]


def test_springs_follow_the_graph_in_force_at_each_step():
    sys_, p, init = _init("springs", 3, seed=6, num_objects=4, num_frames=12, switch_rate=1.0)
    assert int(torch.isfinite(init["flip_times"]).sum()) >= 6  # several switches
    traj = sys_.run(init, 12, p, device=CPU).numpy()
    truth = sys_.frame_adjacency(init, 12, p).numpy()
    for i in range(3):
        expected, graphs = _springs_numpy(init, i, 12, p)
        np.testing.assert_allclose(traj[i], expected, atol=1e-10, rtol=0)
        np.testing.assert_array_equal(truth[i], graphs)


def _two_particles(on_at_start, flip_at):
    p = get_system("springs").params({"interaction_strength": 1.0, **FREE})
    init = {
        "loc": torch.tensor([[[-0.5, 0.5], [0.0, 0.0]]], dtype=torch.float64),
        "vel": torch.zeros(1, 2, 2, dtype=torch.float64),
        "adjacency": torch.tensor([[[0, on_at_start], [on_at_start, 0]]]),
        "flip_times": torch.tensor([[[flip_at]]], dtype=torch.float64),
        "switch_horizon": torch.tensor([1.0], dtype=torch.float64),
    }
    return p, init


def test_a_spring_switched_off_stops_pulling_and_one_switched_on_starts():
    springs = get_system("springs")
    # On, then off at t = 0.25 (step 250): frames 0, 1 (steps 100, 200) feel the spring,
    # from frame 2 (step 300) on the velocities no longer change at all.
    p, init = _two_particles(1, 0.25)
    traj = springs.run(init, 9, p, device=CPU)[0]  # [N, T, 4]
    vx = traj[0, :, 2]
    assert vx[1] > vx[0] > 0  # pulled towards the other particle
    assert (vx[2:] == vx[2]).all() and vx[2] > vx[1]
    assert springs.frame_adjacency(init, 9, p)[0, :, 0, 1].tolist() == [1, 1] + [0] * 7
    # Off, then on: nothing moves before the switch, then they accelerate towards each other.
    p, init = _two_particles(0, 0.25)
    traj = springs.run(init, 9, p, device=CPU)[0]
    assert (traj[:, :2, 2:] == 0).all()
    assert (traj[0, 2:, 2] > 0).all() and (traj[1, 2:, 2] < 0).all()
    # A flip exactly at the time of a step acts from that step: frame 1 is step 200.
    p, init = _two_particles(0, 0.2)
    assert springs.frame_adjacency(init, 9, p)[0, :, 0, 1].tolist() == [0] + [1] * 8


def _kuramoto_numpy(init, index, p, num_frames):
    """sin(phi) at the frames, classical RK4 on the fine grid with the couplings in force
    at the point each step starts from; and whether each oscillator is ever driven."""
    omega, phi = init["omega"][index].numpy(), init["phase"][index].numpy().copy()
    a0 = init["adjacency"][index].numpy()
    n = a0.shape[0]
    pairs = [(i, j) for i in range(n) for j in range(n) if i != j]
    times = init["flip_times"][index].numpy()
    window = max(p.window_frames, num_frames)
    last = (window - 1) * p.sample_freq
    ever = np.zeros(n, bool)

    def velocity(x, k):
        return omega + (k * np.sin(x[None, :] - x[:, None])).sum(1)

    sines = []
    for point in range(last + 1):
        if point % p.sample_freq == 0:
            sines.append(np.sin(phi))
        k = p.coupling * _graph_at(a0, times, pairs, False, point, p.dt)
        ever |= k.sum(1) > 0
        k1 = velocity(phi, k)
        k2 = velocity(phi + 0.5 * p.dt * k1, k)
        k3 = velocity(phi + 0.5 * p.dt * k2, k)
        k4 = velocity(phi + p.dt * k3, k)
        phi = phi + p.dt / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
    return np.stack(sines, 1)[:, :num_frames], ever


def test_kuramoto_follows_the_couplings_in_force_at_each_point():
    sys_, p, init = _init("kuramoto", 3, seed=1, num_frames=15, switch_rate=0.5, window_frames=20)
    assert int(torch.isfinite(init["flip_times"]).sum()) >= 20
    feats = sys_.run(init, 15, p, device=CPU).numpy()
    for i in range(3):
        sines, ever = _kuramoto_numpy(init, i, p, 15)
        np.testing.assert_allclose(feats[i, :, :, 1], sines, atol=1e-9, rtol=0)
        # d phi/dt is kept for an oscillator driven at some point of the window.
        assert ((feats[i, :, :, 0] != 0).any(-1) == ever).all()


def test_a_kuramoto_oscillator_driven_from_a_switch_on_keeps_its_speed_feature():
    kuramoto = get_system("kuramoto")
    p = kuramoto.params({"window_frames": 20})
    init = {
        "adjacency": torch.zeros(1, 2, 2, dtype=torch.long),
        "omega": torch.tensor([[2.0, 5.0]], dtype=torch.float64),
        "phase": torch.tensor([[0.0, 1.0]], dtype=torch.float64),
        "flip_times": torch.tensor([[[math.inf], [0.5]]], dtype=torch.float64),  # (0,1), (1,0)
        "switch_horizon": torch.tensor([1.9], dtype=torch.float64),
    }
    feats = kuramoto.run(init, 15, p, device=CPU)[0]
    truth = kuramoto.frame_adjacency(init, 15, p)[0]
    assert truth[:, 1, 0].tolist() == [0] * 5 + [1] * 10  # frame 5 is t = 0.5
    assert truth[:, 0, 1].sum() == 0
    # Oscillator 1 turns at its own frequency until t = 0.5, then oscillator 0 drives it.
    speed = feats[1, :, 0]
    assert torch.allclose(speed[:5], speed[0].expand(5), atol=1e-9)
    assert (speed[5:] - speed[0]).abs().max() > 0.1
    assert (feats[0, :, 0] == 0).all()  # never driven: the reference's rule


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("system", ["springs", "kuramoto"])
def test_switching_on_cuda_matches_cpu(system):
    # Flip times are drawn on the CPU: the truth is the same on any device, and the
    # trajectories agree to rounding.
    cpu = simulate(system, 64, num_frames=10, seed=0, switch_rate=0.5)
    gpu = simulate(system, 64, num_frames=10, seed=0, switch_rate=0.5, device="cuda")
    assert gpu.trajectories.device.type == "cuda" and gpu.adjacency.device.type == "cuda"
    assert torch.equal(cpu.adjacency, gpu.adjacency.cpu())
    assert torch.allclose(cpu.trajectories, gpu.trajectories.cpu(), atol=1e-6)


# ----------------------------------------------------------------------------------------
# files


@pytest.mark.parametrize("system", ["springs", "kuramoto"])
@pytest.mark.parametrize("fmt", ["native", "nri"])
def test_both_formats_carry_per_frame_truth(tmp_path, system, fmt):
    out = generate_dataset(
        system, tmp_path / "d", train=8, valid=3, test=3, num_frames=6, test_frames=11,
        seed=3, format=fmt, progress=False, switch_rate=0.4,
    )  # fmt: skip
    meta = json.loads((out / "meta.json").read_text())
    assert meta["params"]["switch_rate"] == 0.4
    assert meta["version"] == 2 and meta["splits"]["test"]["graphs_per_frame"] is True
    splits = load_dataset(out)
    assert splits["train"].adjacency.shape == (8, 6, 5, 5)
    assert splits["test"].adjacency.shape == (3, 11, 5, 5) and splits["test"].dynamic
    direct = simulate(system, 3, num_frames=11, seed=3, split="test", switch_rate=0.4)
    assert torch.equal(splits["test"].trajectories, direct.trajectories)
    assert torch.equal(splits["test"].adjacency, direct.adjacency)
    if fmt == "nri":  # the reference's edge convention, one graph per frame
        edges = np.load(out / f"edges_test_{system}5.npy")
        assert edges.shape == (3, 11, 5, 5)
        assert edges.dtype == (np.float64 if system == "springs" else np.int64)
        again = write_reference(tmp_path / "again", read_reference(out))
        for path in out.glob("*.npy"):
            assert np.array_equal(np.load(path), np.load(again / path.name)), path.name
    else:
        assert np.load(out / "test_adjacency.npy").shape == (3, 11, 5, 5)


def test_save_dataset_round_trips_per_frame_truth(tmp_path):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(4, 3, 7, 2, generator=gen, dtype=torch.float64)
    a = torch.randint(0, 3, (4, 7, 3, 3), generator=gen)
    a.diagonal(dim1=2, dim2=3).zero_()
    data = TrajectoryDataset.from_arrays(x, a)
    static = TrajectoryDataset.from_arrays(x[:2], a[:2, 0])
    save_dataset(tmp_path / "d", {"train": data, "test": static})
    back = load_dataset(tmp_path / "d")
    assert torch.equal(back["train"].adjacency, a) and back["train"].dynamic
    assert torch.equal(back["test"].adjacency, a[:2, 0]) and not back["test"].dynamic
    meta = json.loads((tmp_path / "d" / "meta.json").read_text())
    assert meta["version"] == 2 and "graphs_per_frame" not in meta["splits"]["test"]


def test_a_per_frame_file_of_the_wrong_shape_is_a_clear_error(tmp_path):
    out = generate_dataset(
        "springs", tmp_path / "d", train=4, valid=0, test=0, num_frames=5, progress=False,
        switch_rate=0.1,
    )  # fmt: skip
    np.save(out / "train_adjacency.npy", np.zeros((4, 4, 5, 5), np.int8))
    with pytest.raises(ValueError, match=r"train_adjacency.npy has shape \(4, 4, 5, 5\); expected"):
        load_dataset(out)
    ref = generate_dataset(
        "springs", tmp_path / "r", train=4, valid=0, test=0, num_frames=5, progress=False,
        format="nri", switch_rate=0.1,
    )  # fmt: skip
    np.save(ref / "edges_train_springs5.npy", np.zeros((4, 6, 5, 5)))
    with pytest.raises(ValueError, match="one graph per frame"):
        load_dataset(ref)


# ----------------------------------------------------------------------------------------
# the dataset's methods keep per-frame truth aligned


def test_dataset_methods_keep_per_frame_truth_aligned():
    data = simulate("springs", 6, num_frames=10, seed=5, switch_rate=0.8)
    a = data.adjacency
    assert "graphs per frame" in repr(data)
    sub = data.subset(torch.tensor([4, 1]))
    assert torch.equal(sub.adjacency, a[[4, 1]]) and sub.dynamic
    assert torch.equal(data.subset(slice(2, 5)).edges, data.edges[2:5])
    picked = data.select_features([2, 0])
    assert torch.equal(picked.adjacency, a) and picked.trajectories.shape == (6, 5, 10, 2)
    stats = get_system("springs").norm_groups
    normed = data.normalized(Normalizer.fit(data.trajectories, stats))
    assert torch.equal(normed.adjacency, a)
    assert torch.equal(data.to("cpu").adjacency, a)
    cut = data.first_frames(4)
    assert cut.trajectories.shape == (6, 5, 4, 4) and torch.equal(cut.adjacency, a[:, :4])
    assert torch.equal(cut.trajectories, data.trajectories[:, :, :4])
    static = TrajectoryDataset(data.trajectories, a[:, 0])
    assert torch.equal(static.first_frames(4).adjacency, a[:, 0]) and not static.dynamic
    x, graphs = data[3]
    assert x.shape == (5, 10, 4) and torch.equal(graphs, a[3])
    batch = next(iter(torch.utils.data.DataLoader(data, batch_size=4)))
    assert batch[1].shape == (4, 10, 5, 5)
    freq = data.edge_type_frequencies()
    off = ~torch.eye(5, dtype=torch.bool)
    assert torch.allclose(freq[1], a[..., off].double().mean()) and float(freq.sum()) == 1.0


# ----------------------------------------------------------------------------------------
# bad input


def test_bad_switching_input_is_a_clear_error():
    springs = get_system("springs")
    with pytest.raises(ValueError, match=r"switch_rate .* must be a finite non-negative"):
        springs.params({"switch_rate": -0.1})
    with pytest.raises(ValueError, match=r"switch_rate .* must be a finite non-negative"):
        simulate("kuramoto", 2, switch_rate=float("inf"))
    with pytest.raises(ValueError, match="parameter 'switch_rate' expects a float"):
        springs.params({"switch_rate": "often"})
    with pytest.raises(ValueError, match="unknown parameter 'switch_rate' for system 'charged'"):
        simulate("charged", 2, switch_rate=0.1)
    p = springs.params({"switch_rate": 0.1})
    with pytest.raises(ValueError, match="pass num_frames"):
        springs.initial(2, 5, p, torch.Generator().manual_seed(0))
    # Flip times drawn for 5 frames cannot drive a run of 9.
    init = springs.initial(2, 5, p, torch.Generator().manual_seed(0), num_frames=5)
    with pytest.raises(ValueError, match=r"drawn for 0\.5 time units, but this run needs 0\.9"):
        springs.run(init, 9, p, device=CPU)


def test_a_switch_rate_above_one_flip_per_frame_is_refused_before_any_work(tmp_path, capsys):
    # Frames are sample_freq * dt = 0.1 time units apart in both systems: at most 10.
    get_system("springs").params({"switch_rate": 10.0})
    for system in ("springs", "kuramoto"):
        with pytest.raises(ValueError, match=r"switch_rate must be at most 10 .* got 1e\+06"):
            get_system(system).params({"switch_rate": 1e6})
    with pytest.raises(ValueError, match="switch_rate must be at most 1000"):
        get_system("springs").params({"switch_rate": 2e3, "sample_freq": 1})
    out = tmp_path / "d"
    argv = ["simulate", "springs", "--train", "96", "--valid", "0", "--test", "0"]
    assert main([*argv, "--param", "switch_rate=1e3", "--out", str(out)]) == 2
    assert "switch_rate must be at most 10" in capsys.readouterr().err
    assert not out.exists()


def test_per_frame_adjacency_of_the_wrong_shape_is_refused():
    x = torch.zeros(3, 4, 6, 2)
    with pytest.raises(ValueError, match=r"\[S, T, N, N\] = \[3, 6, 4, 4\] \(one graph per frame"):
        TrajectoryDataset(x, torch.zeros(3, 5, 4, 4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"got \[3, 6, 4\]"):
        TrajectoryDataset(x, torch.zeros(3, 6, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="edge types must be >= 0"):
        TrajectoryDataset(x, -torch.ones(3, 6, 4, 4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"num_frames must lie in 1..6"):
        TrajectoryDataset(x, torch.zeros(3, 6, 4, 4, dtype=torch.long)).first_frames(7)


def test_cli_simulate_with_a_switch_rate_writes_a_loadable_dataset(tmp_path):
    out = tmp_path / "switching"
    argv = ["simulate", "springs", "--objects", "3", "--train", "10", "--valid", "2"]
    argv += ["--test", "2", "--frames", "5", "--test-frames", "9", "--no-progress"]
    assert main([*argv, "--param", "switch_rate=0.02", "--out", str(out)]) == 0
    splits = load_dataset(out)
    assert splits["train"].adjacency.shape == (10, 5, 3, 3)
    assert splits["test"].adjacency.shape == (2, 9, 3, 3)
    assert splits["test"].metadata["params"]["switch_rate"] == 0.02
    assert main([*argv, "--param", "switch_rate=-1", "--out", str(tmp_path / "x")]) == 2
