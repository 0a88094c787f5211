"""UNet++: which nodes X^{i,j} feed which (shapes, kernel shapes and a perturbation test against
the paper's formula), pruning, agreement with a float64 PyTorch rewrite, gradients, the deep
supervision loss, save/load, the paper's parameter count, and learning discs and squares."""

import numpy as np
import pytest
import torch
import torch.nn.functional as TF
from segmentation_shapes import all_background_miou, shapes_dataset, train_and_score
from zoo_checks import check_config_and_save_load

import lamina
from helpers import assert_close, check_gradients, run_readme_section
from lamina import models
from lamina.nn import init


def paper_inputs(i: int, j: int) -> list[tuple[int, int]]:
    """X^{i,0} reads X^{i-1,0} (pooled); X^{i,j} reads X^{i,0..j-1} and X^{i+1,j-1} (upsampled)."""
    if j == 0:
        return [(i - 1, 0)] if i else []
    return [(i, k) for k in range(j)] + [(i + 1, j - 1)]


def descendants(node, depth: int) -> set:
    """The nodes that read ``node``'s output, directly or through others, and ``node`` itself."""
    found, changed = {node}, True
    while changed:
        changed = False
        for i in range(depth + 1):
            for j in range(depth + 1 - i):
                if (i, j) not in found and any(source in found for source in paper_inputs(i, j)):
                    found.add((i, j))
                    changed = True
    return found


def _built(depth=3, base=2, channels=1, size=8, seed=0, **options) -> models.UNetPlusPlus:
    model = models.UNetPlusPlus(3, depth, base, **options)
    model.build((None, size, size, channels))
    rng = np.random.default_rng(seed)
    for param in model.parameters():
        param.data = (param.data + 0.1 * rng.standard_normal(param.shape)).astype(param.dtype)
    return model.eval()


def _image(size=8, channels=1, seed=1, dtype=np.float32):
    return lamina.tensor(np.random.default_rng(seed).standard_normal((2, size, size, channels)).astype(dtype))


@pytest.mark.parametrize("upsampling", ["transpose", "bilinear"])
def test_node_shapes_and_the_channels_each_node_reads(upsampling):
    depth, base = 3, 2
    model = _built(depth, base, upsampling=upsampling)
    with lamina.no_grad():
        nodes = model.nodes(_image())
    assert sorted(nodes) == sorted((i, j) for i in range(depth + 1) for j in range(depth + 1 - i))
    for (i, j), value in nodes.items():
        assert value.shape == (2, 8 // 2 ** i, 8 // 2 ** i, base * 2 ** i), (i, j)
        up_channels = base * 2 ** (i + 1 if upsampling == "bilinear" else i)
        reads = 1 if (i, j) == (0, 0) else base * 2 ** (i - 1) if j == 0 else j * base * 2 ** i + up_channels
        assert getattr(model, f"x{i}_{j}").conv1.weight.shape == (base * 2 ** i, 3, 3, reads), (i, j)
    assert [f"head{j}" in model._modules for j in range(5)] == [False, True, True, True, False]


def test_a_perturbed_node_changes_exactly_the_nodes_that_read_it():
    depth = 3
    model = _built(depth)
    x = _image()
    with lamina.no_grad():
        before = {k: v.numpy() for k, v in model.nodes(x).items()}
    for node in before:
        weight = getattr(model, f"x{node[0]}_{node[1]}").conv2.weight
        saved = weight.data.copy()
        weight.data = saved + 0.5
        with lamina.no_grad():
            after = {k: v.numpy() for k, v in model.nodes(x).items()}
        weight.data = saved
        changed = {k for k in before if not np.allclose(before[k], after[k], rtol=0, atol=1e-7)}
        assert changed == descendants(node, depth), node


def test_pruned_model_equals_the_full_models_heads():
    depth = 3
    model = _built(depth)
    x = _image()
    with lamina.no_grad():
        heads = [h.numpy() for h in model.head_outputs(x)]
        assert len(heads) == depth
        np.testing.assert_allclose(model(x).numpy(), np.mean(heads, axis=0), rtol=1e-6, atol=1e-6)
        for level in range(1, depth + 1):
            assert len(model.nodes(x, level)) == (level + 1) * (level + 2) // 2
            model.level, model.mode = level, "fast"
            np.testing.assert_array_equal(model(x).numpy(), heads[level - 1])
            model.mode = "accurate"
            np.testing.assert_allclose(model(x).numpy(), np.mean(heads[:level], axis=0), rtol=1e-6, atol=1e-6)
    pruned = models.UNetPlusPlus(3, depth, 2, level=1, mode="fast")
    pruned.build((None, 8, 8, 1))
    pruned.load_state_dict(model.state_dict())
    with lamina.no_grad():
        np.testing.assert_array_equal(pruned.eval()(x).numpy(), heads[0])


def torch_unet_plus_plus(model, x):
    """The paper's formula on an NCHW batch with the model's weights (BN in training mode)."""
    w = {k: torch.tensor(np.asarray(v)) for k, v in model.state_dict().items()}

    def conv(name, t, padding):
        return TF.conv2d(t, w[f"{name}.weight"].permute(0, 3, 1, 2), w.get(f"{name}.bias"), padding=padding)

    def node(i, j, t):
        for k in (1, 2):
            t = conv(f"x{i}_{j}.conv{k}", t, 1)
            if model.batch_norm:
                t = TF.batch_norm(t, None, None, w[f"x{i}_{j}.bn{k}.weight"], w[f"x{i}_{j}.bn{k}.bias"], training=True)
            t = torch.relu(t)
        return t

    def up(i, j, t):
        if model.upsampling == "transpose":
            return TF.conv_transpose2d(t, w[f"up{i}_{j}.weight"].permute(0, 3, 1, 2), w[f"up{i}_{j}.bias"], stride=2)
        return TF.interpolate(t, scale_factor=2, mode="bilinear", align_corners=False)

    X = {}
    for i in range(model.depth + 1):
        X[i, 0] = node(i, 0, x if i == 0 else TF.max_pool2d(X[i - 1, 0], 2))
    for j in range(1, model.depth + 1):
        for i in range(model.depth + 1 - j):
            X[i, j] = node(i, j, torch.cat([X[i, k] for k in range(j)] + [up(i, j, X[i + 1, j - 1])], dim=1))
    return [conv(f"head{j}", X[0, j], 0) for j in range(1, model.depth + 1)]


@pytest.mark.parametrize("upsampling, batch_norm", [("transpose", True), ("bilinear", False)])
def test_matches_a_torch_rewrite(f64, upsampling, batch_norm):
    model = models.UNetPlusPlus(3, 2, 2, batch_norm=batch_norm, upsampling=upsampling)
    model.build((None, 8, 8, 2))
    rng = np.random.default_rng(3)
    for param in model.parameters():
        param.data = rng.normal(0.0, 0.5, param.shape)
    x = rng.standard_normal((2, 8, 8, 2))
    ours = lamina.tensor(x, requires_grad=True)
    heads = model.train()(ours)
    theirs = torch.tensor(x.transpose(0, 3, 1, 2), requires_grad=True)
    expected = torch_unet_plus_plus(model, theirs)
    assert len(heads) == len(expected) == 2
    total, total_t = 0, 0
    for k, (a, b) in enumerate(zip(heads, expected)):
        assert_close(a.numpy(), b.detach().numpy().transpose(0, 2, 3, 1), 1e-10, f"head {k + 1}")
        up = rng.standard_normal(a.shape)
        total = total + (a * lamina.tensor(up)).sum()
        total_t = total_t + (b * torch.tensor(up.transpose(0, 3, 1, 2))).sum()
    total.backward()
    total_t.backward()
    assert_close(ours.grad, theirs.grad.numpy().transpose(0, 2, 3, 1), 1e-10, "input gradient")


@pytest.mark.parametrize("upsampling", ["transpose", "bilinear"])
def test_gradients_float64(upsampling):
    model = _built(2, 2, size=4, upsampling=upsampling)
    model.to(np.float64)
    x = np.random.default_rng(4).standard_normal((1, 4, 4, 1))
    assert check_gradients(lambda a: model(a), x)


def test_deep_supervision_loss_and_training_outputs():
    model = _built(2, 2)
    x = _image()
    heads = model.train()(x)
    assert isinstance(heads, tuple) and len(heads) == 2 and all(h.shape == (2, 8, 8, 3) for h in heads)
    labels = np.random.default_rng(5).integers(0, 3, (2, 8, 8))
    loss = models.unet_plus_plus_loss(heads, labels)
    ce = [TF.cross_entropy(torch.tensor(h.numpy()).permute(0, 3, 1, 2), torch.tensor(labels)) for h in heads]
    assert np.isclose(loss.item(), (ce[0] + ce[1]).item() / 2, rtol=1e-5)
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())
    single = models.UNetPlusPlus(3, 2, 2, deep_supervision=False)
    assert single.train()(x).shape == (2, 8, 8, 3) and "head1" not in single._modules


def test_bad_settings_and_inputs_raise_clear_errors():
    with pytest.raises(lamina.ShapeError, match="divisible by 2\\^depth = 8"):
        models.UNetPlusPlus(2, 3, 2)(np.zeros((1, 12, 12, 1), dtype=np.float32))
    with pytest.raises(ValueError, match="level must be at most depth = 3"):
        models.UNetPlusPlus(2, 3, 2, level=4)
    with pytest.raises(ValueError, match="needs the deep supervision heads"):
        models.UNetPlusPlus(2, 3, 2, deep_supervision=False, level=2)
    with pytest.raises(ValueError, match="mode must be one of"):
        models.UNetPlusPlus(2, 3, 2, mode="average")
    model = models.UNetPlusPlus(2, 2, 2)
    model.mode = "average"
    with pytest.raises(ValueError, match="mode must be one of"):
        model(np.zeros((1, 4, 4, 1), dtype=np.float32))
    with pytest.raises(ValueError, match="not divisible"):
        models.unet_plus_plus((20, 20, 1))


def test_paper_parameter_count():
    """Zhou et al. report 9.04M parameters for UNet++ (widths 32 .. 512, no batch norm, transposed
    convolutions, one sigmoid output) and 7.76M for its U-Net."""
    model = models.unet_plus_plus((96, 96, 1), 1, batch_norm=False)
    with init.meta():
        model.build(model.input_shape)
    assert round(model.num_parameters() / 1e6, 2) == 9.04
    assert model.num_parameters() == 9_041_700


def test_config_and_save_load_round_trip(tmp_path):
    model = _built(2, 2, channels=2, level=2, mode="fast")
    x = np.random.default_rng(6).standard_normal((1, 8, 8, 2)).astype(np.float32)
    check_config_and_save_load(model, x, tmp_path / "unetpp.safetensors")
    twin = lamina.load(tmp_path / "unetpp.safetensors")
    assert type(twin) is models.UNetPlusPlus and twin.get_config() == model.get_config()


def test_unet_plus_plus_learns_discs_and_squares():
    x, y = shapes_dataset(256, seed=1)
    x_test, y_test = shapes_dataset(96, seed=2)
    model = models.UNetPlusPlus(3, depth=2, base_filters=8)
    miou = train_and_score(model, models.unet_plus_plus_loss, (x, y), (x_test, y_test), epochs=12, lr=1e-2)
    assert miou > all_background_miou(y_test) + 0.25, miou


def test_readme_example(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    printed, names = run_readme_section("PSPNet and UNet++")
    assert printed.split() == ["(2,", "32,", "32,", "3)", "3", "(2,", "32,", "32,", "3)", "True"]
    assert isinstance(names["psp"], lamina.models.SegmentationModel)
