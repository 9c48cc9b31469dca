"""The `nri-pyro simulate` command, as a user calls it; what any command says when the
operating system refuses a write.

Graphs that change over time on the command line: plot, infer, evaluate and ablate with
explicit variants (static NRI against the Markov prior), on tiny switching-springs runs."""

from __future__ import annotations

import csv
import json
import math
import resource
import subprocess
import sys
import time

import numpy as np
import pytest
import yaml
from common import ENV, tiny

from nri_pyro import load_dataset
from nri_pyro.ablate import Study, markdown_table, parse_variant, summarize
from nri_pyro.cli import main
from nri_pyro.data.io import save_dataset
from nri_pyro.data.simulate import simulate


def test_simulate_writes_a_dataset_and_says_where(tmp_path, capsys):
    out = tmp_path / "springs3"
    code = main(
        [
            "simulate",
            "springs",
            "--objects",
            "3",
            "--train",
            "20",
            "--valid",
            "5",
            "--test",
            "5",
            "--frames",
            "4",
            "--test-frames",
            "9",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    assert str(out) in capsys.readouterr().out
    splits = load_dataset(out)
    assert splits["train"].trajectories.shape == (20, 3, 4, 4)
    assert splits["test"].trajectories.shape == (5, 3, 9, 4)


def test_length_follows_the_reference_convention(tmp_path):
    out = tmp_path / "c"
    code = main(
        [
            "simulate",
            "charged",
            "--train",
            "4",
            "--valid",
            "0",
            "--test",
            "2",
            "--length",
            "500",
            "--length-test",
            "1000",
            "--format",
            "nri",
            "--param",
            "interaction_strength=0.5",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    splits = load_dataset(out)
    assert splits["train"].num_frames == 4  # 500 steps / 100 - the dropped first frame
    assert splits["test"].num_frames == 9
    assert splits["train"].metadata["params"]["interaction_strength"] == 0.5


def test_bad_input_is_a_clear_error_not_a_traceback(tmp_path, capsys):
    cases = [
        (["simulate", "gravity"], "unknown system 'gravity'"),
        (["simulate", "springs", "--objects", "1"], "at least 2"),
        (["simulate", "springs", "--train", "0", "--valid", "0", "--test", "0"], "nothing"),
        (["simulate", "springs", "--length", "5050"], "multiple of the sample frequency 100"),
        (["simulate", "springs", "--param", "k=1"], "unknown parameter 'k'"),
        (["simulate", "springs", "--param", "edge_prob=lots"], "expects a float"),
    ]
    for argv, message in cases:
        assert main([*argv, "--out", str(tmp_path / "x")]) == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_train_refuses_a_test_split_too_short_for_the_encoder_before_training(tmp_path, capsys):
    preset = tmp_path / "short-test.yaml"
    preset.write_text(json.dumps({
        "base": "springs5-quick",
        "data": {"objects": 3, "train": 16, "valid": 4, "test": 4, "frames": 12,
                 "test_frames": 10},
        "model": {"decoder": {"msg_hidden": 8, "msg_out": 8, "hidden": 8}},
        "guide": {"encoder": {"hidden": 8}},
        "train": {"epochs": 1, "progress": False},
    }))  # fmt: skip
    run = tmp_path / "run"
    assert main(["train", "--preset", str(preset), "--out", str(run)]) == 2
    captured = capsys.readouterr()
    assert (
        "reads 12 frames (its training length), but the test trajectories have 10: give "
        "the test split at least" in captured.err
    )
    assert "epoch 1" not in captured.out and not run.exists()


def test_console_script_runs():
    result = subprocess.run(
        [sys.executable, "-m", "nri_pyro.cli", "simulate", "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "--test-frames" in result.stdout


def _limited(max_bytes: int, *args: str) -> subprocess.CompletedProcess:
    """The command with files limited to ``max_bytes`` (``ulimit -f``: a full disk, as far
    as the command can tell; Python ignores the SIGXFSZ that would end it)."""

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (max_bytes, max_bytes))

    return subprocess.run([sys.executable, "-m", "nri_pyro.cli", *args], capture_output=True,
                          text=True, env=ENV, preexec_fn=limit)  # fmt: skip


def test_a_full_disk_is_one_line_naming_the_file_and_leaves_nothing_half_written(tmp_path):
    simulate = ["simulate", "springs", "--objects", "3", "--train", "64", "--valid", "0",
                "--test", "0", "--no-progress", "--out", str(tmp_path / "d")]  # fmt: skip
    result = _limited(20_000, *simulate)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"could not write or read a file in {tmp_path / 'd'}: File too large" in result.stderr
    assert list(tmp_path.iterdir()) == []
    assert main(simulate) == 0
    run = tmp_path / "run"
    train = ["train", "--preset", "none", "--data", str(tmp_path / "d"), "--epochs", "1",
             "--out", str(run), "--set", "decoder.hidden=16"]  # fmt: skip
    result = _limited(20_000, *train)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"could not write or read {run / 'checkpoint_best.pt'}: File too large" in result.stderr
    assert not any(p.name.endswith(".pt") or ".tmp-" in p.name for p in run.iterdir())


def test_a_read_only_folder_is_one_line_naming_the_path(tmp_path, capsys, monkeypatch):
    def refused(args):  # what a write into a read-only folder raises (root may write anyway)
        raise PermissionError(13, "Permission denied", str(tmp_path / "ro" / "meta.json"))

    monkeypatch.setattr("nri_pyro.cli._run_simulate", refused)
    assert main(["simulate", "springs", "--out", str(tmp_path / "ro")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert f"could not write or read {tmp_path / 'ro' / 'meta.json'}: Permission denied" in err


def test_plot_refuses_a_file_or_a_folder_of_other_files_as_out(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    assert main(["plot", str(tmp_path), "--out", str(tmp_path / "file")]) == 2
    assert "file is a file, not a folder: a folder was expected" in capsys.readouterr().err
    assert main(["plot", str(tmp_path), "--out", str(tmp_path)]) == 2
    assert "holds files but is not a folder of figures (it holds file" in capsys.readouterr().err


# --- graphs that change over time --------------------------------------------------------------


TINY = tiny(8, "train.batch_size=32")
MARKOV = ["prior.name=markov", "prior.stay=0.9", "graph.dynamic.window=7"]
WINDOWS = 4  # 28 test frames // 7


def _sets(items):
    out = []
    for item in items:
        out += ["--set", item]
    return out


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Switching springs: 40 training trajectories of 21 frames, a test split of 28."""
    folder = tmp_path_factory.mktemp("dynamic") / "springs"
    splits = {
        "train": simulate("springs", 40, num_frames=21, switch_rate=0.2, seed=0),
        "valid": simulate("springs", 8, num_frames=21, switch_rate=0.2, seed=0, split="valid"),
        "test": simulate("springs", 8, num_frames=28, switch_rate=0.2, seed=0, split="test"),
    }
    assert splits["test"].dynamic
    save_dataset(folder, splits)
    return folder


@pytest.fixture(scope="module")
def markov_run(data, tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "markov"
    args = ["train", "--preset", "none", "--data", str(data), "--epochs", "1", "--out", str(run)]
    assert main(args + _sets(TINY + MARKOV)) == 0
    return run


@pytest.fixture(scope="module")
def static_run(data, tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "static"
    args = ["train", "--preset", "none", "--data", str(data), "--epochs", "1", "--out", str(run)]
    assert main(args + _sets(TINY)) == 0
    return run


def test_plot_draws_edges_over_time_for_a_dynamic_model(markov_run, data, tmp_path, capsys):
    out = tmp_path / "figs"
    argv = ["plot", str(markov_run), "--data", str(data), "--out", str(out),
            "--trajectories", "2", "--samples", "4"]  # fmt: skip
    assert main(argv) == 0
    log = capsys.readouterr().out
    for name in ("edges_over_time_0", "edges_over_time_1", "calibration", "trajectories_0",
                 "trajectories_1", "training_curves"):  # fmt: skip
        assert (out / f"{name}.png").stat().st_size > 1000, name
    assert not (out / "graph_0.png").exists() and not (out / "edge_probs.png").exists()
    assert "edge_probs and graph_<i> (one graph per trajectory) skipped" in log


def test_plot_of_a_static_model_on_per_frame_truth(static_run, data, tmp_path, capsys):
    out = tmp_path / "figs"
    argv = ["plot", str(static_run), "--data", str(data), "--out", str(out),
            "--trajectories", "1", "--samples", "4"]  # fmt: skip
    assert main(argv) == 0
    assert "true graphs change over time" in capsys.readouterr().out
    assert (out / "edges_over_time_0.png").exists() and (out / "calibration.png").exists()
    assert (out / "trajectories_0.png").exists() and not (out / "graph_0.png").exists()


def test_plot_of_a_dynamic_model_on_static_truth(markov_run, tmp_path):
    folder = tmp_path / "static"
    save_dataset(folder, {"test": simulate("springs", 3, num_frames=28, seed=1, split="test")})
    out = tmp_path / "figs"
    argv = ["plot", str(markov_run), "--data", str(folder), "--out", str(out),
            "--trajectories", "1", "--samples", "4"]  # fmt: skip
    assert main(argv) == 0
    assert (out / "edges_over_time_0.png").exists() and (out / "trajectories_0.png").exists()


def test_infer_writes_windows_and_frames(markov_run, static_run, data, tmp_path, capsys):
    path = tmp_path / "dyn.npz"
    assert main(["infer", str(markov_run), "--data", str(data), "--out", str(path)]) == 0
    assert "edge_probs [S, W, E, K] = [8, 4, 20, 2]" in capsys.readouterr().out
    got = np.load(path)
    assert got["edge_probs"].shape == (8, WINDOWS, 20, 2)
    assert got["frame_edge_probs"].shape == (8, 28, 20, 2)
    assert got["adjacency_probs"].shape == (8, WINDOWS, 5, 5, 2)
    assert got["most_likely"].shape == (8, WINDOWS, 5, 5)
    window = got["window_of_frame"]
    assert window.shape == (28,) and window[0] == 0 and window[-1] == WINDOWS - 1
    assert np.allclose(got["frame_edge_probs"], got["edge_probs"][:, window])
    # A static model: unchanged, one graph per trajectory.
    path = tmp_path / "static.npz"
    assert main(["infer", str(static_run), "--data", str(data), "--out", str(path)]) == 0
    got = np.load(path)
    assert sorted(got) == ["adjacency_probs", "edge_probs", "most_likely", "refine_steps"]
    assert got["edge_probs"].shape == (8, 20, 2) and got["refine_steps"] == 0


def test_refine_refines_each_trajectory_without_touching_the_run(static_run, markov_run, data,
                                                                 tmp_path, capsys):  # fmt: skip
    checkpoint = static_run / "checkpoint_best.pt"
    stored = checkpoint.read_bytes()
    assert main(["evaluate", str(static_run), "--data", str(data), "--json", "--refine", "8"]) == 0
    refined = json.loads(capsys.readouterr().out)
    assert refined["refine_steps"] == 8
    gap = refined["elbo_loss_unrefined"] - refined["elbo_loss"]
    assert refined["amortization_gap"] == pytest.approx(gap) and gap > 0
    assert 0 <= refined["edge_accuracy_unrefined"] <= 1
    assert main(["evaluate", str(static_run), "--data", str(data), "--json"]) == 0
    plain = json.loads(capsys.readouterr().out)
    assert plain["refine_steps"] == 0 and "amortization_gap" not in plain
    # the unrefined figures are the encoder's: the same accuracy as without --refine
    assert refined["edge_accuracy_unrefined"] == pytest.approx(plain["edge_accuracy"])
    path = tmp_path / "refined.npz"
    assert main(["infer", str(static_run), "--data", str(data), "--out", str(path),
                 "--refine", "8"]) == 0  # fmt: skip
    unrefined = tmp_path / "plain.npz"
    assert main(["infer", str(static_run), "--data", str(data), "--out", str(unrefined)]) == 0
    got, want = np.load(path), np.load(unrefined)
    assert got["refine_steps"] == 8 and got["edge_probs"].shape == want["edge_probs"].shape
    assert not np.allclose(got["edge_probs"], want["edge_probs"])
    assert checkpoint.read_bytes() == stored  # the stored weights never change
    # bad counts: refused by the parser; a dynamic model: refused before any work
    for bad in ("-1", "1.5", "two"):
        with pytest.raises(SystemExit) as stop:
            main(["evaluate", str(static_run), "--data", str(data), "--refine", bad])
        assert stop.value.code == 2
        assert "--refine takes a whole number of refinement steps >= 0 or" in capsys.readouterr().err
    assert main(["evaluate", str(markov_run), "--data", str(data), "--refine", "3"]) != 0
    assert "not supported for a dynamic graph" in capsys.readouterr().err


def test_evaluate_prints_the_switch_metrics(markov_run, static_run, data, capsys):
    assert main(["evaluate", str(markov_run), "--data", str(data)]) == 0
    text = capsys.readouterr().out
    for key in ("edge_accuracy", "switch_precision", "switch_recall", "switches_true",
                "switches_detected"):  # fmt: skip
        assert key in text
    # --json: one valid JSON object on stdout (messages on stderr), NaN as null; a static
    # model never switches, so it has no switch precision.
    assert main(["evaluate", str(static_run), "--data", str(data), "--json"]) == 0
    captured = capsys.readouterr()
    metrics = json.loads(captured.out)
    assert metrics["switch_precision"] is None and metrics["switches_detected"] == 0
    assert metrics["switch_recall"] == 0 and metrics["switches_true"] > 0
    assert "per-frame truth and a static model" in captured.err


def test_ablate_static_against_markov_with_explicit_variants(data, tmp_path, capsys):
    out = tmp_path / "study"
    args = ["ablate", "--preset", "none", "--data", str(data), "--out", str(out),
            "--seeds", "1", "--epochs", "1", "--evidence-samples", "32", "--threads", "1",
            "--variant", "static NRI: prior.name=uniform",
            "--variant", "markov: " + " ".join(MARKOV)]  # fmt: skip
    started = time.perf_counter()
    assert main(args + _sets(TINY)) == 0
    assert time.perf_counter() - started < 120
    table = (out / "results.md").read_text()
    assert "switch prec" in table and "switch recall" in table
    assert "| static NRI | 1 |" in table and "| markov | 1 |" in table
    with (out / "runs.csv").open() as f:
        runs = {r["variant"]: r for r in csv.DictReader(f)}
    assert runs["static NRI"]["status"] == "ok" and runs["markov"]["status"] == "ok"
    assert json.loads(runs["markov"]["settings"]) == {
        "prior.name": "markov", "prior.stay": 0.9, "graph.dynamic.window": 7
    }  # fmt: skip
    specs = yaml.safe_load((out / "runs" / "markov" / "seed0" / "specs.yaml").read_text())
    assert specs["model"]["graph"]["dynamic"] == {"window": 7}
    result = json.loads((out / "runs" / "static-NRI" / "seed0" / "result.json").read_text())
    assert result["metrics"]["switches_detected"] == 0  # a static graph never switches
    assert (out / "figures" / "switch_recall.png").exists()
    assert "2 variant(s) x 1 seed(s)" in capsys.readouterr().out
    # Again: both finished; the same study is recognised.
    assert main(args + _sets(TINY)) == 0
    assert "2 finished before, 0 to run" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("variants", "vary", "message"),
    [
        (["bad: prior.name=markov"], [], "variant bad: prior.name=markov is a prior over how"),
        (["prior.name=uniform"], [], "--variant expects 'LABEL: key=value"),
        (["x: prior.bogus=1"], [], "variant x: unknown setting"),
        (["x: nonsense"], [], "expected key=value, got 'nonsense'"),
        (["a: prior.name=uniform", "a: prior.name=sparse"], [], "two variants are labelled 'a'"),
        (["a b: prior.name=uniform", "a-b: prior.name=sparse"], [], "same folder name"),
        (["m: prior.name=markov prior.stay=2 graph.dynamic.window=7"], [], "variant m: prior.stay"),
        (["m: " + " ".join(MARKOV)], ["prior.stay=0.5,0.7"], "which --vary also varies"),
        # a window wider than the training trajectories (21 frames): the guide is built now
        (["w: prior.name=markov graph.dynamic.window=30"], [], "variant w: the trajectories"),
        # a product: a static variant with a Markov setting
        (["static: prior.name=uniform"], ["prior.stay=0.5"], "variant static, prior.stay=0.5"),
        ([], [], "give --vary KEY=V1,V2 or --variant"),
    ],
)
def test_bad_variants_are_refused_before_any_run(tmp_path, data, capsys, variants, vary, message):
    out = tmp_path / "study"
    args = ["ablate", "--preset", "none", "--data", str(data), "--out", str(out), *_sets(TINY)]
    for text in variants:
        args += ["--variant", text]
    for text in vary:
        args += ["--vary", text]
    started = time.perf_counter()
    assert main(args) == 2
    assert message in capsys.readouterr().err
    assert time.perf_counter() - started < 10
    assert not out.exists()


def test_variants_vary_and_overrides_on_a_dynamic_spec(tmp_path, data):
    spec = tmp_path / "markov.yaml"
    spec.write_text(yaml.safe_dump({
        "base": "nri", "prior": {"name": "markov", "stay": 0.5}, "graph": {"dynamic": {"window": 7}}
    }))  # fmt: skip
    # --vary prior.stay over a dynamic spec: one run configuration per value.
    study = Study(["prior.stay=0,0.9,1.0"], out=tmp_path / "s1", model_spec=spec, data=data,
                  overrides=TINY)  # fmt: skip
    assert [v.label for v in study.variants] == [
        "prior.stay=0", "prior.stay=0.9", "prior.stay=1.0"
    ]  # fmt: skip
    stays = [study.configs[v.slug]["model_spec"]["prior"]["stay"] for v in study.variants]
    assert stays == [0, 0.9, 1.0]
    # graph.dynamic=null turns the dynamic spec static; variants times --vary values.
    study = Study(
        ["train.lr=0.001,0.003"], out=tmp_path / "s2", model_spec=spec, data=data, overrides=TINY,
        variants=["static: graph.dynamic=null prior.name=uniform", "markov:"],
    )  # fmt: skip
    labels = [v.label for v in study.variants]
    assert labels == ["static, train.lr=0.001", "static, train.lr=0.003",
                      "markov, train.lr=0.001", "markov, train.lr=0.003"]  # fmt: skip
    static, markov = study.configs[study.variants[0].slug], study.configs[study.variants[2].slug]
    assert static["model_spec"]["graph"]["dynamic"] is None
    assert static["model_spec"]["prior"]["name"] == "uniform"
    assert markov["model_spec"]["graph"]["dynamic"] == {"window": 7}
    assert markov["train"]["lr"] == 0.001
    assert not (tmp_path / "s1").exists() and not (tmp_path / "s2").exists()
    # A value with spaces, quoted as in a shell.
    variant = parse_variant("m: graph.dynamic='{window: 7}' prior.name=markov")
    assert variant.fixed == {"graph.dynamic": {"window": 7}, "prior.name": "markov"}
    assert variant.label == "m" and variant.slug == "m"


def test_the_switching_presets_static_variant_drops_its_recurrent_guide(data, tmp_path):
    """springs5-switching's guide runs a GRU over the windows, which a static graph does not
    have: the static variant must say guide.recurrent=null (as the README's command does),
    and without it the study is refused before any run, naming the variant."""
    static = "static: graph.dynamic=null guide.recurrent=null prior.name=uniform"
    study = Study(out=tmp_path / "ok", preset="springs5-switching", data=data, overrides=TINY,
                  variants=[static, "markov:"], seeds=1)  # fmt: skip
    configs = [study.configs[v.slug] for v in study.variants]
    assert configs[0]["guide_spec"]["recurrent"] is None
    assert configs[1]["guide_spec"]["recurrent"] == {"hidden": 64}
    with pytest.raises(ValueError, match="the model's graph is static"):
        Study(out=tmp_path / "refused", preset="springs5-switching", data=data, overrides=TINY,
              variants=["static: graph.dynamic=null prior.name=uniform"], seeds=1)  # fmt: skip
    assert not (tmp_path / "ok").exists() and not (tmp_path / "refused").exists()


def test_nan_switch_metrics_do_not_break_the_table():
    def run(variant, seed, **metrics):
        return {"variant": variant, "seed": seed, "status": "ok", "edge_accuracy": 0.5,
                **metrics}  # fmt: skip

    runs = [
        run("static", 0, switch_precision=math.nan, switch_recall=0.0, switches_detected=0),
        run("static", 1, switch_precision=math.nan, switch_recall=0.0, switches_detected=0),
        run("markov", 0, switch_precision=0.5, switch_recall=0.25, switches_detected=4),
        run("markov", 1, switch_precision=math.nan, switch_recall=0.0, switches_detected=0),
    ]
    rows = summarize(runs, ["static", "markov"])
    assert math.isnan(rows[0]["switch_precision_mean"]) and rows[0]["switch_recall_mean"] == 0
    assert rows[1]["switch_precision_mean"] == 0.5 and rows[1]["switch_precision_std"] == 0
    assert rows[1]["switch_recall_mean"] == 0.125 and rows[1]["switches_detected_mean"] == 2
    table = markdown_table(rows)
    assert "| switch prec | switch recall |" in table
    static_line = next(line for line in table.splitlines() if line.startswith("| static"))
    assert static_line.endswith("| — | 0 ± 0 |")
    # Without switch metrics (static truth): no such columns.
    plain = summarize([run("uniform", 0)], ["uniform"])
    assert "switch_precision_mean" not in plain[0] and "switch" not in markdown_table(plain)
