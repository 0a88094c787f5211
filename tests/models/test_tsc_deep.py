"""FCN, ResNet1D and InceptionTime against torch rewrites of the published architectures (values
and gradients of the input and every parameter, NWC <-> NCW at the boundary), float64 gradient
checks, shapes and parameter counts, class activation maps, and learning the
cylinder-bell-funnel task."""

import time

import numpy as np
import pytest
import torch
import torch.nn.functional as tF

import lamina
from helpers import check_gradients, compare_with_torch, randn
from lamina import functional as F
from lamina import nn, optim
from lamina.data import cylinder_bell_funnel, z_normalize
from lamina.errors import ShapeError
from lamina.models import (
    FCN,
    InceptionModule1D,
    InceptionTime,
    InceptionTimeEnsemble,
    ResNet1D,
    ResNetBlock1D,
    inception_kernel_sizes,
)

# torch warns that 'same' padding of an even kernel copies the input
pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same'")


# -- helpers -----------------------------------------------------------------------------------------
def built(model, shape, dtype=np.float64, seed=7):
    """``model`` built for ``shape`` with random parameters (batch-norm scales near 1)."""
    model.build(shape)
    rng = np.random.default_rng(seed)
    for key, value in model.state_dict().items():
        if key.endswith(("running_mean", "running_var")):
            continue
        base = 1.0 if key.endswith("bn.weight") or "_bn.weight" in key else 0.0
        value[...] = base + rng.normal(0.0, 0.5 / np.sqrt(max(value.shape[0], 1)), value.shape)
    if dtype == np.float64:
        model.to(dtype=np.float64)
    return model


def compare(model, reference, x, dtype=np.float64):
    """The model in training mode (batch statistics) against ``reference(x, params)``."""
    keys = [k for k, _ in model.named_parameters()]
    arrays = [model.state_dict()[k].copy() for k in keys]

    def ours(x, *params):
        return nn.functional_call(model, dict(zip(keys, params)), x)

    def theirs(x, *params):
        return reference(x, dict(zip(keys, params)))

    # a convolution's bias right before batch norm (training mode) has a zero gradient: values only
    wants = [True] + [not k.endswith("conv.bias") for k in keys]
    compare_with_torch(ours, theirs, x, *arrays, dtype=dtype, rtol=1e-4 if dtype == np.float32 else 1e-8,
                       grad=wants)


# -- torch rewrites on (N, C, L), parameters by lamina's names -----------------------------------
def t_conv(h, p, name):
    """A 'same' convolution (the extra zero of an even kernel on the right, as torch's 'same')."""
    return tF.conv1d(h, p[f"{name}.weight"].permute(0, 2, 1), p.get(f"{name}.bias"), padding="same")


def t_bn(h, p, name):
    return tF.batch_norm(h, None, None, p[f"{name}.weight"], p[f"{name}.bias"], training=True, eps=1e-5)


def t_conv_block(h, p, name, relu=True):
    h = t_bn(t_conv(h, p, f"{name}.conv"), p, f"{name}.bn")
    return torch.relu(h) if relu else h


def t_head(h, p):
    return h.mean(dim=2) @ p["head.weight"] + p["head.bias"]


def torch_fcn(x, p, blocks=3):
    h = x.transpose(1, 2)
    for i in range(blocks):
        h = t_conv_block(h, p, f"block{i}")
    return t_head(h, p)


def torch_resnet_block(h, p, prefix, convs=3):
    out = h
    for i in range(convs):
        out = t_conv_block(out, p, f"{prefix}conv{i}", relu=i < convs - 1)
    short = t_conv(h, p, f"{prefix}shortcut_conv") if f"{prefix}shortcut_conv.weight" in p else h
    return torch.relu(out + t_bn(short, p, f"{prefix}shortcut_bn"))


def torch_resnet(x, p, blocks=3):
    h = x.transpose(1, 2)
    for i in range(blocks):
        h = torch_resnet_block(h, p, f"block{i}.")
    return t_head(h, p)


def torch_inception_module(h, p, prefix, branches=3):
    inner = t_conv(h, p, f"{prefix}bottleneck") if f"{prefix}bottleneck.weight" in p else h
    outs = [t_conv(inner, p, f"{prefix}conv{i}") for i in range(branches)]
    outs.append(t_conv(tF.max_pool1d(h, 3, stride=1, padding=1), p, f"{prefix}pool_conv"))
    return torch.relu(t_bn(torch.cat(outs, dim=1), p, f"{prefix}bn"))


def torch_inception_time(x, p, depth):
    h = res = x.transpose(1, 2)
    for i in range(depth):
        h = torch_inception_module(h, p, f"module{i}.")
        if i % 3 == 2:
            j = i // 3
            h = torch.relu(h + t_bn(t_conv(res, p, f"shortcut{j}_conv"), p, f"shortcut{j}_bn"))
            res = h
    return t_head(h, p)


def nwc(fn):
    """A torch function on (N, C, L) as one on (N, L, C)."""
    return lambda x, p: fn(x.transpose(1, 2), p).transpose(1, 2)


# -- against torch -----------------------------------------------------------------------------------
@pytest.mark.parametrize("in_channels", [1, 3])
def test_inception_module_matches_torch(in_channels):
    module = InceptionModule1D(in_channels, filters=3, kernel_sizes=(9, 5, 3), bottleneck=4)
    module = built(module, (None, 12, in_channels))
    assert (module.bottleneck is None) == (in_channels == 1)
    compare(module, nwc(lambda h, p: torch_inception_module(h, p, "")), randn(3, 12, in_channels, seed=1))


@pytest.mark.parametrize("in_channels, filters", [(2, 5), (4, 4)])
def test_resnet_block_matches_torch(in_channels, filters):
    block = built(ResNetBlock1D(in_channels, filters, kernel_sizes=(8, 5, 3)), (None, 10, in_channels))
    assert (block.shortcut_conv is None) == (in_channels == filters)
    compare(block, nwc(lambda h, p: torch_resnet_block(h, p, "")), randn(3, 10, in_channels, seed=2))


def test_small_networks_match_torch():
    fcn = built(FCN(3, in_channels=2, filters=(4, 6, 4)), (None, 11, 2))
    compare(fcn, torch_fcn, randn(3, 11, 2, seed=3))
    resnet = built(ResNet1D(2, in_channels=1, filters=(3, 5, 5)), (None, 9, 1))
    compare(resnet, torch_resnet, randn(3, 9, 1, seed=4))
    inception = built(InceptionTime(4, in_channels=2, filters=2, depth=6, kernel_size=10, bottleneck=3), (None, 13, 2))
    compare(inception, lambda x, p: torch_inception_time(x, p, 6), randn(3, 13, 2, seed=5))


def test_float32_matches_torch():
    fcn = built(FCN(3, in_channels=2, filters=(4, 6, 4)), (None, 11, 2), dtype=np.float32)
    compare(fcn, torch_fcn, randn(3, 11, 2, seed=3), dtype=np.float32)


def test_gradient_check_of_a_residual_block():
    lamina.set_default_dtype(np.float64)
    try:
        block = built(ResNetBlock1D(2, 3, kernel_sizes=(3, 2)), (None, 6, 2))
        keys = [k for k, _ in block.named_parameters()]
        arrays = [block.state_dict()[k].copy() for k in keys]

        def fn(x, *params):
            return nn.functional_call(block, dict(zip(keys, params)), x)
        assert check_gradients(fn, randn(3, 6, 2, seed=6), *arrays)
    finally:
        lamina.set_default_dtype(np.float32)


# -- shapes and parameter counts ---------------------------------------------------------------------
class TorchFCN(torch.nn.Module):
    def __init__(self, c_in, classes):
        super().__init__()
        layers, c = [], c_in
        for f, k in zip((128, 256, 128), (8, 5, 3)):
            layers += [torch.nn.Conv1d(c, f, k, padding="same"), torch.nn.BatchNorm1d(f), torch.nn.ReLU()]
            c = f
        self.body, self.head = torch.nn.Sequential(*layers), torch.nn.Linear(128, classes)


class TorchResNet(torch.nn.Module):
    def __init__(self, c_in, classes):
        super().__init__()
        self.blocks = torch.nn.ModuleList()
        c = c_in
        for f in (64, 128, 128):
            convs = torch.nn.ModuleList([torch.nn.Conv1d(c if i == 0 else f, f, k, padding="same")
                                         for i, k in enumerate((8, 5, 3))])
            bns = torch.nn.ModuleList([torch.nn.BatchNorm1d(f) for _ in range(4)])
            short = torch.nn.Conv1d(c, f, 1) if c != f else torch.nn.Identity()
            self.blocks.append(torch.nn.ModuleList([convs, bns, short]))
            c = f
        self.head = torch.nn.Linear(128, classes)


class TorchInceptionTime(torch.nn.Module):
    """Fawaz et al.'s network (bottleneck only when c_in > 1, a 1x1 conv + BN shortcut every 3)."""

    def __init__(self, c_in, classes, nf=32, depth=6):
        super().__init__()
        self.modules_ = torch.nn.ModuleList()
        c = c_in
        for _ in range(depth):
            inner = nf if c > 1 else c
            parts = [torch.nn.Conv1d(c, nf, 1, bias=False)] if c > 1 else []
            parts += [torch.nn.Conv1d(inner, nf, k, padding="same", bias=False) for k in (39, 19, 9)]
            parts += [torch.nn.Conv1d(c, nf, 1, bias=False), torch.nn.BatchNorm1d(4 * nf)]
            self.modules_.append(torch.nn.ModuleList(parts))
            c = 4 * nf
        self.shortcuts = torch.nn.ModuleList([
            torch.nn.Sequential(torch.nn.Conv1d(c_in if j == 0 else 4 * nf, 4 * nf, 1, bias=False),
                                torch.nn.BatchNorm1d(4 * nf)) for j in range(depth // 3)])
        self.head = torch.nn.Linear(4 * nf, classes)


def count(module):
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("c_in, classes", [(1, 2), (3, 5)])
def test_parameter_counts_and_shapes_match_torch_rewrites(c_in, classes):
    x = np.zeros((2, 30, c_in), dtype=np.float32)
    pairs = [(FCN(classes, c_in), TorchFCN(c_in, classes)), (ResNet1D(classes, c_in), TorchResNet(c_in, classes)),
             (InceptionTime(classes, c_in), TorchInceptionTime(c_in, classes))]
    for ours, theirs in pairs:
        ours.build((None, 30, c_in))
        assert ours.num_parameters() == count(theirs), type(ours).__name__
        assert ours(x).shape == (2, classes)
        assert ours.compute_output_shape((None, 30, c_in)) == (None, classes)
        assert ours.features(x).shape[:2] == (2, 30)
    # FCN for one channel and two classes, by hand: three conv + BN pairs and the head
    assert FCN(2).num_parameters() == 0      # unbuilt
    hand = (128 * 8 + 128 + 2 * 128) + (256 * 5 * 128 + 256 + 2 * 256) + (128 * 3 * 256 + 128 + 2 * 128) + 128 * 2 + 2
    fcn = FCN(2)
    fcn.build((None, 30, 1))
    assert fcn.num_parameters() == hand == 264962


def test_inception_kernel_sizes():
    assert inception_kernel_sizes(40) == (39, 19, 9)
    assert inception_kernel_sizes(10) == (9, 5, 1)
    with pytest.raises(ValueError):
        inception_kernel_sizes(2)


def test_class_activation_map_sums_to_the_logits():
    model = built(FCN(3, in_channels=1, filters=(4, 6, 5)), (None, 16, 1), dtype=np.float32)
    model.eval()
    x = randn(4, 16, 1, seed=8).astype(np.float32)
    logits = model(x).numpy()
    cam = model.class_activation_map(x, classes=[0, 1, 2, 0])
    assert cam.shape == (4, 16)
    # mean_t CAM_c(t) + b_c = logit_c (global average pooling is linear)
    expected = logits[np.arange(4), [0, 1, 2, 0]]
    assert np.allclose(cam.mean(axis=1) + model.head.bias.numpy()[[0, 1, 2, 0]], expected, atol=1e-5)
    predicted = model.class_activation_map(x)
    assert np.allclose(predicted, model.class_activation_map(x, classes=logits.argmax(axis=1)))


def test_input_errors():
    model = FCN(2, in_channels=2)
    with pytest.raises(ShapeError, match="in_channels=2"):
        model(np.zeros((2, 10, 3), dtype=np.float32))
    model = InceptionTime(2, in_channels=1, filters=2, depth=3)
    with pytest.raises(ShapeError, match="in_channels=1"):
        model.build((None, 10, 4))
    with pytest.raises(ValueError, match="filters"):
        FCN(2, filters=(4, 4), kernel_sizes=(3,))


# -- learning ----------------------------------------------------------------------------------------
LEARNERS = {
    "InceptionTime (4 filters, depth 3)": lambda: InceptionTime(3, in_channels=1, filters=4, depth=3, kernel_size=20),
    "FCN (8, 16, 8 filters)": lambda: FCN(3, in_channels=1, filters=(8, 16, 8)),
}


@pytest.mark.parametrize("name", list(LEARNERS))
def test_small_network_learns_cbf(name):
    start = time.perf_counter()
    x, y = cylinder_bell_funnel(400, length=64, seed=1)
    x = z_normalize(x).astype(np.float32)
    x_train, y_train, x_test, y_test = x[:250], y[:250], x[250:], y[250:]
    lamina.manual_seed(0)
    model = LEARNERS[name]()
    model.build((None, 64, 1))
    optimizer = optim.Adam(model.parameters(), lr=0.01)
    rng = np.random.default_rng(0)
    for _ in range(60):
        rows = rng.choice(len(x_train), 32, replace=False)
        loss = F.cross_entropy(model(x_train[rows]), y_train[rows])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    with lamina.no_grad():
        accuracy = float(np.mean(model(x_test).numpy().argmax(axis=1) == y_test))
    print(f"{name} on CBF (250 train, 150 test, 60 Adam steps): test accuracy {accuracy:.3f} "
          f"({time.perf_counter() - start:.1f} s)")
    assert accuracy > 0.85


# -- configuration and saving ------------------------------------------------------------------------
@pytest.mark.parametrize("make", [
    lambda: FCN(3, in_channels=2, filters=(4, 6, 4)),
    lambda: ResNet1D(3, in_channels=2, filters=(4, 6, 6)),
    lambda: InceptionTime(3, in_channels=2, filters=2, depth=3, kernel_size=10, bottleneck=3),
])
def test_config_round_trip_summary_and_saving(make, tmp_path):
    from lamina.analysis import summary

    table = summary(make(), (16, 2))
    model = built(make(), (None, 16, 2), dtype=np.float32)
    model.eval()
    assert table.total_params == model.num_parameters()
    clone = type(model).from_config(model.get_config())
    assert clone.get_config() == model.get_config()
    path = tmp_path / "classifier.safetensors"
    lamina.save(model, path)
    loaded = lamina.load(path)
    loaded.eval()
    x = randn(3, 16, 2).astype(np.float32)
    with lamina.no_grad():
        np.testing.assert_allclose(loaded(x).numpy(), model(x).numpy(), rtol=1e-5, atol=1e-6)


def test_ensemble_averages_member_softmax_and_trains_members_independently():
    ensemble = InceptionTimeEnsemble(3, in_channels=1, members=3, filters=2, depth=3, kernel_size=10)
    ensemble.build((None, 12, 1))
    single = InceptionTime(3, 1, filters=2, depth=3, kernel_size=10)
    single.build((None, 12, 1))
    assert ensemble.num_parameters() == 3 * single.num_parameters()
    x = randn(4, 12, 1, seed=9).astype(np.float32)
    ensemble.eval()
    with lamina.no_grad():
        p = ensemble(x).numpy()
        logits = [m.numpy() for m in ensemble.member_logits(x)]
    soft = [np.exp(z - z.max(axis=1, keepdims=True)) for z in logits]
    expected = np.mean([e / e.sum(axis=1, keepdims=True) for e in soft], axis=0)
    np.testing.assert_allclose(p, expected, rtol=1e-5)
    assert not np.allclose(logits[0], logits[1])                  # different initialisations
    ensemble.train()
    y = np.array([0, 1, 2, 1])
    member = ensemble.member1
    ensemble.zero_grad()
    F.cross_entropy(ensemble.member_logits(x)[1], y).backward()
    alone = {k: np.array(p.grad) for k, p in member.named_parameters()}
    ensemble.zero_grad()
    first, *others = ensemble.member_logits(x)
    total = F.cross_entropy(first, y)
    for logits in others:
        total = total + F.cross_entropy(logits, y)
    total.backward()
    for key, p in member.named_parameters():
        np.testing.assert_allclose(np.array(p.grad), alone[key], rtol=1e-4, atol=1e-6)
