"""Files written whole or not at all: a temporary file beside the target, then a rename.

A reader (or a run killed halfway) never sees a half-written checkpoint, table or figure:
``os.replace`` within one folder is atomic, and the temporary file is removed when writing
fails.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch


def atomic_write(path: str | Path, write: Callable[[Path], Any]) -> Path:
    """``write(tmp)`` to a temporary path beside ``path`` (same suffix, so that writers that
    look at it, like ``np.savez`` or ``savefig``, keep the format), then rename it to
    ``path``. Returns ``path``."""
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")
    try:
        write(tmp)
        os.replace(tmp, path)
    except OSError as err:  # a full disk, a read-only folder: name the file meant, not tmp
        if err.errno is not None and err.filename in (None, str(tmp), tmp):
            raise type(err)(err.errno, err.strerror, str(path)) from err
        raise
    finally:
        tmp.unlink(missing_ok=True)
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text))


def atomic_save(obj: Any, path: str | Path) -> Path:
    """``torch.save`` of ``obj`` to ``path``, never half-written.

    Serialised in memory first, then written: torch's own file writer reports a full disk
    or a file size limit as a RuntimeError ("unexpected pos"), Python's as the OSError it is.
    """
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return atomic_write(path, lambda tmp: tmp.write_bytes(buffer.getbuffer()))
