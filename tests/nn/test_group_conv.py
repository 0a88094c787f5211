"""p4 / p4m group convolutions (P4ConvZ2, P4ConvP4, P4MConvZ2, P4MConvP4M), GroupPool and
GroupBatchNorm: exact equivariance in float64, values and gradients against a torch rewrite
(torch.rot90 / torch.flip of the filters, torch conv2d in NCHW), gradient checks, errors."""

import numpy as np
import pytest
import torch

import lamina
from helpers import assert_close, check_gradients, check_second_derivatives, compare_with_torch, randn
from lamina import nn
from lamina.errors import ShapeError
from lamina.functional import group_action, group_conv2d, group_pool
from lamina.functional.group_conv import group_inverse, group_product

ORDER = {"p4": 4, "p4m": 8}
LAYERS = {("p4", True): nn.P4ConvZ2, ("p4", False): nn.P4ConvP4,
          ("p4m", True): nn.P4MConvZ2, ("p4m", False): nn.P4MConvP4M}


@pytest.fixture(autouse=True)
def float64():
    """Every check here is exact to 1e-10: float64 arrays and layers."""
    lamina.set_default_dtype(np.float64)


# -- the group written out: g = 4 m + r is "r quarter turns, then a mirror of the width axis if m" --
def compose(a: int, b: int) -> int:
    """(m1, r1)(m2, r2) = (m1 xor m2, (-1)^m2 r1 + r2 mod 4), from F R^a = R^-a F."""
    (m1, r1), (m2, r2) = divmod(a, 4), divmod(b, 4)
    return 4 * (m1 ^ m2) + ((r2 - r1) if m2 else (r1 + r2)) % 4


def invert(g: int) -> int:
    m, r = divmod(g, 4)
    return g if m else (-r) % 4


def transform(a, g: int, axes=(1, 2)):
    turned = np.rot90(a, g % 4, axes=axes)
    return np.flip(turned, axis=axes[1]) if g >= 4 else turned


def act(x, g: int, order: int):
    """L_g on an image batch (N, H, W, C) or a group map (N, H, W, C, |G|): out[..., s] = T_g x[..., g^-1 s]."""
    y = transform(x, g)
    if x.ndim == 5:
        y = y[..., [compose(invert(g), s) for s in range(order)]]
    return np.ascontiguousarray(y)


def test_the_tables_are_the_written_out_group():
    for group, order in ORDER.items():
        product, inverse = group_product(group), group_inverse(group)
        assert product.tolist() == [[compose(a, b) for b in range(order)] for a in range(order)]
        assert inverse.tolist() == [invert(g) for g in range(order)]
    probe = randn(5, 5)
    for a in range(8):
        for b in range(8):
            twice = transform(transform(probe, b, axes=(0, 1)), a, axes=(0, 1))
            np.testing.assert_array_equal(twice, transform(probe, compose(a, b), axes=(0, 1)))


# -- torch rewrite ----------------------------------------------------------------------------------
def torch_bank(w, group):
    """(K |G|, C |G_in|, f, f) in torch's layout: filter k |G| + g = T_g(w_k) with its group axis s
    read at g^-1 s."""
    order = ORDER[group]
    lifting = w.dim() == 4
    filters = []
    for g in range(order):
        turned = torch.rot90(w, g % 4, dims=(1, 2))
        if g >= 4:
            turned = torch.flip(turned, dims=(2,))
        if not lifting:
            turned = turned[..., [compose(invert(g), s) for s in range(order)]]
        filters.append(turned)
    bank = torch.stack(filters, dim=1)                                  # (K, |G|, f, f, C[, |G|])
    k, _, f = bank.shape[:3]
    return bank.reshape(k * order, f, f, -1).permute(0, 3, 1, 2)


def torch_group_conv2d(x, w, b, group, stride, padding):
    order = ORDER[group]
    k = w.shape[0]
    nchw = x.reshape(*x.shape[:3], -1).permute(0, 3, 1, 2)
    y = torch.nn.functional.conv2d(nchw, torch_bank(w, group), stride=stride, padding=padding)
    y = y.permute(0, 2, 3, 1).reshape(*y.shape[:1], *y.shape[2:], k, order)
    return y + b.reshape(k, 1)


CASES = [(1, 1, 5), (2, 1, 7), (1, 0, 6), (2, 0, 6)]  # stride, padding, size


@pytest.mark.parametrize("group", ["p4", "p4m"])
@pytest.mark.parametrize("lifting", [True, False])
@pytest.mark.parametrize("stride, padding, size", CASES)
def test_values_and_gradients_match_torch(group, lifting, stride, padding, size):
    order = ORDER[group]
    x = randn(2, size, size, 3) if lifting else randn(2, size, size, 3, order)
    w = randn(4, 3, 3, 3, seed=1) if lifting else randn(4, 3, 3, 3, order, seed=1)
    compare_with_torch(lambda x, w, b: group_conv2d(x, w, b, group, stride, padding),
                       lambda x, w, b: torch_group_conv2d(x, w, b, group, stride, padding),
                       x, w, randn(4, seed=2), dtype=np.float64)


@pytest.mark.parametrize("group", ["p4", "p4m"])
def test_layers_run_their_function_on_their_weights(group):
    order = ORDER[group]
    lift, conv = LAYERS[group, True](5, 3, padding="same"), LAYERS[group, False](2, 3, stride=2, padding=1)
    x = randn(2, 7, 7, 3)
    y = lift(x)
    assert y.shape == (2, 7, 7, 5, order) == lift.compute_output_shape((2, 7, 7, 3))
    assert lift.weight.shape == (5, 3, 3, 3) and lift.bias.shape == (5,)
    z = conv(y)
    assert z.shape == (2, 4, 4, 2, order) == conv.compute_output_shape(y.shape)
    assert conv.weight.shape == (2, 3, 3, 5, order)
    expected = torch_group_conv2d(torch.tensor(y.numpy()), torch.tensor(conv.weight.data), torch.tensor(conv.bias.data),
                                  group, 2, 1)
    assert_close(z.numpy(), expected.numpy(), 1e-12)
    rebuilt = nn.layer_from_config(nn.layer_to_config(conv))
    assert type(rebuilt) is type(conv) and rebuilt.get_config() == conv.get_config()


def test_weights_start_he_uniform_over_the_group_fan_in():
    layer = nn.P4MConvP4M(64, 3)
    layer.build((1, 9, 9, 16, 8))
    fan_in = 3 * 3 * 16 * 8
    w = layer.weight.data
    assert abs(w.var() / (2 / fan_in) - 1) < 0.05
    assert np.abs(w).max() <= np.sqrt(6 / fan_in)
    assert np.all(layer.bias.data == 0)


# -- equivariance -------------------------------------------------------------------------------------
@pytest.mark.parametrize("size", [7, 6])
def test_quarter_turn_turns_the_lifted_maps_and_shifts_the_rotation_axis(size):
    x, w = randn(2, size, size, 3), randn(4, 3, 3, 3, seed=1)
    y = group_conv2d(x, w, None, "p4", padding="same").numpy()
    turned = group_conv2d(np.rot90(x, 1, axes=(1, 2)).copy(), w, None, "p4", padding="same").numpy()
    np.testing.assert_allclose(turned, np.roll(np.rot90(y, 1, axes=(1, 2)), 1, axis=-1), rtol=0, atol=1e-10)
    assert not np.allclose(turned, np.rot90(y, 1, axes=(1, 2)))       # the shift is needed


@pytest.mark.parametrize("group", ["p4", "p4m"])
@pytest.mark.parametrize("lifting", [True, False])
def test_every_group_element_commutes_with_the_layer(group, lifting):
    order = ORDER[group]
    x = randn(2, 7, 7, 3) if lifting else randn(2, 7, 7, 3, order)
    w = randn(4, 3, 3, 3, seed=1) if lifting else randn(4, 3, 3, 3, order, seed=1)
    b = randn(4, seed=2)
    y = group_conv2d(x, w, b, group, padding="same").numpy()
    for g in range(order):
        moved = group_conv2d(act(x, g, order), w, b, group, padding="same").numpy()
        np.testing.assert_allclose(moved, act(y, g, order), rtol=0, atol=1e-10)
        # the library's own action is the same map
        np.testing.assert_allclose(group_action(x, g, group).numpy(), act(x, g, order), rtol=0, atol=0)


@pytest.mark.parametrize("group", ["p4", "p4m"])
def test_group_pool_then_global_pool_is_invariant(group):
    """A lift, BatchNorm shared over the group, ReLU, a group conv, GroupPool and a mean over the
    pixels: the features of every transformed image equal those of the image."""
    order = ORDER[group]
    stack = nn.Sequential(LAYERS[group, True](4, 3, padding="same"), nn.GroupBatchNorm(), nn.ReLU(),
                          LAYERS[group, False](5, 3, padding="same"), nn.GroupPool("max"))
    x = randn(3, 6, 6, 2)
    features = stack(x).mean(axis=(1, 2)).numpy()
    assert features.shape == (3, 5)
    for g in range(1, order):
        moved = stack(act(x, g, order)).mean(axis=(1, 2)).numpy()
        np.testing.assert_allclose(moved, features, rtol=0, atol=1e-10)
    # per-pixel features before the spatial pool only move
    pooled = stack(x).numpy()
    np.testing.assert_allclose(stack(act(x, 1, order)).numpy(), transform(pooled, 1), rtol=0, atol=1e-10)


def _equivariance_error(size, f, stride, padding):
    x, w = randn(1, size, size, 2), randn(3, f, f, 2, seed=1)
    y = group_conv2d(x, w, None, "p4", stride=stride, padding=padding).numpy()
    moved = group_conv2d(act(x, 1, 4), w, None, "p4", stride=stride, padding=padding).numpy()
    return np.abs(moved - act(y, 1, 4)).max() / np.abs(y).max() if moved.shape == y.shape else np.inf


@pytest.mark.parametrize("size, f, stride, padding", [
    (6, 3, 1, "same"),        # stride 1, odd kernel: any size, even too
    (6, 2, 1, "valid"),       # stride 1 'valid': even kernels too
    (7, 3, 2, "same"),        # stride 2 'same' on an odd size: 1 pixel each side, 7 - 1 even
    (7, 3, 2, 1),
    (8, 2, 2, "valid"),       # 8 - 2 divisible by 2
])
def test_exact_when_the_sampling_grid_is_symmetric(size, f, stride, padding):
    assert _equivariance_error(size, f, stride, padding) < 1e-12


@pytest.mark.parametrize("size, f, stride, padding", [
    (6, 2, 1, "same"),        # an even kernel's 'same' pads the bottom/right only
    (6, 3, 2, "same"),        # stride 2 'same' on an even size: one-sided padding
    (8, 3, 2, "valid"),       # 8 - 3 odd: the last row and column are never a window's start
])
def test_not_equivariant_when_the_sampling_grid_is_one_sided(size, f, stride, padding):
    assert _equivariance_error(size, f, stride, padding) > 1e-3


# -- pooling and normalization --------------------------------------------------------------------------
@pytest.mark.parametrize("reduction", ["max", "mean"])
def test_group_pool_matches_torch(reduction):
    fn = (lambda x: x.amax(dim=-1)) if reduction == "max" else (lambda x: x.mean(dim=-1))
    compare_with_torch(lambda x: nn.GroupPool(reduction)(x), fn, randn(2, 3, 3, 4, 8), dtype=np.float64)
    assert nn.GroupPool(reduction).compute_output_shape((None, 5, 5, 4, 8)) == (None, 5, 5, 4)
    assert check_gradients(lambda x: group_pool(x, reduction), randn(1, 2, 2, 3, 4))


def test_group_batch_norm_shares_statistics_over_the_group_axis():
    x, up = randn(4, 3, 3, 5, 4), randn(4, 3, 3, 5, 4, seed=3)
    gamma, beta = 1 + randn(5, seed=1) * 0.1, randn(5, seed=2)
    layer = nn.GroupBatchNorm()
    layer.build(x.shape)
    layer.weight.data[...] = gamma
    layer.bias.data[...] = beta
    xl = lamina.tensor(x, requires_grad=True)
    y = layer(xl)
    (y * lamina.tensor(up)).sum().backward()

    xt, gt, bt = (torch.tensor(a, requires_grad=True) for a in (x, gamma, beta))
    mean, var = torch.zeros(5, dtype=torch.float64), torch.ones(5, dtype=torch.float64)
    yt = torch.nn.functional.batch_norm(xt.permute(0, 3, 1, 2, 4), mean, var, gt, bt, training=True, momentum=0.1,
                                        eps=1e-5).permute(0, 2, 3, 1, 4)
    (yt * torch.tensor(up)).sum().backward()
    assert_close(y.numpy(), yt.detach().numpy(), 1e-10)
    assert_close(xl.grad, xt.grad.numpy(), 1e-10, "dJ/dx")
    assert_close(layer.weight.grad, gt.grad.numpy(), 1e-10, "dJ/dgamma")
    assert_close(layer.bias.grad, bt.grad.numpy(), 1e-10, "dJ/dbeta")
    assert_close(layer.running_mean, mean.numpy(), 1e-10, "running mean")
    assert_close(layer.running_var, var.numpy(), 1e-10, "running variance")
    layer.eval()
    for g in range(4):                                   # evaluation: a per-filter affine map, equivariant
        np.testing.assert_allclose(layer(act(x, g, 4)).numpy(), act(layer(x).numpy(), g, 4), atol=1e-12)


# -- gradient checks -------------------------------------------------------------------------------------
@pytest.mark.parametrize("group", ["p4", "p4m"])
def test_gradcheck_of_each_convolution(group):
    order = ORDER[group]
    assert check_gradients(lambda x, w, b: group_conv2d(x, w, b, group, padding="same"),
                           randn(1, 4, 4, 2), randn(2, 3, 3, 2, seed=1), randn(2, seed=2))
    assert check_gradients(lambda x, w, b: group_conv2d(x, w, b, group, stride=2, padding=1),
                           randn(1, 5, 5, 2, order), randn(2, 3, 3, 2, order, seed=1), randn(2, seed=2))


def test_gradcheck_of_the_layers():
    """dJ/dx and dJ/d(each parameter) of each layer by centred differences, in float64."""
    for layer, shape in [(nn.P4ConvZ2(2, 3, padding="same"), (2, 4, 4, 2)), (nn.P4ConvP4(2, 3), (1, 4, 4, 2, 4)),
                         (nn.P4MConvZ2(2, 2), (1, 3, 3, 1)), (nn.P4MConvP4M(2, 3, padding=1), (1, 3, 3, 1, 8)),
                         (nn.GroupBatchNorm(), (2, 2, 2, 3, 4)), (nn.GroupPool("mean"), (1, 2, 2, 3, 8))]:
        x = randn(*shape)
        layer(x)
        names = [name for name, _ in layer.named_parameters()]
        values = [p.data + 0.1 * randn(*p.shape, seed=5) for p in layer.parameters()]

        def run(x, *weights, layer=layer, names=names):
            return nn.functional_call(layer, dict(zip(names, weights)), x)
        assert check_gradients(run, x, *values), type(layer).__name__


def test_second_derivatives_come_from_the_composed_ops():
    assert check_second_derivatives(lambda x, w: group_conv2d(x, w, None, "p4m") ** 2,
                                    randn(1, 3, 3, 1, 8), randn(1, 2, 2, 1, 8, seed=1))


# -- errors ----------------------------------------------------------------------------------------------
def test_errors_name_the_layer_and_the_fix():
    with pytest.raises(ShapeError, match=r"P4ConvP4.*\(2, 5, 5, 3\).*p4 feature map \(N, H, W, C, 4\).*P4ConvZ2"):
        nn.P4ConvP4(4)(randn(2, 5, 5, 3))
    with pytest.raises(ShapeError, match=r"P4ConvP4.*group axis of 8 is a map of p4m \(P4MConvP4M\)"):
        nn.P4ConvP4(4)(randn(1, 5, 5, 3, 8))
    with pytest.raises(ShapeError, match=r"P4MConvZ2.*image batch \(N, H, W, C\).*goes through P4MConvP4M"):
        nn.P4MConvZ2(4)(randn(1, 5, 5, 3, 8))
    with pytest.raises(ValueError, match=r"P4ConvZ2: kernel_size must be square.*\(3, 5\)"):
        nn.P4ConvZ2(4, (3, 5))
    with pytest.raises(ShapeError, match=r"kernel must be square.*3x2"):
        group_conv2d(randn(1, 5, 5, 2), randn(1, 3, 2, 2))
    with pytest.raises(ValueError, match=r"group must be one of \['p4', 'p4m'\], got 'c4'"):
        group_conv2d(randn(1, 5, 5, 2), randn(1, 3, 3, 2), group="c4")
    with pytest.raises(ShapeError, match=r"group axis of 4; p4m has 8"):
        group_conv2d(randn(1, 5, 5, 2, 4), randn(1, 3, 3, 2, 4), group="p4m")
    with pytest.raises(ShapeError, match=r"larger than the padded input"):
        nn.P4ConvZ2(2, 5)(randn(1, 3, 3, 1))
    layer = nn.P4ConvP4(2)
    layer(randn(1, 4, 4, 3, 4))
    with pytest.raises(ShapeError, match=r"p4 feature map \(N, H, W, 3, 4\)"):
        layer(randn(1, 4, 4, 2, 4))
    with pytest.raises(ShapeError, match=r"GroupPool.*group feature map \(N, H, W, K, \|G\|\)"):
        nn.GroupPool()(randn(1, 4, 4, 2))
    with pytest.raises(ValueError, match=r"reduction must be 'max' or 'mean', got 'sum'"):
        nn.GroupPool("sum")
    with pytest.raises(ShapeError, match=r"group feature map \(N, H, W, K, \|G\|\)"):
        nn.GroupBatchNorm()(randn(2, 4, 4, 2))


def test_a_stack_of_group_layers_is_saved_and_loaded(tmp_path):
    stack = nn.Sequential(nn.P4MConvZ2(3, 3, padding="same"), nn.GroupBatchNorm(), nn.ReLU(),
                          nn.P4MConvP4M(2, 3, stride=2, padding=1, use_bias=False), nn.GroupPool("mean"))
    x = randn(2, 5, 5, 1)
    stack(x)
    stack.eval()
    lamina.save(stack, tmp_path / "p4m.safetensors")
    twin = lamina.load(tmp_path / "p4m.safetensors")
    twin.eval()
    np.testing.assert_array_equal(twin(x).numpy(), stack(x).numpy())
    assert [type(layer).__name__ for layer in twin] == [type(layer).__name__ for layer in stack]
