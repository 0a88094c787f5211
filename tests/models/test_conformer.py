"""Conformer: layers and stacks against a torch re-implementation of torchaudio's documented
ConformerLayer (same weights, float64; batch norm in training and evaluation, group norm,
convolution first, padding masks), float64 gradient checks and argument errors.

torchaudio is not a dependency: ``torch_conformer_layer`` writes its structure with torch ops
(torch's own multi-head attention, with a key padding mask, as torchaudio uses).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as TF

import lamina
from helpers import assert_close, check_gradients, randn
from lamina.errors import ShapeError
from lamina.models import Conformer, ConformerLayer

DIM, HEADS, FFN, KERNEL = 8, 2, 12, 3


def torch_params(module):
    """The module's parameters and buffers as float64 torch leaves, by lamina's names."""
    out = {}
    for name, p in module.named_parameters():
        out[name] = torch.tensor(np.asarray(p.data), requires_grad=True)
    for name, b in module.named_buffers():
        out[name] = torch.tensor(np.array(b))
    return out


def torch_feed_forward(x, p, prefix):
    """Linear(SiLU(Linear(LN(x)))), lamina's (in, out) weights."""
    x = TF.layer_norm(x, (x.shape[-1],), p[f"{prefix}.layer_norm.weight"], p[f"{prefix}.layer_norm.bias"])
    x = TF.silu(x @ p[f"{prefix}.linear1.weight"] + p[f"{prefix}.linear1.bias"])
    return x @ p[f"{prefix}.linear2.weight"] + p[f"{prefix}.linear2.bias"]


def torch_conv1d(x, p, name, **options):
    """torch's conv1d on (B, C, T) with lamina's (K, f, c) weight."""
    return TF.conv1d(x, p[f"{name}.weight"].permute(0, 2, 1), p[f"{name}.bias"], **options)


def torch_convolution(x, p, prefix, group_norm, training):
    """LN, pointwise conv to 2D, GLU over channels, depthwise conv, norm, SiLU, pointwise conv."""
    dim = x.shape[-1]
    x = TF.layer_norm(x, (dim,), p[f"{prefix}.layer_norm.weight"], p[f"{prefix}.layer_norm.bias"])
    x = x.transpose(1, 2)                                                     # (B, D, T), torch's layout
    x = TF.glu(torch_conv1d(x, p, f"{prefix}.pointwise1"), dim=1)
    kernel = p[f"{prefix}.depthwise.weight"].shape[1]
    x = torch_conv1d(x, p, f"{prefix}.depthwise", padding=(kernel - 1) // 2, groups=dim)
    if group_norm:
        x = TF.group_norm(x, 1, p[f"{prefix}.norm.weight"], p[f"{prefix}.norm.bias"])
    else:
        x = TF.batch_norm(x, p[f"{prefix}.norm.running_mean"], p[f"{prefix}.norm.running_var"],
                          p[f"{prefix}.norm.weight"], p[f"{prefix}.norm.bias"], training=training, momentum=0.1)
    x = torch_conv1d(TF.silu(x), p, f"{prefix}.pointwise2")
    return x.transpose(1, 2)


def torch_attention(x, p, prefix, heads, padding):
    """torch's multi-head attention, (T, B, D) as torchaudio calls it, keys masked where padded."""
    dim = x.shape[-1]
    out, _ = TF.multi_head_attention_forward(
        x.transpose(0, 1), x.transpose(0, 1), x.transpose(0, 1), dim, heads,
        p[f"{prefix}.in_weight"].T, p[f"{prefix}.in_bias"], None, None, False, 0.0,
        p[f"{prefix}.out_weight"].T, p[f"{prefix}.out_bias"], training=False,
        key_padding_mask=padding, need_weights=False)
    return out.transpose(0, 1)


def torch_conformer_layer(x, p, prefix, padding, group_norm=False, convolution_first=False, training=False):
    """x + FF1/2; [conv]; x + MHSA(LN x); [conv]; x + FF2/2; LN."""
    def convolution(x):
        return x + torch_convolution(x, p, f"{prefix}conv_module", group_norm, training)

    x = x + 0.5 * torch_feed_forward(x, p, f"{prefix}ffn1")
    if convolution_first:
        x = convolution(x)
    y = TF.layer_norm(x, (x.shape[-1],), p[f"{prefix}self_attn_layer_norm.weight"],
                      p[f"{prefix}self_attn_layer_norm.bias"])
    x = x + torch_attention(y, p, f"{prefix}self_attn", HEADS, padding)
    if not convolution_first:
        x = convolution(x)
    x = x + 0.5 * torch_feed_forward(x, p, f"{prefix}ffn2")
    return TF.layer_norm(x, (x.shape[-1],), p[f"{prefix}final_layer_norm.weight"], p[f"{prefix}final_layer_norm.bias"])


def randomise(module, seed):
    """Random weights, biases and running statistics, so that nothing is trivially 0 or 1."""
    rng = np.random.default_rng(seed)
    for name, p in module.named_parameters():
        p.data[...] = rng.standard_normal(p.shape) * (0.4 if p.data.ndim > 1 else 0.2) + ("weight" in name
                                                                                            and p.data.ndim == 1)
    for name, b in module.named_buffers():
        b[...] = rng.uniform(0.5, 1.5, b.shape) if "var" in name else rng.standard_normal(b.shape) * 0.2


def batch(seed=0):
    return randn(3, 7, DIM, seed=seed), np.array([7, 4, 2])


def run(model, x, lengths):
    """A stack takes lengths, a layer the key mask (True on real frames)."""
    if isinstance(model, Conformer):
        return model(x, lengths)[0]
    return model(x, np.arange(x.shape[1])[None, :] < lengths[:, None])


def compare(model, torch_forward, seed=0, training=False):
    """Outputs and the gradients of every parameter and the input against torch, float64."""
    x, lengths = batch(seed)
    model.train(training)
    xs = lamina.tensor(x, requires_grad=True)
    run(model, xs, lengths)                         # builds, then weights are drawn
    randomise(model, seed)
    p = torch_params(model)
    ours = run(model, xs, lengths)
    xt = torch.tensor(x, requires_grad=True)
    padding = torch.tensor(np.arange(x.shape[1])[None, :] >= lengths[:, None])
    theirs = torch_forward(xt, p, padding)
    assert_close(ours.numpy(), theirs.detach().numpy(), 1e-10, "output")
    upstream = randn(*x.shape, seed=seed + 1)
    ours.backward(upstream)
    theirs.backward(torch.tensor(upstream))
    assert_close(xs.grad, xt.grad.numpy(), 1e-9, "input gradient")
    for name, param in model.named_parameters():
        expected = p[name].grad.numpy()
        if np.abs(expected).max() < 1e-12:          # a bias before a training batch norm: 0 up to rounding
            assert np.abs(param.grad).max() < 1e-12, name
        else:
            assert_close(param.grad, expected, 1e-9, f"gradient of {name}")
    for name, value in model.named_buffers():       # torch's batch_norm updated p's in place
        assert_close(np.asarray(value), p[name].numpy(), 1e-10, name)


@pytest.mark.parametrize("training", [False, True])
@pytest.mark.parametrize("group_norm, convolution_first", [(False, False), (True, False), (False, True)])
def test_layer_matches_torch(f64, training, group_norm, convolution_first):
    layer = ConformerLayer(DIM, FFN, HEADS, KERNEL, use_group_norm=group_norm, convolution_first=convolution_first)
    compare(layer, lambda x, p, padding: torch_conformer_layer(x, p, "", padding, group_norm, convolution_first,
                                                               training), training=training)


def test_stack_matches_torch(f64):
    model = Conformer(DIM, HEADS, FFN, num_layers=2, depthwise_conv_kernel_size=KERNEL)

    def torch_stack(x, p, padding):
        for i in range(2):
            x = torch_conformer_layer(x, p, f"conformer_layers.{i}.", padding)
        return x

    compare(model, torch_stack, seed=5)
    out, lengths = model(lamina.tensor(batch()[0]), np.array([7, 4, 2]))
    assert out.shape == (3, 7, DIM) and lengths.tolist() == [7, 4, 2]


def test_padded_frames_do_not_reach_the_real_ones_through_attention(f64):
    """With a depthwise kernel of 1 and batch norm in evaluation (no mixing over time but
    attention), changing the frames past a length leaves the real frames' outputs as they were."""
    layer = ConformerLayer(DIM, FFN, HEADS, 1)
    layer.eval()
    x, lengths = batch(seed=6)
    first = run(layer, lamina.tensor(x), lengths).numpy()
    changed = x.copy()
    changed[1, 4:] += randn(3, DIM, seed=7) * 3
    second = run(layer, lamina.tensor(changed), lengths).numpy()
    assert_close(second[1, :4], first[1, :4], 1e-12, "real frames")
    assert np.abs(second[1, 4:] - first[1, 4:]).max() > 1e-3


def test_gradcheck(f64):
    layer = ConformerLayer(4, 6, 2, 3, use_group_norm=True)
    x = randn(2, 4, 4, seed=7)
    lengths = np.array([4, 3])
    run(layer, lamina.tensor(x), lengths)
    assert check_gradients(lambda z: run(layer, z, lengths), x)


def test_errors():
    with pytest.raises(ValueError, match="depthwise kernel size must be odd.*got 4"):
        Conformer(8, 2, 12, 1, 4)
    with pytest.raises(ValueError, match="num_heads=3 must divide input_dim=8"):
        Conformer(8, 3, 12, 1, 3)
    model = Conformer(8, 2, 12, 1, 3)
    x = lamina.tensor(np.zeros((2, 5, 8)))
    with pytest.raises(ValueError, match=r"Conformer: lengths must lie in \[1, 5\].*got 6 for utterance 1"):
        model(x, np.array([5, 6]))
    with pytest.raises(ShapeError, match=r"Conformer: the input must be \(batch, frames, 8\)"):
        model(lamina.tensor(np.zeros((2, 5, 6))), np.array([5, 5]))
    with pytest.raises(ShapeError, match="Conformer: lengths must hold one length per utterance"):
        model(x, np.array([5, 5, 5]))
