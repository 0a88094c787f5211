"""Sentence pooling against sentence-transformers' Pooling written in torch, and the encoder's batching."""

import numpy as np
import pytest
import torch
from tests.helpers import check_gradients, compare_with_torch, randn

import lamina
from lamina.errors import ShapeError
from lamina.text.embeddings import POOLING_MODES, Normalize, SentenceEncoder, SentencePooling, pad_ids

N, T, H = 4, 6, 3


def right_padded_mask(seed=0):
    lengths = np.random.default_rng(seed).integers(1, T + 1, N)
    lengths[0] = T
    return (np.arange(T)[None, :] < lengths[:, None]).astype(np.int64)


def torch_pool(hidden, mask, mode):
    mask = torch.as_tensor(mask)
    expanded = mask.unsqueeze(-1).expand(hidden.size()).to(hidden.dtype)
    if mode == "cls":
        return hidden[:, 0]
    if mode == "max":
        filled = hidden.clone()
        filled[expanded == 0] = -1e9
        return torch.max(filled, 1)[0]
    if mode in ("mean", "mean_sqrt_len"):
        count = torch.clamp(expanded.sum(1), min=1e-9)
        return (hidden * expanded).sum(1) / (torch.sqrt(count) if mode == "mean_sqrt_len" else count)
    if mode == "weightedmean":
        weights = torch.arange(1, hidden.shape[1] + 1, dtype=hidden.dtype).unsqueeze(0).unsqueeze(-1)
        weights = weights.expand(hidden.size()) * expanded
        return (hidden * weights).sum(1) / torch.clamp(weights.sum(1), min=1e-9)
    values, indices = mask.flip(1).max(1)
    indices = torch.where(values == 0, mask.shape[1] - 1, indices)
    last = mask.shape[1] - indices - 1
    return hidden[torch.arange(len(hidden)), last]


@pytest.mark.parametrize("mode", POOLING_MODES)
def test_pooling_modes_match_torch(mode):
    hidden, mask = randn(N, T, H, seed=1), right_padded_mask(seed=2)
    compare_with_torch(lambda h: SentencePooling(mode)(h, mask), lambda h: torch_pool(h, mask, mode), hidden,
                       dtype=np.float64)
    assert check_gradients(lambda h: SentencePooling(mode)(h, mask), hidden)


def test_last_token_with_left_padding_and_an_empty_row():
    hidden = randn(N, T, H, seed=3)
    mask = right_padded_mask(seed=4)[:, ::-1].copy()
    mask[2] = 0
    compare_with_torch(lambda h: SentencePooling("lasttoken")(h, mask), lambda h: torch_pool(h, mask, "lasttoken"),
                       hidden, dtype=np.float64)
    pooled = SentencePooling("lasttoken")(lamina.tensor(hidden), mask).numpy()
    np.testing.assert_allclose(pooled[:, :], hidden[:, T - 1].astype(np.float32) * np.array([1, 1, 0, 1])[:, None]
                               + hidden[:, 0].astype(np.float32) * np.array([0, 0, 1, 0])[:, None])


def test_several_modes_concatenate_in_the_library_order_and_prompt_is_masked():
    hidden, mask = randn(N, T, H, seed=5), right_padded_mask(seed=6)
    both = SentencePooling(["mean", "cls"])(lamina.tensor(hidden, dtype=np.float64), mask).numpy()
    expected = torch.cat([torch_pool(torch.tensor(hidden), mask, m) for m in ("cls", "mean")], dim=1).numpy()
    np.testing.assert_allclose(both, expected, rtol=1e-12)
    without_prompt = SentencePooling("mean", include_prompt=False)(lamina.tensor(hidden, dtype=np.float64), mask,
                                                                   prompt_length=1).numpy()
    prompt_mask = mask.copy()
    prompt_mask[:, :1] = 0
    np.testing.assert_allclose(without_prompt, torch_pool(torch.tensor(hidden), prompt_mask, "mean").numpy())


def test_normalize_matches_torch():
    compare_with_torch(Normalize(), lambda x: torch.nn.functional.normalize(x, dim=1), randn(N, H, seed=8),
                       dtype=np.float64)


class BagOfEmbeddings:
    """Hidden states = a table lookup (no mixing between tokens)."""

    def __init__(self, vocab=20, width=4):
        self.table = lamina.tensor(randn(vocab, width, seed=7), requires_grad=True)

    def __call__(self, ids, attention_mask=None):
        return self.table[ids]

    def parameters(self, trainable_only=False):
        return [self.table]


def test_encode_sorts_by_length_and_restores_the_order():
    model = BagOfEmbeddings()
    sentences = [[1, 2], [3, 4, 5, 6, 7], [8], [9, 10, 11]]
    encoder = SentenceEncoder(model, SentencePooling("mean"))
    batched = encoder.encode(sentences, batch_size=2)
    one_by_one = np.stack([encoder.encode(s) for s in sentences])
    table = model.table.numpy()
    expected = np.stack([table[s].mean(axis=0) for s in sentences])
    np.testing.assert_allclose(batched, expected, rtol=1e-6)
    np.testing.assert_allclose(one_by_one, expected, rtol=1e-6)
    unit = encoder.encode(sentences, batch_size=3, normalize_embeddings=True)
    np.testing.assert_allclose(np.linalg.norm(unit, axis=1), 1.0, rtol=1e-6)
    words = {"one": 1, "two": 2, "three": 3}
    texts = SentenceEncoder(model, tokenizer=lambda s: [words[w] for w in s.split()]).encode(["one two", "three"])
    np.testing.assert_allclose(texts, np.stack([table[[1, 2]].mean(0), table[[3]].mean(0)]), rtol=1e-6)


def test_left_padding_gives_the_same_embeddings_with_last_token_pooling():
    ids, mask = pad_ids([[1, 2, 3], [4]], side="left")
    np.testing.assert_array_equal(ids, [[1, 2, 3], [0, 0, 4]])
    np.testing.assert_array_equal(mask, [[1, 1, 1], [0, 0, 1]])
    model = BagOfEmbeddings()
    left = SentenceEncoder(model, SentencePooling("lasttoken"), padding_side="left").encode([[1, 2, 3], [4]])
    right = SentenceEncoder(model, SentencePooling("lasttoken")).encode([[1, 2, 3], [4]])
    np.testing.assert_allclose(left, right)


def test_clear_errors():
    with pytest.raises(ValueError, match="unknown pooling mode 'median'; allowed: cls, lasttoken, max, mean"):
        SentencePooling("median")
    with pytest.raises(ShapeError, match="attention_mask must have shape"):
        SentencePooling()(lamina.tensor(randn(N, T, H)), np.ones((N, T + 1)))
    with pytest.raises(ValueError, match="got text but no tokenizer"):
        SentenceEncoder(BagOfEmbeddings()).encode(["words"])


def test_bert_encoder_is_independent_of_the_batch_padding():
    from lamina.models import BERT

    bert = BERT(vocab_size=30, hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16,
                max_position_embeddings=16, add_pooling_layer=False)
    bert.eval()
    encoder = SentenceEncoder(bert, SentencePooling("mean"), normalize=True)
    sentences = [[5, 6, 7, 8, 9], [10, 11], [12, 13, 14]]
    together = encoder.encode(sentences, batch_size=3)
    alone = np.stack([encoder.encode(s) for s in sentences])
    np.testing.assert_allclose(together, alone, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(together, axis=1), 1.0, rtol=1e-5)
