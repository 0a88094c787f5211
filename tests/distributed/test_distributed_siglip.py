"""SigLIP's loss computed in a ring over 2-4 forked processes (text chunks passed by send / recv,
never gathered) against the single-process loss of the concatenated batch: the loss and the
gradients of every rank's embeddings, t' and b."""

import numpy as np
import pytest

import lamina
import lamina.distributed as dist
from lamina import functional as F
from lamina.errors import ShapeError

TIGHT = dict(rtol=1e-11, atol=1e-13)


def batch(sizes, d=5, seed=0):
    rng = np.random.default_rng(seed)
    total = sum(sizes)
    return rng.standard_normal((total, d)), rng.standard_normal((total, d)), 0.4, -1.5


def single_process(img, txt, t_prime, b):
    tensors = [lamina.tensor(a, dtype=np.float64, requires_grad=True) for a in (img, txt, t_prime, b)]
    loss = F.siglip_loss(*tensors)
    loss.backward()
    return float(loss.numpy()), [t.grad for t in tensors]


def _ring_rank(rank, sizes, seed, d=5):
    img, txt, t_prime, b = batch(sizes, d, seed=seed)
    expected, (d_img, d_txt, d_t, d_b) = single_process(img, txt, t_prime, b)
    mine = slice(sum(sizes[:rank]), sum(sizes[:rank + 1]))
    x = lamina.tensor(img[mine], dtype=np.float64, requires_grad=True)
    y = lamina.tensor(txt[mine], dtype=np.float64, requires_grad=True)
    t = lamina.tensor(t_prime, dtype=np.float64, requires_grad=True)
    bias = lamina.tensor(b, dtype=np.float64, requires_grad=True)
    loss = dist.siglip_loss_ring(x, y, t, bias)
    loss.backward()
    np.testing.assert_allclose(float(loss.numpy()), expected, **TIGHT)
    np.testing.assert_allclose(x.grad, d_img[mine], **TIGHT)
    np.testing.assert_allclose(y.grad, d_txt[mine], **TIGHT)
    np.testing.assert_allclose(t.grad, d_t, **TIGHT)
    np.testing.assert_allclose(bias.grad, d_b, **TIGHT)


@pytest.mark.parametrize("sizes", [(3, 3), (2, 4, 3), (2, 2, 2, 2)])
def test_ring_loss_equals_the_single_process_loss_and_gradients(run_ranks, sizes):
    run_ranks(_ring_rank, len(sizes), sizes, len(sizes))


def test_ring_with_chunks_larger_than_the_shared_memory_slots(run_ranks):
    """Text chunks of 6 x 40 float64 (1920 bytes) over slots of 256 bytes, three ranks."""
    run_ranks(_ring_rank, 3, (6, 6, 6), 7, 40)


def _shift_rank(rank):
    x = lamina.tensor(np.full((rank + 1, 2), float(rank)), dtype=np.float64, requires_grad=True)
    y = dist.ring_shift(x)
    source = (rank - 1) % 3
    assert y.shape == (source + 1, 2) and np.all(y.numpy() == source)
    (y * float(rank + 1)).sum().backward()          # the gradient comes back from rank r + 1
    np.testing.assert_array_equal(x.grad, np.full((rank + 1, 2), float((rank + 1) % 3 + 1)))


def test_ring_shift_moves_chunks_forward_and_gradients_back(run_ranks):
    run_ranks(_shift_rank, 3)


def _mismatched_width(rank):
    d = 4 if rank == 0 else 3
    with pytest.raises(ShapeError, match=r"siglip_loss_ring: the ranks' embeddings differ in size D: \[4, 3\]"):
        dist.siglip_loss_ring(np.ones((2, d)), np.ones((2, d)))
    with pytest.raises(ShapeError, match="siglip_loss_ring: image_emb and text_emb must be matching pairs"):
        dist.siglip_loss_ring(np.ones((2, 3)), np.ones((3, 3)))


def test_errors(run_ranks):
    run_ranks(_mismatched_width, 2)
