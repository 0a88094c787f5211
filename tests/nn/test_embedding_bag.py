import json

import numpy as np
import pytest
import torch

import lamina
from helpers import TOLERANCE, assert_close
from lamina import functional as F
from lamina import nn, optim
from lamina.nn.embedding_bag import EmbeddingBag, embedding_bag

MODES = ["sum", "mean", "max"]
IDS = np.array([1, 2, 3, 2, 2, 4, 5, 6, 0, 1, 6, 6])
# (ids, offsets, include_last_offset): fixed-size bags, bags by offsets with an empty one in
# the middle and one at the end, and CSR-style offsets closing the last bag
LAYOUTS = {
    "2-D": (IDS.reshape(4, 3), None, False),
    "offsets": (IDS, np.array([0, 2, 2, 7, 12]), False),
    "last offset": (IDS, np.array([0, 3, 3, 5, 12]), True),
}


def _torch_bag(layer, dtype):
    module = torch.nn.EmbeddingBag(layer.num_embeddings, layer.embedding_dim, mode=layer.mode,
                                   padding_idx=layer.padding_idx, include_last_offset=layer.include_last_offset)
    module.to(torch.float64 if dtype == np.float64 else torch.float32)
    with torch.no_grad():
        module.weight.copy_(torch.from_numpy(layer.weight.numpy()))
    return module


def _against_torch(layer, ids, offsets, dtype, per_sample_weights=None, seed=0):
    """The output and the gradients of the table (and of the per-sample weights) against torch."""
    rtol = TOLERANCE[dtype]
    if not layer.built:
        layer.build(ids.shape)
        layer.built = True
    theirs = _torch_bag(layer, dtype)
    psw_l = psw_t = None
    if per_sample_weights is not None:
        psw_l = lamina.tensor(per_sample_weights.astype(dtype), requires_grad=True, dtype=dtype)
        psw_t = torch.tensor(per_sample_weights.astype(dtype), requires_grad=True)
    out = layer(ids, offsets, per_sample_weights=psw_l)
    out_t = theirs(torch.from_numpy(ids), None if offsets is None else torch.from_numpy(offsets),
                   per_sample_weights=psw_t)
    assert out.dtype == dtype
    assert_close(out.numpy(), out_t.detach().numpy(), rtol, "output")
    upstream = np.random.default_rng(seed).standard_normal(out.shape).astype(dtype)
    out.backward(upstream)
    (out_t * torch.from_numpy(upstream)).sum().backward()
    assert_close(layer.weight.grad, theirs.weight.grad.numpy(), rtol, "gradient of the table")
    if per_sample_weights is not None:
        assert_close(psw_l.grad, psw_t.grad.numpy(), rtol, "gradient of the per-sample weights")
    return out


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("padding_idx", [None, 2])
@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("mode", MODES)
def test_matches_torch(mode, layout, padding_idx, dtype):
    lamina.set_default_dtype(dtype)
    ids, offsets, last = LAYOUTS[layout]
    layer = EmbeddingBag(7, 5, mode=mode, padding_idx=padding_idx, include_last_offset=last)
    _against_torch(layer, ids, offsets, dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("padding_idx", [None, 6])
@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_per_sample_weights_match_torch(layout, padding_idx, dtype):
    lamina.set_default_dtype(dtype)
    ids, offsets, last = LAYOUTS[layout]
    layer = EmbeddingBag(7, 4, mode="sum", padding_idx=padding_idx, include_last_offset=last)
    weights = np.random.default_rng(1).uniform(-2, 2, ids.shape)
    _against_torch(layer, ids, offsets, np.dtype(dtype).type, per_sample_weights=weights)


def test_empty_bags_and_bags_of_padding_give_zeros():
    for mode in MODES:
        layer = EmbeddingBag(5, 3, mode=mode, padding_idx=0)
        ids = np.array([3, 0, 0, 4, 4])
        out = _against_torch(layer, ids, np.array([0, 1, 1, 3, 5]), np.float32)   # bags: [3], [], [0 0], [4 4], []
        assert not out.numpy()[[1, 2, 4]].any() and out.numpy()[[0, 3]].all()
        assert not layer.weight.grad[[0, 1, 2]].any()
        layer.weight.grad = None
        out = _against_torch(layer, np.zeros(0, dtype=np.int64), np.array([0]), np.float32)   # no word at all
        assert out.shape == (1, 3) and not out.numpy().any() and not layer.weight.grad.any()


def test_max_ties_go_to_the_first_word_of_the_bag():
    table = np.arange(12.0).reshape(4, 3)
    table[3] = table[1]
    for ids, winner in (([[3, 1, 0]], 3), ([[1, 3, 0]], 1)):
        weight = lamina.tensor(table, requires_grad=True, dtype=np.float64)
        embedding_bag(np.array(ids), weight, mode="max").sum().backward()
        theirs = torch.tensor(table, requires_grad=True)
        torch.nn.functional.embedding_bag(torch.tensor(ids), theirs, mode="max").sum().backward()
        np.testing.assert_array_equal(weight.grad, theirs.grad.numpy())
        assert weight.grad[winner].tolist() == [1.0, 1.0, 1.0]


def test_repeated_words_add_their_gradients():
    """Many copies of few words across bags, the case the row scatter must sum."""
    rng = np.random.default_rng(2)
    ids = rng.integers(0, 4, (50, 20))
    for mode in ("sum", "mean"):
        _against_torch(EmbeddingBag(4, 6, mode=mode), ids, None, np.float32, seed=3)


@pytest.mark.parametrize("mode", MODES)
def test_gradcheck(mode):
    rng = np.random.default_rng(4)
    weight = lamina.tensor(rng.standard_normal((6, 3)), requires_grad=True, dtype=np.float64)
    ids, offsets = np.array([1, 5, 2, 2, 0, 4, 3]), np.array([0, 3, 3, 6])

    def bags(w):
        return embedding_bag(ids, w, offsets, mode=mode, padding_idx=4)
    assert lamina.gradcheck(bags, weight)


def test_gradcheck_per_sample_weights():
    rng = np.random.default_rng(5)
    weight = lamina.tensor(rng.standard_normal((6, 3)), requires_grad=True, dtype=np.float64)
    samples = lamina.tensor(rng.standard_normal((3, 4)), requires_grad=True, dtype=np.float64)
    ids = rng.integers(0, 6, (3, 4))

    def bags(w, s):
        return embedding_bag(ids, w, mode="sum", per_sample_weights=s, padding_idx=int(ids[0, 0]))
    assert lamina.gradcheck(bags, weight, samples)


def test_mean_of_ids_equals_embedding_then_mean():
    bag, table = EmbeddingBag(9, 4), nn.Embedding(9, 4)
    ids = np.random.default_rng(6).integers(0, 9, (5, 7))
    bag(ids)
    table(ids)
    table.weight.data = bag.weight.data.copy()
    np.testing.assert_allclose(bag(ids).numpy(), table(ids).numpy().mean(axis=1), rtol=1e-6)


def test_padding_row_starts_at_zero_config_and_repr():
    layer = EmbeddingBag(10, 4, mode="max", padding_idx=-1, include_last_offset=True, name="bag")
    assert layer.padding_idx == 9
    assert repr(layer) == "EmbeddingBag(10, 4, mode='max', padding_idx=9, include_last_offset=True)"
    layer(np.array([1, 2, 3]), np.array([0, 1, 3]))
    assert not layer.weight.numpy()[9].any() and layer.weight.numpy()[:9].all()
    config = json.loads(json.dumps(nn.layer_to_config(layer)))
    again = nn.layer_from_config(config)
    assert type(again) is EmbeddingBag and again.get_config() == layer.get_config()
    again = nn.layer_from_config(nn.layer_to_config(EmbeddingBag(5, 2, embeddings_init={"name": "normal", "std": 0.1})))
    again(np.zeros((1, 2), dtype=np.int64))
    assert 0 < np.abs(again.weight.numpy()).max() < 1
    assert layer.compute_output_shape((None, 7)) == (None, 4)
    assert layer.compute_output_shape([(None,), (6,)]) == (5, 4)
    assert EmbeddingBag(3, 2).compute_output_shape([(None,), (6,)]) == (6, 2)


def test_errors_name_the_layer_and_what_was_expected():
    layer = EmbeddingBag(10, 4, name="bag")
    with pytest.raises(ValueError, match=r"EmbeddingBag 'bag': ids of shape \(2, 3\).*offsets are for 1-D ids"):
        layer(np.zeros((2, 3), dtype=np.int64), np.array([0, 1]))
    with pytest.raises(ValueError, match=r"EmbeddingBag 'bag': 1-D ids of shape \(4,\) need offsets"):
        layer(np.zeros(4, dtype=np.int64))
    with pytest.raises(lamina.ShapeError, match=r"EmbeddingBag 'bag': got ids of shape \(1, 2, 3\)"):
        layer(np.zeros((1, 2, 3), dtype=np.int64))
    with pytest.raises(ValueError, match=r"offsets\[0\] is 1; the first bag must start at position 0"):
        layer(np.zeros(4, dtype=np.int64), np.array([1, 2]))
    with pytest.raises(ValueError, match=r"offsets must not decrease, but offsets\[1\] = 3 > offsets\[2\] = 2"):
        layer(np.zeros(4, dtype=np.int64), np.array([0, 3, 2]))
    with pytest.raises(ValueError, match=r"the last offset 5 is past the end of the 4 ids"):
        layer(np.zeros(4, dtype=np.int64), np.array([0, 5]))
    with pytest.raises(lamina.ShapeError, match=r"offsets must be a 1-D array of integers, got float64"):
        layer(np.zeros(4, dtype=np.int64), np.array([0.0, 2.0]))
    with pytest.raises(ValueError, match=r"include_last_offset.*must be the number of ids, 4; got 3"):
        EmbeddingBag(10, 4, include_last_offset=True)(np.zeros(4, dtype=np.int64), np.array([0, 3]))
    with pytest.raises(ValueError, match=r"per_sample_weights are only supported with mode='sum'.*'mean'"):
        layer(np.zeros((2, 3), dtype=np.int64), per_sample_weights=np.ones((2, 3), dtype=np.float32))
    with pytest.raises(lamina.ShapeError, match=r"per_sample_weights of shape \(2, 2\).*ids of shape \(2, 3\)"):
        EmbeddingBag(10, 4, mode="sum")(np.zeros((2, 3), dtype=np.int64), per_sample_weights=np.ones((2, 2)))
    with pytest.raises(ValueError, match=r"EmbeddingBag 'bag': word id 10 is out of range"):
        layer(np.array([[1, 10]]))
    with pytest.raises(TypeError, match=r"EmbeddingBag 'bag': expected integer word ids"):
        layer(np.zeros((1, 2), dtype=np.float32))
    with pytest.raises(ValueError, match=r"EmbeddingBag: mode must be one of \('sum', 'mean', 'max'\), got 'min'"):
        EmbeddingBag(10, 4, mode="min")
    with pytest.raises(lamina.ShapeError, match=r"EmbeddingBag.*expected the shape of \(bags, words\) ids"):
        layer.compute_output_shape((None,))


def _bag_of_words_task(n, rng, vocab=120, classes=4, pad=0):
    """Documents of 5 to 15 words, padded to 15 with word 0: about half are keywords of the
    document's class (words 1 + 10 c .. 10 + 10 c), the rest common words (41 and up). A
    document without a keyword (about 0.5% of them) cannot be told apart."""
    labels = rng.integers(0, classes, n)
    ids = np.full((n, 15), pad, dtype=np.int64)
    for i, label in enumerate(labels):
        length = rng.integers(5, 16)
        keywords = rng.integers(1 + 10 * label, 11 + 10 * label, length)
        common = rng.integers(41, vocab, length)
        ids[i, :length] = np.where(rng.random(length) < 0.5, keywords, common)
    return ids, labels


def test_learns_a_bag_of_words_classifier():
    """The table must learn: with it frozen at its initial values the same model stays below 0.8."""
    lamina.manual_seed(0)
    rng = np.random.default_rng(7)
    x_train, y_train = _bag_of_words_task(800, rng)
    x_test, y_test = _bag_of_words_task(400, rng)
    model = nn.Sequential(EmbeddingBag(120, 16, mode="mean", padding_idx=0, embeddings_init={"name": "normal",
                                                                                             "std": 0.1}),
                          nn.Dense(4))
    model(x_train[:1])
    opt = optim.Adam(model.parameters(), lr=0.05)
    for _ in range(3):
        for start in range(0, len(x_train), 32):
            loss = F.categorical_cross_entropy(model(x_train[start:start + 32]), y_train[start:start + 32],
                                               from_logits=True)
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    with lamina.no_grad():
        accuracy = (model(x_test).numpy().argmax(axis=1) == y_test).mean()
    assert accuracy >= 0.95, accuracy
    assert not model[0].weight.numpy()[0].any()          # the padding row never learned
