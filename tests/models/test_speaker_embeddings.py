"""x-vector, statistics poolings and ECAPA-TDNN against torch rewrites (float64, values and
gradients), with lamina's NWC sequences turned into torch's NCW at the boundary."""

import numpy as np
import pytest
import torch
from tests.helpers import assert_close, check_gradients, randn
from torch import nn as tnn

import lamina
from lamina.errors import ShapeError
from lamina.models.ecapa import ECAPA_TDNN, SERes2NetBlock
from lamina.models.speaker import AttentiveStatisticsPooling, StatisticsPooling, XVector

RTOL = 1e-9


# -- torch rewrites (NCW) ------------------------------------------------------------------


class TorchTDNN(tnn.Module):
    def __init__(self, c_in, c_out, kernel=1, dilation=1, same=True):
        super().__init__()
        pad = dilation * (kernel - 1) // 2 if same else 0
        self.conv = tnn.Conv1d(c_in, c_out, kernel, dilation=dilation, padding=pad)
        self.bn = tnn.BatchNorm1d(c_out)

    def forward(self, x):
        return self.bn(torch.relu(self.conv(x)))


def torch_statistics(x, weights, eps=1e-12):
    mean = (x * weights).sum(dim=2)
    var = (weights * (x - mean.unsqueeze(2)) ** 2).sum(dim=2)
    return mean, torch.sqrt(var.clamp(min=eps))


class TorchASP(tnn.Module):
    def __init__(self, channels, attention):
        super().__init__()
        self.tdnn = TorchTDNN(3 * channels, attention)
        self.conv = tnn.Conv1d(attention, channels, 1)

    def forward(self, x, mask):                       # x (B, C, T), mask (B, 1, T) of 0/1
        mean, std = torch_statistics(x, mask / mask.sum(dim=2, keepdim=True))
        steps = x.shape[2]
        context = torch.cat([x, mean.unsqueeze(2).repeat(1, 1, steps), std.unsqueeze(2).repeat(1, 1, steps)], 1)
        scores = self.conv(torch.tanh(self.tdnn(context))).masked_fill(mask == 0, float("-inf"))
        mean, std = torch_statistics(x, torch.softmax(scores, dim=2))
        return torch.cat([mean, std], dim=1)


class TorchSERes2Net(tnn.Module):
    def __init__(self, c_in, channels, scale, se_channels, dilation):
        super().__init__()
        self.scale = scale
        width = channels // scale
        self.tdnn1 = TorchTDNN(c_in, channels)
        self.res2net_block = tnn.Module()
        self.res2net_block.blocks = tnn.ModuleList(TorchTDNN(width, width, 3, dilation) for _ in range(scale - 1))
        self.tdnn2 = TorchTDNN(channels, channels)
        self.se_block = tnn.Module()
        self.se_block.conv1 = tnn.Conv1d(channels, se_channels, 1)
        self.se_block.conv2 = tnn.Conv1d(se_channels, channels, 1)
        self.shortcut = tnn.Conv1d(c_in, channels, 1) if c_in != channels else None

    def forward(self, x, mask):
        residual = x if self.shortcut is None else self.shortcut(x)
        h = self.tdnn1(x)
        pieces = torch.chunk(h, self.scale, dim=1)
        outs = [pieces[0]]
        for i in range(1, self.scale):
            inp = pieces[i] if i == 1 else pieces[i] + outs[-1]
            outs.append(self.res2net_block.blocks[i - 1](inp))
        h = self.tdnn2(torch.cat(outs, dim=1))
        z = (h * mask).sum(dim=2, keepdim=True) / mask.sum(dim=2, keepdim=True)
        gates = torch.sigmoid(self.se_block.conv2(torch.relu(self.se_block.conv1(z))))
        return h * gates + residual


class TorchECAPA(tnn.Module):
    def __init__(self, n_in, channels, embedding, scale=8, se=128, attention=128):
        super().__init__()
        mfa = 3 * channels
        self.block0 = TorchTDNN(n_in, channels, 5)
        for i, d in enumerate((2, 3, 4), start=1):
            setattr(self, f"block{i}", TorchSERes2Net(channels, channels, scale, se, d))
        self.mfa = TorchTDNN(3 * channels, mfa)
        self.asp = TorchASP(mfa, attention)
        self.asp_bn = tnn.BatchNorm1d(2 * mfa)
        self.fc = tnn.Linear(2 * mfa, embedding)

    def forward(self, x, mask):
        h, outs = self.block0(x), []
        for i in (1, 2, 3):
            h = getattr(self, f"block{i}")(h, mask)
            outs.append(h)
        return self.fc(self.asp_bn(self.asp(self.mfa(torch.cat(outs, dim=1)), mask)))


class TorchXVector(tnn.Module):
    def __init__(self, n_in, channels, stats, embedding):
        super().__init__()
        widths = [channels] * 4 + [stats]
        contexts = [(5, 1), (3, 2), (3, 3), (1, 1), (1, 1)]
        c_in = n_in
        for i, ((k, d), w) in enumerate(zip(contexts, widths), start=1):
            setattr(self, f"frame{i}", TorchTDNN(c_in, w, k, d, same=False))
            c_in = w
        self.segment6 = tnn.Linear(2 * stats, embedding)

    def forward(self, x, lengths):
        for i in range(1, 6):
            x = getattr(self, f"frame{i}")(x)
        rows = []
        for b, n in enumerate(lengths - 14):               # the pooling sees the valid frames only
            frames = x[b, :, :n]
            rows.append(torch.cat([frames.mean(dim=1), torch.sqrt(frames.var(dim=1, unbiased=False).clamp(min=1e-12))]))
        return self.segment6(torch.stack(rows))


# -- helpers -------------------------------------------------------------------------------


def _copy_to_torch(layer, torch_module):
    """lamina's parameters into the torch rewrite (Conv1D (K, f, c) -> (K, c, f); Dense (in, out) -> (out, in))."""
    state = dict(torch_module.named_parameters())
    names = [name for name, _ in layer.named_parameters()]
    assert sorted(names) == sorted(state), (sorted(names), sorted(state))
    with torch.no_grad():
        for name, p in layer.named_parameters():
            value = torch.tensor(p.numpy())
            if value.ndim == 3:
                value = value.permute(0, 2, 1)
            elif value.ndim == 2:
                value = value.T
            state[name].copy_(value)
    return state


def _compare(layer, torch_module, x, call, torch_call, seed=0):
    """Outputs, input gradients and every parameter's gradient for one random upstream gradient."""
    state = _copy_to_torch(layer, torch_module.double())
    ours_x = lamina.tensor(x, requires_grad=True, dtype=np.float64)
    out = call(layer, ours_x)
    theirs_x = torch.tensor(x.transpose(0, 2, 1).copy(), requires_grad=True)
    expected = torch_call(torch_module, theirs_x)
    if expected.ndim == 3:
        expected = expected.permute(0, 2, 1)                        # NCW -> NWC
    assert_close(out.numpy(), expected.detach().numpy(), RTOL, "output")
    upstream = np.random.default_rng(seed).standard_normal(out.shape)
    (out * lamina.tensor(upstream, dtype=np.float64)).sum().backward()
    (expected * torch.tensor(upstream)).sum().backward()
    assert_close(ours_x.grad, theirs_x.grad.numpy().transpose(0, 2, 1), RTOL, "input gradient")
    for name, p in layer.named_parameters():
        grad = state[name].grad
        grad = grad.permute(0, 2, 1) if grad.ndim == 3 else grad.T if grad.ndim == 2 else grad
        if np.abs(grad.numpy()).max() < 1e-13:   # a bias a softmax or batch norm cancels: both ~0
            assert np.abs(p.grad).max() < 1e-13, name
        else:
            assert_close(p.grad, grad.numpy(), RTOL, f"gradient of {name}")


def _mask(lengths, steps):
    return (np.arange(steps)[None, :] < np.asarray(lengths)[:, None]).astype(np.float64)


# -- tests ---------------------------------------------------------------------------------


def test_statistics_pooling_with_mask_equals_masked_moments_by_hand():
    x = randn(3, 7, 4, seed=1)
    lengths = np.array([7, 4, 2])
    out = StatisticsPooling()(lamina.tensor(x, dtype=np.float64), lengths=lengths).numpy()
    for b, n in enumerate(lengths):
        frames = x[b, :n]
        assert_close(out[b, :4], frames.mean(axis=0), 1e-12, "mean")
        assert_close(out[b, 4:], np.sqrt(((frames - frames.mean(axis=0)) ** 2).mean(axis=0)), 1e-12, "std")
    same = StatisticsPooling()(lamina.tensor(x, dtype=np.float64), mask=_mask(lengths, 7) > 0).numpy()
    assert_close(same, out, 1e-14)
    assert check_gradients(lambda t: StatisticsPooling()(t, lengths=lengths), x)


def test_xvector_tdnn_contexts_match_torch_rewrite(f64):
    x, lengths = randn(3, 22, 6, seed=2), np.array([22, 18, 16])
    model = XVector(tdnn_channels=5, stats_channels=7, embedding_dim=4)
    model(lamina.tensor(x))                                         # lazy build
    _compare(model, TorchXVector(6, 5, 7, 4), x, lambda m, t: m(t, lengths=lengths),
             lambda m, t: m(t, torch.tensor(lengths)))


def test_xvector_frame_context_spans_fifteen_frames(f64):
    model = XVector(tdnn_channels=4, stats_channels=4, embedding_dim=3)
    x = lamina.tensor(randn(2, 20, 3, seed=3), requires_grad=True)
    frames = model.frame_features(x)
    assert frames.shape == (2, 20 - XVector.FRAMES_LOST, 4)
    model.eval()                                                    # no batch statistics: frames stay independent
    x.grad = None
    frames = model.frame_features(x)
    frames[0, 2].sum().backward()
    touched = np.flatnonzero(np.abs(x.grad[0]).sum(axis=1) > 0)
    np.testing.assert_array_equal(touched, np.arange(2, 2 + 15))   # [t - 7, t + 7] around the centre t + 7
    assert np.abs(x.grad[1]).sum() == 0


def test_attentive_statistics_pooling_matches_torch_rewrite(f64):
    x, lengths = randn(3, 6, 4, seed=4), np.array([6, 3, 5])
    asp = AttentiveStatisticsPooling(4, attention_channels=3)
    asp(lamina.tensor(x))
    mask = torch.tensor(_mask(lengths, 6)[:, None, :])
    _compare(asp, TorchASP(4, 3), x, lambda m, t: m(t, lengths=lengths), lambda m, t: m(t, mask))


def test_attentive_pooling_ignores_padded_frames(f64):
    x = randn(2, 6, 4, seed=5)
    asp = AttentiveStatisticsPooling(4, attention_channels=3)
    asp.eval()
    asp(lamina.tensor(x))
    changed = x.copy()
    changed[:, 4:] = 100.0
    a = asp(lamina.tensor(x), lengths=np.array([4, 4])).numpy()
    b = asp(lamina.tensor(changed), lengths=np.array([4, 4])).numpy()
    assert_close(a, b, 1e-12)


@pytest.mark.parametrize("c_in", [8, 5])
def test_se_res2net_block_matches_torch_rewrite(f64, c_in):
    x, lengths = randn(2, 9, c_in, seed=6), np.array([9, 6])
    block = SERes2NetBlock(8, res2net_scale=4, se_channels=3, dilation=2)
    block(lamina.tensor(x), lengths)
    mask = torch.tensor(_mask(lengths, 9)[:, None, :])
    _compare(block, TorchSERes2Net(c_in, 8, 4, 3, 2), x, lambda m, t: m(t, lengths), lambda m, t: m(t, mask))


def test_small_ecapa_matches_torch_rewrite(f64):
    x, lengths = randn(3, 10, 5, seed=7), np.array([10, 7, 9])
    model = ECAPA_TDNN(channels=8, embedding_dim=4, res2net_scale=4, se_channels=3, attention_channels=3)
    model(lamina.tensor(x), lengths)
    mask = torch.tensor(_mask(lengths, 10)[:, None, :])
    _compare(model, TorchECAPA(5, 8, 4, scale=4, se=3, attention=3), x, lambda m, t: m(t, lengths),
             lambda m, t: m(t, mask))


def test_ecapa_c512_parameter_count_matches_torch_rewrite():
    model = ECAPA_TDNN(channels=512)
    model(lamina.tensor(np.zeros((2, 6, 80), dtype=np.float32)))
    reference = sum(p.numel() for p in TorchECAPA(80, 512, 192).parameters())
    assert model.num_parameters() == reference == 6_194_048       # SpeechBrain's / the paper's "6.2M"


def test_errors():
    with pytest.raises(ShapeError, match="more than 14 frames"):
        XVector(4, 4, 3)(lamina.tensor(np.zeros((2, 14, 3))))
    with pytest.raises(ShapeError, match="lengths must be 2 integer"):
        StatisticsPooling()(lamina.tensor(np.zeros((2, 5, 3))), lengths=np.array([5.0, 2.0]))
    with pytest.raises(ValueError, match=r"lengths must lie in \[1, 5\]"):
        StatisticsPooling()(lamina.tensor(np.zeros((2, 5, 3))), lengths=np.array([6, 2]))
    with pytest.raises(ShapeError, match="expected 4 channels"):
        AttentiveStatisticsPooling(4)(lamina.tensor(np.zeros((2, 5, 3))))
    with pytest.raises(ValueError, match="scale=3 must divide channels=8"):
        SERes2NetBlock(8, res2net_scale=3)


def test_gradcheck_attentive_pooling_and_se_res2net_block(f64):
    x, lengths = randn(2, 5, 4, seed=8), np.array([5, 3])
    asp = AttentiveStatisticsPooling(4, attention_channels=3)
    asp(lamina.tensor(x))
    assert check_gradients(lambda t: asp(t, lengths=lengths), x)
    block = SERes2NetBlock(4, res2net_scale=2, se_channels=2, dilation=2)
    block(lamina.tensor(x))
    assert check_gradients(lambda t: block(t, lengths), x)
