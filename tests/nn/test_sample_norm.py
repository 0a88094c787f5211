import numpy as np
import pytest
import torch
from nn_checks import gradcheck_layer

import lamina
from helpers import TOLERANCE, assert_close
from lamina import nn
from lamina.nn.sample_norm import GroupNormFunction, LayerNormFunction

TORCH_DTYPE = {np.float32: torch.float32, np.float64: torch.float64}


@pytest.fixture
def f64():
    lamina.set_default_dtype(np.float64)


def _set_affine(layer, seed=0):
    """Non-trivial gamma and beta, so that a mix-up of the two (or of their axes) shows."""
    rng = np.random.default_rng(seed)
    dtype = layer.weight.data.dtype
    shape = layer.weight.shape
    layer.weight.data = (1 + 0.5 * rng.standard_normal(shape)).astype(dtype)
    layer.bias.data = (0.3 * rng.standard_normal(shape)).astype(dtype)


def _compare_with_torch(layer, torch_module, x, dtype, *, nchw: bool, perm=None, seed: int = 0):
    """``layer`` (built here, in ``dtype``, with random gamma/beta) against ``torch_module``
    given the same weights: the output and the gradients of the input, weight and bias.
    ``nchw``: torch sees an input of 3 or more axes channels-first (NCL, NCHW, NCDHW);
    ``perm`` takes lamina's weight to torch's layout."""
    lamina.set_default_dtype(dtype)
    x = np.asarray(x, dtype=dtype)
    layer.build(x.shape)
    layer.built = True
    _set_affine(layer, seed)
    torch_module.to(TORCH_DTYPE[dtype])
    with torch.no_grad():
        for ours, theirs in ((layer.weight, torch_module.weight), (layer.bias, torch_module.bias)):
            value = ours.numpy() if perm is None else ours.numpy().transpose(perm)
            theirs.copy_(torch.from_numpy(np.ascontiguousarray(value)))

    def to_torch(a):
        return np.ascontiguousarray(np.moveaxis(a, -1, 1) if nchw and a.ndim > 2 else a)

    def from_torch(a):
        return np.moveaxis(a, 1, -1) if nchw and a.ndim > 2 else a

    rtol = TOLERANCE[dtype]
    xl = lamina.tensor(x, requires_grad=True, dtype=dtype)
    out = layer(xl)
    xt = torch.tensor(to_torch(x), requires_grad=True)
    out_t = torch_module(xt)
    assert out.dtype == dtype
    assert_close(out.numpy(), from_torch(out_t.detach().numpy()), rtol, "output")
    upstream = np.random.default_rng(seed + 1).standard_normal(out.shape).astype(dtype)
    out.backward(upstream)
    (out_t * torch.from_numpy(to_torch(upstream))).sum().backward()
    assert_close(xl.grad, from_torch(xt.grad.numpy()), rtol, "input gradient")
    for name, ours, theirs in (("weight", layer.weight, torch_module.weight), ("bias", layer.bias, torch_module.bias)):
        expected = theirs.grad.numpy() if perm is None else theirs.grad.numpy().transpose(np.argsort(perm))
        assert ours.grad is not None, f"no gradient reached {name}"
        assert_close(ours.grad, expected, rtol, f"gradient of {name}")


# -- gradient checks -----------------------------------------------------------------------
@pytest.mark.parametrize("axes, shape", [(-1, (5, 6)),
                                         (-1, (2, 3, 2, 4)),
                                         ((-3, -2, -1), (2, 3, 2, 4)),
                                         ((1, 2, 3), (2, 2, 3, 3)),
                                         ((-2, -1), (3, 2, 5))])
def test_layernorm_gradcheck(f64, axes, shape):
    x = 3.0 + 2.0 * np.random.default_rng(1).standard_normal(shape)
    layer = nn.LayerNorm(axes=axes)
    layer(x)
    _set_affine(layer)
    assert gradcheck_layer(layer, x)


@pytest.mark.parametrize("groups", [1, 2, 6])
@pytest.mark.parametrize("shape", [(2, 3, 2, 6), (4, 6), (2, 3, 6), (2, 2, 1, 2, 6)])
def test_groupnorm_gradcheck(f64, groups, shape):
    x = -1.0 + 2.0 * np.random.default_rng(2).standard_normal(shape)
    layer = nn.GroupNorm(groups)
    layer(x)
    _set_affine(layer)
    if shape == (4, 6) and groups == 6:
        # one value per group: x' = 0, so only beta (and nothing of x or gamma) reaches y
        assert gradcheck_layer(layer, x, grad_input=False)
    else:
        assert gradcheck_layer(layer, x)


@pytest.mark.parametrize("layer", [nn.LayerNorm(axes=(-2, -1), affine=False), nn.GroupNorm(3, affine=False)])
def test_gradcheck_without_affine(f64, layer):
    x = np.random.default_rng(3).standard_normal((2, 2, 3, 6))
    assert gradcheck_layer(layer, x)
    assert layer.parameters() == [] and layer.state_dict() == {}


# -- against PyTorch -------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(7, 10), (3, 4, 5, 6), (40, 30, 24)])    # the last above SMALL_LAYER_NORM
def test_layernorm_last_axis_matches_torch(dtype, shape):
    x = 2.0 + 3.0 * np.random.default_rng(4).standard_normal(shape)
    _compare_with_torch(nn.LayerNorm(), torch.nn.LayerNorm(shape[-1]), x, dtype, nchw=False)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_layernorm_whole_image_matches_torch(dtype):
    """axes (H, W, C) of NHWC == torch's LayerNorm((C, H, W)) of NCHW, weights transposed."""
    x = 1.0 + 2.0 * np.random.default_rng(5).standard_normal((3, 4, 5, 6))
    _compare_with_torch(nn.LayerNorm(axes=(-3, -2, -1)), torch.nn.LayerNorm((6, 4, 5)), x, dtype,
                        nchw=True, perm=(2, 0, 1))
    _compare_with_torch(nn.LayerNorm(axes=(1, 2, 3)), torch.nn.LayerNorm((4, 5, 6)), x, dtype,
                        nchw=False, seed=1)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("groups", [1, 2, 4, 8])
def test_groupnorm_matches_torch(dtype, groups):
    x = 2.0 + 3.0 * np.random.default_rng(6).standard_normal((3, 5, 4, 8))
    _compare_with_torch(nn.GroupNorm(groups), torch.nn.GroupNorm(groups, 8), x, dtype, nchw=True, seed=groups)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_groupnorm_on_feature_vectors_matches_torch(dtype):
    x = np.random.default_rng(7).standard_normal((5, 12))
    _compare_with_torch(nn.GroupNorm(3, eps=1e-3), torch.nn.GroupNorm(3, 12, eps=1e-3), x, dtype, nchw=True)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(3, 7, 6), (2, 3, 4, 5, 6), (2, 1, 2, 3, 2, 6)], ids=["NLC", "NDHWC", "rank6"])
def test_groupnorm_on_sequences_and_volumes_matches_torch(dtype, shape):
    x = 1.0 - 2.0 * np.random.default_rng(len(shape)).standard_normal(shape)
    _compare_with_torch(nn.GroupNorm(3), torch.nn.GroupNorm(3, 6), x, dtype, nchw=True, seed=len(shape))


def test_one_fused_node_each_and_double_backward_with_retained_graph(f64):
    x = lamina.tensor(np.random.default_rng(8).standard_normal((2, 3, 3, 4)), requires_grad=True)
    for layer, fn in ((nn.LayerNorm(axes=(-2, -1)), LayerNormFunction), (nn.GroupNorm(2), GroupNormFunction)):
        y = layer(x)
        assert isinstance(y._ctx, fn)
        kept = {k for k, v in vars(y._ctx).items() if isinstance(v, np.ndarray)}
        # the input's own array (no normalised copy of it) and the per-sample statistics
        assert kept == {"xv", "mean", "inv_std", "gamma"}, kept
        assert np.shares_memory(y._ctx.xv, x.data) and y._ctx.mean.size < x.data.size
        upstream = np.random.default_rng(9).standard_normal(y.shape)
        x.grad = None
        y.backward(upstream, retain_graph=True)
        first = x.grad.copy()
        x.grad = None
        y.backward(upstream)
        np.testing.assert_allclose(x.grad, first, rtol=1e-12, atol=0)


def test_small_inputs_take_a_path_with_the_same_values():
    from lamina.nn.sample_norm import SMALL_LAYER_NORM, _standardize, _standardize_rows

    rng = np.random.default_rng(11)
    for dtype in (np.float32, np.float64):
        x = (5.0 + 3.0 * rng.standard_normal((37, 1, 48))).astype(dtype)
        gamma, beta = rng.standard_normal(48).astype(dtype), rng.standard_normal(48).astype(dtype)
        assert x.size <= SMALL_LAYER_NORM
        for chunked, rowwise in zip(_standardize(x, 1, 48, 1e-5, gamma, beta),
                                    _standardize_rows(x[:, 0], 1e-5, gamma, beta)):
            assert rowwise.dtype == dtype and rowwise.shape == chunked.shape
            np.testing.assert_allclose(rowwise, chunked, rtol=1e-6 if dtype == np.float32 else 1e-13)


def test_statistics_per_sample_and_no_train_eval_difference():
    rng = np.random.default_rng(10)
    x = (5 + 3 * rng.standard_normal((4, 3, 3, 6))).astype(np.float32)
    ln, gn = nn.LayerNorm(axes=(-3, -2, -1)), nn.GroupNorm(3)
    y_ln, y_gn = ln(x).numpy(), gn(x).numpy()
    np.testing.assert_allclose(y_ln.mean(axis=(1, 2, 3)), 0, atol=1e-5)
    np.testing.assert_allclose(y_ln.var(axis=(1, 2, 3)), 1, atol=1e-3)
    groups = y_gn.reshape(4, 9, 3, 2)
    np.testing.assert_allclose(groups.mean(axis=(1, 3)), 0, atol=1e-5)
    np.testing.assert_allclose(groups.var(axis=(1, 3)), 1, atol=1e-3)
    # each sample alone: the statistics never mix samples
    np.testing.assert_allclose(gn(x[1:2]).numpy(), y_gn[1:2], rtol=1e-6, atol=1e-6)
    ln.eval()
    gn.eval()
    np.testing.assert_array_equal(ln(x).numpy(), y_ln)
    np.testing.assert_array_equal(gn(x).numpy(), y_gn)


def test_dtypes_follow_default_and_input():
    x32 = np.random.default_rng(11).standard_normal((2, 2, 2, 4)).astype(np.float32)
    for layer in (nn.LayerNorm(), nn.GroupNorm(2)):
        y = layer(x32)
        assert y.dtype == np.float32 and layer.weight.dtype == np.float32 and layer.bias.dtype == np.float32
        assert layer.gamma is layer.weight and layer.beta is layer.bias
        x64 = lamina.tensor(x32.astype(np.float64), requires_grad=True, dtype=np.float64)
        y64 = layer(x64)
        assert y64.dtype == np.float64
        y64.sum().backward()
        assert x64.grad.dtype == np.float64 and layer.weight.grad.dtype == np.float32


def test_empty_batch_and_summary():
    """A zero-sample batch (what lamina.analysis traces a model with) passes through."""
    empty = np.zeros((0, 4, 4, 8), dtype=np.float32)
    for layer in (nn.LayerNorm(axes=(-3, -2, -1)), nn.GroupNorm(2)):
        assert layer(empty).shape == (0, 4, 4, 8)
    model = nn.Sequential(nn.Conv2D(8, 3), nn.GroupNorm(2), nn.LayerNorm(axes=(-3, -2, -1)), nn.Flatten(),
                          nn.Dense(6), nn.GroupNorm(3), nn.LayerNorm())
    text = str(model.summary((6, 6, 3)))
    assert "group_norm (GroupNorm)" in text and "layer_norm_1 (LayerNorm)" in text
    assert "Total params: 1,294" in text  # 224 + 16 + 256 + 774 + 12 + 12


# -- configuration, saving ------------------------------------------------------------------
def test_config_repr_and_output_shape():
    ln = nn.LayerNorm(axes=(-3, -2, -1), eps=1e-6, name="ln")
    gn = nn.GroupNorm(4, affine=False)
    assert ln.get_config() == {"axes": [-3, -2, -1], "eps": 1e-6, "affine": True, "name": "ln"}
    assert nn.LayerNorm().get_config()["axes"] == -1
    assert gn.get_config() == {"groups": 4, "eps": 1e-5, "affine": False, "name": None}
    assert repr(ln) == "LayerNorm(?, axes=(-3, -2, -1), eps=1e-06)"
    assert repr(gn) == "GroupNorm(4, ?, eps=1e-05, affine=False)"
    assert ln.compute_output_shape((None, 5, 5, 8)) == (None, 5, 5, 8)
    assert gn.compute_output_shape((None, 5, 5, 8)) == (None, 5, 5, 8)
    ln(np.zeros((1, 2, 3, 8), dtype=np.float32))
    gn(np.zeros((1, 2, 3, 8), dtype=np.float32))
    assert repr(ln) == "LayerNorm((2, 3, 8), axes=(-3, -2, -1), eps=1e-06)"
    assert repr(gn) == "GroupNorm(4, 8, eps=1e-05, affine=False)"
    assert ln.weight.shape == (2, 3, 8)
    assert {"LayerNorm", "GroupNorm"} <= set(nn.registered_layers())
    assert {"LayerNorm", "GroupNorm"} <= set(nn.__all__)
    rebuilt = nn.layer_from_config(nn.layer_to_config(ln))
    assert type(rebuilt) is nn.LayerNorm and rebuilt.axes == (-3, -2, -1) and rebuilt.eps == 1e-6
    with pytest.raises(lamina.ShapeError, match=r"LayerNorm 'ln'.*\(None, 2, 4, 8\).*built for \(2, 3, 8\)"):
        ln.compute_output_shape((None, 2, 4, 8))
    with pytest.raises(lamina.ShapeError, match=r"GroupNorm.*12 channels.*built for C=8"):
        gn.compute_output_shape((None, 5, 5, 12))
    with pytest.raises(lamina.ShapeError, match=r"GroupNorm.*C=6.*groups=4"):
        gn.compute_output_shape((None, 5, 5, 6))


def test_save_load_round_trip(tmp_path):
    rng = np.random.default_rng(12)
    model = nn.Sequential(nn.Conv2D(8, 3, padding=1), nn.GroupNorm(4, name="gn"), nn.ReLU(),
                          nn.LayerNorm(axes=(-3, -2, -1), eps=1e-4, name="ln_image"), nn.Flatten(),
                          nn.Dense(6), nn.LayerNorm(name="ln_features"), nn.GroupNorm(3, affine=False), nn.Dense(3))
    x = rng.standard_normal((2, 5, 5, 3)).astype(np.float32)
    model(lamina.tensor(x))
    for layer in model.modules():
        if isinstance(layer, (nn.LayerNorm, nn.GroupNorm)) and layer.affine:
            _set_affine(layer, seed=len(layer.name))
    path = tmp_path / "norms.safetensors"
    lamina.save(model, path)
    loaded = lamina.load(path)
    model.eval()
    with lamina.no_grad():
        np.testing.assert_array_equal(loaded(lamina.tensor(x)).numpy(), model(lamina.tensor(x)).numpy())
    assert set(loaded.state_dict()) == set(model.state_dict())
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(loaded.state_dict()[key], value)
    ours = [(type(m), m.get_config()) for m in model.modules() if isinstance(m, (nn.LayerNorm, nn.GroupNorm))]
    theirs = [(type(m), m.get_config()) for m in loaded.modules() if isinstance(m, (nn.LayerNorm, nn.GroupNorm))]
    assert ours == theirs and len(ours) == 4


# -- errors --------------------------------------------------------------------------------
def test_groupnorm_errors():
    x = np.zeros((2, 4, 4, 6), dtype=np.float32)
    with pytest.raises(lamina.ShapeError, match=r"GroupNorm 'gn'.*\(2, 4, 4, 6\).*C=6.*groups=4.*divisible"):
        nn.GroupNorm(4, name="gn")(x)
    with pytest.raises(lamina.ShapeError, match=r"GroupNorm 'gn'.*\(6,\).*expected \(batch, \.\.\., channels\)"):
        nn.GroupNorm(2, name="gn")(np.zeros((6,), dtype=np.float32))
    built = nn.GroupNorm(2, name="gn")
    built(x)
    with pytest.raises(lamina.ShapeError, match=r"GroupNorm 'gn'.*shape \(2, 4, 4\) \(float32\).*C=6"):
        built(x[..., 0])
    with pytest.raises(lamina.ShapeError, match=r"GroupNorm 'gn'.*\(2, 6, 4, 4\).*channels-first.*NCHW"):
        built(x.transpose(0, 3, 1, 2))
    with pytest.raises(lamina.ShapeError, match=r"GroupNorm 'gn'.*\(2, 6, 4\).*C=6 channels on the last axis"):
        built(x[:, :, 0].transpose(0, 2, 1))
    for bad in (0, -2, 1.5, True):
        with pytest.raises(ValueError, match="GroupNorm: groups must be a positive int"):
            nn.GroupNorm(bad)
    with pytest.raises(ValueError, match="GroupNorm: eps"):
        nn.GroupNorm(2, eps=0.0)


def test_layernorm_errors():
    x = np.zeros((2, 4, 4, 6), dtype=np.float32)
    for axes in ((-2,), (-3, -1), -2):
        with pytest.raises(ValueError, match=r"LayerNorm: axes .* not the trailing axes"):
            nn.LayerNorm(axes=axes)
    for axes in (0, (0, 1), (1, 3)):
        with pytest.raises(ValueError, match=r"LayerNorm: axes .* consecutive trailing axes after the batch"):
            nn.LayerNorm(axes=axes)
    with pytest.raises(ValueError, match="repeat"):
        nn.LayerNorm(axes=(-1, -1))
    with pytest.raises(TypeError, match="LayerNorm: axes must be"):
        nn.LayerNorm(axes=(-1.0,))
    with pytest.raises(ValueError, match="LayerNorm: eps"):
        nn.LayerNorm(eps=-1e-5)
    # positive axes that are not the last ones of this input
    with pytest.raises(lamina.ShapeError, match=r"LayerNorm 'ln': axes=\(1, 2\) .*\(2, 4, 4, 6\)"):
        nn.LayerNorm(axes=(1, 2), name="ln")(x)
    # mixed signs naming one axis twice once resolved
    with pytest.raises(lamina.ShapeError, match=r"LayerNorm 'ln': axes=\(3, -1\)"):
        nn.LayerNorm(axes=(3, -1), name="ln")(x)
    # every axis of a (N, D) input: the batch axis would be normalised
    with pytest.raises(lamina.ShapeError, match=r"LayerNorm 'ln'.*batch axis 0"):
        nn.LayerNorm(axes=(-2, -1), name="ln")(x[:, 0, 0])
    built = nn.LayerNorm(axes=(-2, -1), name="ln")
    built(x)
    with pytest.raises(lamina.ShapeError, match=r"LayerNorm 'ln'.*shape \(2, 4, 5, 6\) \(float32\).*\(5, 6\)"
                                                 r"|LayerNorm 'ln'.*shape \(2, 4, 5, 6\) \(float32\).*\(4, 6\)"):
        built(np.zeros((2, 4, 5, 6), dtype=np.float32))


@pytest.mark.parametrize("shape, axes", [((2, 0), -1), ((2, 3, 0), (-2, -1)), ((0, 0), -1)])
def test_layer_norm_over_no_values_is_empty_as_torch(f64, shape, axes):
    layer = nn.LayerNorm(axes)
    theirs = torch.nn.LayerNorm(shape[len(shape) - (1 if axes == -1 else 2):], dtype=torch.float64)
    x = lamina.tensor(np.zeros(shape), requires_grad=True)
    xt = torch.zeros(shape, dtype=torch.float64, requires_grad=True)
    y, yt = layer(x), theirs(xt)
    assert y.shape == tuple(yt.shape)
    y.backward(np.ones(y.shape))
    yt.sum().backward()
    assert x.grad.shape == tuple(xt.grad.shape)
    assert layer.weight.grad.shape == tuple(theirs.weight.grad.shape)
    assert layer.bias.grad.shape == tuple(theirs.bias.grad.shape)
    graphed = lamina.autograd.grad((layer(x) ** 2).sum(), [x, layer.weight], create_graph=True)
    assert [g.shape for g in graphed] == [x.shape, layer.weight.shape]
