"""The training objectives by name: which Pyro ELBO a run optimises.

Both are honest ELBOs of the same model and guide. "nri" is the paper's: the analytic KL
between the guide's and the prior's categorical edge probabilities
(``TraceMeanField_ELBO`` with the KL registered in :mod:`nri_pyro.distributions`);
"concrete" scores the relaxed samples' densities (``Trace_ELBO``). Training and evaluation
both take them from here.
"""

from __future__ import annotations

import pyro

OBJECTIVES = {"nri": pyro.infer.TraceMeanField_ELBO, "concrete": pyro.infer.Trace_ELBO}


def objective(name: str) -> pyro.infer.ELBO:
    """The ELBO of an objective name: "nri" (analytic categorical KL) or "concrete"."""
    if name not in OBJECTIVES:
        raise ValueError(f"unknown objective {name!r}; valid objectives: {', '.join(OBJECTIVES)}")
    return OBJECTIVES[name]()
