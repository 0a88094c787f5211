"""Shared helpers of the GGUF tests."""

from __future__ import annotations

import numpy as np

from lamina.io.gguf_quants import BLOCK_SIZES, GGMLType

# byte offsets of each block type's float16 fields (scales and minima)
HALF_FIELDS = {"Q8_0": [0], "Q4_0": [0], "Q4_1": [0, 2], "Q5_0": [0], "Q5_1": [0, 2], "Q2_K": [80, 82],
               "Q3_K": [108], "Q4_K": [0, 2], "Q5_K": [0, 2], "Q6_K": [208]}


def random_blocks(kind: str, n_blocks: int, seed: int = 0) -> np.ndarray:
    """Random bytes of ``n_blocks`` blocks of type ``kind`` whose float16 fields hold finite,
    moderate values (n_blocks, bytes per block)."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 256, size=(n_blocks, BLOCK_SIZES[GGMLType[kind]][1]), dtype=np.uint8)
    for at in HALF_FIELDS[kind]:
        blocks[:, at:at + 2] = rng.uniform(-2, 2, size=(n_blocks, 1)).astype("<f2").view(np.uint8)
    return blocks
