"""Neural architecture search loops: DARTS's bilevel search (first or second order)."""

from lamina.train.nas.architect import Architect
from lamina.train.nas.darts import DartsResult, darts_search

__all__ = ["Architect", "DartsResult", "darts_search"]
