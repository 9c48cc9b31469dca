"""`nri-pyro ablate`: planning checks, runs in processes, resume, failures in the table."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from nri_pyro.ablate import Study, ablate, parse_vary, variants
from nri_pyro.cli import main
from nri_pyro.data.io import save_dataset
from nri_pyro.data.simulate import simulate

TINY = [
    "decoder.msg_hidden=8",
    "decoder.msg_out=8",
    "decoder.hidden=8",
    "guide.encoder.hidden=8",
    "train.batch_size=32",
]


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


def test_a_different_study_in_the_same_folder_is_refused(tmp_path, data):
    out = tmp_path / "study"
    Study(["prior.name=uniform"], out=out, data=data, overrides=TINY)._check_out()
    with pytest.raises(FileExistsError, match="holds a different study"):
        Study(["prior.name=sparse"], out=out, data=data, overrides=TINY)._check_out()
