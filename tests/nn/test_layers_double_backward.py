"""Second derivatives (grad(..., create_graph=True)) through the fused layer ops, attention,
einsum and cdist: against PyTorch's double backward in float64, and by gradgradcheck on
tiny shapes; then a Hessian-vector product of a small MLP with batch and layer norm."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import lamina
from helpers import assert_close, check_second_derivatives, compare_double_backward_with_torch, nonzero, positive, randn
from lamina import nn
from lamina.functional.attention import scaled_dot_product_attention
from lamina.functional.einsum import einsum
from lamina.functional.similarity import cdist
from lamina.nn.activation import PReLUFunction, relu6
from lamina.nn.bilinear import bilinear
from lamina.nn.dropout import DropoutFunction, dropout_mask
from lamina.nn.embedding import embedding
from lamina.nn.embedding_bag import embedding_bag
from lamina.nn.noise import NoiseFunction
from lamina.nn.normalization import BatchNormFunction, LocalResponseNormFunction
from lamina.nn.sample_norm import GroupNormFunction, LayerNormFunction

TF = torch.nn.functional


def _nchw(t):
    return t.permute(0, 3, 1, 2) if t.ndim == 4 else t


def _nhwc(t):
    return t.permute(0, 2, 3, 1) if t.ndim == 4 else t


def _affine(c, seed=1):
    return 1 + 0.3 * randn(c, seed=seed), 0.2 * randn(c, seed=seed + 1)


# -- batch normalization ------------------------------------------------------------------
def _bn_train(x, g, b):
    return BatchNormFunction.apply(x, g, b, eps=1e-5, training=True, stats={})


def _bn_train_torch(x, g, b):
    return _nhwc(TF.batch_norm(_nchw(x), None, None, g, b, training=True, eps=1e-5))


RUNNING_MEAN, RUNNING_VAR = 0.3 * randn(3, seed=7), positive(3, seed=8)


def _bn_eval(x, g, b):
    return BatchNormFunction.apply(x, g, b, eps=1e-5, training=False, running_mean=RUNNING_MEAN,
                                   running_var=RUNNING_VAR)


def _bn_eval_torch(x, g, b):
    return _nhwc(TF.batch_norm(_nchw(x), torch.tensor(RUNNING_MEAN), torch.tensor(RUNNING_VAR), g, b,
                               training=False, eps=1e-5))


@pytest.mark.parametrize("shape", [(6, 3), (3, 2, 2, 3)])
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_batchnorm_double_backward_matches_torch(mode, shape):
    ours, theirs = (_bn_train, _bn_train_torch) if mode == "train" else (_bn_eval, _bn_eval_torch)
    compare_double_backward_with_torch(ours, theirs, 2 + 1.5 * randn(*shape), *_affine(3))


@pytest.mark.parametrize("fn", [_bn_train, _bn_eval])
def test_batchnorm_gradgradcheck(fn):
    assert check_second_derivatives(fn, randn(2, 2, 1, 3, seed=3), *_affine(3))


def test_batchnorm_first_order_unchanged_by_create_graph():
    arrays = [2 + randn(3, 2, 2, 3), *_affine(3)]
    for fn in (_bn_train, _bn_eval):
        leaves = [lamina.tensor(a, requires_grad=True, dtype=np.float64) for a in arrays]
        r = randn(*arrays[0].shape, seed=9)
        plain = lamina.autograd.grad(fn(*leaves), leaves, grad_output=r)
        graphed = lamina.autograd.grad(fn(*leaves), leaves, grad_output=r, create_graph=True)
        assert graphed[0].requires_grad and graphed[1].requires_grad      # dJ/dbeta = sum dJ/dy: a constant
        for p, g in zip(plain, graphed):
            assert_close(g.numpy(), p, 1e-12, "create_graph gradient")


def test_batchnorm_layer_gradient_penalty_matches_torch():
    """||dJ/dx||^2 of a BatchNorm layer in training, differentiated w.r.t. gamma, as torch."""
    x = 1 + randn(5, 3, seed=4)
    gamma, beta = _affine(3)
    layer = nn.BatchNorm()
    layer.build(x.shape)
    layer.weight.data, layer.bias.data = gamma.copy(), beta.copy()
    xl = lamina.tensor(x, requires_grad=True, dtype=np.float64)
    (gx,) = lamina.autograd.grad((layer(xl) ** 3).sum(), [xl], create_graph=True)
    (dgamma,) = lamina.autograd.grad((gx * gx).sum(), [layer.weight])
    xt, gt = torch.tensor(x, requires_grad=True), torch.tensor(gamma, requires_grad=True)
    (gxt,) = torch.autograd.grad((_bn_train_torch(xt, gt, torch.tensor(beta)) ** 3).sum(), [xt], create_graph=True)
    (dgamma_t,) = torch.autograd.grad((gxt * gxt).sum(), [gt])
    assert_close(dgamma, dgamma_t.numpy(), 1e-9, "penalty gradient of gamma")


# -- layer and group normalization, local response normalization -------------------------------
def test_layernorm_last_axis_double_backward_matches_torch():
    compare_double_backward_with_torch(lambda x, g, b: LayerNormFunction.apply(x, g, b, eps=1e-5),
                                       lambda x, g, b: TF.layer_norm(x, (4,), g, b, eps=1e-5),
                                       1 + randn(3, 2, 4), *_affine(4))


def test_layernorm_whole_image_double_backward_matches_torch():
    """axes (H, W, C) of NHWC: the same trailing-axes normalisation in both, no transposes."""
    shape = (2, 2, 3, 2)
    compare_double_backward_with_torch(lambda x, g, b: LayerNormFunction.apply(x, g, b, eps=1e-5),
                                       lambda x, g, b: TF.layer_norm(x, shape[1:], g, b, eps=1e-5),
                                       randn(*shape), 1 + 0.3 * randn(*shape[1:], seed=1),
                                       0.2 * randn(*shape[1:], seed=2))


def _group_norm(groups):
    return lambda x, g, b: GroupNormFunction.apply(x, g, b, groups=groups, eps=1e-5)


def _group_norm_torch(groups):
    return lambda x, g, b: _nhwc(TF.group_norm(_nchw(x), groups, g, b, eps=1e-5))


@pytest.mark.parametrize("shape, groups", [((2, 2, 3, 4), 2), ((3, 6), 3)])
def test_groupnorm_double_backward_matches_torch(shape, groups):
    compare_double_backward_with_torch(_group_norm(groups), _group_norm_torch(groups), randn(*shape),
                                       *_affine(shape[-1]))


def test_sample_norms_gradgradcheck():
    assert check_second_derivatives(lambda x, g, b: LayerNormFunction.apply(x, g, b, eps=1e-5), randn(2, 3),
                                    *_affine(3))
    assert check_second_derivatives(_group_norm(2), randn(2, 1, 2, 4), *_affine(4))


def _lrn(x):          # an even size: the window reaches further back than forward
    return LocalResponseNormFunction.apply(x, size=4, alpha=0.5, beta=0.75, k=1.0)


def test_local_response_norm_double_backward_matches_torch_and_gradgradcheck():
    compare_double_backward_with_torch(_lrn, lambda x: _nhwc(TF.local_response_norm(_nchw(x), 4, 0.5, 0.75, 1.0)),
                                       randn(2, 2, 2, 5))
    assert check_second_derivatives(_lrn, randn(1, 1, 2, 4, seed=2))


# -- activations, dropout, noise --------------------------------------------------------------
@pytest.mark.parametrize("shape, slopes", [((4, 3), 3), ((2, 2, 2, 3), 3), ((4, 3), 1)])
def test_prelu_double_backward_matches_torch(shape, slopes):
    """PReLU is piecewise linear in z but its gradient is linear in alpha: the mixed second
    derivatives are not zero; tanh after it gives nonzero pure ones too."""
    compare_double_backward_with_torch(lambda z, a: PReLUFunction.apply(z, a).tanh(),
                                       lambda z, a: _nhwc(torch.tanh(TF.prelu(_nchw(z), a))),
                                       nonzero(*shape), 0.25 + 0.1 * randn(slopes, seed=3))


def test_prelu_and_relu6_gradgradcheck():
    assert check_second_derivatives(lambda z, a: PReLUFunction.apply(z, a) ** 2, nonzero(3, 2), positive(2, seed=1))
    z = nonzero(3, 4) * 2 + np.array([0.0, 0.0, 0.0, 6.0])            # values on both sides of 0 and 6
    assert check_second_derivatives(lambda x: relu6(x).tanh(), z)


def test_relu6_double_backward_matches_torch():
    z = nonzero(3, 4) * 2 + np.array([0.0, 0.0, 0.0, 6.0])
    compare_double_backward_with_torch(lambda x: relu6(x) * x, lambda x: TF.relu6(x) * x, z)


def test_dropout_double_backward_matches_torch_with_the_same_mask():
    x = randn(4, 5)

    def ours(t):
        lamina.manual_seed(11)
        return DropoutFunction.apply(t, rate=0.4).tanh()

    lamina.manual_seed(11)
    mask = torch.tensor(dropout_mask(x.shape, 0.4, np.float64))
    compare_double_backward_with_torch(ours, lambda t: torch.tanh(t * mask), x)
    assert check_second_derivatives(ours, randn(2, 3))


def test_noise_double_backward_matches_torch():
    x, scale, shift = randn(3, 4), 1 + 0.3 * randn(3, 4, seed=1), randn(3, 4, seed=2)
    compare_double_backward_with_torch(lambda t: NoiseFunction.apply(t, scale=scale, shift=shift).tanh(),
                                       lambda t: torch.tanh(t * torch.tensor(scale) + torch.tensor(shift)), x)
    compare_double_backward_with_torch(lambda t: NoiseFunction.apply(t, scale=None, shift=shift).tanh(),
                                       lambda t: torch.tanh(t + torch.tensor(shift)), x)


# -- embeddings and bilinear ---------------------------------------------------------------------
IDS = np.array([[1, 4, 4, 0], [3, 1, 4, 2]])          # repeated ids and word 0


@pytest.mark.parametrize("padding_idx", [None, 0])
def test_embedding_double_backward_matches_torch(padding_idx):
    """tanh of the rows: the gradient reaching the lookup depends on the table, so the second
    derivative runs through the adjoint of the lookup and back."""
    compare_double_backward_with_torch(lambda i, w: embedding(i, w, padding_idx=padding_idx).tanh(),
                                       lambda i, w: torch.tanh(TF.embedding(i, w, padding_idx=padding_idx)),
                                       IDS, randn(5, 3))


@pytest.mark.parametrize("padding_idx", [None, 0])
def test_embedding_mixed_second_derivative_matches_torch(padding_idx):
    """Rows times a tensor u: d(dJ/dE)/du is the lookup itself (0 at the padding positions)."""
    compare_double_backward_with_torch(lambda i, w, u: embedding(i, w, padding_idx=padding_idx) * u,
                                       lambda i, w, u: TF.embedding(i, w, padding_idx=padding_idx) * u,
                                       IDS, randn(5, 3), randn(*IDS.shape, 3, seed=1))


def test_embedding_gradgradcheck():
    assert check_second_derivatives(lambda w: embedding(IDS, w).tanh(), randn(5, 2))


def _bag_reference(mode):
    """The bags written out in torch ops (torch's embedding_bag has no double backward)."""
    def run(weight, per_sample=None):
        rows = weight[torch.from_numpy(IDS)]
        if per_sample is not None:
            return torch.tanh((rows * per_sample[..., None]).sum(1))
        if mode == "max":
            return torch.tanh(rows.max(1).values)
        return torch.tanh(rows.sum(1) if mode == "sum" else rows.mean(1))
    return run


@pytest.mark.parametrize("mode", ["sum", "mean", "max"])
def test_embedding_bag_double_backward_matches_torch(mode):
    compare_double_backward_with_torch(lambda w: embedding_bag(IDS, w, mode=mode).tanh(), _bag_reference(mode),
                                       randn(5, 3))


def test_embedding_bag_per_sample_weights_double_backward_and_gradgradcheck():
    def ours(w, s):
        return embedding_bag(IDS, w, mode="sum", per_sample_weights=s).tanh()

    compare_double_backward_with_torch(ours, _bag_reference("sum"), randn(5, 3), randn(*IDS.shape, seed=1))
    assert check_second_derivatives(ours, randn(5, 2), randn(*IDS.shape, seed=1))


def test_embedding_bag_padding_leaves_out_words_in_second_derivatives():
    """Padding word 0 left out of the bags: its per-sample weight gets no gradient, as if absent."""
    weights = randn(*IDS.shape, seed=1)
    kept = IDS != 0

    def ours(w, s):
        return embedding_bag(IDS, w, mode="sum", per_sample_weights=s, padding_idx=0).tanh()

    def theirs(w, s):
        return _bag_reference("sum")(w, s * torch.from_numpy(kept))

    compare_double_backward_with_torch(ours, theirs, randn(5, 3), weights)


def test_bilinear_double_backward_matches_torch_and_gradgradcheck():
    arrays = [randn(2, 3, 2), randn(2, 3, 3, seed=1), randn(4, 2, 3, seed=2), randn(4, seed=3)]
    compare_double_backward_with_torch(lambda *a: bilinear(*a).tanh(), lambda *a: torch.tanh(TF.bilinear(*a)), *arrays)
    assert check_second_derivatives(bilinear, randn(2, 2), randn(2, 2, seed=1), randn(2, 2, 2, seed=2))


# -- attention, einsum, cdist ----------------------------------------------------------------------
def _qkv(t_q=3, t_k=4, seed=5):
    return randn(2, t_q, 3, seed=seed), randn(2, t_k, 3, seed=seed + 1), randn(2, t_k, 2, seed=seed + 2)


KEEP = np.random.default_rng(6).random((3, 4)) > 0.4
KEEP[:, 0] = True
BIAS = randn(3, 4, seed=7)
ATTENTION_CASES = {
    "plain": ({}, {}, _qkv()),
    "causal": ({"causal": True}, {"is_causal": True}, _qkv(t_q=4)),
    "bool_mask": ({"mask": KEEP}, {"attn_mask": torch.from_numpy(KEEP)}, _qkv()),
    "float_mask": ({"mask": BIAS}, {"attn_mask": torch.from_numpy(BIAS)}, _qkv()),
}


@pytest.mark.parametrize("case", list(ATTENTION_CASES))
def test_attention_double_backward_matches_torch(case):
    ours, theirs, arrays = ATTENTION_CASES[case]
    compare_double_backward_with_torch(lambda q, k, v: scaled_dot_product_attention(q, k, v, **ours),
                                       lambda q, k, v: TF.scaled_dot_product_attention(q, k, v, **theirs), *arrays)


def test_attention_broadcast_batch_matches_torch():
    """One key/value set shared by the two batches: its gradients are summed over them."""
    q, k, v = randn(2, 3, 3), randn(1, 4, 3, seed=1), randn(1, 4, 2, seed=2)
    compare_double_backward_with_torch(scaled_dot_product_attention, TF.scaled_dot_product_attention, q, k, v)


def test_attention_first_order_unchanged_by_create_graph():
    leaves = [lamina.tensor(a, requires_grad=True, dtype=np.float64) for a in _qkv(t_q=4)]
    r = randn(2, 4, 2, seed=9)
    plain = lamina.autograd.grad(scaled_dot_product_attention(*leaves, causal=True), leaves, grad_output=r)
    graphed = lamina.autograd.grad(scaled_dot_product_attention(*leaves, causal=True), leaves, grad_output=r,
                                   create_graph=True)
    for p, g in zip(plain, graphed):
        assert_close(g.numpy(), p, 1e-12, "create_graph gradient")


def test_attention_gradgradcheck_with_mask_dropout_and_a_fully_masked_query():
    q, k, v = randn(1, 3, 2), randn(1, 3, 2, seed=1), randn(1, 3, 2, seed=2)
    keep = np.array([[True, False, True], [False, False, False], [True, True, False]])

    def run(q_, k_, v_):
        lamina.manual_seed(4)
        return scaled_dot_product_attention(q_, k_, v_, mask=keep, dropout=0.3)

    assert check_second_derivatives(run, q, k, v)
    leaves = [lamina.tensor(a, requires_grad=True, dtype=np.float64) for a in (q, k, v)]
    grads = lamina.autograd.grad(run(*leaves), leaves, grad_output=np.ones((1, 3, 2)), create_graph=True)
    assert np.isfinite(np.concatenate([g.numpy().ravel() for g in grads])).all()


EINSUM_CASES = {
    "matmul": ("ij,jk->ik", [randn(2, 3), randn(3, 4, seed=1)]),
    "batched": ("bij,bjk->bik", [randn(2, 2, 3), randn(2, 3, 2, seed=1)]),
    "ellipsis": ("...ij,jk->...ik", [randn(2, 2, 3), randn(3, 2, seed=1)]),
    "three_operands": ("bi,ij,bj->b", [randn(3, 2), randn(2, 4, seed=1), randn(3, 4, seed=2)]),
    "diagonal": ("iij->ij", [randn(3, 3, 2)]),
    "outer_and_private_sum": ("ij,k->ik", [randn(2, 3), randn(4, seed=1)]),
}


@pytest.mark.parametrize("name", list(EINSUM_CASES))
def test_einsum_double_backward_matches_torch(name):
    """Squared, so that even the gradient of a one-operand einsum depends on its input."""
    spec, arrays = EINSUM_CASES[name]
    compare_double_backward_with_torch(lambda *a: einsum(spec, *a) ** 2, lambda *a: torch.einsum(spec, *a) ** 2,
                                       *arrays)


@pytest.mark.parametrize("spec, shapes", [("ij,jk->ik", [(2, 2), (2, 3)]), ("ii->i", [(3, 3)]),
                                          ("ij,ij->", [(2, 3), (1, 3)])])
def test_einsum_gradgradcheck(spec, shapes):
    arrays = [randn(*s, seed=i) for i, s in enumerate(shapes)]
    assert check_second_derivatives(lambda *a: einsum(spec, *a).tanh(), *arrays)


def test_cdist_double_backward_matches_torch_and_gradgradcheck():
    a, b = randn(4, 3), randn(2, 5, 3, seed=1)
    compare_double_backward_with_torch(cdist, lambda x, y: torch.cdist(x, y, compute_mode="use_mm_for_euclid_dist"),
                                       a, b)
    assert check_second_derivatives(cdist, randn(2, 2), randn(3, 2, seed=1))


# -- end to end: a Hessian-vector product of a small network -------------------------------------------
def test_mlp_with_batchnorm_and_layernorm_hessian_vector_product_matches_torch():
    lamina.set_default_dtype(np.float64)
    # no bias before batch norm: the normalisation cancels it (its derivatives are 0 up to rounding)
    model = nn.Sequential(nn.Dense(5, use_bias=False), nn.BatchNorm(), nn.Tanh(), nn.Dense(4), nn.LayerNorm(),
                          nn.Tanh(), nn.Dense(2))
    x, y = randn(6, 3, seed=1), randn(6, 2, seed=2)
    with lamina.no_grad():
        model(lamina.tensor(x))                        # builds the layers (float64 weights)
    params = model.parameters()
    rng = np.random.default_rng(3)
    for p in params:                                   # gamma and beta away from 1 and 0
        p.data = p.data + 0.2 * rng.standard_normal(p.shape)
    directions = [rng.standard_normal(p.shape) for p in params]

    loss = ((model(lamina.tensor(x, dtype=np.float64)) - y) ** 2).mean()
    grads = lamina.autograd.grad(loss, params, create_graph=True)
    along = sum((g * lamina.tensor(v, dtype=np.float64)).sum() for g, v in zip(grads, directions))
    hvp = lamina.autograd.grad(along, params)

    dense = [m for m in model if isinstance(m, nn.Dense)]
    bn, ln = model[1], model[4]
    tparams = [torch.tensor(p.data, requires_grad=True) for p in params]
    by_id = {id(p): t for p, t in zip(params, tparams)}

    def linear(layer, h):
        h = h @ by_id[id(layer.weight)]
        return h + by_id[id(layer.bias)] if layer.use_bias else h

    h = torch.tanh(TF.batch_norm(linear(dense[0], torch.tensor(x)), None, None, by_id[id(bn.weight)],
                                 by_id[id(bn.bias)], training=True, eps=bn.eps))
    h = torch.tanh(TF.layer_norm(linear(dense[1], h), (4,), by_id[id(ln.weight)], by_id[id(ln.bias)], eps=ln.eps))
    loss_t = ((linear(dense[2], h) - torch.tensor(y)) ** 2).mean()
    assert_close(loss.numpy(), loss_t.detach().numpy(), 1e-12, "loss")
    grads_t = torch.autograd.grad(loss_t, tparams, create_graph=True)
    along_t = sum((g * torch.tensor(v)).sum() for g, v in zip(grads_t, directions))
    hvp_t = torch.autograd.grad(along_t, tparams)
    assert len(hvp) == len(hvp_t) == 9
    for k, (ours, theirs) in enumerate(zip(hvp, hvp_t)):
        assert_close(ours, theirs.numpy(), 1e-8, f"Hessian-vector product, parameter {k}")


@pytest.mark.parametrize("track", [False, True], ids=["batch_statistics", "running_statistics"])
def test_instance_norm_matches_torch_double_backward(track):
    """InstanceNorm2D in training (per-sample statistics, the group-norm node with one group per
    channel) and in evaluation with running statistics (the batch-norm node's affine map)."""
    lamina.set_default_dtype(np.float64)
    try:
        layer = nn.InstanceNorm2D(affine=True, track_running_stats=track)
        layer.build((2, 4, 5, 3))
        mean, var = randn(3, seed=3) * 0.1, positive(3, seed=4)
        if track:
            layer.running_mean, layer.running_var = mean.copy(), var.copy()
            layer.eval()

        def ours(x, w, b):
            return nn.functional_call(layer, {"weight": w, "bias": b}, x).tanh()

        def theirs(x, w, b):
            out = torch.nn.functional.instance_norm(
                x.permute(0, 3, 1, 2), running_mean=torch.tensor(mean) if track else None,
                running_var=torch.tensor(var) if track else None, weight=w, bias=b, use_input_stats=not track,
                eps=1e-5)
            return out.permute(0, 2, 3, 1).tanh()

        compare_double_backward_with_torch(ours, theirs, randn(2, 4, 5, 3), randn(3, seed=1), randn(3, seed=2))
    finally:
        lamina.set_default_dtype(np.float32)
