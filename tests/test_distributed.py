"""Data-parallel training under torchrun: two CPU processes with gloo do what one does."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from nri_pyro import distributed, save_dataset, simulate
from nri_pyro.infer import load_checkpoint

# A tiny network; 48 trajectories at batch 12 (4 steps an epoch), 2 epochs.
SETTINGS = [
    "--preset", "none",
    "--set", "decoder.msg_hidden=16", "--set", "decoder.msg_out=16", "--set", "decoder.hidden=16",
    "--set", "guide.encoder.hidden=16", "--set", "train.batch_size=12", "--set", "train.lr=1e-2",
    "--set", "train.progress=false", "--epochs", "2",
]  # fmt: skip
RANK_LINE = re.compile(r"rank (\d) of 2: 2 epochs done, replicas agree \(parameters (\w+)\)")


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("dist") / "springs4"
    train = simulate("springs", 48, 4, seed=3, num_frames=12)
    valid = simulate("springs", 8, 4, seed=4, num_frames=12, split="valid")
    return save_dataset(folder, {"train": train, "valid": valid})


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    return {**env, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def _torchrun(args: list[str], logs: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    """Two processes on this machine, each rank's output in its own file under ``logs``."""
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "--log-dir", str(logs), "--redirects", "3", "-m", "nri_pyro.cli", *args,
    ]  # fmt: skip
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=_env())


def _rank_outputs(logs: Path) -> dict[int, str]:
    """Each rank's stdout and stderr, from torchrun's log folder (<run>/attempt_0/<rank>/)."""
    outputs: dict[int, str] = {}
    for path in logs.rglob("std*.log"):
        rank = int(path.parent.name)
        outputs[rank] = outputs.get(rank, "") + path.read_text()
    return outputs


def _params(run: Path) -> dict[str, torch.Tensor]:
    state = load_checkpoint(run / "checkpoint_last.pt")
    return {
        **{f"model.{k}": v for k, v in state["model_state"].items()},
        **{f"guide.{k}": v for k, v in state["guide_state"].items()},
    }


def _check_finished(result: subprocess.CompletedProcess, logs: Path) -> dict[int, str]:
    """Both ranks must have said that they finished with agreeing replicas. gloo may still
    crash while the processes exit, after the work is done: that alone is not a failure
    (the exit status is then not 0 but every rank's output shows its work complete)."""
    outputs = _rank_outputs(logs)
    digests = {}
    for rank in (0, 1):
        match = RANK_LINE.search(outputs.get(rank, ""))
        assert match, (
            f"rank {rank} did not finish (exit status {result.returncode}):\n"
            f"{outputs.get(rank, '')[-3000:]}\n{result.stderr[-3000:]}"
        )
        digests[rank] = match.group(2)
    assert digests[0] == digests[1]
    return outputs


def _single(data: Path, model: list[str], out: Path) -> Path:
    cmd = [sys.executable, "-m", "nri_pyro.cli", "train", "--data", str(data), *model, *SETTINGS]
    done = subprocess.run(
        [*cmd, "--out", str(out)], capture_output=True, text=True, timeout=120, env=_env()
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def two_process_run(data, tmp_path_factory) -> tuple[Path, dict[int, str]]:
    """The default model trained by two processes for two epochs."""
    tmp = tmp_path_factory.mktemp("double")
    args = ["train", "--data", str(data), *SETTINGS, "--out", str(tmp / "run")]
    outputs = _check_finished(_torchrun(args, tmp / "logs"), tmp / "logs")
    return tmp / "run", outputs


def _assert_same_parameters(one: Path, two: Path, **tolerance: float) -> None:
    a, b = _params(one), _params(two)
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(b[name], a[name], msg=name, **tolerance)


def test_two_gloo_processes_train_what_one_process_trains_on_the_global_batch(
    data, tmp_path, two_process_run
):
    """Global batch 12 in one process vs 6 + 6 in two: the same parameters after 8 steps
    (up to float32 summation order)."""
    double, outputs = two_process_run
    assert "training" in outputs[0] and "training" not in outputs[1]  # rank 0 speaks
    _assert_same_parameters(_single(data, [], tmp_path / "single"), double, rtol=1e-4, atol=1e-5)
    # The run folder is rank 0's: one line of metrics per epoch.
    assert len((double / "metrics.jsonl").read_text().splitlines()) == 2


def test_a_prior_whose_guide_pools_the_batch_trains_alike_in_two_processes(data, tmp_path):
    """The Dirichlet prior's conjugate update sums the global batch's edge-type counts."""
    model = ["--model", str(Path(__file__).parents[1] / "models" / "nri_dirichlet.yaml")]
    single = _single(data, model, tmp_path / "single")
    args = ["train", "--data", str(data), *model, *SETTINGS, "--out", str(tmp_path / "double")]
    _check_finished(_torchrun(args, tmp_path / "logs"), tmp_path / "logs")
    _assert_same_parameters(single, tmp_path / "double", rtol=1e-4, atol=1e-5)


def test_a_distributed_run_resumes_from_its_checkpoint(data, tmp_path, two_process_run):
    """Two epochs in one go equal one epoch, then a resumed second, in two processes."""
    resumed = tmp_path / "resumed"
    args = ["train", "--data", str(data), *SETTINGS]
    first = _torchrun([*args, "--epochs", "1", "--out", str(resumed)], tmp_path / "l1")
    assert load_checkpoint(resumed / "checkpoint_last.pt")["epoch"] == 1, first.stderr[-2000:]
    result = _torchrun([*args, "--out", str(resumed), "--resume"], tmp_path / "l2")
    _check_finished(result, tmp_path / "l2")
    _assert_same_parameters(two_process_run[0], resumed, rtol=0, atol=0)


def test_processes_given_different_runs_refuse_with_the_difference(data, tmp_path):
    """Rank 1 with another hidden size: both fail before training and say what differs."""
    script = (
        "import os, sys; from nri_pyro.cli import main; "
        "extra = ['--set', 'decoder.hidden=32'] if os.environ['RANK'] == '1' else []; "
        "sys.exit(main(sys.argv[1:] + extra))"
    )
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "--log-dir", str(tmp_path / "logs"), "--redirects", "3", "--no-python", sys.executable,
        "-c", script, "train", "--data", str(data), *SETTINGS, "--out", str(tmp_path / "run"),
    ]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=_env())
    assert result.returncode != 0
    outputs = _rank_outputs(tmp_path / "logs")
    for rank in (0, 1):
        assert "were not given the same run" in outputs[rank], outputs[rank][-2000:]
        assert "model spec" in outputs[rank]
    assert not (tmp_path / "run" / "checkpoint_last.pt").exists()


def test_a_missing_process_is_an_error_after_the_timeout_not_a_hang(monkeypatch):
    """WORLD_SIZE=2 but only rank 0 starts: it gives up after the timeout."""
    world = {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1"}
    for key, value in {**world, "MASTER_PORT": str(_free_port())}.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(distributed.DistributedError, match="are all 2 processes started"):
        distributed.from_environment("cpu", timeout_s=3)
    assert not torch.distributed.is_initialized()


def test_a_distributed_environment_without_torchrun_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    for key in ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(key, raising=False)
    with pytest.raises(distributed.DistributedError, match="launch with torchrun"):
        distributed.from_environment("cpu")


def test_more_processes_than_the_batch_is_refused(data, tmp_path):
    args = ["train", "--data", str(data), *SETTINGS, "--set", "train.batch_size=1"]
    result = _torchrun([*args, "--out", str(tmp_path / "run")], tmp_path / "logs")
    assert result.returncode != 0
    outputs = _rank_outputs(tmp_path / "logs")
    assert "must be at least the number of processes" in outputs[0], outputs[0][-2000:]


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
