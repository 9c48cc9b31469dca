"""nri-pyro: neural relational inference as a Pyro probabilistic program."""

__version__ = "0.1.0"

from nri_pyro.data import (
    Normalizer,
    TrajectoryDataset,
    generate_dataset,
    load_dataset,
    read_reference,
    save_dataset,
    simulate,
)

__all__ = [
    "Normalizer",
    "TrajectoryDataset",
    "__version__",
    "generate_dataset",
    "load_dataset",
    "read_reference",
    "save_dataset",
    "simulate",
]
