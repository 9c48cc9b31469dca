"""Optional torch.compile (``train.compile``): of a training step's whole loss where it is
the trace-free fast path (:class:`~nri_pyro.objectives.MeanFieldLoss`), else of the GNN
modules only (never of Pyro's ELBO, which stays eager)."""

from __future__ import annotations

from typing import Any

from torch import nn

from nri_pyro.nn.registry import Decoder, Encoder


def compile_modules(module: nn.Module, **options: Any) -> list[str]:
    """Compile the forward pass of every encoder and decoder in ``module`` whose class
    declares itself ``compilable``, in place.

    ``module`` is one of them or anything holding them (a model, a guide); ``options`` go to
    ``torch.compile`` (``mode``, ``dynamic``, ...). Only ``forward`` is compiled (a decoder's
    ``rollout`` and ``step`` stay eager, and so does an encoder's ``edge_features``, which
    a recurrent guide calls), so Pyro's sample sites and ELBO never are.
    Returns the names of the compiled modules ("" for ``module`` itself). The first call of
    each compiles (minutes on a CPU) and a new input shape may compile again; whether it
    pays off depends on the device and sizes: measure with benchmarks/scale.py --compile.
    """
    compiled = []
    for name, sub in module.named_modules():
        if isinstance(sub, (Encoder, Decoder)) and sub.compilable:
            sub.compile(**options)
            compiled.append(name)
    return compiled


def compile_loss(loss: nn.Module, **options: Any) -> None:
    """Compile a training loss module whole, in place: its forward pass, and through
    AOTAutograd its backward pass, become a few generated kernels instead of thousands of
    operations (for the trace-free :class:`~nri_pyro.objectives.MeanFieldLoss`; Pyro's
    ELBO modules build traces and are compiled through :func:`compile_modules` instead).
    ``options`` go to ``torch.compile``. The first step compiles (a minute or more on a
    CPU); a minibatch of another size compiles once more, with dynamic shapes."""
    loss.compile(**options)
