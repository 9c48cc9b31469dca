"""Simulators, datasets and their files."""

from nri_pyro.data.dataset import Normalizer, TrajectoryDataset
from nri_pyro.data.io import load_dataset, save_dataset
from nri_pyro.data.reference import read_reference, write_reference
from nri_pyro.data.simulate import generate_dataset, simulate
from nri_pyro.data.systems import SYSTEMS, get_system

__all__ = [
    "SYSTEMS",
    "Normalizer",
    "TrajectoryDataset",
    "generate_dataset",
    "get_system",
    "load_dataset",
    "read_reference",
    "save_dataset",
    "simulate",
    "write_reference",
]
