"""autocast: the dtype each op class runs in, against torch's CPU autocast where its
policy is lamina's (lamina follows torch's CUDA policy), values and gradients of small
models close to float32, and the state's nesting, disabling and thread-locality."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

import lamina
from helpers import assert_close, compare_with_torch
from lamina import functional as F
from lamina import nn
from lamina.amp import autocast, get_autocast_dtype, is_autocast_enabled
from lamina.nn.dense import linear

RNG = np.random.default_rng(0)


def arr(*shape) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


def both(*arrays):
    """lamina and torch tensors of the same float32 arrays."""
    return [lamina.tensor(a) for a in arrays], [torch.tensor(a) for a in arrays]


def half(a: np.ndarray) -> lamina.Tensor:
    return lamina.tensor(a, dtype=np.float16)


def torch_autocast():
    return torch.autocast(device_type="cpu", dtype=torch.float16)


def dtype_name(t) -> str:
    return str(t.dtype).replace("torch.", "")


# Ops whose policy torch's CPU autocast shares with lamina: (lamina op, torch op, input shapes).
# Convolutions take NHWC in lamina and NCHW in torch, so the torch side transposes.
SHARED = {
    "linear": (lambda x, w, b: linear(x, w, b), lambda x, w, b: torch.nn.functional.linear(x, w.T, b),
               [(4, 6), (6, 3), (3,)]),
    "matmul": (F.matmul, torch.matmul, [(4, 6), (6, 3)]),
    "batched matmul": (F.matmul, torch.matmul, [(2, 4, 6), (2, 6, 3)]),
    "einsum": (lambda a, b: F.einsum("bij,bjk->bik", a, b), lambda a, b: torch.einsum("bij,bjk->bik", a, b),
               [(2, 4, 6), (2, 6, 3)]),
    "conv2d": (F.conv2d, lambda x, w: torch.nn.functional.conv2d(x.permute(0, 3, 1, 2), w.permute(0, 3, 1, 2)),
               [(2, 5, 5, 3), (4, 3, 3, 3)]),
    "attention": (F.scaled_dot_product_attention, torch.nn.functional.scaled_dot_product_attention,
                  [(2, 5, 8), (2, 5, 8), (2, 5, 8)]),
    "cross entropy": (lambda z, t: F.categorical_cross_entropy(z, t, from_logits=True),
                      lambda z, t: torch.nn.functional.cross_entropy(z, t), [(4, 5), (4, 5)]),
    "mse": (F.mean_squared_error, torch.nn.functional.mse_loss, [(4, 5), (4, 5)]),
    "l1": (F.mean_absolute_error, torch.nn.functional.l1_loss, [(4, 5), (4, 5)]),
    "bce with logits": (lambda z, t: F.binary_cross_entropy(z, t, from_logits=True),
                        torch.nn.functional.binary_cross_entropy_with_logits, [(4, 5), (4, 5)]),
}


def _inputs(name, shapes):
    arrays = [arr(*s) for s in shapes]
    if name in ("cross entropy", "bce with logits"):   # targets: probabilities
        arrays[1] = np.abs(arrays[1]) / np.abs(arrays[1]).sum(-1, keepdims=True)
    return arrays


@pytest.mark.parametrize("name", sorted(SHARED))
def test_output_dtype_matches_torch_cpu_autocast(name):
    ours_fn, torch_fn, shapes = SHARED[name]
    arrays = _inputs(name, shapes)
    ours, theirs = both(*arrays)
    with autocast():
        got = ours_fn(*ours)
    with torch_autocast():
        expected = torch_fn(*theirs)
    assert str(got.dtype) == dtype_name(expected), name
    # values agree at half precision
    assert_close(got.numpy(), expected.float().detach().numpy().reshape(got.shape) if name != "conv2d"
                 else expected.float().permute(0, 2, 3, 1).numpy(), 2e-2, name)


def test_half_inputs_to_float32_ops_cast_up_like_torch_losses():
    z, t = arr(4, 5), arr(4, 5)
    with autocast():
        got = F.mean_squared_error(half(z), half(t))
    with torch_autocast():
        expected = torch.nn.functional.mse_loss(torch.tensor(z).half(), torch.tensor(t).half())
    assert str(got.dtype) == dtype_name(expected) == "float32"


# lamina's float32 list is CUDA's: these run in float32 even on float16 inputs, where torch's
# CPU autocast leaves them in the input's dtype (the documented difference).
CUDA_ONLY_FLOAT32 = {
    "softmax": F.softmax, "log_softmax": F.log_softmax, "exp": F.exp, "log": lambda a: F.log(F.abs(a) + 1),
    "sum": F.sum, "mean": F.mean,
    "layer norm": lambda a: nn.LayerNorm()(a), "batch norm": lambda a: nn.BatchNorm()(a),
}


@pytest.mark.parametrize("name", sorted(CUDA_ONLY_FLOAT32))
def test_cuda_float32_ops_run_in_float32_on_half_inputs(name):
    x = half(arr(4, 6))
    with autocast():
        assert CUDA_ONLY_FLOAT32[name](x).dtype == np.float32


def test_torch_cpu_autocast_differs_on_softmax():
    # Pins the documented difference: if torch's CPU policy changes, the docs must too.
    with torch_autocast():
        assert torch.softmax(torch.tensor(arr(3, 4)).half(), -1).dtype == torch.float16


def test_other_ops_run_in_the_widest_input_type_like_torch():
    a, b = arr(3, 4), arr(3, 4)
    low, full = half(a), lamina.tensor(b)
    with autocast():
        results = {"add": low + full, "mul": low * full, "concat": F.concat([low, full], axis=0),
                   "stack": F.stack([low, full]), "relu": F.relu(low), "tanh": F.tanh(low)}
    with torch_autocast():
        th, tf = torch.tensor(a).half(), torch.tensor(b)
        expected = {"add": th + tf, "mul": th * tf, "concat": torch.cat([th, tf]),
                    "stack": torch.stack([th, tf]), "relu": torch.relu(th), "tanh": torch.tanh(th)}
    for name, got in results.items():
        assert str(got.dtype) == dtype_name(expected[name]), name


def test_float64_inputs_are_never_cast():
    a, b = lamina.tensor(arr(3, 4), dtype=np.float64), lamina.tensor(arr(4, 2), dtype=np.float64)
    with autocast():
        assert F.matmul(a, b).dtype == np.float64
        assert F.softmax(a).dtype == np.float64


def test_values_and_gradients_of_linear_against_torch_autocast():
    x, w, b = arr(5, 7), arr(7, 3), arr(3)

    def ours(x, w, b):
        with autocast():
            return F.sum(F.relu(linear(x, w, b)))

    def theirs(x, w, b):
        with torch_autocast():
            return torch.relu(torch.nn.functional.linear(x, w.T, b)).sum()

    compare_with_torch(ours, theirs, x, w, b, rtol=1e-2)


def test_float32_parameters_get_float32_gradients_close_to_full_precision():
    x = lamina.tensor(arr(8, 6))
    lamina.manual_seed(0)
    model = nn.Sequential(nn.Dense(16, activation="relu"), nn.Dense(4))
    model.build((None, 6))

    def grads(enabled):
        for p in model.parameters():
            p.grad = None
        with autocast(enabled=enabled):
            out = model(x)
            loss = F.categorical_cross_entropy(out, np.eye(4)[[0, 1, 2, 3] * 2], from_logits=True)
        assert loss.dtype == np.float32
        loss.backward()
        return out, [p.grad for p in model.parameters()]

    out16, half = grads(True)
    out32, full = grads(False)
    assert out16.dtype == np.float16 and out32.dtype == np.float32
    assert_close(out16.numpy(), out32.numpy(), 5e-3, "logits")
    for g16, g32 in zip(half, full):
        assert g16.dtype == np.float32
        assert_close(g16, g32, 1e-2, "gradient")


def test_a_small_cnn_under_autocast_is_close_to_float32():
    lamina.manual_seed(1)
    model = nn.Sequential(nn.Conv2D(4, 3, activation="relu"), nn.MaxPool2D(2), nn.Flatten(), nn.Dense(5))
    x = lamina.tensor(arr(3, 8, 8, 2))
    full = model(x)
    with autocast():
        half = model(x)
    assert half.dtype == np.float16
    assert_close(half.numpy(), full.numpy(), 5e-3, "cnn output")


def test_nesting_disabling_and_restoring():
    a, b = lamina.tensor(arr(2, 3)), lamina.tensor(arr(3, 2))
    assert not is_autocast_enabled()
    with autocast():
        assert get_autocast_dtype() == np.float16
        with autocast(enabled=False):
            assert F.matmul(a, b).dtype == np.float32 and not is_autocast_enabled()
            with autocast():
                assert F.matmul(a, b).dtype == np.float16
        assert F.matmul(a, b).dtype == np.float16
    assert F.matmul(a, b).dtype == np.float32 and get_autocast_dtype() is None


def test_state_is_restored_after_an_exception_and_works_as_a_decorator():
    a, b = lamina.tensor(arr(2, 3)), lamina.tensor(arr(3, 2))
    with pytest.raises(ValueError), autocast():
        raise ValueError
    assert not is_autocast_enabled()
    assert autocast()(F.matmul)(a, b).dtype == np.float16


def test_the_state_is_per_thread():
    seen = []
    a, b = lamina.tensor(arr(2, 3)), lamina.tensor(arr(3, 2))
    with autocast():
        worker = threading.Thread(target=lambda: seen.append(F.matmul(a, b).dtype))
        worker.start()
        worker.join()
    assert seen == [np.float32]


def test_unsupported_dtype_is_refused_with_its_name():
    with pytest.raises(TypeError, match="autocast: dtype float64"):
        autocast(dtype=np.float64)


def test_the_cast_hands_float32_gradients_to_float32_intermediates():
    x, w = lamina.tensor(arr(3, 4), requires_grad=True), lamina.tensor(arr(4, 2), requires_grad=True)
    hidden = x * 2.0
    seen = []
    hidden.register_hook(lambda g: seen.append(g.dtype))
    with autocast():
        out = F.matmul(hidden, w)
    F.sum(out * out).backward()
    assert seen == [np.float32]


def test_second_derivatives_flow_through_the_casts():
    x, w = arr(3, 4), arr(4, 2)
    lx = lamina.tensor(x, requires_grad=True)
    with autocast():
        out = F.sum(F.matmul(lx, lamina.tensor(w)) ** 2)
    (g,) = lamina.autograd.grad(out, [lx], create_graph=True)
    assert g.dtype == np.float32
    (gg,) = lamina.autograd.grad(F.sum(g), [lx])
    tx = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    (tg,) = torch.autograd.grad(((tx @ torch.tensor(w, dtype=torch.float64)) ** 2).sum(), [tx], create_graph=True)
    (tgg,) = torch.autograd.grad(tg.sum(), [tx])
    assert gg.dtype == np.float32
    assert_close(np.asarray(getattr(gg, "data", gg)), tgg.numpy(), 1e-2, "second derivative")


def test_ops_with_policy_lists_the_classes_and_their_subclasses():
    from lamina.amp.policy import ops_with_policy
    from lamina.nn.instance_norm import InstanceNormFunction

    assert {"LinearFunction", "MatMul", "Conv2d", "ScaledDotProductAttention"} <= {
        c.__name__ for c in ops_with_policy("lower")}
    assert InstanceNormFunction in ops_with_policy("float32")
    with pytest.raises(ValueError, match="unknown policy"):
        ops_with_policy("half")


@pytest.mark.parametrize("kind", ["float mask", "blockwise", "blockwise with a float mask", "learned mask"])
def test_attention_with_a_float_mask_or_in_blocks_runs_in_the_lower_dtype_as_torch(kind):
    rng = np.random.default_rng(0)
    q = rng.standard_normal((1, 2, 5, 4)).astype(np.float32)
    mask = rng.standard_normal((5, 5)).astype(np.float32)
    kwargs = {"block_size": 2} if "blockwise" in kind else {}
    if "mask" in kind:
        kwargs["mask"] = lamina.tensor(mask, requires_grad=kind == "learned mask")
    query = lamina.tensor(q, requires_grad=True)
    with lamina.amp.autocast(dtype="float16"):
        out = F.scaled_dot_product_attention(query, lamina.tensor(q), lamina.tensor(q), **kwargs)
    with torch.autocast("cpu", dtype=torch.float16):
        reference = torch.nn.functional.scaled_dot_product_attention(
            torch.tensor(q), torch.tensor(q), torch.tensor(q), attn_mask=torch.tensor(mask) if "mask" in kind else None)
    assert out.dtype == np.float16 and reference.dtype == torch.float16
    np.testing.assert_allclose(out.numpy(), reference.numpy(), atol=3e-3)
    out.sum().backward()
    assert query.grad.dtype == np.float32                        # the gradient comes back in the input's dtype


def test_dtype_none_means_float16_and_unsupported_dtypes_are_named():
    with autocast(dtype=None):
        assert get_autocast_dtype() == np.float16
    for dtype in ("bfloat16", torch.bfloat16, np.float32, "half-ish"):
        with pytest.raises(TypeError, match=r"autocast: dtype .* is not supported; expected one of \('float16',\)"):
            autocast(dtype=dtype)


def test_softplus_and_erfinv_run_in_float32_as_on_cuda():
    x = half(arr(4, 6) * 0.3)
    with autocast():
        assert F.softplus(x).dtype == np.float32
        assert F.erfinv(x).dtype == np.float32
