"""GPTQ against a torch rewrite of the paper's Algorithm 1 (as the reference code runs it), and its
error against round-to-nearest."""

import numpy as np
import pytest
import torch

from lamina.nn.ptq import HessianAccumulator, gptq_quantize_weight, rtn_quantize_weight


def torch_quantizer_params(x, bits, sym):
    """Min/max parameters per row of x (rows = output units), widened to hold 0."""
    maxq = 2 ** bits - 1
    xmin = torch.minimum(x.min(1).values, torch.zeros(x.shape[0], dtype=x.dtype))
    xmax = torch.maximum(x.max(1).values, torch.zeros(x.shape[0], dtype=x.dtype))
    if sym:
        xmax = torch.maximum(xmin.abs(), xmax)
        xmin = -xmax
    both = (xmin == 0) & (xmax == 0)
    xmin[both], xmax[both] = -1.0, 1.0
    scale = (xmax - xmin) / maxq
    zero = torch.full_like(scale, (maxq + 1) / 2) if sym else torch.round(-xmin / scale)
    return scale, zero


def torch_gptq(weight, hessian, bits, groupsize, sym, actorder, percdamp=0.01, blocksize=128):
    """Algorithm 1 with lazy batch updates, on W (out, in) = weight^T, in float64 torch."""
    W = torch.tensor(weight.T.copy(), dtype=torch.float64)
    H = torch.tensor(hessian, dtype=torch.float64)
    maxq = 2 ** bits - 1
    columns = W.shape[1]
    if groupsize == -1:
        scale, zero = torch_quantizer_params(W, bits, sym)
    dead = torch.diag(H) == 0
    H[dead, dead] = 1
    W[:, dead] = 0
    if actorder:
        perm = torch.argsort(torch.diag(H), descending=True, stable=True)
        W, H = W[:, perm], H[perm][:, perm]
        invperm = torch.argsort(perm)
    H[range(columns), range(columns)] += percdamp * torch.mean(torch.diag(H))
    Hinv = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(H)), upper=True)
    Q = torch.zeros_like(W)
    scales = []
    for i1 in range(0, columns, blocksize):
        i2 = min(i1 + blocksize, columns)
        W1 = W[:, i1:i2].clone()
        Err1 = torch.zeros_like(W1)
        Hinv1 = Hinv[i1:i2, i1:i2]
        for i in range(i2 - i1):
            w, d = W1[:, i], Hinv1[i, i]
            if groupsize != -1 and (i1 + i) % groupsize == 0:
                scale, zero = torch_quantizer_params(W[:, i1 + i:i1 + i + groupsize], bits, sym)
                scales.append(scale)
            q = torch.clamp(torch.round(w / scale) + zero, 0, maxq)
            Q[:, i1 + i] = q
            err = (w - scale * (q - zero)) / d
            W1[:, i:] -= err.unsqueeze(1) @ Hinv1[i, i:].unsqueeze(0)
            Err1[:, i] = err
        W[:, i2:] -= Err1 @ Hinv[i1:i2, i2:]
    g_idx = torch.arange(columns) // (columns if groupsize == -1 else groupsize)
    if actorder:
        Q, g_idx = Q[:, invperm], g_idx[invperm]
    return Q.T.numpy(), g_idx.numpy()


def correlated_inputs(rng, n, d):
    mixing = rng.standard_normal((d, d)) + 2.0 * np.eye(d)
    return rng.standard_normal((n, d)) @ mixing * rng.uniform(0.2, 3.0, d)


@pytest.mark.parametrize("group_size, act_order, sym, bits", [(-1, False, False, 4), (16, False, False, 4),
                                                               (16, True, False, 3), (-1, True, True, 4),
                                                               (8, False, True, 2)])
def test_gptq_matches_torch_algorithm(group_size, act_order, sym, bits):
    rng = np.random.default_rng(1)
    x = correlated_inputs(rng, 200, 48)
    weight = rng.standard_normal((48, 24))
    acc = HessianAccumulator(48)
    acc.add(x[:120])
    acc.add(x[120:])
    np.testing.assert_allclose(acc.hessian, 2 * x.T @ x / 200, rtol=1e-12)
    result = gptq_quantize_weight(weight, acc.hessian, bits, group_size, sym, act_order, block_size=32)
    q_ref, g_idx_ref = torch_gptq(weight, acc.hessian, bits, group_size, sym, act_order, blocksize=32)
    np.testing.assert_array_equal(result.weight.qweight, q_ref.astype(np.uint8))
    np.testing.assert_array_equal(result.weight.g_idx, g_idx_ref)
    assert result.loss > 0


def test_gptq_beats_rtn_on_correlated_inputs():
    rng = np.random.default_rng(2)
    x = correlated_inputs(rng, 400, 64)
    weight = rng.standard_normal((64, 32))
    hessian = 2 * x.T @ x / len(x)
    for bits, group_size in ((4, 16), (3, -1)):
        gptq = gptq_quantize_weight(weight, hessian, bits, group_size).weight.dequantize(np.float64)
        rtn = rtn_quantize_weight(weight, bits, group_size).dequantize(np.float64)
        gptq_error = np.linalg.norm(x @ weight - x @ gptq)
        rtn_error = np.linalg.norm(x @ weight - x @ rtn)
        assert gptq_error < 0.8 * rtn_error


@pytest.mark.parametrize("group_size, sym", [(-1, False), (8, True), (16, False)])
def test_gptq_with_identity_hessian_is_rtn(group_size, sym):
    rng = np.random.default_rng(3)
    weight = rng.standard_normal((32, 10))
    gptq = gptq_quantize_weight(weight, np.eye(32), 4, group_size, sym, block_size=8).weight
    rtn = rtn_quantize_weight(weight, 4, group_size, sym)
    np.testing.assert_array_equal(gptq.qweight, rtn.qweight)
    np.testing.assert_array_equal(gptq.zeros, rtn.zeros)
    np.testing.assert_allclose(gptq.scales, rtn.scales)


def test_dead_inputs_get_zero_weight():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((50, 16))
    x[:, 3] = 0
    weight = rng.standard_normal((16, 6))
    quantized = gptq_quantize_weight(weight, 2 * x.T @ x / 50, 8, -1).weight.dequantize(np.float64)
    np.testing.assert_allclose(quantized[3], 0, atol=1e-12)


def test_gptq_errors():
    weight = np.ones((16, 4))
    with pytest.raises(ValueError, match="bits must be one of"):
        gptq_quantize_weight(weight, np.eye(16), bits=5)
    with pytest.raises(ValueError, match="group_size 6 does not divide in_features 16"):
        gptq_quantize_weight(weight, np.eye(16), group_size=6)
    with pytest.raises(ValueError, match=r"Hessian must be \(16, 16\)"):
        gptq_quantize_weight(weight, np.eye(8), group_size=-1)
    with pytest.raises(ValueError, match="no inputs were added"):
        _ = HessianAccumulator(16).hessian
