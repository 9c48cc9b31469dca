"""Shared test settings."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

# The baselines that are not part of the library (the one-at-a-time NumPy simulators, the
# dense one-hot message passing) live in benchmarks/; the tests check the library against them.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))


@pytest.fixture(autouse=True)
def _one_thread():
    """Tests use one torch thread unless they ask for more (the learning runs ask for two):
    the tiny networks of most tests run faster without intra-op threading, and a test that
    changes the setting cannot leak it into the next."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
