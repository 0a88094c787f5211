"""The pointer network: its teacher-forced logits and gradients equal a torch rewrite of the
paper's formulas, masking keeps each position to one pointer, greedy and beam decoding give
permutations, it learns to sort, and the sorting and convex-hull generators are right."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import lamina
from helpers import assert_close
from lamina import optim
from lamina.data import convex_hull_task, sort_numbers_task
from lamina.errors import ShapeError
from lamina.models import PointerNetwork


def _torch_logits(model: PointerNetwork, x: np.ndarray, targets: np.ndarray):
    """u^i_j = v^T tanh(W1 e_j + W2 d_i), with torch's LSTM and LSTMCell holding the
    model's weights (same gate order i, f, g, o; lamina stores W transposed)."""
    params = {name: torch.tensor(p.data, requires_grad=True) for name, p in model.named_parameters()}
    hidden = model.hidden
    encoder = torch.nn.LSTM(x.shape[-1], hidden, batch_first=True).double()
    decoder = torch.nn.LSTMCell(x.shape[-1], hidden).double()
    for module, prefix, suffix in ((encoder, "encoder.", "_l0"), (decoder, "decoder.", "")):
        for torch_name, ours, transpose in (("weight_ih", "kernel", True), ("weight_hh", "recurrent_kernel", True),
                                            ("bias_ih", "bias", False), ("bias_hh", "recurrent_bias", False)):
            value = params[prefix + ours]
            delattr(module, torch_name + suffix)
            setattr(module, torch_name + suffix, value.T if transpose else value)
    xt = torch.tensor(x, requires_grad=True)
    encoded, (h, c) = encoder(xt)
    h, c = h[0], c[0]
    choices = xt
    if model.end_token:                                 # position n: the learned end state, read as start
        encoded = torch.cat([encoded, params["end_state"].expand(x.shape[0], 1, -1)], 1)
        choices = torch.cat([xt, params["start"].expand(x.shape[0], 1, -1)], 1)
    keys = encoded @ params["w1"]
    chosen = torch.zeros(targets.shape[0], encoded.shape[1], dtype=torch.bool)
    rows = torch.arange(targets.shape[0])
    step_input = params["start"].expand(x.shape[0], -1)
    logits = []
    for i in range(targets.shape[1]):
        h, c = decoder(step_input, (h, c))
        scores = torch.tanh(keys + (h @ params["w2"])[:, None]) @ params["v"]
        scores = scores.masked_fill(chosen, -1e9)
        logits.append(scores)
        pointed = torch.as_tensor(targets[:, i])
        chosen = chosen.clone()
        chosen[rows, pointed] = True
        chosen[:, x.shape[1]:] = False
        step_input = choices[rows, pointed]
    return torch.stack(logits, 1), xt, params


@pytest.mark.parametrize("end_token", [False, True])
def test_logits_and_gradients_match_a_torch_rewrite(f64, end_token):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 4, 2))
    targets = np.stack([rng.permutation(4) for _ in range(3)])
    if end_token:                                       # varying lengths, padded with "end" (4)
        targets = np.concatenate([targets, np.full((3, 1), 4)], axis=1)
        targets[1, 2:] = 4
        targets[2, 1:] = 4
    model = PointerNetwork(2, hidden=5, attention_units=3, end_token=end_token)
    xl = lamina.tensor(x, requires_grad=True)
    ours = model(xl, targets)
    theirs, xt, params = _torch_logits(model, x, targets)
    assert_close(ours.numpy(), theirs.detach().numpy(), 1e-10, "logits")
    assert (ours.numpy()[0, 3] < -1e8).sum() == 3                       # step 4 of row 0: three positions masked
    upstream = rng.standard_normal(ours.shape)
    (ours * lamina.tensor(upstream)).sum().backward()
    (theirs * torch.tensor(upstream)).sum().backward()
    assert_close(xl.grad, xt.grad.numpy(), 1e-9, "gradient of x")
    for name, p in model.named_parameters():
        assert_close(p.grad, params[name].grad.numpy(), 1e-9, f"gradient of {name}")


def test_gradcheck(f64):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 3, 1))
    targets = np.array([[2, 0, 1], [1, 2, 0]])
    model = PointerNetwork(1, hidden=2, attention_units=2, mask_chosen=False)
    model(x, targets)
    assert lamina.gradcheck(lambda *_: model(x, targets), *model.parameters())


def test_decoding_gives_permutations_and_beam_is_no_worse_than_greedy():
    x, _ = sort_numbers_task(6, 5, seed=3)
    model = PointerNetwork(1, hidden=8)
    greedy = model.decode(x)
    beam = model.decode(x, beam_width=3)
    for ids in (greedy, beam):
        assert ids.shape == (6, 5)
        assert (np.sort(ids, axis=1) == np.arange(5)).all()
    # a beam of width 1 through the search path is greedy decoding
    assert (np.stack([model._beam(lamina.tensor(x[i:i + 1]), 5, 1) for i in range(6)]) == greedy).all()

    def log_likelihood(ids):
        logits = model(x, ids).numpy().astype(np.float64)
        logits -= logits.max(axis=-1, keepdims=True)
        log_p = logits - np.log(np.exp(logits).sum(axis=-1, keepdims=True))
        return np.take_along_axis(log_p, ids[..., None], axis=-1).sum(axis=(1, 2))

    assert (log_likelihood(beam) >= log_likelihood(greedy) - 1e-4).all()


def test_learns_to_sort_five_numbers():
    model = PointerNetwork(1, hidden=32)
    opt = optim.Adam(model, lr=0.01)
    for step in range(120):
        x, order = sort_numbers_task(64, 5, seed=step + 1)
        cost = model.loss(x, order)
        opt.zero_grad()
        cost.backward()
        opt.step()
    x, order = sort_numbers_task(300, 5, seed=10_000)
    accuracy = (model.decode(x) == order).all(axis=1).mean()
    assert accuracy > 0.75                                     # measured 0.9 (whole sequences right)
    assert model.training


def test_end_token_ends_decoding():
    points, hulls = convex_hull_task(4, 6, seed=0)
    model = PointerNetwork(2, hidden=8, end_token=True)
    greedy = model.decode(points)
    beam = model.decode(points, beam_width=3)
    for ids in (greedy, beam):
        assert ids.shape[1] <= 7 and ids.max() <= 6
        for row in ids:
            pointed = list(row[:list(row).index(6)]) if 6 in row else list(row)
            assert len(set(pointed)) == len(pointed)                    # each point at most once
            assert (row[len(pointed):] == 6).all()                      # "end", then padding with it
    targets = np.full((4, 7), 6)
    for i, hull in enumerate(hulls):
        targets[i, :len(hull)] = hull
    assert np.isfinite(model.loss(points, targets).numpy())


def test_generators():
    x, order = sort_numbers_task(4, 6, seed=0)
    assert x.shape == (4, 6, 1) and order.shape == (4, 6)
    assert (np.diff(np.take_along_axis(x[..., 0], order, axis=1), axis=1) >= 0).all()
    points, hulls = convex_hull_task(20, 8, seed=0)
    assert points.shape == (20, 8, 2) and len(hulls) == 20
    for cloud, hull in zip(points.astype(np.float64), hulls):
        assert hull[0] == hull.min() and len(set(hull)) == len(hull) >= 3
        corners = cloud[hull]
        edges = np.roll(corners, -1, axis=0) - corners
        after = np.roll(edges, -1, axis=0)
        assert (edges[:, 0] * after[:, 1] - edges[:, 1] * after[:, 0] > 0).all()     # turns left: counter-clockwise
        inside = np.setdiff1d(np.arange(8), hull)
        for p in cloud[inside]:                                 # every other point is left of every edge
            assert (edges[:, 0] * (p[1] - corners[:, 1]) - edges[:, 1] * (p[0] - corners[:, 0]) >= -1e-12).all()


def test_errors():
    model = PointerNetwork(2, hidden=4)
    x = np.zeros((2, 3, 2), dtype=np.float32)
    with pytest.raises(ShapeError, match=r"\(batch, n, 2\)"):
        model(np.zeros((2, 3, 1), dtype=np.float32), np.zeros((2, 3), dtype=np.int64))
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        model(x, np.array([[0, 1, 3], [0, 1, 2]]))
    with pytest.raises(ValueError, match="pointed at once"):
        model(x, np.zeros((2, 4), dtype=np.int64))
    with pytest.raises(ShapeError, match="integer positions"):
        model(x, np.zeros((3, 3), dtype=np.int64))
    with pytest.raises(ValueError, match="at most 3 steps"):
        model.decode(x, steps=4)


def test_saves_and_loads(tmp_path):
    x, order = sort_numbers_task(2, 4, seed=0)
    model = PointerNetwork(1, hidden=6, mask_chosen=False)
    before = model(x, order).numpy()
    lamina.save(model, tmp_path / "pointer.safetensors")
    again = lamina.load(tmp_path / "pointer.safetensors")
    np.testing.assert_array_equal(again(x, order).numpy(), before)
    assert again.get_config() == model.get_config()
    ended = PointerNetwork(1, hidden=3, end_token=True)
    lamina.save(ended, tmp_path / "ended.safetensors")
    assert "end_state" in dict(lamina.load(tmp_path / "ended.safetensors").named_parameters())
