"""lamina.keras masks: Embedding(mask_zero) and Masking make them, layers pass them on, the
recurrent layers (Keras 3's zero_output_for_mask: masked steps repeat the previous output,
or give zeros), GlobalAveragePooling1D, MultiHeadAttention and the loss use them; and the
recurrent layers' variational dropout, checked against the same step-by-step torch run."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tests.helpers import check_gradients, check_second_derivatives, randn

import lamina
from lamina import keras
from lamina.functional.recurrent import gru, lstm, simple_rnn
from lamina.keras import layers
from lamina.keras.masking import mask_of

KINDS = ("SimpleRNN", "GRU", "LSTM")



def _layer(kind: str, units: int = 4, **options):
    layer = getattr(layers, kind)(units, **options)
    layer.build((None, None, 3))
    rng = np.random.default_rng(7)
    layer.load_state_dict({k: rng.normal(0, 0.5, np.shape(v)) for k, v in layer.state_dict().items()})
    return layer


def _torch_run(kind: str, layer, x, mask, go_backwards: bool = False, x_keep=None, h_keep=None,
               zero_output: bool = False):
    """Keras's carry rule step by step in torch: h_t = m_t h_new + (1 - m_t) h_{t-1}; the output
    at a masked step repeats the previous output, y_t = m_t h_new + (1 - m_t) y_{t-1} from
    y_0 = 0 (Keras 3's zero_output_for_mask=False), or is zero with ``zero_output``;
    ``x_keep`` (N, D) and ``h_keep`` (N, H) scale the input and the state fed to the products
    at every step (variational dropout). Returns (outputs (N, T, H), final h, torch leaves by
    name)."""
    leaves = {k: torch.tensor(np.asarray(v), requires_grad=True) for k, v in layer.state_dict().items()}
    x = torch.tensor(x, requires_grad=True)
    leaves["x"] = x
    m = torch.tensor(mask, dtype=torch.float64)
    if go_backwards:
        x_steps, m = x.flip(1), m.flip(1)
    else:
        x_steps = x
    n, steps, _ = x.shape
    units = leaves["recurrent_kernel"].shape[0]
    h = c = y = torch.zeros(n, units, dtype=torch.float64)
    outputs = []
    for t in range(steps):
        xt, mt = x_steps[:, t], m[:, t:t + 1]
        if x_keep is not None:
            xt = xt * torch.tensor(x_keep)
        z = xt @ leaves["kernel"] + leaves["bias"]
        rec = (h if h_keep is None else h * torch.tensor(h_keep)) @ leaves["recurrent_kernel"]
        if kind == "SimpleRNN":
            new_h, new_c = torch.tanh(z + rec), c
        elif kind == "GRU":
            rec = rec + leaves["recurrent_bias"]
            x_r, x_z, x_n = z.chunk(3, dim=1)
            h_r, h_z, h_n = rec.chunk(3, dim=1)
            r, u = torch.sigmoid(x_r + h_r), torch.sigmoid(x_z + h_z)
            new_h, new_c = (1 - u) * torch.tanh(x_n + r * h_n) + u * h, c
        else:
            i, f, g, o = (z + rec).chunk(4, dim=1)
            new_c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            new_h = torch.sigmoid(o) * torch.tanh(new_c)
        h, c = mt * new_h + (1 - mt) * h, mt * new_c + (1 - mt) * c
        y = mt * new_h if zero_output else mt * new_h + (1 - mt) * y
        outputs.append(y)
    return torch.stack(outputs, 1), h, leaves


def _masks(pattern: str) -> np.ndarray:
    if pattern == "right":
        return np.arange(6)[None, :] < np.array([6, 4, 2])[:, None]
    if pattern == "left":
        return np.arange(6)[None, :] >= np.array([0, 2, 5])[:, None]
    return np.array([[1, 0, 1, 1, 0, 1], [0, 1, 1, 0, 0, 1], [1, 1, 0, 1, 1, 0]], dtype=bool)


def _compare_with_torch(kind, layer, x, mask, go_backwards=False, training=None):
    sequence, final = layer(lamina.tensor(x, requires_grad=True), mask=mask, training=training)[:2]
    ref_seq, ref_final, leaves = _torch_run(kind, layer, x, mask, go_backwards)
    np.testing.assert_allclose(sequence.numpy(), ref_seq.detach().numpy(), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(final.numpy(), ref_final.detach().numpy(), rtol=1e-9, atol=1e-12)
    up = randn(*sequence.shape, seed=3)
    x_l = lamina.tensor(x, requires_grad=True)
    sequence, final = layer(x_l, mask=mask, training=training)[:2]
    ((sequence * lamina.tensor(up)).sum() + final.sum()).backward()
    ((ref_seq * torch.tensor(up)).sum() + ref_final.sum()).backward()
    grads = {name: p.grad for name, p in layer.named_parameters()} | {"x": x_l.grad}
    for name, grad in grads.items():
        np.testing.assert_allclose(grad, leaves[name].grad.numpy(), rtol=1e-8, atol=1e-11, err_msg=name)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("pattern", ["left", "holes"])
def test_general_masks_follow_the_carry_rule_as_torch(kind, pattern, float64):
    layer = _layer(kind, return_sequences=True, return_state=True)
    _compare_with_torch(kind, layer, randn(3, 6, 3), _masks(pattern))


def test_the_fused_ops_take_general_masks_with_first_and_second_derivatives():
    mask = np.array([[1, 0, 1, 1], [0, 1, 1, 0]], dtype=bool)
    ops = {
        "simple_rnn": (lambda x, w_x, w_h: simple_rnn(x, None, w_x, w_h, mask=mask)[0], 4),
        "gru": (lambda x, w_x, w_h: gru(x, None, w_x, w_h, mask=mask)[0], 12),
        "lstm": (lambda x, w_x, w_h: lstm(x, None, None, w_x, w_h, mask=mask)[1], 16),
    }
    for name, (op, width) in ops.items():
        arrays = randn(2, 4, 3), randn(3, width, seed=1) * 0.5, randn(4, width, seed=2) * 0.5
        assert check_gradients(op, *arrays), name
        assert check_second_derivatives(op, *arrays), name
    with pytest.raises(ValueError, match="either lengths or mask"):
        gru(randn(2, 4, 3), None, randn(3, 12), randn(4, 12), lengths=np.array([4, 2]), mask=mask)


@pytest.mark.parametrize("kind", KINDS)
def test_zero_output_for_mask_gives_zeros_at_the_masked_steps(kind, float64):
    layer = _layer(kind, return_sequences=True, zero_output_for_mask=True)
    assert layer.get_config()["zero_output_for_mask"] and not _layer(kind).zero_output_for_mask
    x, mask = randn(3, 6, 3), _masks("left")
    sequence = layer(lamina.tensor(x), mask=mask)
    reference, _, _ = _torch_run(kind, layer, x, mask, zero_output=True)
    np.testing.assert_allclose(sequence.numpy(), reference.detach().numpy(), rtol=1e-9, atol=1e-12)
    np.testing.assert_array_equal(sequence.numpy()[~mask], 0.0)
    carried = _layer(kind, return_sequences=True)(lamina.tensor(x), mask=_masks("holes")).numpy()
    np.testing.assert_array_equal(carried[0, 1], carried[0, 0])        # mask [1, 0, ...]: step 0 repeated
    np.testing.assert_array_equal(carried[1, 0], 0.0)                   # [0, 1, ...]: nothing read yet
    assert check_gradients(lambda v: layer(v, mask=_masks("holes")), x)


def test_go_backwards_reads_the_sequence_and_its_mask_from_the_end(float64):
    layer = _layer("LSTM", return_sequences=True, return_state=True, go_backwards=True)
    _compare_with_torch("LSTM", layer, randn(3, 6, 3), _masks("holes"), go_backwards=True)


@pytest.mark.parametrize("kind", KINDS)
def test_right_padding_equals_the_trimmed_sequences(kind, float64):
    layer = _layer(kind, return_sequences=True, return_state=True)
    x, mask = randn(3, 6, 3), _masks("right")
    x_l = lamina.tensor(x, requires_grad=True)
    sequence, final = layer(x_l, mask=mask)[:2]
    (sequence.sum() + final.sum()).backward()
    masked_grads = {name: p.grad.copy() for name, p in layer.named_parameters()}
    layer.zero_grad()
    total = None
    for i, length in enumerate(mask.sum(axis=1)):
        piece = lamina.tensor(x[i:i + 1, :length])
        seq_i, final_i = layer(piece)[:2]
        np.testing.assert_allclose(sequence.numpy()[i, :length], seq_i.numpy()[0], rtol=1e-12)
        carried = np.broadcast_to(seq_i.numpy()[0, -1], sequence.numpy()[i, length:].shape)
        np.testing.assert_allclose(sequence.numpy()[i, length:], carried, rtol=1e-12)
        np.testing.assert_allclose(final.numpy()[i], final_i.numpy()[0], rtol=1e-12)
        term = seq_i.sum() + seq_i[:, -1].sum() * float(6 - length) + final_i.sum()
        total = term if total is None else total + term
    total.backward()
    for name, p in layer.named_parameters():
        np.testing.assert_allclose(masked_grads[name], p.grad, rtol=1e-10, err_msg=name)


def test_bidirectional_with_a_mask(float64):
    layer = layers.Bidirectional(layers.GRU(4, return_sequences=True))
    layer.build((None, 6, 3))
    x, mask = randn(3, 6, 3), _masks("holes")
    out = layer(lamina.tensor(x), mask=mask).numpy()
    forward, _, _ = _torch_run("GRU", layer.forward_layer, x, mask, zero_output=True)
    backward, _, _ = _torch_run("GRU", layer.backward_layer, x, mask, go_backwards=True, zero_output=True)
    expected = torch.cat([forward, backward.flip(1)], dim=-1).detach().numpy()
    np.testing.assert_allclose(out, expected, rtol=1e-9, atol=1e-12)
    np.testing.assert_array_equal(out[~mask], 0.0)


def test_masked_mean_pool_and_its_gradients(float64):
    pool = layers.GlobalAveragePooling1D()
    x, mask = randn(3, 6, 2), _masks("holes")
    expected = (x * mask[:, :, None]).sum(axis=1) / mask.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(pool(lamina.tensor(x), mask=mask).numpy(), expected, rtol=1e-12)
    assert check_gradients(lambda v: pool(v, mask=mask), x)
    np.testing.assert_allclose(pool(lamina.tensor(x)).numpy(), x.mean(axis=1), rtol=1e-12)


def test_embedding_and_masking_make_masks_that_pass_through_time_steps_layers():
    ids = np.array([[3, 1, 0, 0], [0, 2, 5, 1]])
    model = keras.Sequential([keras.Input((4,), dtype="int64"), layers.Embedding(6, 3, mask_zero=True),
                              layers.Dense(5), layers.Dropout(0.1), layers.Activation("relu"),
                              layers.TimeDistributed(layers.Dense(2))])
    with lamina.keras.masking.tracking_masks(model):
        out = model(ids)
        np.testing.assert_array_equal(mask_of(out), ids != 0)
    values = np.array([[[1.0, 0.0], [0.0, 0.0], [0.0, 2.0]]])
    masking = layers.Masking()
    np.testing.assert_array_equal(masking.compute_mask(values), [[True, False, True]])
    np.testing.assert_array_equal(masking(lamina.tensor(values)).numpy(), values)
    shifted = layers.Masking(mask_value=1.0)
    np.testing.assert_array_equal(shifted(lamina.tensor(values)).numpy()[0, 0], [1.0, 0.0])


def test_masks_reach_the_recurrent_layer_in_sequential_and_functional_models(float64):
    ids = np.array([[0, 0, 3, 1, 4], [2, 0, 5, 1, 0], [1, 2, 3, 4, 5]])
    embedding, lstm = layers.Embedding(6, 3, mask_zero=True), layers.LSTM(4)
    model = keras.Sequential([keras.Input((5,), dtype="int64"), embedding, lstm])
    vectors = embedding(ids)
    expected = lstm(vectors, mask=ids != 0).numpy()
    assert not np.allclose(lstm(vectors).numpy(), expected)
    np.testing.assert_allclose(model.predict(ids, verbose=0), expected, rtol=1e-12)
    inputs = keras.Input((5,), dtype="int64")
    functional = keras.Model(inputs, lstm(layers.Dense(3)(embedding(inputs))))
    dense = next(layer for layer in functional.layers if type(layer).__name__ == "Dense")
    np.testing.assert_allclose(functional.predict(ids, verbose=0),
                               lstm(dense(vectors), mask=ids != 0).numpy(), rtol=1e-12)


def test_attention_ignores_masked_keys(float64):
    ids = np.array([[1, 2, 0, 0], [3, 4, 5, 0]])
    inputs = keras.Input((4,), dtype="int64")
    vectors = layers.Embedding(6, 8, mask_zero=True)(inputs)
    attended = layers.MultiHeadAttention(2, 4)(vectors, vectors)
    model = keras.Model(inputs, layers.GlobalAveragePooling1D()(attended))
    out = model.predict(ids, verbose=0)
    embedding, mha = (next(layer for layer in model.layers if type(layer).__name__ == name)
                      for name in ("Embedding", "MultiHeadAttention"))
    x = embedding(ids)
    keys = np.broadcast_to((ids != 0)[:, None, :], (2, 4, 4))
    y = mha(x, x, attention_mask=keys).numpy()
    expected = (y * (ids != 0)[:, :, None]).sum(axis=1) / (ids != 0).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(out, expected, rtol=1e-10)
    unmasked = mha(x, x).numpy()
    assert not np.allclose(y, unmasked)


def test_the_loss_of_a_masked_sequence_output_is_the_mean_over_unmasked_steps(float64):
    ids = np.array([[1, 2, 3, 0], [4, 0, 0, 0], [1, 1, 2, 2]])
    labels = np.array([[0, 1, 2, 0], [1, 0, 0, 0], [2, 2, 1, 0]])
    model = keras.Sequential([keras.Input((4,), dtype="int64"), layers.Embedding(5, 3, mask_zero=True),
                              layers.SimpleRNN(4, return_sequences=True), layers.Dense(3, activation="softmax")])
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    probabilities = model.predict(ids, verbose=0)
    picked = np.take_along_axis(probabilities, labels[:, :, None], axis=2)[:, :, 0]
    mask = ids != 0
    expected = -(np.log(picked) * mask).sum() / mask.sum()
    assert model.evaluate(ids, labels, verbose=0) == pytest.approx(expected, rel=1e-9)
    weights = np.array([1.0, 2.0, 0.5])
    weighted = -(np.log(picked) * mask * weights[:, None]).sum() / mask.sum()
    assert model.evaluate(ids, labels, sample_weight=weights, verbose=0) == pytest.approx(weighted, rel=1e-9)


def test_a_masked_model_learns_the_last_digit_of_variable_length_sequences():
    lamina.manual_seed(0)
    rng = np.random.default_rng(0)
    n, steps = 384, 8
    lengths = rng.integers(2, steps + 1, n)
    ids = rng.integers(1, 10, (n, steps)) * (np.arange(steps)[None, :] < lengths[:, None])
    labels = (ids[np.arange(n), lengths - 1] > 5).astype(np.int64)
    model = keras.Sequential([keras.Input((steps,), dtype="int64"), layers.Embedding(10, 8, mask_zero=True),
                              layers.GRU(16), layers.Dense(2, activation="softmax")])
    model.compile(optimizer=keras.optimizers.Adam(0.02), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    model.fit(ids[:320], labels[:320], epochs=12, batch_size=32, verbose=0)
    assert model.evaluate(ids[320:], labels[320:], verbose=0, return_dict=True)["accuracy"] > 0.9
    longer = np.pad(ids[320:], ((0, 0), (0, 4)))         # more padding changes nothing
    np.testing.assert_allclose(model.predict(longer, verbose=0), model.predict(ids[320:], verbose=0), atol=1e-6)


# -- variational dropout -----------------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
def test_dropout_uses_one_mask_per_sequence_at_every_step(kind, float64):
    layer = _layer(kind, return_sequences=True, return_state=True, dropout=0.3, recurrent_dropout=0.4)
    x, mask = randn(3, 6, 3), _masks("holes")
    lamina.manual_seed(11)
    sequence, final = layer(lamina.tensor(x), mask=mask, training=True)[:2]
    x_keep, h_keep = layer.dropout_masks
    assert x_keep.shape == (3, 3) and h_keep.shape == (3, 4)
    ref_seq, ref_final, _ = _torch_run(kind, layer, x, mask, x_keep=x_keep, h_keep=h_keep)
    np.testing.assert_allclose(sequence.numpy(), ref_seq.detach().numpy(), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(final.numpy(), ref_final.detach().numpy(), rtol=1e-9, atol=1e-12)
    lamina.manual_seed(11)
    again = layer(lamina.tensor(x), mask=mask, training=True)[0]
    np.testing.assert_array_equal(again.numpy(), sequence.numpy())

    def fixed_masks(v):
        lamina.manual_seed(11)
        return layer(v, mask=mask, training=True)[0]

    assert check_gradients(fixed_masks, x)


def test_dropout_keeps_one_minus_the_rate_and_is_the_identity_at_inference(float64):
    layer = _layer("LSTM", dropout=0.25, recurrent_dropout=0.5)
    x = randn(2000, 2, 3)
    lamina.manual_seed(3)
    layer(lamina.tensor(x), training=True)
    for keep, rate in zip(layer.dropout_masks, (0.25, 0.5)):
        assert set(np.unique(keep)) <= {0.0, 1.0 / (1.0 - rate)}
        assert abs((keep > 0).mean() - (1.0 - rate)) < 0.02
    layer.eval()
    plain = _layer("LSTM")
    np.testing.assert_allclose(layer(lamina.tensor(x[:4])).numpy(), plain(lamina.tensor(x[:4])).numpy(), rtol=1e-12)
    layer.train()
    assert not np.allclose(layer(lamina.tensor(x[:4])).numpy(), plain(lamina.tensor(x[:4])).numpy())
