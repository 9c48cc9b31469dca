"""Output folders: which folder a command may write into, and one writer at a time.

:func:`check_output_folder` refuses, before any work, a file given as a folder and a
non-empty folder that is not one the command wrote (a run, a study, a folder of figures):
writing there would overwrite or mix with someone's files.

:func:`folder_lock` keeps a second process out of a folder while one writes it (two trains
into one run, a resume while the run still trains, two studies or two simulations into one
folder). The lock is a file beside the folder, ``.{name}.lock``, created atomically
(``O_CREAT | O_EXCL``) and naming its holder: process id, machine, start time and command.
It is removed when the holder leaves the ``with`` block, whatever the reason (an error,
Ctrl-C). A holder killed outright (SIGKILL, power loss) leaves it behind; the next process
takes it over once it can tell that the holder is gone: a process of this machine that no
longer runs (or whose id now belongs to a process started later). A lock held from another
machine is never taken over: only a person can tell whether that process still runs.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import logging
import os
import socket
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

# How long a lock file may stay empty or unreadable: its holder writes its record at once
# after creating it, so one still unreadable after this was left by a process killed in
# between (no holder to ask about).
_UNREADABLE_GRACE_S = 5.0
# Locks this process holds: lock path -> how many nested ``folder_lock`` blocks hold it.
_held: dict[str, int] = {}


class FolderInUseError(Exception):
    """Another process holds the folder's lock."""


def check_output_folder(
    folder: str | Path,
    what: str,
    *,
    marks: Sequence[str] = (),
    patterns: Sequence[str] = (),
    option: str = "--out",
) -> bool:
    """Refuse a folder a command must not write into; return whether it holds earlier output.

    ``folder`` may be new or empty. A non-empty one must be ``what`` (e.g. "an nri-pyro run
    folder"): hold every file in ``marks`` and, with ``patterns`` (e.g. ``("*.png",)``),
    nothing else than files whose names match one of them (hidden files aside). A file
    where a folder is expected is refused too, by name."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise FileExistsError(
            f"{option} {folder} is a file, not a folder: a folder was expected; give {what} "
            "or a new or empty folder"
        )
    if not folder.is_dir():
        return False
    entries = list(folder.iterdir())
    if not entries:
        return False
    problems = []
    missing = [name for name in marks if not (folder / name).exists()]
    if missing:
        present = [name for name in marks if name not in missing]
        problems.append(
            f"it has no {_and(missing)}" + (f", though it has {_and(present)}" if present else "")
        )
    if patterns:
        foreign = sorted(
            p.name
            for p in entries
            if not p.name.startswith(".")
            and not any(fnmatch.fnmatch(p.name, pattern) for pattern in patterns)
        )
        if foreign:
            shown = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
            problems.append(f"it holds {shown}, which only {_and(patterns)} files should be")
    if problems:
        raise FileExistsError(
            f"{folder} holds files but is not {what} ({'; '.join(problems)}): writing there "
            f"would overwrite or mix with them; choose a new or empty folder for {option}"
        )
    return True


def _and(items: Sequence[str]) -> str:
    items = list(items)
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"


def lock_path(folder: str | Path) -> Path:
    """The lock file of ``folder``: ``.{name}.lock`` beside it (so that the folder holds
    only what the command writes, and a folder not made yet can be locked)."""
    folder = Path(folder).resolve()
    return folder.parent / f".{folder.name or 'root'}.lock"


def _process_start(pid: int) -> str | None:
    """When process ``pid`` started, as the kernel counts it (Linux); None where unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2 :].split()
    return fields[19] if len(fields) > 19 else None


def process_running(pid: int, started: str | None = None) -> bool:
    """Whether process ``pid`` of this machine still runs and is the one that started at
    ``started`` (a process id can be given again to a later process)."""
    if pid == os.getpid():
        return True
    if os.name != "posix":  # no harmless probe (os.kill would end the process)
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: another user's process, alive
        return True
    now = _process_start(pid)
    return started is None or now is None or now == started


def _holder_record(command: str | None) -> dict[str, Any]:
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "process_start": _process_start(os.getpid()),
        "command": command or " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
    }


def _read_record(path: Path) -> dict[str, Any] | None:
    """The holder a lock file names; None while it is empty or unreadable."""
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and isinstance(record.get("pid"), int) else None


def _describe(record: dict[str, Any]) -> str:
    return (
        f"process {record['pid']} on {record.get('host', '?')}, started "
        f"{record.get('started', '?')}: {record.get('command', '?')}"
    )


def _holder_gone(record: dict[str, Any] | None, path: Path) -> bool:
    if record is None:  # created but never written: its holder died in between
        try:
            return time.time() - path.stat().st_mtime > _UNREADABLE_GRACE_S
        except FileNotFoundError:
            return True
    if record.get("host") != socket.gethostname():
        return False
    return not process_running(record["pid"], record.get("process_start"))


def _create(path: Path, record: dict[str, Any]) -> bool:
    """Create the lock file holding ``record``; False if it exists already."""
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    try:
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(record) + "\n")
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return True


def _take_over(path: Path, stale: dict[str, Any] | None) -> None:
    """Remove a lock whose holder is gone, unless someone else replaced it meanwhile: a
    second file, created atomically, lets one process at a time do the check and removal."""
    guard = path.with_name(path.name + ".takeover")
    if not _create(guard, _holder_record(None)):
        if _holder_gone(_read_record(guard), guard):
            guard.unlink(missing_ok=True)  # a taker killed mid-way; the next try proceeds
        return
    try:
        if _read_record(path) == stale:
            path.unlink(missing_ok=True)
            who = "a process that left no record" if stale is None else _describe(stale)
            logger.info(f"took over {path}: its holder ({who}) no longer runs")
    finally:
        guard.unlink(missing_ok=True)


@contextmanager
def folder_lock(folder: str | Path, command: str | None = None) -> Iterator[Path]:
    """Hold ``folder``'s lock within the block; yields the lock file's path.

    Raises :class:`FolderInUseError`, naming the folder and its holder, while another
    process holds it. The same process may take it again inside the block (a command and
    the library function it calls). ``command`` is what the lock file says the holder runs
    (default: this process's command line)."""
    path = lock_path(folder)
    key = str(path)
    if _held.get(key):
        _held[key] += 1
        try:
            yield path
        finally:
            _held[key] -= 1
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    mine = _holder_record(command)
    for _ in range(50):  # each turn either takes the lock, refuses, or removes a stale one
        if _create(path, mine):
            break
        record = _read_record(path)
        if record is None and not _holder_gone(None, path):
            time.sleep(0.05)  # its holder is writing its record now
            continue
        if not _holder_gone(record, path):
            assert record is not None
            raise FolderInUseError(
                f"{Path(folder)} is being written by another process ({_describe(record)}); "
                f"wait until it finishes, or choose another folder. If that process no longer "
                f"runs (on another machine, say), delete {path}"
            )
        _take_over(path, record)
    else:
        raise FolderInUseError(f"could not take the lock {path} of {folder}; try again")
    _held[key] = 1
    try:
        yield path
    finally:
        del _held[key]
        if _read_record(path) == mine:
            path.unlink(missing_ok=True)


def folder_digest(folder: str | Path) -> str:
    """A digest of the names and contents of a folder's files (hidden ones aside, such as
    lock files): it changes when any of them is rewritten with other values."""
    folder = Path(folder)
    h = hashlib.sha1()
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder)
        if not path.is_file() or any(part.startswith(".") for part in relative.parts):
            continue
        h.update(str(relative).encode() + b"\0")
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()[:16]
