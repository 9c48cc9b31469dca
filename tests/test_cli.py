"""The `nri-pyro simulate` command, as a user calls it; what any command says when the
operating system refuses a write."""

import json
import resource
import subprocess
import sys

from common import ENV

from nri_pyro import load_dataset
from nri_pyro.cli import main


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
