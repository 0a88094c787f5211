"""SegFormer: Hugging Face's parameter counts, the efficient attention, Mix-FFN, the whole model
and the loss equal to a torch reference with Hugging Face's names (values and every gradient,
float64), the loader, config and save/load round trips, summary, and a tiny model learning a
toy segmentation."""

import time

import numpy as np
import pytest
import torch
import torch_segformer as ref
from zoo_checks import check_config_and_save_load, random_inputs

import lamina
from helpers import assert_close, check_gradients
from lamina import models
from lamina.analysis import summary
from lamina.models import SegformerConfig, hf_segformer_table, load_hf_segformer_state_dict, segformer
from lamina.models.hf_weights import load_hf_state_dict
from lamina.nn import init
from lamina.train.segmentation_metrics import mean_iou, pixel_confusion_matrix

TINY = {"hidden_sizes": (4, 8, 12, 16), "depths": (2, 1, 1, 1), "num_attention_heads": (1, 2, 3, 4),
        "sr_ratios": (4, 2, 1, 1), "decoder_hidden_size": 8, "num_labels": 3}


def _nchw(x):
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


def _tokens(x):
    """An NHWC map as Hugging Face's (N, h w, C) tokens."""
    return torch.from_numpy(np.ascontiguousarray(x.reshape(x.shape[0], -1, x.shape[-1])))


def _copy_torch_weights(ours, theirs, seed=0):
    """Random torch weights (and BatchNorm statistics) copied into the lamina module by the
    loader's table; both in float64."""
    theirs.double()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in theirs.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * (0.5 if p.dim() > 1 else 0.2) + (p.dim() == 1))
        for m in theirs.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g, dtype=torch.float64) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g, dtype=torch.float64) + 0.5)
    ours.to(np.float64)
    load_hf_state_dict(ours, theirs.state_dict(), hf_segformer_table(ours),
                       lambda key: key.endswith("num_batches_tracked"), True, "test")


def _check_parameter_gradients(ours, theirs, rtol=1e-9):
    table = hf_segformer_table(ours)
    torch_grads = {name: p.grad for name, p in theirs.named_parameters()}
    for name, p in ours.named_parameters():
        (key,) = table[name].keys
        assert p.grad is not None, name
        if np.abs(torch_grads[key].numpy()).max() < 1e-12:   # the keys' bias: softmax ignores a shift
            assert np.abs(p.grad).max() < 1e-12, name
            continue
        assert_close(p.grad, table[name].convert(torch_grads[key].numpy()), rtol, f"gradient of {name}")


def _upstream(shape, seed=7):
    return np.random.default_rng(seed).standard_normal(shape)


def test_parameter_counts_equal_hugging_face():
    model = segformer("b0")
    assert not model.built
    assert model.compute_output_shape((None, 512, 512, 3)) == (None, 128, 128, 150)
    with init.meta():
        model.build(model.input_shape)
    assert model.num_parameters() == 3_752_694
    for variant, settings in models.SEGFORMER_VARIANTS.items():
        with init.meta():
            model = segformer(variant, num_labels=19)
            model.build((None, 64, 64, 3))
        with torch.device("meta"):
            torch_model = ref.SegformerForSemanticSegmentation(ref.Config(**settings, num_labels=19))
        assert model.num_parameters() == sum(p.numel() for p in torch_model.parameters()), variant


@pytest.mark.parametrize("sr_ratio", [1, 2])
def test_efficient_attention_equals_reference(sr_ratio):
    ours = models.SegformerAttention(6, 2, sr_ratio)
    x = random_inputs((2, 5, 4, 6), 1).astype(np.float64)
    ours(lamina.tensor(x.astype(np.float32)))
    theirs = ref.Attention(6, 2, sr_ratio)
    _copy_torch_weights(ours, theirs)
    x_ours, x_theirs = lamina.tensor(x, requires_grad=True, dtype=np.float64), _tokens(x).requires_grad_()
    out_ours, out_theirs = ours(x_ours), theirs(x_theirs, 5, 4)
    assert_close(out_ours.numpy().reshape(2, 20, 6), out_theirs.detach().numpy(), 1e-10, "attention")
    up = _upstream((2, 5, 4, 6))
    (out_ours * lamina.tensor(up, dtype=np.float64)).sum().backward()
    (out_theirs * _tokens(up)).sum().backward()
    assert_close(x_ours.grad.reshape(2, 20, 6), x_theirs.grad.numpy(), 1e-9, "input gradient")
    _check_parameter_gradients(ours, theirs)


def test_efficient_attention_gradient_check():
    layer = models.SegformerEfficientSelfAttention(4, 2, 2)
    layer(lamina.tensor(np.zeros((1, 4, 4, 4), np.float32)))
    layer.to(np.float64)
    assert check_gradients(layer, _upstream((1, 4, 4, 4), 3))


def test_mix_ffn_equals_reference():
    ours = models.SegformerMixFFN(8, 4)
    x = random_inputs((2, 3, 5, 4), 2).astype(np.float64)
    ours(lamina.tensor(x.astype(np.float32)))
    theirs = ref.MixFFN(4, 8)
    _copy_torch_weights(ours, theirs)
    x_ours, x_theirs = lamina.tensor(x, requires_grad=True, dtype=np.float64), _tokens(x).requires_grad_()
    out_ours, out_theirs = ours(x_ours), theirs(x_theirs, 3, 5)
    assert_close(out_ours.numpy().reshape(2, 15, 4), out_theirs.detach().numpy(), 1e-10, "mix-ffn")
    up = _upstream((2, 3, 5, 4))
    (out_ours * lamina.tensor(up, dtype=np.float64)).sum().backward()
    (out_theirs * _tokens(up)).sum().backward()
    assert_close(x_ours.grad.reshape(2, 15, 4), x_theirs.grad.numpy(), 1e-9, "input gradient")
    _check_parameter_gradients(ours, theirs)
    assert check_gradients(ours, _upstream((1, 3, 3, 4), 4))


def _tiny_pair(seed=0):
    ours = segformer("b0", input_shape=(32, 32, 3), drop_path_rate=0.0, classifier_dropout_prob=0.0, **TINY)
    ours.build((None, 32, 32, 3))
    theirs = ref.SegformerForSemanticSegmentation(ref.Config(**TINY))
    _copy_torch_weights(ours, theirs, seed)
    return ours, theirs


@pytest.mark.parametrize("training", [False, True])
def test_whole_model_logits_and_gradients_equal_reference(training):
    ours, theirs = _tiny_pair()
    ours.train(training)
    theirs.train(training)
    x = random_inputs((2, 32, 28, 3), 3).astype(np.float64)
    x_ours, x_theirs = lamina.tensor(x, requires_grad=True, dtype=np.float64), _nchw(x).requires_grad_()
    logits_ours, logits_theirs = ours(x_ours), theirs(x_theirs)
    assert logits_ours.shape == (2, 8, 7, 3)
    assert_close(logits_ours.numpy(), logits_theirs.detach().numpy().transpose(0, 2, 3, 1), 1e-9, "logits")
    up = _upstream((2, 8, 7, 3))
    (logits_ours * lamina.tensor(up, dtype=np.float64)).sum().backward()
    (logits_theirs * _nchw(up)).sum().backward()
    assert_close(x_ours.grad, x_theirs.grad.numpy().transpose(0, 2, 3, 1), 1e-8, "input gradient")
    _check_parameter_gradients(ours, theirs, 1e-8)
    if training:
        bn_ours, bn_theirs = ours.decode_head.batch_norm, theirs.decode_head.batch_norm
        assert_close(bn_ours.running_mean, bn_theirs.running_mean.numpy(), 1e-9, "running mean")


@pytest.mark.parametrize("labels_count", [3, 1])
def test_loss_with_ignore_index_equals_reference(labels_count):
    rng = np.random.default_rng(5)
    logits = rng.standard_normal((2, 4, 5, labels_count))
    labels = rng.integers(0, max(labels_count, 2), (2, 16, 20))
    labels[rng.random(labels.shape) < 0.3] = 255
    z_ours = lamina.tensor(logits, requires_grad=True, dtype=np.float64)
    z_theirs = _nchw(logits).requires_grad_()
    loss_ours = models.segformer_loss(z_ours, labels)
    loss_theirs = ref.segformer_loss(z_theirs, torch.from_numpy(labels))
    assert_close(loss_ours.numpy(), loss_theirs.detach().numpy(), 1e-12, "loss")
    loss_ours.backward()
    loss_theirs.backward()
    assert_close(z_ours.grad, z_theirs.grad.numpy().transpose(0, 2, 3, 1), 1e-10, "logits gradient")


def test_compute_loss_uses_the_models_ignore_index():
    model = segformer("b0", input_shape=(32, 32, 3), semantic_loss_ignore_index=7, **TINY)
    x = lamina.tensor(random_inputs((1, 32, 32, 3), 0))
    labels = np.full((1, 32, 32), 7)
    labels[0, :4, :4] = 1
    loss, logits = model.eval().compute_loss(x, labels)
    assert_close(loss.numpy(), models.segformer_loss(logits, labels, ignore_index=7).numpy(), 1e-6, "loss")
    with pytest.raises(lamina.ShapeError, match="segformer_loss"):
        models.segformer_loss(logits, labels[0])


def test_loader_round_trip_and_strictness(tmp_path):
    ours, theirs = _tiny_pair(seed=2)
    fresh = segformer("b0", input_shape=(32, 32, 3), **TINY)
    fresh.build((None, 32, 32, 3))
    fresh.to(np.float64)
    state = {key: value.clone() for key, value in theirs.state_dict().items()}
    load_hf_segformer_state_dict(fresh, state)
    for key, value in ours.state_dict().items():
        np.testing.assert_array_equal(fresh.state_dict()[key], value, err_msg=key)
    x = random_inputs((1, 32, 32, 3), 4).astype(np.float64)
    with lamina.no_grad():
        found = fresh.eval()(lamina.tensor(x, dtype=np.float64)).numpy()
    with torch.no_grad():
        expected = theirs.eval()(_nchw(x)).numpy().transpose(0, 2, 3, 1)
    assert_close(found, expected, 1e-9, "loaded logits")
    del state["decode_head.classifier.bias"]
    with pytest.raises(KeyError, match="decode_head.classifier.bias"):
        load_hf_segformer_state_dict(fresh, state)
    state["decode_head.classifier.bias"] = torch.zeros(3)
    state["decode_head.classifier.weight"] = torch.zeros(4, 8, 1, 1)
    with pytest.raises(lamina.ShapeError):
        load_hf_segformer_state_dict(fresh, state)


def test_names_summary_config_and_save_load(tmp_path):
    model = segformer("b0", input_shape=(32, 32, 3), **TINY)
    model.build((None, 32, 32, 3))
    keys = set(model.state_dict())
    for key in ("segformer.encoder.patch_embeddings.0.proj.weight",
                "segformer.encoder.block.0.1.attention.self.sr.weight",
                "segformer.encoder.block.0.0.attention.self.layer_norm.bias",
                "segformer.encoder.block.3.0.mlp.dwconv.dwconv.weight",
                "segformer.encoder.layer_norm.3.weight", "decode_head.linear_c.3.proj.weight",
                "decode_head.linear_fuse.weight", "decode_head.batch_norm.running_var",
                "decode_head.classifier.bias"):
        assert key in keys, key
    assert not any(".sr." in key for key in keys if ".block.2." in key)
    assert model.segformer.encoder.block[0][1].drop_path.p == pytest.approx(0.1 / 4)
    table = summary(segformer("b0"))
    assert table.total_params == 3_752_694
    check_config_and_save_load(model, random_inputs((1, 32, 32, 3), 1), tmp_path / "segformer.safetensors")
    assert models.get_model("segformer", variant="b1").config.hidden_sizes == (64, 128, 320, 512)


def test_bad_settings_raise_clear_errors():
    with pytest.raises(ValueError, match="unknown variant 'b9'"):
        segformer("b9")
    with pytest.raises(TypeError, match="unknown options"):
        segformer("b0", hidden_size=3)
    with pytest.raises(ValueError, match="not divisible by its 2 heads"):
        SegformerConfig(hidden_sizes=(3, 8, 12, 16), num_attention_heads=(2, 2, 3, 4))
    with pytest.raises(ValueError, match="one value per stage"):
        SegformerConfig(depths=(1, 1, 1))
    head = models.SegformerDecodeHead(SegformerConfig(**TINY))
    with pytest.raises(lamina.ShapeError, match="expected 8 channels"):
        head.compute_output_shape([(1, 8, 8, 4), (1, 4, 4, 7), (1, 2, 2, 12), (1, 1, 1, 16)])


def _shapes_dataset(count, seed):
    """32x32 images of a square (label 1) and a disc (label 2) on a noisy background (label 0)."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[:32, :32]
    images = rng.normal(0.0, 0.1, (count, 32, 32, 3)).astype(np.float32)
    labels = np.zeros((count, 32, 32), np.int64)
    for i in range(count):
        top, left = rng.integers(2, 14, 2)
        labels[i, top:top + 12, left:left + 12] = 1
        cy, cx = rng.integers(8, 24, 2)
        labels[i][(rows - cy) ** 2 + (cols - cx) ** 2 <= 25] = 2
    images[..., 0] += labels == 1
    images[..., 1] += labels == 2
    return images, labels


def test_tiny_segformer_learns_toy_segmentation():
    """A two-stage SegFormer (1/4 and 1/8 maps) trained with Adam; mean IoU on new images."""
    lamina.manual_seed(0)
    images, labels = _shapes_dataset(48, 0)
    two_stages = {"hidden_sizes": (8, 16), "depths": (1, 1), "num_attention_heads": (1, 2), "sr_ratios": (2, 1),
                  "patch_sizes": (7, 3), "strides": (4, 2), "mlp_ratios": (4, 4), "decoder_hidden_size": 16,
                  "num_labels": 3, "drop_path_rate": 0.0, "classifier_dropout_prob": 0.0}
    model = segformer("b0", input_shape=(32, 32, 3), **two_stages)
    model.build((None, 32, 32, 3))
    optimizer = lamina.optim.Adam(model.parameters(), lr=3e-2)
    start = time.perf_counter()
    for _ in range(30):
        for batch in range(0, 48, 8):
            loss, _ = model.train().compute_loss(lamina.tensor(images[batch:batch + 8]), labels[batch:batch + 8])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    seconds = time.perf_counter() - start
    test_images, test_labels = _shapes_dataset(16, 1)
    with lamina.no_grad():
        logits = model.eval()(lamina.tensor(test_images))
        upsampled = lamina.functional.interpolate(logits, size=(32, 32), mode="bilinear", align_corners=False)
    iou = mean_iou(pixel_confusion_matrix(test_labels, upsampled.numpy().argmax(-1), 3))
    assert iou > 0.8, (iou, seconds)


def test_onnx_export_gives_the_same_logits(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from lamina.export import export_onnx

    model = segformer("b0", input_shape=(40, 36, 3), **TINY)
    model.build((None, 40, 36, 3))
    rng = np.random.default_rng(0)
    for p in model.parameters():
        p.data = (p.data + 0.3 * rng.standard_normal(p.shape)).astype(p.data.dtype)
    x = random_inputs((2, 40, 36, 3), 5)
    with lamina.no_grad():
        expected = model.eval()(lamina.tensor(x)).numpy()
    path = export_onnx(model, tmp_path / "segformer.onnx", input_shape=(40, 36, 3))
    (got,) = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"input": x})
    assert got.shape == (2, 10, 9, 3)
    assert_close(got, expected, 1e-4, "onnx logits")
