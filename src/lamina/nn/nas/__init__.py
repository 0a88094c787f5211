"""Neural architecture search spaces: DARTS's candidate operations, mixed edges, search
cells and network, genotypes, and the network built from a genotype."""

from lamina.nn.nas.evaluation import AuxiliaryHead, GenotypeCell, NetworkFromGenotype
from lamina.nn.nas.genotype import Genotype, derive_genotype, parse_cell
from lamina.nn.nas.operations import (
    OPS,
    PRIMITIVES,
    AvgPoolExcludePad,
    DilConv,
    FactorizedReduce,
    Identity,
    MaxPool3x3,
    NASConv,
    NormalizedPool,
    ReLUConvBN,
    SepConv,
    Zero,
    make_operation,
)
from lamina.nn.nas.search_space import MixedOp, SearchCell, SearchNetwork, count_edges

__all__ = [
    "OPS", "PRIMITIVES", "AuxiliaryHead", "AvgPoolExcludePad", "DilConv", "FactorizedReduce", "Genotype",
    "GenotypeCell", "Identity", "MaxPool3x3", "MixedOp", "NASConv", "NetworkFromGenotype", "NormalizedPool",
    "ReLUConvBN", "SearchCell", "SearchNetwork", "SepConv", "Zero", "count_edges", "derive_genotype",
    "make_operation", "parse_cell",
]
