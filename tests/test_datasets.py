"""Datasets: native and reference files, normalisation, splits, and refusing bad input."""

import json

import numpy as np
import pytest
import torch
from common import interrupt, start, wait_for

from nri_pyro import (
    Normalizer,
    TrajectoryDataset,
    generate_dataset,
    load_dataset,
    save_dataset,
    simulate,
)
from nri_pyro.data import io as data_io
from nri_pyro.data.reference import read_reference, write_reference
from nri_pyro.folders import FolderInUseError

SMALL = {
    "train": 30,
    "valid": 10,
    "test": 10,
    "num_frames": 6,
    "test_frames": 11,
    "progress": False,
}


@pytest.mark.parametrize("system", ["springs", "charged", "kuramoto"])
@pytest.mark.parametrize("fmt", ["native", "nri"])
def test_generated_dataset_loads_back_with_its_metadata(tmp_path, system, fmt):
    out = generate_dataset(system, tmp_path / "d", seed=3, format=fmt, **SMALL)
    splits = load_dataset(out)
    assert list(splits) == ["train", "valid", "test"]
    assert splits["train"].trajectories.shape == (30, 5, 6, 4)
    assert splits["test"].trajectories.shape == (10, 5, 11, 4)
    assert splits["train"].metadata["seed"] == 3
    assert splits["train"].metadata["system"] == system
    # The same simulations as in memory, from the same seed and split.
    direct = simulate(system, 10, num_frames=11, seed=3, split="test")
    assert torch.equal(splits["test"].trajectories, direct.trajectories)
    assert torch.equal(splits["test"].adjacency, direct.adjacency)


def test_reference_layout_round_trip_is_exact(tmp_path):
    for system in ("springs", "charged", "kuramoto"):
        first = generate_dataset(system, tmp_path / system, format="nri", **SMALL)
        again = write_reference(tmp_path / f"{system}-again", read_reference(first))
        names = sorted(p.name for p in first.glob("*.npy"))
        assert names == sorted(p.name for p in again.glob("*.npy"))
        for name in names:
            a, b = np.load(first / name), np.load(again / name)
            assert a.dtype == b.dtype and np.array_equal(a, b), name


def test_reference_files_have_the_reference_shapes_and_values(tmp_path):
    out = generate_dataset("charged", tmp_path / "c", format="nri", **SMALL)
    loc = np.load(out / "loc_train_charged5.npy")
    edges = np.load(out / "edges_train_charged5.npy")
    assert loc.shape == (30, 6, 2, 5) and loc.dtype == np.float64
    assert edges.shape == (30, 5, 5) and set(np.unique(edges)) <= {-1.0, 1.0}
    assert (np.diagonal(edges, axis1=1, axis2=2) == 1).all()  # q_i q_i
    ds = read_reference(out)["train"]
    assert torch.equal(ds.trajectories[..., 0].transpose(1, 2), torch.from_numpy(loc[:, :, 0]))
    expected = torch.from_numpy(((edges + 1) / 2).astype(np.int64))
    expected.diagonal(dim1=1, dim2=2).zero_()
    assert torch.equal(ds.adjacency, expected)


def test_normalisation_uses_training_statistics_for_every_split(tmp_path):
    splits = load_dataset(generate_dataset("springs", tmp_path / "s", **SMALL))
    stats = splits["train"].normalizer
    train = splits["train"].normalized()
    for group in ((0, 1), (2, 3)):
        values = train.trajectories[..., list(group)]
        assert float(values.min()) == pytest.approx(-1.0, abs=1e-12)
        assert float(values.max()) == pytest.approx(1.0, abs=1e-12)
    test = splits["test"].normalized()
    assert test.normalizer == stats  # the training statistics travel with every split
    expected = (splits["test"].trajectories[..., 0] - stats.low[0]) * 2 / (
        stats.high[0] - stats.low[0]
    ) - 1
    assert torch.allclose(test.trajectories[..., 0], expected)
    assert torch.allclose(stats.invert(test.trajectories), splits["test"].trajectories)
    # The stored statistics equal a fit on the training split.
    assert Normalizer.fit(splits["train"].trajectories, stats.groups) == stats


def test_test_split_does_not_change_when_the_training_split_grows(tmp_path):
    a = load_dataset(generate_dataset("springs", tmp_path / "a", **SMALL))
    b = load_dataset(generate_dataset("springs", tmp_path / "b", **{**SMALL, "train": 300}))
    assert torch.equal(a["test"].trajectories, b["test"].trajectories)
    assert torch.equal(a["valid"].trajectories, b["valid"].trajectories)
    # The first 30 training simulations are the same ones; a batch of 30 and one of 300
    # may round the last bit differently in vectorised kernels.
    assert torch.equal(a["train"].adjacency, b["train"].adjacency[:30])
    assert torch.allclose(a["train"].trajectories, b["train"].trajectories[:30], atol=1e-12)


def test_native_save_and_load_of_user_arrays(tmp_path):
    x = torch.randn(7, 3, 12, 2, dtype=torch.float64)
    adjacency = torch.randint(0, 3, (7, 3, 3))
    ds = TrajectoryDataset.from_arrays(x, adjacency, note="mine")
    save_dataset(tmp_path / "mine", {"train": ds})
    back = load_dataset(tmp_path / "mine")["train"]
    assert torch.equal(back.trajectories, x)
    assert torch.equal(back.adjacency, adjacency)
    assert back.metadata["note"] == "mine"
    assert back.edges.shape == (7, 6)


def test_edges_are_flattened_receiver_major_without_the_diagonal():
    a = torch.arange(9).reshape(1, 3, 3)
    ds = TrajectoryDataset(torch.zeros(1, 3, 2, 1), a)
    assert ds.edges.tolist() == [[1, 2, 3, 5, 6, 7]]


def test_a_folder_holding_a_dataset_is_refused_unless_overwrite(tmp_path):
    out = generate_dataset("springs", tmp_path / "d", seed=1, **SMALL)
    with pytest.raises(FileExistsError, match="already holds a dataset"):
        generate_dataset("springs", out, seed=2, **SMALL)
    generate_dataset("springs", out, seed=2, overwrite=True, **SMALL)
    assert load_dataset(out)["train"].metadata["seed"] == 2


def test_an_interrupted_generation_leaves_no_dataset(tmp_path, monkeypatch):
    calls = {"n": 0}
    original = data_io.NativeWriter.write

    def interrupt_on_second_chunk(self, *args):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return original(self, *args)

    monkeypatch.setattr(data_io.NativeWriter, "write", interrupt_on_second_chunk)
    with pytest.raises(KeyboardInterrupt):
        generate_dataset("springs", tmp_path / "d", **{**SMALL, "train": 2500})
    assert not (tmp_path / "d").exists()
    assert list(tmp_path.iterdir()) == []  # the staging folder is gone too


def test_missing_or_inconsistent_reference_files_are_named(tmp_path):
    out = generate_dataset("springs", tmp_path / "r", format="nri", **SMALL)
    (out / "meta.json").unlink()
    (out / "vel_valid_springs5.npy").unlink()
    with pytest.raises(FileNotFoundError, match=r"vel_valid_springs5\.npy is missing"):
        load_dataset(out)
    np.save(out / "vel_valid_springs5.npy", np.zeros((10, 6, 2, 4)))
    with pytest.raises(ValueError, match=r"vel_valid_springs5.npy has shape \(10, 6, 2, 4\)"):
        load_dataset(out)
    np.save(out / "vel_valid_springs5.npy", np.zeros((10, 6, 2, 5)))
    np.save(out / "edges_valid_springs5.npy", np.zeros((9, 5, 5)))
    with pytest.raises(ValueError, match=r"edges_valid_springs5\.npy has shape"):
        load_dataset(out)


def test_a_folder_with_only_a_test_split_loads(tmp_path):
    out = generate_dataset(
        "springs", tmp_path / "t", format="nri", **{**SMALL, "train": 0, "valid": 0}
    )
    (out / "meta.json").unlink()
    splits = load_dataset(out)
    assert list(splits) == ["test"]
    assert splits["test"].normalizer is None
    with pytest.raises(ValueError, match="no normalisation statistics"):
        splits["test"].normalized()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"num_objects": 1}, "at least 2"),
        ({"train": -5}, "train must be a non-negative whole number"),
        ({"num_frames": 0}, "number of frames must be at least 1"),
        ({"edge_prob": 1.5}, r"edge_prob must lie in \[0, 1\]"),
        ({"springiness": 1.0}, "unknown parameter 'springiness'"),
        ({"format": "hdf5"}, "unknown format"),
        ({"device": "cuda:7"}, "cuda"),
        ({"train": 0, "valid": 0, "test": 0}, "nothing to simulate"),
    ],
)
def test_bad_arguments_are_refused_before_any_work(tmp_path, kwargs, message):
    args = {**SMALL, **kwargs}
    with pytest.raises(ValueError, match=message):
        generate_dataset("springs", tmp_path / "d", **args)
    assert not (tmp_path / "d").exists()


def test_unknown_system_lists_the_valid_ones():
    with pytest.raises(ValueError, match="valid systems: charged, kuramoto, springs"):
        simulate("spring", 3)


def test_user_arrays_with_bad_values_or_shapes_are_refused():
    with pytest.raises(ValueError, match="NaN or infinite"):
        TrajectoryDataset.from_arrays(np.full((2, 3, 4, 1), np.nan))
    with pytest.raises(ValueError, match=r"\[S, N, T, D\]"):
        TrajectoryDataset.from_arrays(np.zeros((2, 3, 4)))
    with pytest.raises(ValueError, match="adjacency must have shape"):
        TrajectoryDataset.from_arrays(np.zeros((2, 3, 4, 1)), np.zeros((2, 3, 2), dtype=int))


def test_a_newer_native_format_is_refused_clearly(tmp_path):
    out = generate_dataset("springs", tmp_path / "d", **SMALL)
    meta = json.loads((out / "meta.json").read_text())
    meta["version"] = 99
    (out / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="newer than this nri-pyro understands"):
        load_dataset(out)


# The child blocks in its first write, with its staging folder on disk, until terminated.
_BLOCKED_WRITER = """
import sys, time
from nri_pyro import generate_dataset
from nri_pyro.data import io as data_io
from nri_pyro.folders import FolderInUseError

def write(self, *args):
    print("writing", flush=True)
    time.sleep(120)

data_io.NativeWriter.write = write
generate_dataset("springs", sys.argv[1], train=10, valid=0, test=0, num_frames=4,
                 progress=False)
"""


def _partials(folder, name="d"):
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(f".{name}.partial-"))


def _blocked_child(out):
    """A simulate run of ``out`` that blocks in its first write, started."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-c", _BLOCKED_WRITER, str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip


def test_a_terminated_simulation_removes_its_staging_folder(tmp_path):
    """SIGTERM cleans up as Ctrl-C does, and the process still ends by SIGTERM."""
    import signal

    child = _blocked_child(tmp_path / "d")
    try:
        assert child.stdout.readline() == "writing\n", child.stderr.read()
        assert len(_partials(tmp_path)) == 1  # the staging folder is there, half-written
        child.send_signal(signal.SIGTERM)
        child.wait(timeout=60)
    finally:
        child.kill()
        child.wait()
    assert child.returncode == -signal.SIGTERM, child.stderr.read()
    assert list(tmp_path.iterdir()) == []  # neither the dataset nor its staging folder


def test_the_next_run_removes_what_a_killed_run_left_but_not_a_live_runs_folder(tmp_path):
    """A killed run (SIGKILL, power loss) cannot clean up: the next run of the same target
    removes what it left, and never the staging folder of a run that is still going."""
    import signal

    killed = running = _blocked_child(tmp_path / "d")
    try:
        assert killed.stdout.readline() == "writing\n", killed.stderr.read()
        killed.kill()
        killed.wait(timeout=60)
        killed_partial = _partials(tmp_path)
        assert len(killed_partial) == 1 and (tmp_path / ".d.lock").exists()  # left behind
        running = _blocked_child(tmp_path / "d")  # takes the dead run's lock over
        assert running.stdout.readline() == "writing\n", running.stderr.read()
        assert len(_partials(tmp_path)) == 1 and _partials(tmp_path) != killed_partial
        with pytest.raises(FolderInUseError, match=f"process {running.pid} on"):
            generate_dataset("springs", tmp_path / "d", **SMALL)
        assert len(_partials(tmp_path)) == 1  # the live run's staging folder is kept
        running.send_signal(signal.SIGTERM)
        running.wait(timeout=60)
        assert _partials(tmp_path) == []  # the live run removed it, and its lock
        generate_dataset("springs", tmp_path / "d", **SMALL)
        assert load_dataset(tmp_path / "d")["train"].num_frames == SMALL["num_frames"]
    finally:
        for child in (killed, running):
            child.kill()
            child.wait()


def test_stale_staging_folders_of_other_targets_and_machines_are_kept(tmp_path):
    import subprocess

    ended = subprocess.Popen(["true"])
    ended.wait()  # ended and reaped: no process has this id now
    host = data_io.staging_host()
    stale = tmp_path / f".d.partial-{ended.pid}@{host}-k1ll3d_x"
    other_target = tmp_path / f".e.partial-{ended.pid}@{host}-0ther"
    other_host = tmp_path / f".d.partial-{ended.pid}@elsewhere.example-r3mote"
    legacy = tmp_path / ".d.partial-q8x_2lm0"  # older nri-pyro: no owner recorded
    for folder in (stale, other_target, other_host, legacy):
        folder.mkdir()
    assert data_io.remove_stale_partials(tmp_path / "d") == [stale]
    assert not stale.exists()
    assert other_target.exists() and other_host.exists() and legacy.exists()


def test_a_truncated_native_file_is_named_and_called_truncated(tmp_path):
    out = generate_dataset("springs", tmp_path / "d", **SMALL)
    path = out / "valid_trajectories.npy"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(ValueError, match=r"valid_trajectories\.npy looks truncated or corrupt"):
        load_dataset(out)
    path.write_bytes(b"")  # not even a header
    with pytest.raises(ValueError, match=r"valid_trajectories\.npy looks truncated or corrupt"):
        load_dataset(out)


def test_a_truncated_reference_file_is_named_and_called_truncated(tmp_path):
    out = generate_dataset("springs", tmp_path / "r", format="nri", **SMALL)
    path = out / "loc_train_springs5.npy"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(ValueError, match=r"loc_train_springs5\.npy looks truncated or corrupt"):
        load_dataset(out)


@pytest.mark.parametrize(
    "kwargs, message, unwritten",
    [
        ({"num_frames": 1}, "num_frames = 1", {"train": 0, "valid": 0}),
        ({"test_frames": 1}, "test_frames = 1", {"test": 0}),
    ],
)
def test_a_dataset_with_too_few_frames_to_train_on_is_refused_before_any_work(
    tmp_path, kwargs, message, unwritten
):
    with pytest.raises(ValueError, match=rf"at least 2 frames.*{message}"):
        generate_dataset("springs", tmp_path / "d", **{**SMALL, **kwargs})
    assert list(tmp_path.iterdir()) == []
    # Splits that are not written need no frames.
    generate_dataset("springs", tmp_path / "t", **{**SMALL, **kwargs, **unwritten})


def test_simulate_refuses_one_frame_at_the_command_line(tmp_path, capsys):
    from nri_pyro.cli import main

    out = tmp_path / "d"
    code = main(["simulate", "springs", "--train", "10", "--valid", "0", "--test", "0",
                 "--frames", "1", "--out", str(out)])  # fmt: skip
    assert code == 2
    assert "at least 2 frames" in capsys.readouterr().err
    assert not out.exists()


def test_selecting_features_keeps_the_statistics_of_whole_groups_only():
    from nri_pyro.data.dataset import Normalizer, TrajectoryDataset

    x = torch.randn(6, 3, 5, 4, dtype=torch.float64)
    stats = Normalizer.fit(x, ((0, 1), (2, 3))).to_dict()
    data = TrajectoryDataset(x, None, {"system": "springs", "normalization": stats})
    velocities = data.select_features([2, 3])
    assert torch.equal(velocities.trajectories, x[..., [2, 3]])
    assert velocities.metadata["normalization"] == {
        "groups": [[0, 1]], "low": [stats["low"][1]], "high": [stats["high"][1]]
    }  # fmt: skip
    assert "normalization" not in data.select_features([0, 2]).metadata  # both groups cut
    with pytest.raises(ValueError, match=r"must lie in 0\.\.3"):
        data.select_features([4])


def test_a_second_simulation_into_one_folder_is_refused_while_the_first_runs(tmp_path):
    out = tmp_path / "d"
    args = ["simulate", "springs", "--objects", "3", "--train", "2000000", "--valid", "0",
            "--test", "0", "--frames", "2", "--no-progress", "--out", str(out)]  # fmt: skip
    first = start(*args)
    wait_for(tmp_path / ".d.lock", first)
    second = start(*args[:-2], "--out", str(out), "--seed", "7")
    _, err = second.communicate(timeout=120)
    assert second.returncode == 2
    assert f"{out} is being written by another process (process {first.pid} on" in err
    code, _, err = interrupt(first)
    assert code == 130 and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []  # no dataset, no staging folder, no lock
