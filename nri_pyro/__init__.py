"""nri-pyro: neural relational inference as a Pyro probabilistic program."""

from nri_pyro._version import __version__
from nri_pyro.ablate import ablate
from nri_pyro.api import NRI, build, resolve_specs
from nri_pyro.data import (
    Normalizer,
    TrajectoryDataset,
    generate_dataset,
    load_dataset,
    read_reference,
    save_dataset,
    simulate,
    write_reference,
)
from nri_pyro.distributions import EdgeTypes
from nri_pyro.guide import NRIGuide
from nri_pyro.logs import log_to
from nri_pyro.model import NRIModel
from nri_pyro.nn import register_decoder, register_encoder
from nri_pyro.predictive import posterior_predictive
from nri_pyro.presets import Preset, load_preset, preset_names, simulate_preset
from nri_pyro.priors import EdgePrior, register_prior
from nri_pyro.structure import GraphStructure

__all__ = [
    "NRI",
    "EdgePrior",
    "EdgeTypes",
    "GraphStructure",
    "NRIGuide",
    "NRIModel",
    "Normalizer",
    "Preset",
    "TrajectoryDataset",
    "__version__",
    "ablate",
    "build",
    "generate_dataset",
    "load_dataset",
    "load_preset",
    "log_to",
    "posterior_predictive",
    "preset_names",
    "read_reference",
    "register_decoder",
    "register_encoder",
    "register_prior",
    "resolve_specs",
    "save_dataset",
    "simulate",
    "simulate_preset",
    "write_reference",
]
