"""Evaluation mode for a block of code, with every module's own mode restored after it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn


@contextmanager
def eval_mode(*modules: object) -> Iterator[None]:
    """Run the block with ``modules`` in eval mode (batch norm on its running statistics, no
    dropout), then give every module and submodule back the mode it had, also on error.
    Arguments that are not torch modules (a model written as a plain function) are skipped.

    Entry points that use a trained model (inference, prediction, evaluation) run under it,
    so that a user's own training loop afterwards trains exactly as it did before."""
    torch_modules = [m for m in modules if isinstance(m, nn.Module)]
    found = [(m, m.training) for module in torch_modules for m in module.modules()]
    for module in torch_modules:
        module.eval()
    try:
        yield
    finally:
        for m, training in found:
            m.training = training
