"""Optional torch.compile of the GNN modules (never of Pyro's ELBO, which stays eager)."""

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
