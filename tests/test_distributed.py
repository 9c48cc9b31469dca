"""Data-parallel training under torchrun: two CPU processes with gloo do what one does."""

from __future__ import annotations

import copy
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from nri_pyro import distributed, save_dataset, simulate
from nri_pyro.checkpoints import load_checkpoint
from nri_pyro.nn import GlobalBatchNorm1d
from nri_pyro.nn.encoders import _CNN

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


# The bias of the CNN encoder's attention scores shifts every frame's score alike, which the
# softmax over time ignores: its exact gradient is 0, and Adam turns the rounding noise in it
# into steps of +-lr. Nothing the runs compute depends on it, so it is not compared.
WITHOUT_GRADIENT = {"guide.encoder.cnn.conv_attention.bias"}


def _assert_same_parameters(one: Path, two: Path, **tolerance: float) -> None:
    a, b = _params(one), _params(two)
    assert a.keys() == b.keys()
    for name in (name for name in a if name not in WITHOUT_GRADIENT):
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


def test_the_cnn_encoder_trains_alike_in_two_processes(tmp_path):
    """guides/cnn.yaml: the batch norms after its convolutions (statistics over trajectories,
    edges and time) take the global batch's statistics like the MLP encoder's, so global
    batch 12 in one process vs 6 + 6 in two gives the same parameters after 8 steps."""
    train = simulate("springs", 48, 4, seed=3, num_frames=_CNN.MIN_FRAMES + 2)
    valid = simulate("springs", 8, 4, seed=4, num_frames=_CNN.MIN_FRAMES + 2, split="valid")
    data = save_dataset(tmp_path / "springs4", {"train": train, "valid": valid})
    guide = ["--guide", "cnn"]
    single = _single(data, guide, tmp_path / "single")
    args = ["train", "--data", str(data), *guide, *SETTINGS, "--out", str(tmp_path / "double")]
    _check_finished(_torchrun(args, tmp_path / "logs"), tmp_path / "logs")
    _assert_same_parameters(single, tmp_path / "double", rtol=1e-4, atol=1e-5)


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


@pytest.fixture
def one_process_run() -> Iterator[distributed.DataParallel]:
    """A gloo group of this process alone, so that a step's reductions run for real."""
    torch.distributed.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{_free_port()}", rank=0, world_size=1
    )
    try:
        yield distributed.DataParallel(0, 1, 0, torch.device("cpu"), "gloo")
    finally:
        distributed.finish()


@pytest.mark.parametrize("shape", [(40, 3), (8, 3, 5)], ids=["rows", "rows-time"])
def test_a_steps_synced_batch_norm_is_batch_norm_over_the_global_rows(one_process_run, shape):
    """In a step (here of one process, whose rows are the global batch) GlobalBatchNorm1d
    computes what BatchNorm1d computes in training, after linear layers ([rows, C]) and
    after the CNN encoder's convolutions ([rows, C, L]): output, gradients, running
    statistics."""
    torch.manual_seed(0)
    x = (torch.randn(shape, dtype=torch.float64) * 3 + 2).requires_grad_()
    plain = torch.nn.BatchNorm1d(3, momentum=None).double()
    with torch.no_grad():
        plain.weight.uniform_(0.5, 1.5), plain.bias.uniform_(-1, 1)
    synced = GlobalBatchNorm1d.like(copy.deepcopy(plain))
    outputs, grads = [], []
    for bn, active in ((plain, None), (synced, one_process_run)):
        for _ in range(2):  # the running statistics' cumulative average over two batches
            with distributed.stepping(active, shape[0]):
                out = bn(x)
        (grad,) = torch.autograd.grad(out.sin().sum(), x)
        outputs.append(out), grads.append(grad)
    torch.testing.assert_close(outputs[1], outputs[0], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-10, atol=1e-12)
    for (key, a), b in zip(synced.state_dict().items(), plain.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=0, msg=key)
    assert int(synced.num_batches_tracked) == 2


def test_the_synced_batch_norm_takes_float32_statistics_under_bf16_autocast(one_process_run):
    """Activations of mean 30 and spread 1 in bf16: E[h²] - mean² of bf16 sums loses
    everything (900 is represented to within 2); in float32 the variance keeps four
    digits, and the output is bf16 like BatchNorm1d's."""
    torch.manual_seed(0)
    channels = 4
    h = (30 + torch.randn(512, channels, 6)).bfloat16()
    bn = GlobalBatchNorm1d(channels, momentum=1.0)  # running statistics: this batch's
    with distributed.stepping(one_process_run, 512), torch.autocast("cpu", torch.bfloat16):
        out = bn(h)
    exact = h.double()
    mean, var = exact.mean((0, 2)), exact.var((0, 2), unbiased=False)
    assert bn.running_mean.dtype == torch.float32
    torch.testing.assert_close(bn.running_mean.double(), mean, rtol=1e-6, atol=0)
    torch.testing.assert_close(
        bn.running_var.double(), exact.var((0, 2), unbiased=True), rtol=1e-3, atol=0
    )
    assert out.dtype == torch.bfloat16
    normalized = (exact - mean[:, None]) / torch.sqrt(var[:, None] + bn.eps)
    torch.testing.assert_close(out.double(), normalized, rtol=1e-2, atol=2e-2)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch's own, on importing dynamo
def test_a_compiled_synced_batch_norm_follows_the_step(one_process_run, monkeypatch):
    """Compiled (train.compile), the batch norm exchanges its sums in a step and only there:
    the graph compiled outside a step is not reused inside one, nor the other way round."""
    exchanges = []
    all_reduce = torch.distributed.all_reduce
    monkeypatch.setattr(
        torch.distributed, "all_reduce", lambda t, *a, **k: exchanges.append(1) or all_reduce(t)
    )
    torch._dynamo.reset()
    bn = GlobalBatchNorm1d(3)
    compiled = torch.compile(bn, backend="eager")
    x = torch.randn(8, 3, 5, requires_grad=True)
    plain = torch.nn.BatchNorm1d(3)
    for active in (None, one_process_run, None):
        before = len(exchanges)
        with distributed.stepping(active, 8):
            out = compiled(x)
        out.square().sum().backward()  # the gradient of the sums is exchanged too
        assert len(exchanges) - before == (0 if active is None else 2)
        torch.testing.assert_close(out, plain(x), rtol=1e-5, atol=1e-5)
    torch._dynamo.reset()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
