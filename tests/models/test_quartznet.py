"""QuartzNet and Jasper: time-channel separable convolutions, blocks and whole networks against a
float64 torch rewrite of the papers' layers (Conv1d with groups for the depthwise part, batch
norm in training and evaluation, the residual added before the last ReLU, Jasper's dense
residual), float64 gradient checks, output lengths, the published parameter counts, the CTC
loss against torch's, greedy transcription, WER and the README example.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as TF

import lamina
from helpers import assert_close, check_gradients, randn, run_readme_section
from lamina.errors import ShapeError
from lamina.models import (
    QuartzNet,
    QuartzNetBlock,
    TCSConv1D,
    conv_output_length,
    greedy_transcribe,
    jasper_tiny,
    quartznet_5x5,
    quartznet_15x5,
    quartznet_ctc_loss,
    quartznet_tiny,
    word_error_rate,
)

SMALL = {"prologue": (6, 3, 2), "blocks": ((6, 3), (5, 5)), "repeat": 2, "epilogue": ((5, 3, 2), (4, 1, 1))}


def torch_params(module):
    """The module's parameters (float64 leaves) and buffers as torch tensors, by lamina's names."""
    out = {name: torch.tensor(np.asarray(p.data), requires_grad=True) for name, p in module.named_parameters()}
    out.update({name: torch.tensor(np.array(b)) for name, b in module.named_buffers()})
    return out


def randomise(module, seed):
    rng = np.random.default_rng(seed)
    for p in module.parameters():
        p.data = (p.data + 0.3 * rng.standard_normal(p.shape)).astype(p.dtype)
    for name, b in module.named_buffers():          # evaluation uses running statistics: make them matter
        b[...] = rng.uniform(0.5, 1.5, b.shape) if name.endswith("running_var") else 0.2 * rng.standard_normal(b.shape)


def torch_tcs(x, p, prefix, conv):
    """x (B, C, T): Conv1d(groups=C) over time then a 1x1 Conv1d; or one Conv1d (not separable)."""
    options = {"stride": conv.stride, "dilation": conv.dilation, "padding": conv.dilation * (conv.kernel_size - 1) // 2}
    if not conv.separable:
        return TF.conv1d(x, p[f"{prefix}conv.weight"].permute(0, 2, 1), **options)
    depthwise = TF.conv1d(x, p[f"{prefix}depthwise.weight"].permute(0, 2, 1), groups=x.shape[1], **options)
    return TF.conv1d(depthwise, p[f"{prefix}pointwise.weight"].permute(0, 2, 1))


def torch_bn(x, p, prefix, training):
    return TF.batch_norm(x, p[f"{prefix}running_mean"], p[f"{prefix}running_var"], p[f"{prefix}weight"],
                         p[f"{prefix}bias"], training=training, momentum=0.1, eps=1e-3)


def torch_block(x, sources, p, prefix, block, training):
    """R x (TCS - BN - ReLU), sum_j BN_j(Conv1x1_j(source_j)) added before the last ReLU."""
    for i, conv in enumerate(block.convs):
        x = torch_bn(torch_tcs(x, p, f"{prefix}convs.{i}.", conv), p, f"{prefix}norms.{i}.", training)
        if i == len(block.convs) - 1:
            for j, source in enumerate(sources[:len(block.residual_convs)]):
                shortcut = TF.conv1d(source, p[f"{prefix}residual_convs.{j}.weight"].permute(0, 2, 1))
                x = x + torch_bn(shortcut, p, f"{prefix}residual_norms.{j}.", training)
        x = torch.relu(x)
    return x


def torch_quartznet(x, p, model, training):
    """C1, the B blocks (each residual from its input, or from all earlier outputs: dense), C2.., C4, log-softmax."""
    x = torch_block(x.transpose(1, 2), [], p, "prologue.", model.prologue, training)
    seen = [x]
    for i, block in enumerate(model.blocks):
        x = torch_block(x, list(seen) if model.dense_residual else [x], p, f"blocks.{i}.", block, training)
        seen.append(x)
    for i, layer in enumerate(model.epilogue):
        x = torch_block(x, [], p, f"epilogue.{i}.", layer, training)
    logits = TF.conv1d(x, p["classifier.weight"].permute(0, 2, 1), p["classifier.bias"])
    return torch.log_softmax(logits.transpose(1, 2), dim=-1)


def compare(module, run_torch, x, training, seed=0):
    """Outputs, the input's and every parameter's gradients and the updated running statistics against torch."""
    module.train(training)
    xs = lamina.tensor(x, requires_grad=True)
    module(xs)                                      # builds
    randomise(module, seed)
    p = torch_params(module)
    ours = module(xs)
    xt = torch.tensor(x, requires_grad=True)
    theirs = run_torch(xt, p)
    assert_close(ours.numpy(), theirs.detach().numpy(), 1e-10, "output")
    upstream = randn(*ours.shape, seed=seed + 1)
    ours.backward(upstream)
    theirs.backward(torch.tensor(upstream))
    assert_close(xs.grad, xt.grad.numpy(), 1e-9, "input gradient")
    for name, param in module.named_parameters():
        assert_close(param.grad, p[name].grad.numpy(), 1e-9, f"gradient of {name}")
    for name, value in module.named_buffers():
        assert_close(np.asarray(value), p[name].numpy(), 1e-10, name)


@pytest.mark.parametrize("separable", [True, False])
@pytest.mark.parametrize("stride, dilation, kernel", [(1, 1, 5), (2, 1, 5), (1, 2, 3), (2, 1, 4)])
def test_tcs_convolution_matches_torch(f64, separable, stride, dilation, kernel):
    conv = TCSConv1D(4, 6, kernel, stride=stride, dilation=dilation, separable=separable)
    compare(conv, lambda x, p: torch_tcs(x.transpose(1, 2), p, "", conv).transpose(1, 2), randn(2, 9, 4),
            training=True)
    assert conv(randn(2, 9, 4)).shape == (2, conv.output_length(9), 6)


@pytest.mark.parametrize("training", [True, False])
def test_residual_block_matches_torch(f64, training):
    block = QuartzNetBlock(4, 6, 5, repeat=3)
    compare(block, lambda x, p: torch_block(x.transpose(1, 2), [x.transpose(1, 2)], p, "", block,
                                            training).transpose(1, 2), randn(3, 8, 4, seed=2), training, seed=3)


@pytest.mark.parametrize("options", [{}, {"dense_residual": True}, {"dense_residual": True, "separable": False}])
@pytest.mark.parametrize("training", [True, False])
def test_network_matches_torch(f64, options, training):
    model = QuartzNet(4, 3, **SMALL, **options)
    compare(model, lambda x, p: torch_quartznet(x, p, model, training), randn(2, 11, 4, seed=4), training, seed=5)


def test_dense_residual_adds_a_shortcut_from_every_earlier_block(f64):
    plain, dense = QuartzNet(4, 3, **SMALL), QuartzNet(4, 3, **SMALL, dense_residual=True)
    assert [len(b.residual_convs) for b in plain.blocks] == [1, 1]
    assert [len(b.residual_convs) for b in dense.blocks] == [1, 2]
    assert [len(layer.residual_convs) for layer in [dense.prologue, *dense.epilogue]] == [0, 0, 0]


def test_gradcheck(f64):
    block = QuartzNetBlock(3, 4, 3, repeat=2, dilation=2)
    x = randn(2, 6, 3, seed=6)
    block(lamina.tensor(x))
    randomise(block, 7)
    assert check_gradients(block, x)
    model = QuartzNet(3, 3, prologue=(4, 3, 2), blocks=((4, 3), (3, 3)), repeat=1, epilogue=((3, 3, 2),),
                      dense_residual=True)
    model(lamina.tensor(x))
    assert check_gradients(model, x)


@pytest.mark.parametrize("kernel, stride, dilation", [(33, 2, 1), (11, 2, 1), (4, 2, 1), (5, 2, 3), (87, 1, 2)])
def test_output_length_follows_the_formula(kernel, stride, dilation):
    conv = TCSConv1D(2, 2, kernel, stride=stride, dilation=dilation)
    padding = dilation * (kernel - 1) // 2
    for frames in range(max(1, dilation * (kernel - 1) - 2 * padding + 1), 40):
        expected = (frames + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1
        assert conv(randn(1, frames, 2)).shape[1] == conv.output_length(frames) == expected
    lengths = np.arange(1, 50)
    if kernel % 2 and stride == 2:                  # odd kernels keep ceil(T / 2) frames
        assert (conv_output_length(lengths, kernel, 2, dilation) == -(-lengths // 2)).all()


def test_network_output_length_is_half_the_frames():
    model = quartznet_tiny(5, 8)
    for frames in (7, 8, 20):
        out = model(randn(2, frames, 8).astype(np.float32))
        assert out.shape == (2, (frames + 1) // 2, 5) == (2, model.output_length(frames), 5)
    assert model.output_length(np.array([7, 8, 20])).tolist() == [4, 4, 10]


def expected_parameters(features, classes, blocks, repeat):
    """Kriman et al.'s table: C1 (33, 256, stride 2), B blocks, C2 (87, 512, dilation 2), C3 (1x1, 1024),
    C4 (1x1 with bias); a TCS conv holds c_in K + c_in c_out weights, a BN 2c, a residual c_in c + 2c."""
    def tcs(c_in, c_out, k):
        return c_in * k + c_in * c_out + 2 * c_out

    total, channels = tcs(features, 256, 33), 256
    for filters, kernel in blocks:
        total += tcs(channels, filters, kernel) + (repeat - 1) * tcs(filters, filters, kernel)
        total += channels * filters + 2 * filters
        channels = filters
    total += tcs(512, 512, 87) + 512 * 1024 + 2 * 1024 + 1024 * classes + classes
    return total


def test_published_parameter_counts():
    """29 classes (28 characters and the blank), 64 mel features: 6.7M and 18.9M in the paper."""
    five = [(256, 33), (256, 39), (512, 51), (512, 63), (512, 75)]
    for build, blocks, published in ((quartznet_5x5, five, 6.7), (quartznet_15x5, [b for b in five for _ in "abc"],
                                                                   18.9)):
        model = build()
        model.build((None, None, 64))
        count = model.num_parameters()
        assert count == expected_parameters(64, 29, blocks, 5)
        assert round(count / 1e6, 1) == published


def test_ctc_loss_matches_torch(f64):
    model = jasper_tiny(4, 6)
    x, lengths = randn(2, 14, 6, seed=8), np.array([14, 9])
    targets, target_lengths = np.array([[1, 2, 3], [3, 3, 0]]), np.array([3, 2])
    loss = quartznet_ctc_loss(model, x, lengths, targets, target_lengths)
    log_probs = torch.tensor(model(x).numpy())
    expected = TF.ctc_loss(log_probs.transpose(0, 1), torch.tensor(targets), torch.tensor([7, 5]),
                           torch.tensor(target_lengths), blank=0, reduction="mean")
    assert_close(loss.numpy(), expected.numpy(), 1e-10, "loss")


def test_greedy_transcribe_reads_the_most_probable_path(monkeypatch):
    model = quartznet_tiny(4, 6)
    path = np.array([[1, 1, 0, 2, 2, 3, 0, 0], [3, 0, 3, 1, 0, 0, 2, 2]])   # blank 0; 'a' 1, 'b' 2, ' ' 3
    scores = np.where(np.arange(4) == path[..., None], 0.0, -5.0)
    monkeypatch.setattr(model, "forward", lambda x: lamina.tensor(scores))
    assert greedy_transcribe(model, np.zeros((2, 16, 6)), "ab ") == ["ab ", "  ab"]
    # input frames 12 and 7 give 6 and 4 output frames (stride 2)
    assert greedy_transcribe(model, np.zeros((2, 16, 6)), "ab ", lengths=[12, 7]) == ["ab ", "  a"]
    with pytest.raises(ValueError, match="4 classes, the alphabet of 2 characters needs 3"):
        greedy_transcribe(model, np.zeros((2, 16, 6)), "ab")


def test_word_error_rate_counts_word_edits():
    # one substitution + one deletion over 5 reference words, then 1 insertion over 2
    assert word_error_rate(["the cat sat", "a b c"], ["the cat sit on", "a b"]) == pytest.approx(3 / 6)
    assert word_error_rate(["same words"], ["same  words "]) == 0.0


def test_errors():
    with pytest.raises(ShapeError, match=r"QuartzNet: expected \(batch, frames, 8\) features, got shape \(2, 5, 7\)"):
        quartznet_tiny(5, 8)(randn(2, 5, 7))
    with pytest.raises(ShapeError, match=r"TCSConv1D: expected \(batch, frames, 4\)"):
        TCSConv1D(4, 4, 3)(randn(2, 5, 3))
    with pytest.raises(ValueError, match="residual block keeps the frame rate"):
        QuartzNetBlock(4, 4, 3, stride=2)
    with pytest.raises(ValueError, match="at least 2, got 1"):
        QuartzNet(4, 1, **SMALL)
    with pytest.raises(ShapeError, match=r"expected 2 residual inputs \(channels \[4, 4\]\), got 1"):
        QuartzNetBlock(4, 4, 3, residual_inputs=[4, 4])(randn(1, 5, 4), [randn(1, 5, 4)])


def test_readme_example():
    printed, names = run_readme_section("Speech recognition with QuartzNet")
    lines = printed.splitlines()
    assert lines[0] == "parameters 6713181" and len(lines) == 2
    assert lines[1].startswith("ctc loss") and np.isfinite(float(lines[1].split()[-1]))
    assert isinstance(names["model"], QuartzNet)
