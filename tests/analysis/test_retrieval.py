"""lamina.analysis.retrieval: signatures, nearest-neighbour search and retrieval scores."""

import numpy as np
import pytest
from scipy.spatial.distance import cdist

import lamina
from lamina import nn
from lamina.analysis.retrieval import FeatureIndex, extract_features, mean_average_precision_at_k, precision_at_k
from lamina.errors import ShapeError


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    return rng.normal(size=(300, 16)), rng.normal(size=(50, 16))


def brute_force(queries, database, k, metric, exclude_self=False):
    d = cdist(queries, database, metric=metric)
    if exclude_self:
        np.fill_diagonal(d, np.inf)
    order = np.argsort(d, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(d, order, 1)


# -- the index -------------------------------------------------------------------
@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_neighbours_and_distances_match_cdist(data, metric):
    database, queries = data
    indices, distances = FeatureIndex(database.astype(np.float32)).query(queries, k=7, metric=metric)
    expected_i, expected_d = brute_force(queries, database.astype(np.float32), 7, metric)
    np.testing.assert_array_equal(indices, expected_i)
    np.testing.assert_allclose(distances, expected_d, rtol=1e-9, atol=1e-9)
    assert np.all(np.diff(distances, axis=1) >= 0)


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_chunks_give_the_results_of_one_chunk(data, metric):
    database, queries = data
    whole = FeatureIndex(database, chunk_size=10_000)
    for chunk in (7, 64):
        chunked = FeatureIndex(database, chunk_size=chunk)
        for q, exclude in ((queries, False), (database, True)):
            (i1, d1), (i2, d2) = (ix.query(q, k=5, metric=metric, exclude_self=exclude) for ix in (whole, chunked))
            np.testing.assert_array_equal(i1, i2)
            np.testing.assert_allclose(d1, d2, rtol=1e-12, atol=1e-12)


def test_exclude_self_skips_the_row_itself_but_not_its_duplicates(data):
    database = data[0].copy()
    database[5] = database[3]
    index = FeatureIndex(database, chunk_size=32)
    indices, distances = index.query(database, k=1)
    assert np.array_equal(indices[:, 0][np.arange(300) != 5], np.arange(300)[np.arange(300) != 5])
    assert distances.max() < 1e-6  # every row is its own neighbour (the duplicate 5 finds 3 first)
    indices, distances = index.query(database, k=4, exclude_self=True)
    assert not np.any(indices == np.arange(300)[:, None])
    assert indices[3, 0] == 5 and indices[5, 0] == 3 and distances[3, 0] < 1e-6
    expected_i, expected_d = brute_force(database, database, 4, "euclidean", exclude_self=True)
    np.testing.assert_array_equal(indices, expected_i)
    np.testing.assert_allclose(distances, expected_d, rtol=1e-9, atol=1e-6)


def test_save_and_load_round_trip(tmp_path, data):
    database, queries = data
    labels, ids = np.arange(300) % 4, np.array([f"img_{i:03d}.png" for i in range(300)])
    index = FeatureIndex(database.astype(np.float32), labels=labels, ids=ids)
    path = tmp_path / "db" / "index.npz"
    index.save(path)
    assert not list(path.parent.glob(".*.tmp"))
    loaded = FeatureIndex.load(path)
    assert loaded.features.dtype == np.float32 and np.array_equal(loaded.features, index.features)
    assert np.array_equal(loaded.labels, labels) and np.array_equal(loaded.ids, ids)
    for metric in ("euclidean", "cosine"):
        np.testing.assert_array_equal(loaded.query(queries, metric=metric)[0], index.query(queries, metric=metric)[0])
    bare = tmp_path / "bare.index"
    FeatureIndex(database).save(bare)
    assert bare.exists() and FeatureIndex.load(bare).labels is None


def test_load_refuses_corrupted_and_foreign_files(tmp_path, data):
    path = tmp_path / "index.npz"
    FeatureIndex(data[0]).save(path)
    raw = bytearray(path.read_bytes())
    flipped = raw.copy()
    flipped[len(raw) // 2] ^= 0xFF  # inside the features: the zip checksum no longer matches
    (tmp_path / "flipped.npz").write_bytes(bytes(flipped))
    (tmp_path / "truncated.npz").write_bytes(bytes(raw[: len(raw) // 2]))
    (tmp_path / "noise.npz").write_bytes(np.random.default_rng(1).bytes(1000))
    np.savez(tmp_path / "pickled.npz", features=np.array([{"a": 1}], dtype=object))
    np.savez(tmp_path / "other.npz", weights=np.ones((2, 2)))
    np.save(tmp_path / "plain.npy", np.ones((2, 2)))
    for name in ("flipped.npz", "truncated.npz", "noise.npz", "pickled.npz", "plain.npy"):
        with pytest.raises(ValueError, match="not a readable feature index"):
            FeatureIndex.load(tmp_path / name)
    with pytest.raises(ValueError, match="expected 'features'"):
        FeatureIndex.load(tmp_path / "other.npz")
    with pytest.raises(FileNotFoundError):
        FeatureIndex.load(tmp_path / "missing.npz")


def test_bad_input_raises_clear_errors(data):
    database, queries = data
    index = FeatureIndex(database)
    with pytest.raises(ShapeError, match="8 features but the database rows have 16"):
        index.query(queries[:, :8])
    with pytest.raises(ValueError, match=r"k must be an int in \[1, 300\]"):
        index.query(queries, k=301)
    with pytest.raises(ValueError, match=r"\[1, 299\]"):
        index.query(database, k=300, exclude_self=True)
    with pytest.raises(ValueError, match="k must"):
        index.query(queries, k=0)
    with pytest.raises(ValueError, match="metric must be one of"):
        index.query(queries, metric="manhattan")
    with pytest.raises(ShapeError, match="exclude_self"):
        index.query(queries, exclude_self=True)
    with pytest.raises(ShapeError, match="2-D"):
        FeatureIndex(database[0])
    with pytest.raises(ShapeError, match=r"labels must have shape \(300,\)"):
        FeatureIndex(database, labels=np.zeros(299))
    with pytest.raises(ValueError, match="zero vector"):
        FeatureIndex(np.zeros((3, 2))).query(np.ones((1, 2)), k=1, metric="cosine")


# -- scores ------------------------------------------------------------------------
def test_precision_and_mean_average_precision():
    from sklearn.metrics import average_precision_score

    rng = np.random.default_rng(2)
    queries, retrieved = rng.integers(0, 3, 40), rng.integers(0, 3, (40, 6))
    relevant = retrieved == queries[:, None]
    assert precision_at_k(queries, retrieved) == pytest.approx(np.mean([r.sum() / 6 for r in relevant]))
    per_query = [average_precision_score(r, -np.arange(6)) if r.any() else 0.0 for r in relevant]
    assert mean_average_precision_at_k(queries, retrieved) == pytest.approx(np.mean(per_query))
    # relevant at ranks 1 and 3 of 3, five relevant items in the database: (1/1 + 2/3) / min(3, 5)
    assert mean_average_precision_at_k([7], [[7, 0, 7]], num_relevant=5) == pytest.approx((1 + 2 / 3) / 3)
    assert mean_average_precision_at_k([7], [[0, 0, 0]]) == 0.0
    with pytest.raises(ShapeError, match=r"\(Q, k\)"):
        precision_at_k([1, 2], [1, 2])


# -- signatures ------------------------------------------------------------------------
class Probe(nn.Module):
    """The identity, recording the mode and whether the graph is recorded."""

    def __init__(self, name=None):
        super().__init__(name=name)
        self.seen = []

    def forward(self, x):
        self.seen.append((self.training, lamina.is_grad_enabled()))
        return x

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)


class Exploding(Probe):
    def forward(self, x):
        raise AssertionError("a layer after the chosen one was run")


class TwoStage(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Dense(8, activation="relu")
        self.head = nn.Dense(3)

    def forward(self, x):
        return self.head(self.body(x))


def cnn() -> nn.Sequential:
    return nn.Sequential(nn.Conv2D(16, 3, padding=1, activation="relu"), nn.MaxPool2D(2), nn.Flatten(),
                         nn.Dense(32, activation="relu", name="embedding"), nn.Dense(10), nn.Softmax())


def test_layer_by_index_name_or_module_in_eval_mode_without_graph():
    lamina.manual_seed(0)
    probe = Probe(name="probe")
    model = nn.Sequential(nn.Conv2D(4, 3, activation="relu"), nn.Dropout(0.5), probe, Exploding(), nn.Dense(2))
    x = np.random.default_rng(0).normal(size=(23, 6, 6, 2)).astype(np.float32)
    model.train()
    model[3].train(False)  # a module in its own mode, restored as it was
    with lamina.no_grad():
        expected = model[0](x).numpy().reshape(23, -1)  # dropout is the identity in eval mode
    for layer in (2, -3, "probe", probe):
        for batch_size in (5, 23, 256):
            got = extract_features(model, x, layer=layer, batch_size=batch_size)
            np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)
    assert {seen for seen in probe.seen} == {(False, False)}
    assert model.training and model[1].training and probe.training and not model[3].training


def test_whole_output_and_a_general_module():
    lamina.manual_seed(0)
    x = np.random.default_rng(1).normal(size=(10, 5)).astype(np.float32)
    model = TwoStage()
    full = extract_features(model, x, batch_size=3)
    with lamina.no_grad():
        body = model.body(x).numpy()
        head = model.head(body).numpy()
    np.testing.assert_allclose(full, head, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(extract_features(model, x, layer="body"), body, rtol=1e-6)
    np.testing.assert_allclose(extract_features(model, x, layer=model.body), body, rtol=1e-6)
    with pytest.raises(ValueError, match="no layer named 'tail'.*'body', 'head'"):
        extract_features(model, x, layer="tail")
    with pytest.raises(TypeError, match="needs a Sequential"):
        extract_features(model, x, layer=0)
    with pytest.raises(ValueError, match="is not a layer of"):
        extract_features(model, x, layer=nn.Dense(3))
    with pytest.raises(IndexError):
        extract_features(nn.Sequential(nn.Dense(2)), x, layer=4)
    with pytest.raises(ValueError, match="batch_size"):
        extract_features(model, x, batch_size=0)


def test_trained_signatures_retrieve_the_same_digit():
    """Course notes: signatures of a trained network, nearest in Euclidean distance, find
    images of the same class; a network of the same architecture before training does not."""
    from lamina.data import load_digits
    from lamina.optim import Adam
    from lamina.train import Trainer

    x, y = load_digits(size=8)
    x = x.astype(np.float32) / 255
    order = np.random.default_rng(0).permutation(len(x))
    held_out, database = order[:400], order[400:]
    lamina.manual_seed(0)
    model = cnn()
    model(x[:2])

    def retrieval_precision():
        signatures = extract_features(model, x, layer="embedding")
        assert signatures.shape == (len(x), 32)
        index = FeatureIndex(signatures[database], labels=y[database])
        indices, _ = index.query(signatures[held_out], k=5)
        return precision_at_k(y[held_out], index.labels[indices])

    untrained = retrieval_precision()
    Trainer(model, "categorical_cross_entropy", Adam(model.parameters(), lr=5e-3), verbose=0).fit(
        (x[database], y[database]), epochs=6, batch_size=64, seed=0)
    trained = retrieval_precision()
    assert trained >= 0.96, trained  # measured 0.978
    assert trained - untrained >= 0.05, (trained, untrained)  # measured 0.857 before training
