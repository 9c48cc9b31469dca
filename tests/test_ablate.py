"""`nri-pyro ablate`: planning checks, runs in processes, resume, failures in the table."""

from __future__ import annotations

import csv
import dataclasses
import importlib
import json
import logging
from pathlib import Path

import pytest
import torch
from common import interrupt, start, tiny, wait_for

from nri_pyro.ablate import Study, ablate, parse_vary, variants
from nri_pyro.cli import main
from nri_pyro.data.io import load_dataset, save_dataset
from nri_pyro.data.simulate import simulate
from nri_pyro.presets import load_preset

TINY = tiny(8, "train.batch_size=32")
# The module (the package's name nri_pyro.ablate is the function).
ablate_module = importlib.import_module("nri_pyro.ablate")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ablate") / "springs"
    splits = {
        "train": simulate("springs", 64, seed=0),
        "valid": simulate("springs", 32, seed=0, split="valid"),
        "test": simulate("springs", 32, seed=0, split="test", num_frames=99),
    }
    save_dataset(folder, splits)
    return folder


def test_vary_values_split_at_top_level_commas_only():
    vary = parse_vary(["prior.probs=[0.9,0.1],[0.5,0.5]", "graph.symmetric=false,true"])
    assert vary == [("prior.probs", [[0.9, 0.1], [0.5, 0.5]]), ("graph.symmetric", [False, True])]
    combos = variants(vary)
    assert len(combos) == 4
    assert combos[1].label == "prior.probs=[0.9, 0.1], graph.symmetric=True"


@pytest.mark.parametrize(
    ("vary", "message"),
    [
        (["nonsense=1,2"], "no key 'nonsense' here"),
        (["prior.bogus=1,2"], "unknown setting"),
        (["decoder.bogus=1,2"], "unknown key"),
        (["prior.name=uniform,nope"], "valid priors"),
        (["prior.name"], "key=value1,value2"),
        (["prior.name=a,a"], "repeats a value"),
    ],
)
def test_a_bad_vary_is_an_error_before_any_run(tmp_path, data, vary, message):
    with pytest.raises(ValueError, match=message):
        Study(vary, out=tmp_path / "study", data=data, overrides=TINY)
    assert not (tmp_path / "study").exists()


def test_a_study_runs_every_combination_reports_failures_and_resumes(tmp_path, data, capsys):
    out = tmp_path / "study"
    args = ["ablate", "--data", str(data), "--out", str(out), "--seeds", "1", "--epochs", "1",
            "--vary", "train.lr=0.001,1e30", "--evidence-samples", "32", "--jobs", "2"]  # fmt: skip
    for item in TINY:
        args += ["--set", item]
    assert main(args) == 1  # a run failed: the command says so, after the others finished
    text = (out / "results.md").read_text()
    assert "train.lr=0.001 | 1 |" in text
    assert "train.lr=1e+30 | 0 (1 failed) |" in text and "Failed runs of train.lr=1e+30" in text
    with (out / "runs.csv").open() as f:
        runs = list(csv.DictReader(f))
    assert [r["status"][:6] for r in runs] == ["ok", "failed"]
    assert (Path(runs[0]["run"]) / "checkpoint_best.pt").exists()  # the run folder
    ok = json.loads((out / "runs" / "train.lr-0.001" / "seed0" / "result.json").read_text())
    for key in ("edge_accuracy", "edge_auroc", "mse_1", "mse_10", "mse_20", "elbo_loss",
                "log_evidence", "pareto_k"):  # fmt: skip
        assert isinstance(ok["metrics"][key], float)
    assert (out / "figures" / "edge_accuracy.png").stat().st_size > 1000
    assert (out / "figures" / "against_train.lr.png").exists()
    capsys.readouterr()
    # Again: the finished run is skipped, the failed one is tried again.
    result = ablate(["train.lr=0.001,1e30"], out=out, preset="springs5-quick", data=data,
                    seeds=1, epochs=1, overrides=TINY, evidence_samples=32)  # fmt: skip
    log = capsys.readouterr().out
    assert "1 finished before, 1 to run" in log
    assert [row["runs"] for row in result.variants] == [1, 0]
    assert result.variants[0]["edge_accuracy_mean"] == ok["metrics"]["edge_accuracy"]
    assert "| variant |" in result._repr_markdown_()


def test_a_different_study_in_the_same_folder_is_refused_naming_what_differs(tmp_path, data):
    out = tmp_path / "study"
    Study(["prior.name=uniform"], out=out, data=data, overrides=TINY)._check_out()
    with pytest.raises(FileExistsError, match="holds a different study") as refused:
        Study(["prior.name=sparse"], out=out, data=data, overrides=TINY)._check_out()
    assert "vary: [['prior.name', ['uniform']]] there, [['prior.name', ['sparse']]] now" in str(
        refused.value
    )


def test_a_study_scores_the_evidence_as_asked_and_keeps_to_it_on_resume(tmp_path, data):
    """--evidence-method and --evidence-trajectories reach the runs, are part of the plan
    (a resume with others is refused) and are checked before anything runs."""
    out = tmp_path / "study"
    args = ["ablate", "--data", str(data), "--out", str(out), "--seeds", "1", "--epochs", "1",
            "--vary", "prior.name=uniform", "--evidence-samples", "32",
            "--evidence-method", "annealed", "--evidence-trajectories", "3"]  # fmt: skip
    for item in TINY:
        args += ["--set", item]
    assert main(args) == 0
    metrics = json.loads((out / "runs" / "prior.name-uniform" / "seed0" / "result.json")
                         .read_text())["metrics"]  # fmt: skip
    assert metrics["evidence_method"] == "annealed" and metrics["evidence_trajectories"] == 3
    with pytest.raises(FileExistsError, match=r"evidence_method: 'annealed' there, None now"):
        Study(["prior.name=uniform"], out=out, data=data, overrides=TINY,
              evidence_samples=32, evidence_trajectories=3)._check_out()  # fmt: skip
    with pytest.raises(ValueError, match=r"unknown evidence method 'best'; valid methods"):
        Study(["prior.name=uniform"], out=tmp_path / "b", data=data, evidence_method="best")
    with pytest.raises(ValueError, match=r"evidence_trajectories must be a positive integer"):
        Study(["prior.name=uniform"], out=tmp_path / "c", data=data, evidence_trajectories=0)
    assert not (tmp_path / "b").exists() and not (tmp_path / "c").exists()


def test_a_study_refuses_its_data_changed_in_place_or_in_the_preset(tmp_path):
    given = tmp_path / "data"
    save_dataset(given, {"train": simulate("springs", 16, num_objects=3, seed=0)})
    out = tmp_path / "study"
    Study(["prior.name=uniform"], out=out, data=given, overrides=TINY)._check_out()
    Study(["prior.name=uniform"], out=out, data=given, overrides=TINY)._check_out()  # the same
    save_dataset(given, {"train": simulate("springs", 16, num_objects=3, seed=1)}, overwrite=True)
    with pytest.raises(FileExistsError, match=r"data_source.digest: '[0-9a-f]+' there"):
        Study(["prior.name=uniform"], out=out, data=given, overrides=TINY)._check_out()
    preset = load_preset("springs5-quick")
    Study(["prior.name=uniform"], out=tmp_path / "own", preset=preset, overrides=TINY)._check_out()
    four = dataclasses.replace(preset, data={**preset.data, "objects": 4})
    with pytest.raises(FileExistsError, match=r"data_source.simulated.objects: 5 there, 4 now"):
        Study(
            ["prior.name=uniform"], out=tmp_path / "own", preset=four, overrides=TINY
        )._check_out()


def test_an_out_folder_that_is_no_study_or_a_file_is_refused_and_kept(tmp_path, data, capsys):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "results.md").write_text("keep\n")
    args = ["ablate", "--data", str(data), "--epochs", "1", "--seeds", "1",
            "--vary", "prior.name=uniform,sparse", "--out"]  # fmt: skip
    assert main([*args, str(folder)]) == 2
    assert "is not an nri-pyro study folder (it has no study.json)" in capsys.readouterr().err
    assert (folder / "results.md").read_text() == "keep\n"
    assert main([*args, str(folder / "results.md")]) == 2
    assert "results.md is a file, not a folder" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("seeds", "message"),
    [([0, 0], "name seed.s. 0 more than once"), (1.5, "a count"), (0, "at least 1"),
     ([True], "whole numbers")],
)  # fmt: skip
def test_seeds_given_twice_or_not_whole_are_refused(tmp_path, data, seeds, message):
    with pytest.raises(ValueError, match=message):
        Study(["prior.name=uniform"], out=tmp_path / "study", data=data, seeds=seeds)


def test_a_single_string_is_one_vary_or_variant(tmp_path, data):
    study = Study("prior.name=uniform,sparse", out=tmp_path / "s", data=data, overrides=TINY)
    assert [v.label for v in study.variants] == ["prior.name=uniform", "prior.name=sparse"]
    study = Study(out=tmp_path / "s", variants="static: prior.name=uniform", data=data)
    assert [v.label for v in study.variants] == ["static"]


def test_a_second_study_into_one_folder_is_refused_while_the_first_runs(tmp_path, data):
    out = tmp_path / "study"
    args = ["ablate", "--data", str(data), "--epochs", "100000", "--seeds", "1", "--vary",
            "prior.name=uniform,sparse", "--out", str(out)]  # fmt: skip
    args += [f"--set={item}" for item in TINY]
    first = start(*args)
    wait_for(tmp_path / ".study.lock", first)
    second = start(*args)
    _, err = second.communicate(timeout=120)
    assert second.returncode == 2
    assert f"{out} is being written by another process (process {first.pid} on" in err
    code, _, err = interrupt(first)
    assert code == 130 and "Traceback" not in err
    assert not (tmp_path / ".study.lock").exists()


# --- studies across data -----------------------------------------------------------------
@pytest.fixture(scope="module")
def small_preset(tmp_path_factory):
    """springs5-quick's recipe on data small enough for a test: 3 objects, 12 frames."""
    path = tmp_path_factory.mktemp("preset") / "small.yaml"
    path.write_text(
        "base: springs5-quick\n"
        "data: {objects: 3, train: 48, valid: 16, test: 16, frames: 12, test_frames: 12}\n"
    )
    return load_preset(path)


def test_a_study_across_training_sizes_shares_each_data_setting_and_one_test_set(
    tmp_path, small_preset, monkeypatch, caplog
):
    simulated = []
    real = ablate_module.simulate_preset

    def counted(preset, **kwargs):
        simulated.append(preset.data["train"])
        return real(preset, **kwargs)

    monkeypatch.setattr(ablate_module, "simulate_preset", counted)
    caplog.set_level(logging.INFO, logger="nri_pyro")
    out = tmp_path / "study"
    vary = ["data.train=16,48", "prior.name=uniform,sparse"]
    options = dict(out=out, preset=small_preset, seeds=1, epochs=1, overrides=TINY,
                   evidence_samples=32, jobs=2)  # fmt: skip
    result = ablate(vary, **options)
    assert simulated == [16, 48]  # each data setting once, whatever uses it
    assert [r["status"] for r in result.runs] == ["ok"] * 4
    # Every run of one setting (both priors; every seed) reads that setting's one folder.
    read = {}
    for run in result.runs:
        config = json.loads((Path(run["run"]).parent / "run.json").read_text())
        read.setdefault(run["data.train"], set()).add(config["data"])
    assert read == {n: {str(out / "data" / f"train-{n}")} for n in (16, 48)}
    few, many = (load_dataset(out / "data" / f"train-{n}") for n in (16, 48))
    for split in ("valid", "test"):  # held out alike: drawn independently of data.train
        assert torch.equal(few[split].trajectories, many[split].trajectories)
        assert torch.equal(few[split].adjacency, many[split].adjacency)
    assert torch.equal(few["train"].trajectories, many["train"].trajectories[:16])  # nested
    # Each normalised by its own training split's statistics.
    assert few["test"].metadata["normalization"] == few["train"].metadata["normalization"]
    assert few["train"].metadata["normalization"] != many["train"].metadata["normalization"]
    # The data settings are columns of the table, the CSVs and the figure.
    table = (out / "results.md").read_text()
    assert table.startswith("| variant | data.train | runs |")
    assert "| data.train=16, prior.name=sparse | 16 | 1 |" in table
    for name in ("results.csv", "runs.csv"):
        with (out / name).open() as f:
            rows = list(csv.DictReader(f))
        assert [(r["spec_variant"], r["data.train"]) for r in rows] == [
            ("prior.name=uniform", "16"), ("prior.name=sparse", "16"),
            ("prior.name=uniform", "48"), ("prior.name=sparse", "48"),
        ]  # fmt: skip
    assert (out / "figures" / "edge_accuracy_against_data.train.png").stat().st_size > 1000
    assert not (out / "figures" / "against_data.train.png").exists()
    study = json.loads((out / "study.json").read_text())
    assert sorted(study["data_source"]["varied"]) == ["train-16", "train-48"]
    # Again: nothing trained or simulated anew.
    finished = {r["run"]: (Path(r["run"]).parent / "result.json").stat().st_mtime_ns
                for r in result.runs}  # fmt: skip
    caplog.clear()
    again = ablate(vary, **options)
    assert "4 finished before, 0 to run" in caplog.text
    assert simulated == [16, 48]
    assert {r: (Path(r).parent / "result.json").stat().st_mtime_ns for r in finished} == finished
    assert again.variants == result.variants
    # Other data settings into the same folder: refused, naming what changed.
    with pytest.raises(FileExistsError, match=r"differs in vary: \[\['data.train', \[16, 48\]\]"):
        Study(["data.train=16,32", "prior.name=uniform,sparse"], **options)._check_out()
    with pytest.raises(FileExistsError, match=r"data_source.varied.train-32: not there, new now"):
        Study(["data.train=16,32", "prior.name=uniform,sparse"], **options)._check_out()
    noisy = dataclasses.replace(small_preset, data={**small_preset.data, "params": {"noise": 0.1}})
    with pytest.raises(FileExistsError, match=r"varied.train-16.params.noise: None there, 0.1"):
        Study(vary, **{**options, "preset": noisy})._check_out()


def test_data_keys_combine_with_spec_keys_in_explicit_variants(tmp_path, small_preset):
    study = Study(
        ["data.params.noise=0,0.01"], out=tmp_path / "s", preset=small_preset, overrides=TINY,
        variants=["few: data.train=16 data.objects=4 prior.name=uniform", "all: prior.name=sparse"],
    )  # fmt: skip
    assert [study._data_columns(v) for v in study.variants] == [
        {"spec_variant": name, "data.train": train, "data.objects": objects,
         "data.params.noise": noise}
        for name, train, objects in (("few", 16, 4), ("all", 48, 3)) for noise in (0.0, 0.01)
    ]  # fmt: skip
    assert list(study.data_settings) == [
        f"train-{train}_objects-{objects}_params.noise-{noise}"
        for train, objects in ((16, 4), (48, 3)) for noise in (0.0, 0.01)
    ]  # fmt: skip
    assert study.configs["few_data.params.noise-0"]["model_spec"]["prior"]["name"] == "uniform"
    assert not (tmp_path / "s").exists()
    with pytest.raises(ValueError, match=r"--set data\.train=16: a data key is no spec key"):
        Study("prior.name=uniform", out=tmp_path / "s", preset=small_preset,
              overrides=[*TINY, "data.train=16"])  # fmt: skip


@pytest.mark.parametrize(
    ("vary", "variant", "message"),
    [
        (["data.bogus=1,2"], None, r"unknown data key 'data.bogus'.*data.train, data.valid"),
        (["data.system=charged"], None, "unknown data key 'data.system'"),
        (["data.params.noise=-0.1,0"], None, "noise must be non-negative, got -0.1"),
        (["data.params.edge_prob=0.5,1.5"], None, r"edge_prob must lie in \[0, 1\], got 1.5"),
        (["data.train=16,0"], None, "data.train must be a whole number >= 1, got 0"),
        (["data.train=16,2.5"], None, "data.train must be a whole number >= 1, got 2.5"),
        (["data.objects=1,3"], None, "data.objects must be a whole number >= 2, got 1"),
        (["data.frames=12,1"], None, "data.frames must be a whole number >= 2"),
        (["data.frames=12,16"], None, r"data.frames=16 is longer than the test trajectories"),
        ([], "few: data.train=-5", "variant few: .*data.train must be a whole number >= 1"),
    ],
)
def test_a_bad_data_setting_is_refused_before_any_simulation(
    tmp_path, small_preset, monkeypatch, vary, variant, message
):
    monkeypatch.setattr(ablate_module, "simulate_preset", None)  # any simulation would fail
    with pytest.raises(ValueError, match=message):
        ablate(vary, variants=[variant] if variant else [], out=tmp_path / "study",
               preset=small_preset, seeds=1, epochs=1, overrides=TINY)  # fmt: skip
    assert not (tmp_path / "study").exists()


def test_a_data_key_with_data_files_is_refused_saying_why(tmp_path, data, capsys):
    out = tmp_path / "study"
    args = ["ablate", "--data", str(data), "--out", str(out), "--vary", "data.train=16,32",
            "--seeds", "1", "--epochs", "1"]  # fmt: skip
    assert main(args) == 2
    err = capsys.readouterr().err
    assert f"data.train cannot vary with --data {data}: a dataset folder holds fixed files" in err
    assert not out.exists()


def test_runs_sharing_one_gpu_are_checked_to_fit_and_each_held_to_its_share(
    tmp_path, data, monkeypatch
):
    """--jobs K --device cuda on a (fake) GPU: K runs' estimated memory must fit in what it
    has free, before any work; each run is given 1/K of it."""
    from nri_pyro.ablate import Study
    from nri_pyro.evaluation import training_step_bytes

    gib = 2**30
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    free = {"bytes": 40 * gib}
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (free["bytes"], 80 * gib))
    study = Study(["prior.name=uniform,sparse"], out=tmp_path / "a", data=data, overrides=TINY,
                  device="cuda", jobs=4)  # fmt: skip
    assert study.memory_fraction == 0.25
    free["bytes"] = int(1.5 * gib)  # room for two runs and their CUDA contexts
    with pytest.raises(ValueError, match=r"4 runs at once on cuda need about .* GiB free of "
                                         r"80\.0: use --jobs 2"):  # fmt: skip
        Study(["prior.name=uniform"], out=tmp_path / "b", data=data, overrides=TINY,
              device="cuda", jobs=4)  # fmt: skip
    assert not (tmp_path / "b").exists()  # refused before any work
    one = Study(["prior.name=uniform"], out=tmp_path / "c", data=data, overrides=TINY,
                device="cuda", jobs=1)  # fmt: skip
    assert one.memory_fraction is None  # one run alone takes what it needs
    # The estimate grows with the batch and with the objects (per-edge tensors)
    from nri_pyro.api import build

    x = torch.zeros(1, 5, 49, 4)
    model, guide = build("nri", "mlp", x)
    small = training_step_bytes(model, guide, 8, 5, 49)
    assert training_step_bytes(model, guide, 16, 5, 49) > small > 16 * sum(
        p.numel() for p in (*model.parameters(), *guide.parameters())
    )
