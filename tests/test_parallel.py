"""lamina's own threads: chunked passes, split matrix products, BLAS kept on one thread."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch
from tests.helpers import assert_close, compare_with_torch

import lamina
from lamina import functional as F
from lamina import nn, parallel


@pytest.mark.parametrize("bad", [0, -1, 1.5, True])
def test_set_num_threads_rejects_non_positive_ints(bad):
    with pytest.raises(ValueError, match="set_num_threads"):
        parallel.set_num_threads(bad)


def test_map_chunks_runs_every_chunk_once_in_order_on_several_threads(two_threads):
    seen = []

    def work(i):
        seen.append((i, threading.get_ident()))
        time.sleep(0.01)                     # long enough for the other thread to take a chunk
        return i * i

    assert parallel.map_chunks(work, 6, parallel.MIN_ELEMENTS) == [i * i for i in range(6)]
    assert sorted(i for i, _ in seen) == list(range(6))
    assert len({ident for _, ident in seen}) == 2


def test_small_passes_stay_on_the_calling_thread(two_threads):
    idents = parallel.map_chunks(lambda i: threading.get_ident(), 4, parallel.MIN_ELEMENTS - 1)
    assert set(idents) == {threading.get_ident()}


def test_blas_runs_on_one_thread_inside_and_is_restored_after():
    import scipy.linalg  # noqa: F401 - SciPy's wheel may bring a BLAS library of its own

    parallel.find_blas_again()
    before = parallel.blas_num_threads()
    if not before:
        pytest.skip("no BLAS library found through threadpoolctl")
    with parallel.one_blas_thread():
        assert parallel.blas_num_threads() == [1] * len(before)
    assert parallel.blas_num_threads() == before
    inside = parallel.map_chunks(lambda i: parallel.blas_num_threads(), 2, parallel.MIN_ELEMENTS)
    assert inside == [[1] * len(before)] * 2 and parallel.blas_num_threads() == before


@pytest.mark.parametrize("shapes", [((300, 200), (200, 150)), ((8, 3000), (3000, 400)),
                                    ((2000, 64), (64, 32)), ((5000,), (5000, 64))])
def test_matmul_split_across_threads_equals_numpy(two_threads, shapes):
    rng = np.random.default_rng(0)
    a = rng.standard_normal(shapes[0]).astype(np.float32)
    b = rng.standard_normal(shapes[1]).astype(np.float32)
    parallel.map_chunks(lambda i: None, 2, parallel.MIN_ELEMENTS)  # lamina's threads just ran
    assert_close(parallel.matmul(a, b), a.astype(np.float64) @ b, 1e-5)
    assert_close(parallel.matmul(a, b), a @ b, 1e-6)


def test_matmul_keeps_numpy_errors_for_mismatched_shapes():
    with pytest.raises(ValueError):
        parallel.matmul(np.ones((3, 4)), np.ones((5, 2)))


def _assert_same_on_one_thread_and_on_two(x, w, **conv_args):
    """The results agree on any number of threads, to rounding: the batch is cut into a
    multiple of the thread count, and BLAS may round the rows of a product of another size
    differently (OpenBLAS does for the "toeplitz" plan's shapes); dJ/dw sums the chunks'
    parts (per thread, then the threads in order)."""
    results = []
    before = parallel.get_num_threads()
    try:
        for threads in (1, 2):
            parallel.set_num_threads(threads)
            xt, wt = lamina.tensor(x, requires_grad=True), lamina.tensor(w, requires_grad=True)
            y = F.conv2d(xt, wt, **conv_args)
            y.backward(np.cos(np.arange(y.size, dtype=np.float32)).reshape(y.shape))
            results.append((y.numpy(), xt.grad, wt.grad))
    finally:
        parallel.set_num_threads(before)
    (y1, dx1, dw1), (y2, dx2, dw2) = results
    assert_close(y2, y1, 1e-6, "v")
    assert_close(dx2, dx1, 1e-6, "dJ/dx")
    assert_close(dw2, dw1, 1e-5, "dJ/dw")


@pytest.mark.parametrize("kernel, padding, channels", [(3, "same", 32), (5, "valid", 6), (1, "valid", 16),
                                                       (3, 1, 3)])
def test_convolution_is_the_same_on_one_thread_and_on_two(kernel, padding, channels):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((16, 24, 24, channels)).astype(np.float32)
    w = rng.standard_normal((16, kernel, kernel, channels)).astype(np.float32)
    _assert_same_on_one_thread_and_on_two(x, w, padding=padding)


@pytest.mark.parametrize("stride", [1, 2])
def test_depthwise_convolution_is_the_same_on_one_thread_and_on_two(stride):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((8, 40, 40, 32)).astype(np.float32)
    w = rng.standard_normal((64, 3, 3, 1)).astype(np.float32)
    _assert_same_on_one_thread_and_on_two(x, w, stride=stride, padding=1, groups=32)


def test_batch_norm_split_across_threads_matches_torch(two_threads):
    """A batch large enough for the chunked, threaded passes, with a large mean (the
    chunk statistics are combined without cancellation)."""
    x = np.random.default_rng(2).standard_normal((16, 32, 32, 24)) * 3 + 50
    bn = nn.BatchNorm()
    tbn = torch.nn.BatchNorm2d(24)

    def run_torch(t):
        return tbn(t.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
    compare_with_torch(lambda t: bn(t), run_torch, x, rtol=1e-4)
    assert_close(bn.running_var, tbn.running_var.detach().numpy(), 1e-5, "running_var")
    assert_close(bn.running_mean, tbn.running_mean.detach().numpy(), 1e-5, "running_mean")


def test_map_sum_adds_every_chunk_and_skips_none(two_threads):
    parts = [np.full(3, float(i)) if i % 3 else None for i in range(10)]
    total = parallel.map_sum(lambda i: None if parts[i] is None else parts[i].copy(), 10, parallel.MIN_ELEMENTS)
    np.testing.assert_array_equal(total, np.full(3, float(sum(i for i in range(10) if i % 3))))
    assert parallel.map_sum(lambda i: None, 4, parallel.MIN_ELEMENTS) is None


def test_matmul_leaves_openblas_its_threads_only_while_lamina_threads_are_idle(two_threads, monkeypatch):
    calls = []
    run_all = parallel._run_all
    monkeypatch.setattr(parallel, "_run_all", lambda fns: (calls.append(len(fns)), run_all(fns)))
    a = np.ones((512, 256), np.float32)
    b = np.ones((256, 128), np.float32)
    monkeypatch.setattr(parallel, "_last_region", [float("-inf")])
    np.testing.assert_array_equal(parallel.matmul(a, b), np.full((512, 128), 256.0))
    assert calls == []                       # OpenBLAS's own threads: no lamina region
    parallel.map_chunks(lambda i: None, 2, parallel.MIN_ELEMENTS)
    np.testing.assert_array_equal(parallel.matmul(a, b), np.full((512, 128), 256.0))
    assert calls == [2, 2]                   # the region itself, then the split product


def test_changing_the_thread_count_does_not_pile_up_threads():
    before = parallel.get_num_threads()
    try:
        for n in (3, 2, 3, 2, 3):
            parallel.set_num_threads(n)
            parallel.map_chunks(lambda i: time.sleep(0.001), n, parallel.MIN_ELEMENTS)
    finally:
        parallel.set_num_threads(before)
    deadline = time.time() + 2
    while time.time() < deadline:
        alive = [t for t in threading.enumerate() if t.name.startswith("lamina")]
        if len(alive) <= 2:
            break
        time.sleep(0.05)
    assert len(alive) <= 2, [t.name for t in alive]


@pytest.mark.parametrize("n, per_item, target", [(64, 1000, 4000), (7, 10, 1 << 20), (5, 1 << 20, 1), (0, 10, 10)])
def test_chunk_bounds_cover_the_range_in_equal_runs_shared_by_the_threads(two_threads, n, per_item, target):
    bounds = parallel.chunk_bounds(n, per_item, target)
    assert bounds[0][0] == 0 and bounds[-1][1] == n
    assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
    sizes = [hi - lo for lo, hi in bounds]
    assert max(sizes) - min(sizes) <= 1
    if n >= 2:
        assert len(bounds) % 2 == 0 or len(bounds) == n
        assert max(sizes) * per_item <= max(target, per_item) * 2


def test_elementwise_splits_costly_passes_over_threads_with_the_same_values(two_threads):
    x = np.random.default_rng(0).standard_normal((300, 700)).astype(np.float32)   # 210,000 elements
    seen = set()

    def tanh_into(src, dst):
        seen.add(threading.get_ident())
        np.tanh(src, out=dst)
    cheap = parallel.elementwise(tanh_into, x, cost=1)              # below MIN_ELEMENTS: one thread
    assert seen == {threading.get_ident()}
    seen.clear()
    costly = parallel.elementwise(tanh_into, x, cost=4)
    assert len(seen) == 2
    np.testing.assert_array_equal(cheap, np.tanh(x))
    np.testing.assert_array_equal(costly, np.tanh(x))
    assert costly.dtype == np.float32
    inplace = x.copy()
    assert parallel.elementwise(tanh_into, inplace, cost=4, out=inplace) is inplace
    np.testing.assert_array_equal(inplace, np.tanh(x))


def test_elementwise_handles_strided_and_integer_inputs():
    x = np.arange(24, dtype=np.int64).reshape(4, 6)
    out = parallel.elementwise(lambda s, d: np.tanh(s, out=d), x[:, ::2], cost=4)
    np.testing.assert_array_equal(out, np.tanh(x[:, ::2]))
    assert out.dtype == np.float64                                 # NumPy's type for tanh of int64


def test_tanh_and_sigmoid_on_threads_match_torch(two_threads):
    x = np.random.default_rng(1).standard_normal((64, 32, 32, 6)).astype(np.float32) * 4
    assert_close(F.tanh(lamina.tensor(x)).numpy(), torch.tanh(torch.from_numpy(x)).numpy(), rtol=1e-6)
    assert_close(F.sigmoid(lamina.tensor(x)).numpy(), torch.sigmoid(torch.from_numpy(x)).numpy(), rtol=1e-6)


def test_an_error_on_a_worker_reaches_the_caller_and_the_threads_stay_usable(two_threads):
    def work(i):
        if i == 1:
            raise KeyError("chunk 1")
        time.sleep(0.005)
        return i

    with pytest.raises(KeyError, match="chunk 1"):
        parallel.map_chunks(work, 2, parallel.MIN_ELEMENTS)
    assert parallel.map_chunks(lambda i: i + 10, 4, parallel.MIN_ELEMENTS) == [10, 11, 12, 13]


def test_two_callers_at_once_each_get_their_own_results(two_threads):
    """A second thread that finds the workers busy runs its chunks itself."""
    results, errors = {}, []

    def caller(name):
        try:
            for _ in range(20):
                out = parallel.map_chunks(lambda i: (name, i), 4, parallel.MIN_ELEMENTS)
                assert out == [(name, i) for i in range(4)]
            results[name] = True
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=caller, args=(n,)) for n in "ab"]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and results == {"a": True, "b": True}


def test_more_calls_than_threads_all_run(two_threads):
    ran = []
    parallel._run_all([lambda i=i: ran.append(i) for i in range(5)])
    assert sorted(ran) == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("channels", [False, True])
def test_elementwise_chain_gives_each_thread_one_aligned_part(two_threads, channels):
    x = np.random.default_rng(2).standard_normal((9, 40, 40, 7)).astype(np.float32)   # 100,800 values
    out = np.full_like(x, np.nan)
    parts, threads = [], set()

    def kernel(src, dst):
        parts.append(src.shape)
        threads.add(threading.get_ident())
        np.multiply(src, 2, out=dst)

    parallel.elementwise_chain(kernel, [x, out], cost=1, channels=channels)   # too small: whole
    assert parts == [x.shape] and len(threads) == 1
    parts.clear()
    cost = -(-parallel.ELEMENTWISE_MIN // x.size)
    parallel.elementwise_chain(kernel, [x, out], cost=cost, channels=channels)
    np.testing.assert_array_equal(out, 2 * x)
    assert len(parts) == 2 and len(threads) == 2
    assert sum(np.prod(shape) for shape in parts) == x.size
    assert all(len(shape) == (2 if channels else 1) for shape in parts)
    if channels:
        assert all(shape[1] == 7 for shape in parts)


@pytest.mark.parametrize("channels", [False, True])
def test_elementwise_chain_runs_each_share_in_blocks(two_threads, monkeypatch, channels):
    monkeypatch.setattr(parallel, "ELEMENTWISE_BLOCK", 10_000)
    x = np.random.default_rng(4).standard_normal((9, 40, 40, 7)).astype(np.float32)   # 100,800 values
    out = np.full_like(x, np.nan)
    sizes = []

    def kernel(src, dst):
        sizes.append(src.size)
        np.multiply(src, 2, out=dst)

    parallel.elementwise_chain(kernel, [x, out], cost=-(-parallel.ELEMENTWISE_MIN // x.size), channels=channels)
    np.testing.assert_array_equal(out, 2 * x)
    assert sum(sizes) == x.size and len(sizes) == 12          # two shares of 50,400: 6 blocks each
    block = 10_000 // 7 * 7 if channels else 10_000             # whole rows of 7 channels
    assert max(sizes) == block


def test_elementwise_chain_takes_strided_arrays_whole(two_threads):
    x = np.random.default_rng(3).standard_normal((1200, 1200)).astype(np.float32)[:, ::2]
    out = np.empty(x.shape, np.float32)
    shapes = []

    def kernel(src, dst):
        shapes.append(src.shape)
        np.negative(src, out=dst)

    parallel.elementwise_chain(kernel, [x, out], cost=8)
    assert shapes == [x.shape]
    np.testing.assert_array_equal(out, -x)


def test_on_a_gpu_chunks_only_bound_the_temporaries(monkeypatch):
    import types

    from lamina import backend
    monkeypatch.setattr(backend, "xp", types.SimpleNamespace(__name__="cupy"))
    assert parallel.chunk_bounds(128, 1 << 20, 1 << 20) == [(0, 128)]        # 128 MiB: one launch
    bounds = parallel.chunk_bounds(128, 8 << 20, 1 << 20)                      # 1 GiB: 4 of 256 MiB
    assert bounds == [(0, 32), (32, 64), (64, 96), (96, 128)]
    assert parallel.chunk_bounds(3, 1 << 30, 1 << 20) == [(0, 1), (1, 2), (2, 3)]
