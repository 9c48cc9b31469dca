"""Messages and progress: the ``nri_pyro`` logger, and progress bars on a terminal only.

The library never prints. Every module logs to a child of the ``nri_pyro`` logger
(``logging.getLogger(__name__)``): per-epoch lines of training, what a command is about to
do, where it wrote its results. Python's logging shows nothing below WARNING until someone
configures it: the ``nri-pyro`` command calls :func:`log_to` (plain lines on stdout), and a
notebook or script can do the same (``nri_pyro.log_to()``) or configure ``logging`` its own
way.

Progress bars (:func:`progress_bar`) are drawn only on a terminal, so that a log file gets
the per-epoch lines and no carriage-return redraws, and never when they are switched off
(``train.progress=false``, ``simulate --no-progress``) or when ``TQDM_DISABLE`` is set.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any, TextIO

from tqdm.auto import tqdm

LOGGER_NAME = "nri_pyro"
_handler: logging.Handler | None = None

logging.getLogger(LOGGER_NAME).addHandler(logging.NullHandler())


class _StdoutHandler(logging.StreamHandler):
    """A handler that writes to whatever ``sys.stdout`` is when a message comes (a notebook's
    or a test's capture may replace it, and close the one there was)."""

    def __init__(self) -> None:
        super().__init__(sys.stdout)

    @property  # type: ignore[override]
    def stream(self) -> TextIO:
        return sys.stdout

    @stream.setter
    def stream(self, _value: TextIO) -> None:
        pass


def log_to(stream: TextIO | None = None, level: int | str = logging.INFO) -> logging.Handler:
    """Show nri-pyro's messages of ``level`` and above as plain lines on ``stream`` (default:
    stdout, whichever it is when a message comes). Calling it again replaces the handler it
    installed."""
    global _handler
    logger = logging.getLogger(LOGGER_NAME)
    if _handler is not None:
        logger.removeHandler(_handler)
    _handler = _StdoutHandler() if stream is None else logging.StreamHandler(stream)
    _handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(_handler)
    logger.setLevel(level)
    return _handler


def progress_bar(iterable: Any = None, *, enabled: bool = True, **kwargs: Any) -> tqdm:
    """A tqdm bar drawn on a terminal only (``disable=None``), and never when ``enabled`` is
    false or the environment sets ``TQDM_DISABLE``."""
    off = not enabled or os.environ.get("TQDM_DISABLE", "").lower() in ("1", "true", "yes")
    return tqdm(iterable, disable=True if off else None, **kwargs)
