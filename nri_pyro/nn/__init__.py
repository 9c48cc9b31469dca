"""GNN building blocks of NRI in plain torch: the graph, the encoders and the decoders."""

from nri_pyro.nn.compile import compile_modules
from nri_pyro.nn.decoders import MLPDecoder, RNNDecoder, recompute_threshold
from nri_pyro.nn.encoders import CNNEncoder, MLPEncoder
from nri_pyro.nn.graph import (
    DenseGraph,
    Graph,
    adjacency_to_edges,
    edges_to_adjacency,
    full_graph,
)

__all__ = [
    "CNNEncoder",
    "DenseGraph",
    "Graph",
    "MLPDecoder",
    "MLPEncoder",
    "RNNDecoder",
    "adjacency_to_edges",
    "compile_modules",
    "edges_to_adjacency",
    "full_graph",
    "recompute_threshold",
]
