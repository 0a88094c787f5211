"""Show, Attend and Tell: one decoder step (attention, gating scalar, LSTM, deep output)
against a torch rewrite in float64, values and gradients of every input and weight; a float64
gradient check; the loss (cross-entropy plus the doubly stochastic regularization) against
NumPy; greedy and beam decoding with their attention maps; rebuilding from the config; and
learning to caption held-out digit images, scored by BLEU-4 and CIDEr-D."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import lamina
from helpers import check_gradients
from lamina.backend import manual_seed
from lamina.data import load_digits
from lamina.errors import ShapeError
from lamina.models import ShowAttendTell
from lamina.text import cider_d, corpus_bleu
from lamina.vision import digit_caption_vocabulary, digit_captions

VOCAB, EMBED, HIDDEN, UNITS, CHANNELS = 9, 5, 6, 4, 3


def _built_model(seed: int = 0) -> ShowAttendTell:
    manual_seed(seed)
    model = ShowAttendTell(VOCAB, embed_dim=EMBED, hidden=HIDDEN, attention_units=UNITS,
                           encoder_channels=(CHANNELS,), attention_lambda=0.7)
    images = np.random.default_rng(seed).random((2, 4, 6, 1))
    model.loss(images, np.array([[1, 2], [3, 4]]), np.array([[2, 3], [4, 5]]))   # builds every layer
    return model


def _grad(x) -> np.ndarray:
    return np.asarray(x.grad.numpy() if hasattr(x.grad, "numpy") else x.grad)


def _torch_step(p: dict, ids, features, h, c):
    """Xu et al.'s decoder step written with torch ops; the LSTM is torch.nn.LSTMCell."""
    projected = features @ p["attend_features.weight"]
    state_part = h @ p["attend_state.weight"] + p["attend_state.bias"]
    hidden = torch.tanh(projected + state_part[:, None, :])
    alpha = torch.softmax((hidden @ p["attention_score.weight"])[..., 0], dim=-1)
    context = torch.einsum("nl,nld->nd", alpha, features)
    z = torch.sigmoid(h @ p["gate.weight"] + p["gate.bias"]) * context
    embedded = p["embedding.weight"][torch.as_tensor(ids)]
    cell = torch.nn.LSTMCell(EMBED + CHANNELS, HIDDEN, dtype=torch.float64)
    weights = {"weight_ih": p["cell.kernel"].T, "weight_hh": p["cell.recurrent_kernel"].T,
               "bias_ih": p["cell.bias"], "bias_hh": p["cell.recurrent_bias"]}
    h_new, c_new = torch.func.functional_call(cell, weights, (torch.cat([embedded, z], dim=-1), (h, c)))
    out = (embedded + h_new @ p["state_to_output.weight"] + p["state_to_output.bias"]
           + z @ p["context_to_output.weight"])
    return out @ p["output.weight"] + p["output.bias"], h_new, c_new, alpha


def test_one_step_and_first_state_match_a_torch_rewrite(f64):
    model = _built_model()
    rng = np.random.default_rng(1)
    ids = np.array([1, 7])
    arrays = {"features": rng.normal(size=(2, 4, CHANNELS)), "h": rng.normal(size=(2, HIDDEN)),
              "c": rng.normal(size=(2, HIDDEN))}
    ours = {k: lamina.tensor(v, requires_grad=True) for k, v in arrays.items()}
    scores, (h, c), alpha = model.step(ids, (ours["h"], ours["c"]), ours["features"],
                                       model.attend_features(ours["features"]))
    h0, c0 = model.initial_state(ours["features"])
    params = {name: p for name, p in model.named_parameters() if not name.startswith("encoder.")}
    theirs = {k: torch.tensor(v, requires_grad=True) for k, v in arrays.items()}
    torch_params = {name: torch.tensor(p.numpy(), requires_grad=True) for name, p in params.items()}
    mean = theirs["features"].mean(dim=1)
    expected = (*_torch_step(torch_params, ids, theirs["features"], theirs["h"], theirs["c"]),
                torch.tanh(mean @ torch_params["init_h.weight"] + torch_params["init_h.bias"]),
                torch.tanh(mean @ torch_params["init_c.weight"] + torch_params["init_c.bias"]))
    upstream = [rng.normal(size=tuple(t.shape)) for t in expected]
    total_l = sum(lamina.functional.sum(o * lamina.tensor(u)) for o, u in zip((scores, h, c, alpha, h0, c0), upstream))
    total_t = sum((o * torch.tensor(u)).sum() for o, u in zip(expected, upstream))
    for o, e in zip((scores, h, c, alpha, h0, c0), expected):
        np.testing.assert_allclose(o.numpy(), e.detach().numpy(), rtol=1e-10, atol=1e-12)
    for p in params.values():
        p.grad = None
    total_l.backward()
    total_t.backward()
    for k in arrays:
        np.testing.assert_allclose(_grad(ours[k]), theirs[k].grad.numpy(), rtol=1e-9, atol=1e-12, err_msg=k)
    for name, p in params.items():
        np.testing.assert_allclose(_grad(p), torch_params[name].grad.numpy(), rtol=1e-9, atol=1e-12,
                                   err_msg=name)


def test_step_gradients_float64(f64):
    model = _built_model()
    rng = np.random.default_rng(2)

    def fn(features, h, c):
        scores, (h2, c2), alpha = model.step(np.array([2, 5]), (h, c), features, model.attend_features(features))
        return (lamina.functional.sum(scores * scores) + lamina.functional.sum(h2 * c2)
                + lamina.functional.sum(alpha * alpha))

    assert check_gradients(fn, rng.normal(size=(2, 4, CHANNELS)), rng.normal(size=(2, HIDDEN)),
                           rng.normal(size=(2, HIDDEN)))


def test_loss_is_cross_entropy_plus_doubly_stochastic_regularization(f64):
    model = _built_model()
    rng = np.random.default_rng(3)
    images = rng.random((2, 4, 6, 1))
    captions_in = np.array([[1, 4, 5], [1, 6, 0]])
    captions_out = np.array([[4, 5, 2], [6, 2, 0]])              # id 0 pads the second caption
    scores, alphas = (t.numpy() for t in model(images, captions_in))
    assert scores.shape == (2, 3, VOCAB) and alphas.shape == (2, 3, 6)   # a 2 x 3 grid
    np.testing.assert_allclose(alphas.sum(axis=-1), 1.0)
    log_p = scores - scores.max(-1, keepdims=True)
    log_p -= np.log(np.exp(log_p).sum(-1, keepdims=True))
    keep = captions_out != 0
    words = -np.take_along_axis(log_p, captions_out[..., None], -1)[..., 0][keep].mean()
    attended = (alphas * keep[..., None]).sum(axis=1)             # padding steps left out of sum_t alpha
    expected = words + 0.7 * ((1 - attended) ** 2).sum(axis=1).mean()
    assert model.loss(images, captions_in, captions_out, pad_id=0).item() == pytest.approx(expected, rel=1e-10)
    model.attention_lambda = 0.0
    assert model.loss(images, captions_in, captions_out, pad_id=0).item() == pytest.approx(words, rel=1e-10)


def test_greedy_and_beam_decoding_with_attention_maps():
    model = _built_model()
    images = np.random.default_rng(4).random((3, 4, 6, 1)).astype(np.float32)
    ids, maps = model.caption(images, bos_id=1, eos_id=2, max_length=5, return_attention=True)
    assert ids.shape[0] == 3 and maps.shape == (3, ids.shape[1], 2, 3)      # a 2 x 3 feature grid
    np.testing.assert_allclose(maps.sum(axis=(2, 3)), 1.0, rtol=1e-5)
    # greedy: each id is the argmax of the teacher-forced scores on the decoded prefix
    shifted = np.concatenate([np.ones((3, 1), dtype=np.int64), ids[:, :-1]], axis=1)
    scores, alphas = model(images, shifted)
    first_eos = [list(row).index(2) if 2 in row else len(row) - 1 for row in ids]
    for i, end in enumerate(first_eos):
        np.testing.assert_array_equal(scores.numpy()[i, :end + 1].argmax(-1), ids[i, :end + 1])
        np.testing.assert_allclose(maps[i, :end + 1].reshape(end + 1, -1), alphas.numpy()[i, :end + 1], rtol=1e-5)

    def log_prob(row):
        prefix = np.concatenate([[1], row[:-1]])[None]
        s = model(images[:1], prefix)[0].numpy()[0].astype(np.float64)
        s -= s.max(-1, keepdims=True)
        s -= np.log(np.exp(s).sum(-1, keepdims=True))
        return s[np.arange(len(row)), row].sum()

    greedy = model.caption(images[:1], 1, 2, max_length=4)[0]
    beam, beam_maps = model.caption(images[:1], 1, 2, max_length=4, beam_width=4, return_attention=True)
    assert beam_maps.shape == (1, beam.shape[1], 2, 3)

    def trim(row):
        return row[:list(row).index(2) + 1] if 2 in row else row

    assert log_prob(trim(beam[0])) >= log_prob(trim(greedy)) - 1e-6


def test_errors_are_clear():
    model = _built_model()
    with pytest.raises(ShapeError, match="NHWC"):
        model(np.zeros((4, 6, 1)), np.zeros((1, 2), dtype=np.int64))
    with pytest.raises(ShapeError, match="2 images but 3 captions"):
        model(np.zeros((2, 4, 6, 1)), np.zeros((3, 2), dtype=np.int64))
    with pytest.raises(ShapeError, match="captions_out has shape"):
        model.loss(np.zeros((2, 4, 6, 1)), np.zeros((2, 2), dtype=np.int64), np.zeros((2, 3), dtype=np.int64))
    with pytest.raises(ValueError, match="attention_lambda"):
        ShowAttendTell(5, attention_lambda=-1)


def test_learns_to_caption_held_out_digits():
    images, labels = load_digits(size=8)
    vocab = digit_caption_vocabulary()
    x_train, train_captions = digit_captions(1024, 4, digits=(images[:1400], labels[:1400]), seed=1)
    x_test, test_captions = digit_captions(100, 4, digits=(images[1400:], labels[1400:]), seed=2)
    ids = np.stack([vocab.encode(c, add_bos=True, add_eos=True) for c in train_captions])
    manual_seed(0)
    # captions of 5 steps over 16 regions: the regularization would pull attention towards uniform
    model = ShowAttendTell(len(vocab), embed_dim=32, hidden=64, attention_units=32, attention_lambda=0.0)
    optimizer = lamina.optim.Adam(model, lr=0.01)
    rng = np.random.default_rng(0)
    for _ in range(11):
        order = rng.permutation(len(x_train))
        for start in range(0, len(order), 64):
            batch = order[start:start + 64]
            loss = model.loss(x_train[batch], ids[batch, :-1], ids[batch, 1:], pad_id=vocab.pad_id)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    decoded = [vocab.decode(row) for row in model.caption(x_test, vocab.bos_id, vocab.eos_id, max_length=8)]
    bleu4 = corpus_bleu(decoded, [test_captions]).score
    cider = cider_d(decoded, [[c] for c in test_captions])[0]
    constant = ["one one one one"] * len(test_captions)          # a caption that ignores the image
    assert corpus_bleu(constant, [test_captions]).score < 3 and cider_d(constant, [[c] for c in test_captions])[0] < 0.5
    # measured after 11 epochs on two BLAS kernels: BLEU-4 21.1 and 23.6, CIDEr-D 2.80 and 3.05
    assert bleu4 > 15 and cider > 2.0, (bleu4, cider, decoded[:3], test_captions[:3])


def test_config_and_weights_rebuild_the_same_captioner():
    model = _built_model()
    images = np.random.default_rng(5).random((2, 4, 6, 1)).astype(np.float32)
    copy = ShowAttendTell(**model.get_config())
    copy.loss(images, np.array([[1, 2], [3, 4]]), np.array([[2, 3], [4, 5]]))
    copy.load_state_dict(model.state_dict())
    np.testing.assert_array_equal(copy.caption(images, 1, 2, max_length=5), model.caption(images, 1, 2, max_length=5))
