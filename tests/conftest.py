"""Shared test settings."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    """Tests use one torch thread unless they ask for more (the learning runs ask for two):
    the tiny networks of most tests run faster without intra-op threading, and a test that
    changes the setting cannot leak it into the next."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
