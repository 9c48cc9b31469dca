"""A run does what its record says: resume, run folders, override order, the returned model,
and the modules' mode after inference (issue 12, defects 1-5)."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml
from common import tiny

from nri_pyro import generate_dataset, simulate
from nri_pyro.api import NRI, resolve_specs
from nri_pyro.checkpoints import load_checkpoint
from nri_pyro.cli import main

TINY = tiny(8, "train.batch_size=16", "train.progress=false")


@pytest.fixture(scope="module")
def small():
    return {
        "train": simulate("springs", 48, num_objects=3, num_frames=12, seed=0),
        "valid": simulate("springs", 16, num_objects=3, num_frames=12, seed=0, split="valid"),
    }


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    folder = tmp_path_factory.mktemp("data") / "springs3"
    return generate_dataset("springs", folder, num_objects=3, train=32, valid=8, test=8,
                            num_frames=12, test_frames=12, progress=False)  # fmt: skip


def _train(dataset, out, *extra):
    args = ["train", "--preset", "none", "--data", str(dataset), "--out", str(out)]
    for item in TINY:
        args += ["--set", item]
    return main([*args, *extra])


# --- 1. resume continues the run as recorded -----------------------------------------------
def test_resume_refuses_changed_settings_and_names_each_difference(small, tmp_path):
    out = tmp_path / "run"
    NRI(overrides=TINY).fit(small["train"], small["valid"], epochs=2, out=out)
    record = (out / "train.yaml").read_text(), (out / "model.yaml").read_text()
    changed = [*TINY, "train.lr=0.01", "prior.name=sparse"]
    with pytest.raises(ValueError) as err:
        NRI(overrides=changed).fit(small["train"], small["valid"], epochs=4, out=out, resume=True)
    message = str(err.value)
    assert "train.lr: 0.0005 in the run, 0.01 now" in message
    assert "model.prior.name: 'uniform' in the run, 'sparse' now" in message
    # The refused resume left the run's record as it was.
    assert record == ((out / "train.yaml").read_text(), (out / "model.yaml").read_text())
    # Another architecture: the same clear message, not torch's state-dict error.
    with pytest.raises(ValueError, match=r"decoder\.hidden: 8 in the run, 16 now"):
        NRI(overrides=[*TINY, "decoder.hidden=16"]).fit(
            small["train"], epochs=4, out=out, resume=True
        )
    # Other training data.
    other = simulate("springs", 48, num_objects=3, num_frames=12, seed=5)
    with pytest.raises(ValueError, match="the training data"):
        NRI(overrides=TINY).fit(other, epochs=4, out=out, resume=True)


def test_resume_refuses_fewer_epochs_and_records_more(small, tmp_path):
    out = tmp_path / "run"
    NRI(overrides=TINY).fit(small["train"], epochs=2, out=out)
    with pytest.raises(ValueError, match="done 2 epochs already; give at least 2"):
        NRI(overrides=TINY).fit(small["train"], epochs=1, out=out, resume=True)
    NRI(overrides=TINY).fit(small["train"], epochs=3, out=out, resume=True)
    assert yaml.safe_load((out / "train.yaml").read_text())["epochs"] == 3
    resumes = [json.loads(line) for line in (out / "resumes.jsonl").read_text().splitlines()]
    assert resumes[0]["after_epoch"] == 2
    assert resumes[0]["changed"] == {"epochs": {"was": 2, "now": 3}}
    assert load_checkpoint(out / "checkpoint_last.pt")["epoch"] == 3


def test_resume_from_the_command_line_refuses_changed_settings(dataset, tmp_path, capsys):
    out = tmp_path / "run"
    assert _train(dataset, out, "--epochs", "2") == 0
    capsys.readouterr()
    assert _train(dataset, out, "--epochs", "3", "--resume", "--set", "train.lr=0.01") == 2
    err = capsys.readouterr().err
    assert "cannot resume" in err and "train.lr" in err
    assert yaml.safe_load((out / "train.yaml").read_text())["lr"] == 5e-4
    assert _train(dataset, out, "--epochs", "3", "--resume") == 0


# --- 2. --out never overwrites what is not a run ---------------------------------------------
def test_train_refuses_an_out_folder_that_is_not_a_run(dataset, tmp_path, capsys):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "summary.json").write_text("my notes")
    (mine / "metrics.jsonl").write_text("my metrics\n")
    assert _train(dataset, mine, "--epochs", "1") == 2
    assert "is not an nri-pyro run folder" in capsys.readouterr().err
    assert (mine / "summary.json").read_text() == "my notes"
    assert (mine / "metrics.jsonl").read_text() == "my metrics\n"
    assert sorted(p.name for p in mine.iterdir()) == ["metrics.jsonl", "summary.json"]
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    assert _train(dataset, a_file, "--epochs", "1") == 2
    assert "is a file, not a folder" in capsys.readouterr().err
    assert a_file.read_text() == "x"


def test_fit_refuses_a_folder_that_is_not_a_run(small, tmp_path):
    (tmp_path / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not an nri-pyro run folder"):
        NRI(overrides=TINY).fit(small["train"], epochs=1, out=tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def test_infer_refuses_a_folder_as_out_and_leaves_no_temporary_file(dataset, tmp_path, capsys):
    run = tmp_path / "run"
    assert _train(dataset, run, "--epochs", "1") == 0
    target = tmp_path / "target"
    target.mkdir()
    assert main(["infer", str(run), "--data", str(dataset), "--out", str(target)]) == 2
    assert "must name a .npz file" in capsys.readouterr().err
    assert list(target.iterdir()) == [] and not [p for p in tmp_path.iterdir() if "tmp" in p.name]


# --- 3. overrides mean the same in any order -------------------------------------------------
def test_overrides_do_not_depend_on_their_order():
    forward = resolve_specs(overrides=["prior.no_edge=0.95", "prior.name=sparse"])
    backward = resolve_specs(overrides=["prior.name=sparse", "prior.no_edge=0.95"])
    assert forward[0]["prior"] == backward[0]["prior"] == {"name": "sparse", "no_edge": 0.95}
    guide = resolve_specs(overrides=["guide.encoder.hidden=32", "guide.encoder.name=cnn"])
    assert guide[1]["encoder"]["name"] == "cnn" and guide[1]["encoder"]["hidden"] == 32


# --- 4. fit returns the model select_metric chose, with or without a run folder ---------------
def test_fit_returns_the_best_epochs_model_without_a_run_folder(small, tmp_path):
    # select_metric = mse at a learning rate so high that validation MSE jumps about (here
    # 0.082, 0.020, 0.049, 0.052, 0.036): both routes must return epoch 2's model.
    settings = [*TINY, "train.select_metric=mse", "train.lr=0.02"]
    in_memory = NRI(overrides=settings).fit(small["train"], small["valid"], epochs=5)
    on_disk = NRI(overrides=settings).fit(
        small["train"], small["valid"], epochs=5, out=tmp_path / "run"
    )
    best = load_checkpoint(tmp_path / "run" / "checkpoint_best.pt")
    for key, value in best["model_state"].items():
        assert torch.equal(in_memory.model.state_dict()[key], value), key
        assert torch.equal(on_disk.model.state_dict()[key], value), key
    mse = [r["valid_mse"] for r in in_memory.history]
    assert best["epoch"] == int(np.argmin(mse)) + 1
    assert best["epoch"] != 5, "the test needs a run whose last epoch is not its best"


# --- 5. inference restores the modes it found ------------------------------------------------
def test_inference_and_prediction_restore_the_training_mode(small):
    nri = NRI(overrides=TINY).fit(small["train"], epochs=1)
    nri.model.train()
    nri.guide.train()
    nri.infer_edges(small["valid"])
    nri.predict(small["valid"], steps=2)
    nri.evaluate(small["valid"])
    assert nri.model.training and nri.guide.training
    assert all(m.training for m in [*nri.model.modules(), *nri.guide.modules()])
    # Also on error, and a submodule's own mode is kept.
    nri.guide.encoder.eval()
    with pytest.raises(ValueError):
        nri.infer_edges(simulate("springs", 2, num_objects=3, num_frames=4, seed=0))
    assert nri.model.training and nri.guide.training and not nri.guide.encoder.training


def test_an_ablation_keeps_set_values_when_vary_switches_the_component(tmp_path):
    from nri_pyro.ablate import Study

    study = Study(
        ["prior.name=sparse", "graph.symmetric=false,true"], out=tmp_path / "study",
        preset="springs5-quick", overrides=["prior.no_edge=0.95"],
    )  # fmt: skip
    priors = [config["model_spec"]["prior"] for config in study.configs.values()]
    assert priors == [{"name": "sparse", "no_edge": 0.95}] * 2


def test_a_validation_split_the_encoder_cannot_read_is_refused_before_training(small):
    short = simulate("springs", 8, num_objects=3, num_frames=6, seed=0, split="valid")
    nri = NRI(overrides=TINY)
    with pytest.raises(ValueError, match=r"reads 12 frames.*the validation trajectories have 6"):
        nri.fit(small["train"], short, epochs=1)
    assert nri.history == []  # refused before the first epoch


def test_a_log_file_gets_epoch_lines_and_no_progress_bar_redraws(dataset, tmp_path):
    log = tmp_path / "log.txt"
    args = [sys.executable, "-m", "nri_pyro.cli", "train", "--preset", "none", "--data",
            str(dataset), "--out", str(tmp_path / "run"), "--epochs", "2"]  # fmt: skip
    for item in TINY:  # TINY holds train.progress=false: the epoch lines stay
        args += ["--set", item]
    with log.open("w") as f:
        subprocess.run(args, stdout=f, stderr=subprocess.STDOUT, check=True)
    text = log.read_text()
    assert "\r" not in text
    assert [line.split()[1] for line in text.splitlines() if line.startswith("epoch ")] == [
        "1",
        "2",
    ]
    assert text.splitlines()[0].startswith("no preset")  # what the run uses, first
    # With bars switched on, a file still gets none.
    args[args.index("train.progress=false")] = "train.progress=true"
    with log.open("w") as f:
        subprocess.run([*args, "--out", str(tmp_path / "run2")], stdout=f,  # the last --out
                       stderr=subprocess.STDOUT, check=True)  # fmt: skip
    assert "\r" not in log.read_text() and "epoch 2" in log.read_text()
