"""RAFT: torchvision's parameter counts and state-dict names, every block (correlation volume
and lookup, motion encoder, update block, upsampling) and tiny whole models equal to a torch
reference in float64 with all gradients, input errors, and a tiny RAFT learning translations."""

import importlib
import time

import numpy as np
import pytest
import torch
import torch_raft as ref
import torch_zoo

import lamina
from helpers import assert_close, compare_with_torch
from lamina import models
from lamina.errors import ShapeError
from lamina.models import load_torchvision_state_dict
from lamina.nn import init
from lamina.vision import endpoint_error, sequence_loss, synthetic_flow_pairs

R = importlib.import_module("lamina.models.raft")
TINY = dict(feature_layers=(8, 8, 12, 16, 16), feature_block="residual", feature_norm="instance",
            context_layers=(8, 8, 12, 16, 20), context_block="residual", context_norm="batch", num_levels=2,
            radius=2, motion_corr_layers=(16, 12), motion_flow_layers=(8, 6), motion_out_channels=14,
            hidden_size=10, gru_kernels=((1, 5), (5, 1)), gru_paddings=((0, 2), (2, 0)), flow_head_hidden_size=12,
            mask_hidden_size=16)
TINY_SMALL = dict(TINY, feature_block="bottleneck", context_block="bottleneck", context_norm=None,
                  motion_corr_layers=(16,), gru_kernels=(3,), gru_paddings=(1,), mask_hidden_size=None)


def _nchw(x):
    return torch.from_numpy(np.ascontiguousarray(np.moveaxis(x, -1, 1)))


def _nhwc(t):
    return np.moveaxis(t.detach().numpy(), 1, -1)


def _torch_layout(grad):
    return grad.transpose(0, 3, 1, 2) if grad.ndim == 4 else grad


def _float64_pair(lamina_module, torch_module, seed):
    """The torch module randomised in float64 and the lamina one built in float64 with its weights."""
    torch_module = torch_zoo.randomize(torch_module, seed=seed).double()
    lamina.set_default_dtype(np.float64)
    lamina_module.build()
    lamina_module.built = True
    load_torchvision_state_dict(lamina_module, torch_module.state_dict())
    return lamina_module.eval(), torch_module


def _check_parameter_gradients(lamina_module, torch_module, rtol=1e-9):
    """Every parameter's gradient, up to rounding relative to the largest gradient (a bias
    before an instance norm has a gradient of 0 that both compute as rounding noise)."""
    theirs = {k: (p.grad.numpy() if p.grad is not None else np.zeros(tuple(p.shape)))
              for k, p in torch_module.named_parameters()}
    ours = dict(lamina_module.named_parameters())
    assert set(ours) == set(theirs)
    floor = 1e-11 * max(np.abs(g).max() for g in theirs.values())
    for key, p in ours.items():
        actual = _torch_layout(p.grad) if p.grad is not None else np.zeros(theirs[key].shape)
        np.testing.assert_allclose(actual, theirs[key], rtol=rtol, atol=floor, err_msg=f"gradient of {key}")


def _upstream(shape, seed):
    return np.random.default_rng(seed).standard_normal(shape)


# -- sizes and names ----------------------------------------------------------------------------
@pytest.mark.parametrize(("builder", "count"), [(models.raft_large, 5_257_536), (models.raft_small, 990_162)])
def test_parameter_counts_equal_torchvision(builder, count):
    model = builder()
    assert not model.built and model.input_shape == (None, 368, 496, 3)
    with init.meta():
        model.build(model.input_shape)
    assert model.num_parameters() == count


@pytest.mark.parametrize("size", ["large", "small"])
def test_state_dict_names_and_shapes_equal_the_reference(size):
    if size == "small":
        config = dict(feature_layers=(32, 32, 64, 96, 128), feature_block="bottleneck", feature_norm="instance",
                      context_layers=(32, 32, 64, 96, 160), context_block="bottleneck", context_norm=None,
                      num_levels=4, radius=3, motion_corr_layers=(96,), motion_flow_layers=(64, 32),
                      motion_out_channels=82, hidden_size=96, gru_kernels=(3,), gru_paddings=(1,),
                      flow_head_hidden_size=128, mask_hidden_size=None)
    else:
        config = dict(feature_layers=(64, 64, 96, 128, 256), feature_block="residual", feature_norm="instance",
                      context_layers=(64, 64, 96, 128, 256), context_block="residual", context_norm="batch",
                      num_levels=4, radius=4, motion_corr_layers=(256, 192), motion_flow_layers=(128, 64),
                      motion_out_channels=128, hidden_size=128, gru_kernels=((1, 5), (5, 1)),
                      gru_paddings=((0, 2), (2, 0)), flow_head_hidden_size=256, mask_hidden_size=256)
    tmodel = ref.RAFT(**config)
    model = models.raft_large() if size == "large" else models.raft_small()
    load_torchvision_state_dict(model, tmodel.state_dict())     # strict: every key on both sides
    conv = model.update_block.flow_head.conv1.weight.numpy()
    expected = tmodel.update_block.flow_head.conv1.weight.detach().numpy().transpose(0, 2, 3, 1)
    np.testing.assert_array_equal(conv, expected)


# -- blocks -------------------------------------------------------------------------------------
@pytest.mark.parametrize(("num_levels", "radius"), [(3, 2), (2, 1)])
def test_correlation_lookup_equals_torch_float64(num_levels, radius):
    rng = np.random.default_rng(1)
    f1, f2 = rng.standard_normal((2, 8, 12, 5)), rng.standard_normal((2, 8, 12, 5))
    # coordinates off the pixel grid, some of them outside the map
    coords = np.stack(np.meshgrid(np.arange(12.0), np.arange(8.0), indexing="xy"), -1)[None].repeat(2, 0)
    coords = coords + rng.uniform(-2.5, 2.5, coords.shape)

    def ours(a, b, c):
        pyramid = R.correlation_pyramid(R.correlation_volume(a, b), num_levels)
        return R.index_pyramid(pyramid, c, radius)

    def theirs(a, b, c):
        a, b, c = (t.permute(0, 3, 1, 2) for t in (a, b, c))
        return ref.index_pyramid(ref.corr_pyramid(a, b, num_levels), c, radius).permute(0, 2, 3, 1)

    out = compare_with_torch(ours, theirs, f1, f2, coords, dtype=np.float64)
    assert out[0].shape == (2, 8, 12, num_levels * (2 * radius + 1) ** 2)


def test_corr_block_module_and_its_errors():
    rng = np.random.default_rng(2)
    block = R.CorrBlock(num_levels=2, radius=1)
    f = lamina.tensor(rng.standard_normal((1, 4, 4, 3)))
    with pytest.raises(RuntimeError, match="build_pyramid"):
        block.index_pyramid(R.make_coords_grid(1, 4, 4))
    block.build_pyramid(f, f)
    assert block.index_pyramid(R.make_coords_grid(1, 4, 4)).shape == (1, 4, 4, block.out_channels)
    with pytest.raises(ShapeError, match="correlation_volume"):
        R.correlation_volume(f, lamina.tensor(rng.standard_normal((1, 4, 2, 3))))
    with pytest.raises(ShapeError, match="fewer levels"):
        R.CorrBlock(num_levels=3).build_pyramid(f, f)


@pytest.mark.parametrize("convex", [True, False])
def test_upsample_flow_equals_torch_float64(convex):
    rng = np.random.default_rng(3)
    flow = rng.standard_normal((2, 3, 4, 2))
    if convex:
        mask = rng.standard_normal((2, 3, 4, 576))
        compare_with_torch(R.upsample_flow,
                           lambda f, m: ref.upsample_flow(f.permute(0, 3, 1, 2), m.permute(0, 3, 1, 2))
                           .permute(0, 2, 3, 1), flow, mask, dtype=np.float64)
    else:
        out = compare_with_torch(R.upsample_flow, lambda f: ref.upsample_flow(f.permute(0, 3, 1, 2))
                                 .permute(0, 2, 3, 1), flow, dtype=np.float64)
        assert out[0].shape == (2, 24, 32, 2)


def test_upsampling_a_constant_flow_scales_it_by_8():
    flow = np.ones((1, 2, 2, 2)) * np.array([0.5, -1.0])
    up = R.upsample_flow(lamina.tensor(flow)).numpy()
    np.testing.assert_allclose(up, np.broadcast_to([4.0, -8.0], up.shape), atol=1e-6)


def _compare_module(lamina_module, torch_module, inputs, call_ours, call_theirs, seed=0):
    """Outputs, input gradients and parameter gradients of two float64 modules."""
    ours_in = [lamina.tensor(x, requires_grad=True, dtype=np.float64) for x in inputs]
    theirs_in = [_nchw(x).requires_grad_(True) for x in inputs]
    out_l, out_t = call_ours(lamina_module, *ours_in), call_theirs(torch_module, *theirs_in)
    out_l = out_l if isinstance(out_l, (list, tuple)) else [out_l]
    out_t = out_t if isinstance(out_t, (list, tuple)) else [out_t]
    total_l, total_t = 0.0, 0.0
    for k, (a, b) in enumerate(zip(out_l, out_t, strict=True)):
        assert_close(a.numpy(), _nhwc(b), 1e-10, f"output {k}")
        up = _upstream(a.shape, seed + k)
        total_l = total_l + (a * lamina.tensor(up, dtype=np.float64)).sum()
        total_t = total_t + (b * _nchw(up)).sum()
    total_l.backward()
    total_t.backward()
    for k, (a, b) in enumerate(zip(ours_in, theirs_in)):
        assert_close(a.grad, _nhwc(b.grad), 1e-9, f"gradient of input {k}")
    _check_parameter_gradients(lamina_module, torch_module)
    return out_l


def test_motion_encoder_equals_torch_float64():
    ours, theirs = _float64_pair(R.MotionEncoder(18, (8, 6), (5, 4), 12), ref.MotionEncoder(18, (8, 6), (5, 4), 12),
                                 seed=4)
    rng = np.random.default_rng(4)
    out = _compare_module(ours, theirs, [rng.standard_normal((2, 5, 6, 2)), rng.standard_normal((2, 5, 6, 18))],
                          lambda m, f, c: m(f, c), lambda m, f, c: m(f, c))
    assert out[0].shape == (2, 5, 6, 12)


@pytest.mark.parametrize("kernels", [((1, 5), (5, 1)), (3,)])
def test_update_block_equals_torch_float64(kernels):
    paddings = ((0, 2), (2, 0)) if len(kernels) == 2 else (1,)
    corr_layers = (8, 6) if len(kernels) == 2 else (8,)

    def make(module):
        return module.UpdateBlock(module.MotionEncoder(18, corr_layers, (5, 4), 12),
                                  module.RecurrentBlock(12 + 7, 9, kernels, paddings), module.FlowHead(9, 10))

    ours, theirs = _float64_pair(make(R), make(ref), seed=5)
    rng = np.random.default_rng(5)
    inputs = [rng.standard_normal((2, 5, 6, 9)), rng.standard_normal((2, 5, 6, 7)),
              rng.standard_normal((2, 5, 6, 18)), rng.standard_normal((2, 5, 6, 2))]
    hidden, delta = _compare_module(ours, theirs, inputs, lambda m, *x: m(*x), lambda m, *x: m(*x))
    assert hidden.shape == (2, 5, 6, 9) and delta.shape == (2, 5, 6, 2)


def test_mask_predictor_and_encoders_equal_torch_float64():
    ours, theirs = _float64_pair(R.MaskPredictor(6, 8), ref.MaskPredictor(6, 8), seed=6)
    rng = np.random.default_rng(6)
    _compare_module(ours, theirs, [rng.standard_normal((1, 3, 2, 6))], lambda m, x: m(x), lambda m, x: m(x))
    for block, norm in (("residual", "batch"), ("bottleneck", "instance")):
        ours, theirs = _float64_pair(R.FeatureEncoder(block, (8, 8, 12, 16, 10), norm=norm),
                                     ref.FeatureEncoder(block, (8, 8, 12, 16, 10), norm), seed=7)
        out = _compare_module(ours, theirs, [rng.standard_normal((2, 24, 16, 3))], lambda m, x: m(x),
                              lambda m, x: m(x))
        assert out[0].shape == (2, 3, 2, 10)


# -- whole models ---------------------------------------------------------------------------------
@pytest.mark.parametrize("config", [TINY, TINY_SMALL], ids=["large_style", "small_style"])
def test_tiny_model_predictions_and_all_gradients_equal_torch_float64(config):
    ours, theirs = _float64_pair(R.raft(**config, input_shape=(32, 48, 3)), ref.RAFT(**config), seed=8)
    rng = np.random.default_rng(8)
    images = [rng.uniform(-1, 1, (1, 32, 48, 3)) for _ in range(2)]
    flows = _compare_module(ours, theirs, images, lambda m, a, b: m(a, b, num_flow_updates=2),
                            lambda m, a, b: m(a, b, num_flow_updates=2))
    assert len(flows) == 2 and all(f.shape == (1, 32, 48, 2) for f in flows)
    assert not np.allclose(flows[0].numpy(), flows[-1].numpy())


def test_input_errors_name_the_shapes():
    model = R.raft(**TINY_SMALL, input_shape=(32, 32, 3))
    with pytest.raises(ShapeError, match="multiples of 8"):
        model(np.zeros((1, 30, 32, 3), np.float32), np.zeros((1, 30, 32, 3), np.float32))
    with pytest.raises(ShapeError, match="one shape"):
        model(np.zeros((1, 32, 32, 3), np.float32), np.zeros((1, 32, 40, 3), np.float32))
    with pytest.raises(ValueError, match="more than the hidden"):
        R.raft(**dict(TINY, hidden_size=20))
    with pytest.raises(ValueError, match="norm"):
        R.raft(**dict(TINY, feature_norm="layer"))


def test_registry_lists_the_flow_models():
    assert models.list_models(module="flow") == ["raft_large", "raft_small"]
    assert isinstance(models.get_model("raft_small"), models.RAFT)


# -- learning -------------------------------------------------------------------------------------
def test_tiny_raft_learns_the_translations_of_its_training_pairs():
    """Sixteen textured pairs under whole-image translations of up to 8 px: after 100 Adam
    steps the EPE on those pairs is far below that of the zero flow. (Generalising to new
    pairs needs a much longer training than a unit test affords.)"""
    start = time.perf_counter()
    config = dict(TINY, feature_layers=(12, 12, 16, 16, 24), context_layers=(12, 12, 16, 16, 24), hidden_size=12,
                  context_norm=None, motion_out_channels=16, motion_corr_layers=(24,), motion_flow_layers=(8, 8),
                  gru_kernels=(3,), gru_paddings=(1,), flow_head_hidden_size=16, mask_hidden_size=None)
    model = R.raft(**config, input_shape=(32, 32, 3))
    image1, image2, flow, valid = synthetic_flow_pairs(16, (32, 32), motion="translation", max_flow=8.0,
                                                       texture_scale=(8.0, 32.0), seed=0)
    image1, image2 = 2 * image1 - 1, 2 * image2 - 1             # RAFT's input range [-1, 1]
    model(image1[:1], image2[:1], num_flow_updates=1)           # builds the weights
    optimizer = lamina.optim.Adam(model.parameters(), lr=3e-3)
    rng = np.random.default_rng(0)
    model.train()
    for _ in range(100):
        batch = rng.choice(len(image1), 8, replace=False)
        loss = sequence_loss(model(image1[batch], image2[batch], num_flow_updates=2), flow[batch], valid[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with lamina.no_grad():
        found = model.eval()(image1, image2, num_flow_updates=2)[-1].numpy()
    trained = endpoint_error(found, flow, valid)["epe"]
    baseline = endpoint_error(np.zeros_like(flow), flow, valid)["epe"]
    elapsed = time.perf_counter() - start
    print(f"EPE trained {trained:.3f} px, zero flow {baseline:.3f} px, {elapsed:.1f} s")
    assert trained < 0.6 * baseline
