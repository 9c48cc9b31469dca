"""Output folders: which a command may write into, one writer at a time (issue 20)."""

from __future__ import annotations

import json
import logging
import socket
import subprocess
import sys

import pytest

from nri_pyro.folders import (
    FolderInUseError,
    check_output_folder,
    folder_digest,
    folder_lock,
    lock_path,
)


def _dead_pid() -> int:
    """The id of a process that has ended (and been reaped)."""
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    return int(proc.stdout)


def test_a_lock_names_its_holder_is_reentrant_and_is_released_on_an_error(tmp_path):
    folder = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        with folder_lock(folder, command="nri-pyro train") as path:
            assert path == lock_path(folder) and path.parent == tmp_path
            record = json.loads(path.read_text())
            assert record["host"] == socket.gethostname() and record["command"] == "nri-pyro train"
            with folder_lock(folder):  # the same process again: a command and its library
                pass
            assert path.exists()
            raise KeyboardInterrupt
    assert not lock_path(folder).exists()


def test_a_lock_held_by_a_live_process_is_refused_naming_the_holder(tmp_path):
    folder = tmp_path / "run"
    record = {"pid": 1, "host": socket.gethostname(), "started": "2024-01-01 00:00:00",
              "command": "nri-pyro train --out run"}  # fmt: skip
    lock_path(folder).write_text(json.dumps(record))  # process 1 (init) always runs
    with pytest.raises(FolderInUseError, match=r"run is being written by another process "
                       r"\(process 1 on .*nri-pyro train --out run\)"):  # fmt: skip
        with folder_lock(folder):
            pass
    assert json.loads(lock_path(folder).read_text()) == record  # left to its holder


def test_a_stale_lock_is_taken_over_and_one_of_another_machine_is_not(tmp_path, caplog):
    folder = tmp_path / "run"
    stale = {"pid": _dead_pid(), "host": socket.gethostname(), "started": "x", "command": "y"}
    lock_path(folder).write_text(json.dumps(stale))
    with caplog.at_level(logging.INFO, logger="nri_pyro"), folder_lock(folder) as path:
        assert json.loads(path.read_text())["pid"] != stale["pid"]
    assert "no longer runs" in caplog.text and not lock_path(folder).exists()
    elsewhere = {**stale, "host": "another-machine"}
    lock_path(folder).write_text(json.dumps(elsewhere))
    with pytest.raises(FolderInUseError, match="on another-machine"):
        with folder_lock(folder):
            pass


def test_output_folder_checks_say_what_is_wrong(tmp_path):
    assert not check_output_folder(tmp_path / "new", "a run folder", marks=("a.yaml",))
    (tmp_path / "file").write_text("x")
    with pytest.raises(FileExistsError, match="is a file, not a folder: a folder was expected"):
        check_output_folder(tmp_path / "file", "a run folder")
    run = tmp_path / "run"
    run.mkdir()
    (run / "model.yaml").write_text("x")
    with pytest.raises(FileExistsError, match=r"no guide.yaml and train.yaml, though it has model"):
        check_output_folder(run, "a run folder", marks=("model.yaml", "guide.yaml", "train.yaml"))
    figures = tmp_path / "figures"
    figures.mkdir()
    (figures / "a.png").write_text("x")
    assert check_output_folder(figures, "a folder of figures", patterns=("*.png",))
    (figures / "results.md").write_text("x")
    with pytest.raises(FileExistsError, match=r"it holds results.md, which only"):
        check_output_folder(figures, "a folder of figures", patterns=("*.png",))


def test_a_folder_digest_follows_the_files_values_not_hidden_files(tmp_path):
    (tmp_path / "a.npy").write_bytes(b"1234")
    before = folder_digest(tmp_path)
    (tmp_path / ".a.lock").write_text("x")
    assert folder_digest(tmp_path) == before
    (tmp_path / "a.npy").write_bytes(b"1235")
    assert folder_digest(tmp_path) != before
