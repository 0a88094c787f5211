"""MoCo's queue (first in, first out) and SwAV's prototypes."""

import numpy as np
import pytest

import lamina
from lamina.errors import ShapeError
from lamina.models import MoCoQueue, SwAVPrototypes


def test_queue_starts_with_unit_keys_and_keeps_the_last_size_keys_in_order():
    lamina.manual_seed(0)
    queue = MoCoQueue(dim=3, size=6)
    assert queue.keys().shape == (6, 3) and np.allclose(np.linalg.norm(queue.keys(), axis=1), 1.0)
    batches = [np.full((2, 3), float(b)) + np.arange(2)[:, None] / 10 for b in range(5)]
    for batch in batches:
        queue.enqueue(lamina.tensor(batch))
    expected = np.concatenate(batches)[-6:].astype(np.float32)     # batches 2, 3, 4, oldest first
    assert np.array_equal(queue.keys(), expected)
    assert int(queue._buffers["pointer"]) == (5 * 2) % 6
    # the ring buffer the loss reads holds the same keys
    assert sorted(map(tuple, queue().numpy())) == sorted(map(tuple, expected))


def test_partial_fill_puts_old_initial_keys_first():
    lamina.manual_seed(1)
    queue = MoCoQueue(dim=2, size=4)
    start = queue.keys().copy()
    queue.enqueue(np.ones((2, 2)))
    assert np.array_equal(queue.keys()[:2], start[2:]) and np.array_equal(queue.keys()[2:], np.ones((2, 2)))


def test_queue_rejects_batches_that_do_not_divide_it():
    queue = MoCoQueue(dim=3, size=8)
    with pytest.raises(ValueError, match="queue size 8 is not a multiple of the batch of 3"):
        queue.enqueue(np.zeros((3, 3)))
    with pytest.raises(ShapeError, match=r"keys must have shape \(N, 3\)"):
        queue.enqueue(np.zeros((2, 4)))


def test_prototypes_score_and_normalise_columns():
    lamina.manual_seed(2)
    prototypes = SwAVPrototypes(5)
    scores = prototypes(lamina.tensor(np.ones((2, 4), dtype=np.float32)))
    assert scores.shape == (2, 5) and "bias" not in prototypes._parameters
    prototypes.normalize_()
    assert np.allclose(np.linalg.norm(prototypes.weight.data, axis=0), 1.0)
