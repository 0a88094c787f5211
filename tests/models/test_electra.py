"""ELECTRA: the pre-training loss against a hand computation from the two heads, the replaced-token
labels of sampled tokens, gradients of the shared embeddings from both losses, centred
differences of the whole objective, the token mask, and a discriminator that learns to spot
replaced tokens of a toy grammar."""

from __future__ import annotations

import numpy as np
import pytest

import lamina
from helpers import run_readme_section
from lamina import models, optim

MASK_ID = 9
IDS = np.array([[1, 2, 3, 2, 5, 6], [2, 7, 2, 8, 0, 4]])
MASK = np.array([[0, 1, 1, 0, 1, 0], [1, 0, 1, 0, 0, 1]], dtype=bool)
ATTENTION = np.array([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]])


@pytest.fixture
def f64():
    lamina.set_default_dtype(np.float64)
    yield
    lamina.set_default_dtype(np.float32)


def _electra(**options) -> models.ELECTRA:
    config = {"embedding_size": 6, "hidden_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2,
              "intermediate_size": 10, "generator_hidden_size": 4, "generator_num_hidden_layers": 1,
              "generator_num_attention_heads": 1, "generator_intermediate_size": 6, "max_position_embeddings": 8,
              "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0, "initializer_range": 0.3, **options}
    model = models.ELECTRA(MASK_ID + 1, **config)
    model(np.zeros((1, 6), dtype=np.int64))
    return model


def _softplus(x):
    return np.logaddexp(0.0, x)


def test_replaced_token_labels_count_an_equal_sample_as_original():
    labels = models.replaced_token_labels([[4, 5, 6]], [[4, 1, 6]])
    np.testing.assert_array_equal(labels, [[0.0, 1.0, 0.0]])
    with pytest.raises(lamina.ShapeError, match="share one shape"):
        models.replaced_token_labels([[1, 2]], [[1, 2, 3]])


def test_labels_of_sampled_tokens_equal_to_the_original_are_original():
    model = _electra()
    bias = model.generator_bias
    bias.data = (bias.data + 1e4 * np.eye(MASK_ID + 1)[2]).astype(bias.data.dtype)     # always samples 2
    out = models.electra_pretraining_loss(model, IDS, MASK, MASK_ID, generator=0)
    np.testing.assert_array_equal(out.corrupted_ids, np.where(MASK, 2, IDS))
    expected = (MASK & (IDS != 2)).astype(float)
    np.testing.assert_array_equal(out.rtd_labels, expected)
    assert (out.rtd_labels[MASK & (IDS == 2)] == 0).all() and out.rtd_labels.sum() == 3


def _hand_loss(out, ids, mask, attention=None, weight=50.0):
    g = np.asarray(out.generator_logits.numpy(), dtype=np.float64)
    d = np.asarray(out.discriminator_logits.numpy(), dtype=np.float64)
    log_norm = np.log(np.exp(g - g.max(-1, keepdims=True)).sum(-1)) + g.max(-1)
    picked = np.take_along_axis(g, ids[..., None], -1)[..., 0]
    mlm = (log_norm - picked)[mask].mean()
    y = (out.corrupted_ids != ids).astype(float)
    per_token = _softplus(d) - y * d
    real = np.ones(ids.shape, dtype=bool) if attention is None else attention != 0
    rtd = per_token[real].mean()
    return mlm, rtd, mlm + weight * rtd


@pytest.mark.parametrize("with_padding", [False, True])
def test_loss_equals_a_hand_computation_from_the_two_heads(f64, with_padding):
    model = _electra()
    attention = ATTENTION if with_padding else None
    mask = MASK & (ATTENTION != 0) if with_padding else MASK
    out = models.electra_pretraining_loss(model, IDS, mask, MASK_ID, generator=1, attention_mask=attention)
    assert (out.corrupted_ids[~mask] == IDS[~mask]).all()
    masked = np.where(mask, MASK_ID, IDS)
    np.testing.assert_array_equal(out.generator_logits.numpy(),
                                  model.generator_logits(masked, attention_mask=attention).numpy())
    np.testing.assert_array_equal(out.discriminator_logits.numpy(),
                                  model(out.corrupted_ids, attention_mask=attention).numpy())
    mlm, rtd, total = _hand_loss(out, IDS, mask, attention)
    np.testing.assert_allclose([float(out.mlm_loss.numpy()), float(out.rtd_loss.numpy()), float(out.loss.numpy())],
                               [mlm, rtd, total], rtol=1e-12)
    again = models.electra_pretraining_loss(model, IDS, mask, MASK_ID, generator=1, attention_mask=attention)
    np.testing.assert_array_equal(again.corrupted_ids, out.corrupted_ids)     # the seed fixes the samples


def _gradients(model, loss) -> dict:
    for p in model.parameters():
        p.grad = None
    loss.backward()
    return {name: None if p.grad is None else np.array(p.grad) for name, p in model.named_parameters()}


def _moved(grads, prefix) -> bool:
    found = [g for name, g in grads.items() if name.startswith(prefix)]
    return bool(found) and any(g is not None and np.abs(g).max() > 0 for g in found)


def test_shared_embeddings_learn_from_both_losses_and_sampling_passes_no_gradient(f64):
    model = _electra()
    mlm = _gradients(model, models.electra_pretraining_loss(model, IDS, MASK, MASK_ID, generator=2).mlm_loss)
    rtd = _gradients(model, models.electra_pretraining_loss(model, IDS, MASK, MASK_ID, generator=2).rtd_loss)
    total = _gradients(model, models.electra_pretraining_loss(model, IDS, MASK, MASK_ID, generator=2).loss)
    table = "embeddings.word_embeddings.weight"
    assert np.abs(mlm[table]).max() > 0 and np.abs(rtd[table]).max() > 0
    np.testing.assert_allclose(total[table], mlm[table] + 50.0 * rtd[table], rtol=1e-10, atol=1e-14)
    assert _moved(mlm, "generator_layers") and not _moved(mlm, "discriminator_")
    assert _moved(rtd, "discriminator_layers") and not _moved(rtd, "generator_")   # nothing through the samples


def test_objective_gradients_by_centred_differences(f64):
    model = _electra()
    params = dict(model.named_parameters())

    def objective() -> float:
        with lamina.no_grad():
            return float(models.electra_pretraining_loss(model, IDS, MASK, MASK_ID, generator=4).loss.numpy())

    grads = _gradients(model, models.electra_pretraining_loss(model, IDS, MASK, MASK_ID, generator=4).loss)
    for name, index in (("embeddings.word_embeddings.weight", (2, 1)), ("embeddings.position_embeddings.weight",
                        (3, 0)), ("generator_layers.0.linear1.weight", (1, 2)), ("generator_bias", (5,)),
                        ("discriminator_head.weight", (4, 0)), ("discriminator_layers.0.norm2.bias", (1,))):
        data, h = params[name].data, 1e-6
        saved = data[index]
        data[index] = saved + h
        up = objective()
        data[index] = saved - h
        down = objective()
        data[index] = saved
        np.testing.assert_allclose(grads[name][index], (up - down) / (2 * h), rtol=1e-5, atol=1e-8, err_msg=name)


def test_random_token_mask_chooses_real_tokens_and_at_least_one_per_row():
    ids = np.zeros((50, 6), dtype=np.int64)
    padding = np.ones((50, 6))
    padding[:, 4:] = 0
    mask = models.random_token_mask(ids, 0.05, generator=0, attention_mask=padding)
    assert mask.any(axis=1).all() and not mask[:, 4:].any()
    assert 0.0 < models.random_token_mask(np.zeros((200, 10), dtype=np.int64), 0.15, 1).mean() < 0.3
    with pytest.raises(ValueError, match="probability"):
        models.random_token_mask(ids, 0.0)


def test_errors_name_what_is_wrong():
    model = _electra()
    with pytest.raises(ValueError, match="at least one token"):
        models.electra_pretraining_loss(model, IDS, np.zeros_like(MASK), MASK_ID)
    with pytest.raises(lamina.ShapeError, match="integer token ids"):
        model(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="not divisible"):
        models.ELECTRA(10, hidden_size=6, num_attention_heads=4)


def _topic_sentences(rng, n: int, length: int = 8, topics: int = 3, words: int = 4) -> np.ndarray:
    """A toy grammar: every sentence draws all its words from one topic's ``words`` tokens, so a
    word from another topic is out of place."""
    topic = rng.integers(0, topics, (n, 1))
    return topic * words + rng.integers(0, words, (n, length))


def test_discriminator_learns_to_spot_replaced_tokens():
    lamina.manual_seed(0)
    rng = np.random.default_rng(0)
    vocab = 12
    model = models.ELECTRA(vocab + 1, embedding_size=16, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                           intermediate_size=32, generator_hidden_size=2, generator_num_hidden_layers=1,
                           generator_num_attention_heads=1, generator_intermediate_size=8, max_position_embeddings=8,
                           hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, initializer_range=0.5)
    model(np.zeros((1, 8), dtype=np.int64))
    optimizer = optim.Adam(model, lr=0.01)
    for _ in range(400):
        ids = _topic_sentences(rng, 32)
        out = models.electra_pretraining_loss(model, ids, models.random_token_mask(ids, 0.25, rng), vocab,
                                              generator=rng)
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
    test = np.random.default_rng(1)
    ids = _topic_sentences(test, 512)
    with lamina.no_grad():
        out = models.electra_pretraining_loss(model, ids, models.random_token_mask(ids, 0.25, test), vocab,
                                              generator=test)
    labels = out.rtd_labels
    accuracy = float(((out.discriminator_logits.numpy() > 0) == labels).mean())
    baseline = 1.0 - float(labels.mean())                 # calling every token original
    assert labels.mean() > 0.15, labels.mean()
    assert 1.0 - accuracy < 0.7 * (1.0 - baseline), (accuracy, baseline)      # measured: 0.89 against 0.76


def test_readme_example_runs():
    printed, names = run_readme_section("ELECTRA and DeBERTa")
    assert printed.split() == ["(4,", "8)", "True", "(4,", "8,", "13)"]
    assert names["electra"].embeddings.word_embeddings.weight.grad is not None
