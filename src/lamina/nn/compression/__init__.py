"""Model compression that changes the architecture: low-rank factorisation of Dense and Conv2D
layers (:mod:`.low_rank`, on the decompositions of :mod:`.decompositions`) and structured filter
pruning that removes channels (:mod:`.filter_pruning`; :mod:`.graph_pruning` for residual
graphs). Masks that only zero weights are in :mod:`lamina.nn.prune`; the lottery-ticket
procedure is :func:`lamina.train.iterative_magnitude_pruning`."""

from lamina.nn.compression.decompositions import (
    cp_als,
    cp_to_tensor,
    rank_for_energy,
    relative_error,
    truncated_svd,
    tucker2,
    tucker2_to_tensor,
)
from lamina.nn.compression.filter_pruning import CRITERIA, filter_scores, prune_filters
from lamina.nn.compression.graph_pruning import ChannelGroup, channel_group
from lamina.nn.compression.low_rank import (
    CompressionReport,
    LayerCompression,
    compress_model,
    factorize_conv,
    factorize_dense,
)

__all__ = [
    "CRITERIA", "ChannelGroup", "CompressionReport", "LayerCompression", "channel_group", "compress_model", "cp_als",
    "cp_to_tensor", "factorize_conv", "factorize_dense", "filter_scores", "prune_filters", "rank_for_energy",
    "relative_error", "truncated_svd", "tucker2", "tucker2_to_tensor",
]
