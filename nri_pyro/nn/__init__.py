"""GNN building blocks of NRI in plain torch: the graph, the encoders and the decoders."""

from nri_pyro.nn.compile import compile_loss, compile_modules
from nri_pyro.nn.decoders import MLPDecoder, RNNDecoder, recompute_threshold
from nri_pyro.nn.encoders import CNNEncoder, MLPEncoder, RelationalEncoder, WindowGRU
from nri_pyro.nn.graph import (
    Graph,
    adjacency_to_edges,
    edges_to_adjacency,
    full_graph,
)
from nri_pyro.nn.parallel import GlobalBatchNorm1d, global_batch_norms
from nri_pyro.nn.registry import (
    DECODERS,
    ENCODERS,
    Decoder,
    Encoder,
    register_decoder,
    register_encoder,
)

__all__ = [
    "DECODERS",
    "ENCODERS",
    "CNNEncoder",
    "RelationalEncoder",
    "Decoder",
    "Encoder",
    "GlobalBatchNorm1d",
    "Graph",
    "MLPDecoder",
    "MLPEncoder",
    "RNNDecoder",
    "WindowGRU",
    "adjacency_to_edges",
    "compile_loss",
    "compile_modules",
    "edges_to_adjacency",
    "full_graph",
    "global_batch_norms",
    "recompute_threshold",
    "register_decoder",
    "register_encoder",
]
