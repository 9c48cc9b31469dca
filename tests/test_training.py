"""Training: exact resume, atomic checkpoints, the run folder, the commands, and learning."""

import json
import time

import numpy as np
import pytest
import torch
from common import interrupt, start, tiny, wait_for

from nri_pyro import generate_dataset, simulate
from nri_pyro.api import NRI
from nri_pyro.checkpoints import load_checkpoint
from nri_pyro.cli import main
from nri_pyro.model import NRIModel
from nri_pyro.training import TrainingDiverged

TINY = tiny(16, "train.batch_size=16", "train.progress=false", "train.eval_batch_size=64")


@pytest.fixture(scope="module")
def small():
    return {
        "train": simulate("springs", 64, num_objects=3, num_frames=12, seed=0),
        "valid": simulate("springs", 32, num_objects=3, num_frames=12, seed=0, split="valid"),
        "test": simulate("springs", 32, num_objects=3, num_frames=99, seed=0, split="test"),
    }


def _params(nri):
    return torch.cat([p.detach().flatten() for p in [*nri.model.parameters(),
                                                     *nri.guide.parameters()]])  # fmt: skip


def test_resume_continues_exactly_where_the_last_checkpoint_was(tmp_path, small):
    whole = NRI(overrides=TINY).fit(small["train"], small["valid"], epochs=4, out=tmp_path / "a")
    NRI(overrides=TINY).fit(small["train"], small["valid"], epochs=2, out=tmp_path / "b")
    resumed = NRI(overrides=TINY).fit(
        small["train"], small["valid"], epochs=4, out=tmp_path / "b", resume=True
    )
    a = [json.loads(line) for line in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    b = [json.loads(line) for line in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in b] == [1, 2, 3, 4]
    assert [r["train_loss"] for r in a] == [r["train_loss"] for r in b]
    last_a = load_checkpoint(tmp_path / "a" / "checkpoint_last.pt")
    last_b = load_checkpoint(tmp_path / "b" / "checkpoint_last.pt")
    for key, value in last_a["model_state"].items():
        assert torch.equal(value, last_b["model_state"][key]), key
    assert resumed.history[-1]["train_loss"] == whole.history[-1]["train_loss"]


def test_a_run_folder_holds_specs_checkpoints_and_metrics(tmp_path, small):
    out = tmp_path / "run"
    nri = NRI(overrides=TINY).fit(small["train"], small["valid"], epochs=2, out=out)
    names = {p.name for p in out.iterdir()}
    assert {"model.yaml", "guide.yaml", "train.yaml", "checkpoint_best.pt", "checkpoint_last.pt",
            "metrics.jsonl"} <= names  # fmt: skip
    assert not [n for n in names if n.startswith(".")]  # no temporary files left behind
    loaded = NRI.load(out)
    assert torch.allclose(loaded.infer_edges(small["test"]), nri.infer_edges(small["test"]))
    assert loaded.normalizer == nri.normalizer
    with pytest.raises(FileExistsError, match="--resume"):
        NRI(overrides=TINY).fit(small["train"], epochs=1, out=out)


def test_evaluation_reports_the_protocol_metrics(small):
    nri = NRI(overrides=TINY).fit(small["train"], epochs=1)
    metrics = nri.evaluate(small["test"])
    for key in ("edge_accuracy", "edge_auroc", "nll", "mse", "elbo_loss", "mse_1", "mse_20"):
        assert np.isfinite(metrics[key]), key
    assert 0 <= metrics["edge_accuracy"] <= 1
    rollout = nri.predict(small["test"], steps=5)
    assert rollout.shape == (32, 3, 5, 4)


def test_checkpoints_refuse_foreign_or_corrupt_files_and_mismatched_data(tmp_path, small):
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a readable checkpoint"):
        NRI.load(tmp_path / "junk.pt")
    torch.save({"weights": torch.zeros(1)}, tmp_path / "foreign.pt")
    with pytest.raises(ValueError, match="not an nri-pyro checkpoint"):
        NRI.load(tmp_path / "foreign.pt")
    nri = NRI(overrides=TINY).fit(small["train"], epochs=1)
    path = nri.save(tmp_path / "model.pt")
    loaded = NRI.load(path)
    other = simulate("springs", 4, num_objects=4, num_frames=12, seed=0)
    with pytest.raises(ValueError, match="trained on 3 objects"):
        loaded.infer_edges(other)
    short = simulate("springs", 4, num_objects=3, num_frames=6, seed=0)
    with pytest.raises(ValueError, match="reads 12 frames"):
        loaded.infer_edges(short)


def test_train_evaluate_and_infer_commands(tmp_path, capsys):
    data = generate_dataset("springs", tmp_path / "d", num_objects=3, train=48, valid=16,
                            test=16, num_frames=12, progress=False)  # fmt: skip
    run = tmp_path / "run"
    args = ["train", "--preset", "none", "--data", str(data), "--epochs", "1", "--out", str(run)]
    for item in TINY:
        args += ["--set", item]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "held-out (test) edge accuracy" in out and str(run) in out
    assert json.loads((run / "summary.json").read_text())["test"]["edge_accuracy"] >= 0
    assert main(["evaluate", str(run), "--data", str(data), "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    for key in ("edge_accuracy", "edge_auroc", "mse_1", "mse_10", "mse_20", "nll"):
        assert key in metrics
    assert main(["infer", str(run), "--data", str(data), "--out", str(tmp_path / "e.npz")]) == 0
    inferred = np.load(tmp_path / "e.npz")
    assert inferred["edge_probs"].shape == (16, 6, 2)
    assert inferred["adjacency_probs"].shape == (16, 3, 3, 2)
    assert np.allclose(inferred["edge_probs"].sum(-1), 1, atol=1e-5)


def test_train_refuses_bad_input_before_any_work(tmp_path, capsys):
    cases = [
        (["train", "--set", "prior.name=nope"], "valid priors"),
        (["train", "--set", "train.lr=0"], "train.lr must be positive"),
        (["train", "--device", "cuda:9"], "cuda"),
        (["train", "--data", str(tmp_path / "missing")], "no such dataset folder"),
        (["evaluate", str(tmp_path / "norun"), "--data", str(tmp_path)], "does not exist"),
    ]
    for argv, message in cases:
        started = time.perf_counter()
        assert main(argv) == 2
        assert message in capsys.readouterr().err
        assert time.perf_counter() - started < 10


def test_bfloat16_precision_runs_the_networks_in_bf16_and_keeps_float32_elsewhere(small):
    """train.precision=bfloat16: the linear layers of encoder and decoder compute in bf16 in
    training steps; parameters and evaluation stay float32; the loss after two epochs is
    close to float32's from the same seed."""
    losses = {}
    for precision in ("float32", "bfloat16"):
        linear_outputs: dict[bool, set] = {True: set(), False: set()}  # training -> dtypes

        def record(module, args, out, seen=linear_outputs):
            if isinstance(module, torch.nn.Linear):
                seen[module.training].add(out.dtype)

        hook = torch.nn.modules.module.register_module_forward_hook(record)
        try:
            nri = NRI(overrides=[*TINY, f"train.precision={precision}"])
            nri.fit(small["train"], small["valid"], epochs=2)
            nll = nri.evaluate(small["valid"])["nll"]
        finally:
            hook.remove()
        expected = torch.bfloat16 if precision == "bfloat16" else torch.float32
        assert linear_outputs == {True: {expected}, False: {torch.float32}}
        params = [*nri.model.parameters(), *nri.guide.parameters()]
        assert all(p.dtype == torch.float32 for p in params)
        assert np.isfinite(nll)
        losses[precision] = nri.history[-1]["train_loss"]
    assert abs(losses["bfloat16"] - losses["float32"]) < 0.05 * abs(losses["float32"])


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch's own, on importing dynamo
def test_train_compile_puts_the_loss_or_the_networks_through_torch_compile(small, monkeypatch):
    """train.compile=true compiles the whole loss on the fast path, else the GNN modules
    (here with dynamo's eager backend: the graph capture without inductor's minutes of code
    generation), and trains the same."""
    from nri_pyro import training
    from nri_pyro.nn import compile_loss, compile_modules
    from nri_pyro.objectives import MeanFieldLoss

    compiled = []

    def eager_modules(module):
        compiled.extend(compile_modules(module, backend="eager"))

    def eager_loss(loss):
        compiled.append(type(loss).__name__)
        compile_loss(loss, backend="eager")

    monkeypatch.setattr(training, "compile_modules", eager_modules)
    monkeypatch.setattr(training, "compile_loss", eager_loss)
    plain = NRI(overrides=TINY).fit(small["train"], epochs=2)
    assert compiled == [] and plain.history[-1]["elbo"] == "fast"
    fast = NRI(overrides=[*TINY, "train.compile=true"]).fit(small["train"], epochs=2)
    assert compiled == [MeanFieldLoss.__name__]
    assert fast.history[-1]["train_loss"] == pytest.approx(plain.history[-1]["train_loss"], 1e-4)
    compiled.clear()
    pyro_path = [*TINY, "train.compile=true", "train.elbo=pyro"]
    modules = NRI(overrides=pyro_path).fit(small["train"], epochs=2)
    assert compiled == ["decoder", "encoder"] and modules.history[-1]["elbo"] == "pyro"
    assert modules.history[-1]["train_loss"] == pytest.approx(
        plain.history[-1]["train_loss"], 1e-4
    )


def test_the_fast_path_trains_as_pyros_elbo_and_the_record_says_which_ran(small, caplog):
    """Both paths take the same steps (the same ELBO on the same draws), epoch by epoch;
    the concrete objective falls back to Pyro, and the log says why."""
    fast = NRI(overrides=TINY).fit(small["train"], small["valid"], epochs=3)
    pyro_path = NRI(overrides=[*TINY, "train.elbo=pyro"]).fit(small["train"], small["valid"],
                                                             epochs=3)  # fmt: skip
    assert [r["elbo"] for r in fast.history] == ["fast"] * 3
    assert [r["elbo"] for r in pyro_path.history] == ["pyro"] * 3
    for a, b in zip(fast.history, pyro_path.history, strict=True):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-4)
        assert a["valid_nll"] == pytest.approx(b["valid_nll"], rel=1e-3)
    with caplog.at_level("INFO", logger="nri_pyro.training"):
        concrete = NRI(overrides=[*TINY, "train.objective=concrete"]).fit(small["train"], epochs=1)
    assert concrete.history[-1]["elbo"] == "pyro"
    assert "training with Pyro's ELBO (the fast path does not apply: the 'concrete'" in caplog.text
    with pytest.raises(ValueError, match="train.elbo = fast does not cover this run"):
        NRI(overrides=[*TINY, "train.objective=concrete", "train.elbo=fast"]).fit(
            small["train"], epochs=1
        )


def test_evaluation_batches_shrink_for_large_systems_only(monkeypatch):
    """memory_safe_batch keeps the requested batch for small systems and lowers it where a
    batch's per-edge tensors would exceed a sixteenth of the device's memory."""
    from nri_pyro.api import build
    from nri_pyro.evaluation import memory_safe_batch
    from nri_pyro.nn import decoders

    small_x, large_x = torch.zeros(2, 5, 49, 4), torch.zeros(2, 100, 49, 4)
    model, guide = build(None, None, small_x)  # the paper's sizes: hidden 256
    assert memory_safe_batch(256, model, guide, small_x, "cpu") == 256
    # 100 objects: 9,900 edges x 5 blocks x (256 + 256) floats, ~101 MB per trajectory.
    monkeypatch.setattr(decoders, "_device_memory", lambda device: 16 * 2**30)  # 16 GiB:
    expected = 2**30 // (4 * 9900 * 5 * 512)  # 1 GiB of them: 10 trajectories
    assert memory_safe_batch(256, model, guide, large_x, "cpu") == expected == 10
    monkeypatch.setattr(decoders, "_device_memory", lambda device: 2**20)
    assert memory_safe_batch(256, model, guide, large_x, "cpu") == 1  # never below one


def test_diverged_weights_are_never_saved_and_the_error_names_the_epoch(tmp_path, small):
    # One step per epoch, measured before it: the loss of epoch 1 is finite, its weights not.
    diverging = [*TINY, "train.batch_size=2000", "train.lr=1e3"]
    with pytest.raises(TrainingDiverged, match=r"epoch 1: .* lower train\.lr \(now 1000\)"):
        NRI(overrides=diverging).fit(small["train"], epochs=2, out=tmp_path / "run")
    assert not (tmp_path / "run" / "checkpoint_best.pt").exists()
    assert not (tmp_path / "run" / "checkpoint_last.pt").exists()
    with pytest.raises(TrainingDiverged, match="epoch 1"):  # without a run folder too
        NRI(overrides=diverging).fit(small["train"], epochs=2)


def test_divergence_is_one_line_at_the_command_line_with_the_epoch_and_a_hint(tmp_path, capsys):
    data = generate_dataset("springs", tmp_path / "d", num_objects=3, train=48, valid=0,
                            test=0, num_frames=12, progress=False)  # fmt: skip
    base = ["train", "--preset", "none", "--data", str(data), "--epochs", "2"]
    for item in TINY:
        base += ["--set", item]
    # A NaN loss; Pyro's check of a distribution given NaN inside a step; NaN outputs.
    cases = [
        # (nan or inf, as the arithmetic goes: the fast path's sums are ordered otherwise)
        (["train.lr=0.5", "train.batch_size=128"], "epoch 2: the loss became "),
        (["train.lr=1e3"], "epoch 1: "),  # a NaN loss or NaN values, as the arithmetic goes
        (["train.lr=1e3", "train.batch_size=2000"], "epoch 1: the weights at its end give NaN"),
    ]
    for i, (settings, message) in enumerate(cases):
        argv = [*base, "--out", str(tmp_path / f"run{i}")]
        for item in settings:
            argv += ["--set", item]
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1, err
        assert f"training diverged at {message}" in err and "lower train.lr" in err, err


def test_a_step_that_pyro_stops_on_non_finite_values_is_a_divergence(monkeypatch, small):
    def forward_raising(message):
        def forward(self, *args, **kwargs):
            raise ValueError(message)

        return forward

    pyro_check = (  # what Pyro's check of a distribution's arguments says, dump and all
        "Expected parameter loc (Tensor of shape (2,)) of distribution Normal() to satisfy the "
        "constraint Real(), but found invalid values:\ntensor([3.4e+10, nan])"
    )
    # The likelihood: both ELBO paths build it.
    monkeypatch.setattr(NRIModel, "likelihood", forward_raising(pyro_check))
    for path in ("fast", "pyro"):
        with pytest.raises(TrainingDiverged, match="epoch 1: the model's or guide's values") as info:
            NRI(overrides=[*TINY, f"train.elbo={path}"]).fit(small["train"], epochs=1)
        assert "\n" not in str(info.value) and "lower train.lr" in str(info.value)
    # Any other error of a step is left as it is.
    monkeypatch.setattr(NRIModel, "likelihood", forward_raising("x must have D = 4 features"))
    with pytest.raises(ValueError, match="D = 4 features") as info:
        NRI(overrides=TINY).fit(small["train"], epochs=1)
    assert not isinstance(info.value, TrainingDiverged)


def test_a_second_train_or_a_resume_is_refused_while_a_run_trains(tmp_path):
    data = generate_dataset("springs", tmp_path / "d", num_objects=3, train=32, valid=8,
                            test=8, num_frames=12, progress=False)  # fmt: skip
    run = tmp_path / "run"
    args = ["train", "--preset", "none", "--data", str(data), "--epochs", "100000", "--out",
            str(run)] + [f"--set={item}" for item in TINY]  # fmt: skip
    first = start(*args)
    wait_for(tmp_path / ".run.lock", first)
    second, resume = start(*args), start(*args, "--resume")
    for proc in (second, resume):
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 2, err
        assert f"{run} is being written by another process (process {first.pid} on" in err
        assert "Traceback" not in err
    # an epoch on record first (on a loaded machine the refusals can come before it)
    wait_for(run / "metrics.jsonl", first, timeout=300)
    code, _, err = interrupt(first)
    assert code == 130 and "Traceback" not in err
    assert not (tmp_path / ".run.lock").exists()  # released by the interrupted run
    epochs = [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").open()]
    assert epochs == list(range(1, len(epochs) + 1))  # one writer
    assert not (run / "resumes.jsonl").exists()


def test_a_torn_last_metrics_line_is_dropped_and_a_torn_earlier_one_named(small, tmp_path, caplog):
    out = tmp_path / "run"
    NRI(overrides=TINY).fit(small["train"], epochs=2, out=out)
    metrics = out / "metrics.jsonl"
    lines = metrics.read_text().splitlines()
    metrics.write_text(f"{lines[0]}\n{lines[1]}\n{lines[1][:25]}")  # killed writing epoch 3
    with caplog.at_level("INFO", logger="nri_pyro"):
        NRI(overrides=TINY).fit(small["train"], epochs=3, out=out, resume=True)
    assert f"{metrics}: dropped line 3, the last, which a crash left half-written" in caplog.text
    assert [json.loads(line)["epoch"] for line in metrics.open()] == [1, 2, 3]
    resumes = (out / "resumes.jsonl").read_text().splitlines()
    assert len(resumes) == 1
    metrics.write_text(f"{lines[0][:25]}\n{lines[1]}\n")  # damage no crash explains
    with pytest.raises(ValueError, match=r"metrics.jsonl, line 1, is not a metrics record"):
        NRI(overrides=TINY).fit(small["train"], epochs=4, out=out, resume=True)
    assert (out / "resumes.jsonl").read_text().splitlines() == resumes  # no resume recorded


def test_the_step_guard_skips_non_finite_and_spiking_steps_and_counts_them(
    tmp_path, small, monkeypatch
):
    """train.step_guard: a NaN loss (even in the warm-up), a loss 1e4 times too large and a
    gradient 1e4 times too large (same loss) are each skipped, leaving every weight as it
    was; each epoch's record counts them; the guard's state is checkpointed; many skipped in
    a row are a divergence. Without the guard a NaN loss stops the run, as before."""
    from nri_pyro import training

    original = training.training_loss
    spikes = {2: "nan", 26: "loss", 31: "gradient"}  # step (1-based; 4 steps an epoch) -> kind
    calls, checks = [0], []

    class Spiky(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, *args, **kwargs):
            calls[0] += 1
            if checks and checks[-1][0] == calls[0] - 1:  # the step after a spiked one
                checks[-1] = (checks[-1][0], torch.equal(checks[-1][1], self._flat()))
            loss = self.inner(*args, **kwargs)
            kind = spikes.get(calls[0])
            if kind is not None:
                checks.append((calls[0], self._flat()))
            if kind == "nan":
                return loss * float("nan")
            if kind == "loss":
                return loss * 1e4
            if kind == "gradient":  # the same value, 1e4 times its gradient
                return loss + 1e4 * (loss - loss.detach())
            return loss

        def _flat(self):
            return torch.cat([p.detach().flatten().clone() for p in self.inner.parameters()])

    def spiky_loss(*args, **kwargs):
        loss, path = original(*args, **kwargs)
        return Spiky(loss), path

    monkeypatch.setattr(training, "training_loss", spiky_loss)
    # A clip every step's gradient exceeds: each step taken is counted as clipped.
    nri = NRI(overrides=[*TINY, "train.step_guard=10", "train.grad_clip=1e-3"])
    nri.fit(small["train"], small["valid"], epochs=8, out=tmp_path / "run")
    skipped = [r["skipped_steps"] for r in nri.history]
    assert skipped == [1, 0, 0, 0, 0, 0, 1, 1]
    # which check found each: the NaN and the 1e4-times loss by the loss, the last by its norm
    reasons = [(r["skipped_for"]["loss"], r["skipped_for"]["gradient"]) for r in nri.history]
    assert reasons == [(1, 0)] + [(0, 0)] * 5 + [(1, 0), (0, 1)]
    assert [r["clipped_steps"] for r in nri.history] == [4 - n for n in skipped]
    assert [c for _, c in checks] == [True, True, True]  # no weight moved on a skipped step
    assert all(np.isfinite([r["train_loss"], r["valid_nll"]]).all() for r in nri.history)
    state = load_checkpoint(tmp_path / "run" / "checkpoint_last.pt")["step_guard"]
    assert state["taken"] == 8 * 4 - 3 and state["consecutive"] == 0

    spikes.clear()  # without the guard a NaN loss stops the run
    spikes.update({2: "nan"})
    calls[0] = 0
    with pytest.raises(TrainingDiverged, match="epoch 1: the loss became nan"):
        NRI(overrides=TINY).fit(small["train"], epochs=1)
    spikes.update({i: "nan" for i in range(1, 40)})  # with it, many in a row are a divergence
    calls[0] = 0
    with pytest.raises(TrainingDiverged, match="25 steps in a row were skipped by train.step_g"):
        NRI(overrides=[*TINY, "train.step_guard=10"]).fit(small["train"], epochs=10)
    for bad in ("1", "0.5", "true", "big"):
        with pytest.raises(ValueError, match="train.step_guard must be a factor above 1"):
            NRI(overrides=[*TINY, f"train.step_guard={bad}"])
