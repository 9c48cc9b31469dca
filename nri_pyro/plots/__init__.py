"""Figures of a fitted NRI: trajectories, graphs, edge posteriors, training, calibration, ablations.

Every function returns a :class:`matplotlib.figure.Figure` made with the object-oriented API
(no pyplot state, no backend chosen, nothing shown): save it with ``fig.savefig(path)`` or
let a notebook display it. Arrays may be numpy arrays or torch tensors.

Edge conventions are the library's: ``adjacency[i, j]`` is the type of the influence of
sender j on receiver i; flattened edges [E] are receiver-major without the diagonal. Graphs
that change over time have edges per frame, [T, E] (:func:`plot_edges_over_time`).

This package gathers the figures by what they show: a fit over time (:mod:`.fits`:
trajectories, training curves), its inferred graph (:mod:`.graphs`: graphs, edge
probabilities, edges over time, calibration) and a study's results (:mod:`.studies`); every
public name is importable from here (``from nri_pyro import plots; plots.plot_graph``).
"""

from nri_pyro.plots.common import FAILED_COLOR
from nri_pyro.plots.fits import (
    CURVE_PANELS,
    LOG_SCALE_PANELS,
    plot_training_curves,
    plot_trajectories,
    read_metrics,
)
from nri_pyro.plots.graphs import (
    MAX_LINE_PANELS,
    plot_calibration,
    plot_edge_probs,
    plot_edges_over_time,
    plot_graph,
    relabel,
)
from nri_pyro.plots.studies import (
    COUNT_SETTINGS,
    plot_against_data,
    plot_against_setting,
    plot_metric_by_variant,
)

__all__ = [
    "COUNT_SETTINGS",
    "CURVE_PANELS",
    "FAILED_COLOR",
    "LOG_SCALE_PANELS",
    "MAX_LINE_PANELS",
    "plot_against_data",
    "plot_against_setting",
    "plot_calibration",
    "plot_edge_probs",
    "plot_edges_over_time",
    "plot_graph",
    "plot_metric_by_variant",
    "plot_training_curves",
    "plot_trajectories",
    "read_metrics",
    "relabel",
]
