"""lamina.analysis.embedding: dimension reduction of feature vectors and their scatter plot."""

import numpy as np
import pytest

from lamina.analysis.embedding import plot_embedding, reduce_dimensions
from lamina.errors import ShapeError

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def blobs(n_per_class=50, dim=10, seed=0):
    """Three well separated Gaussian clusters in ``dim`` dimensions."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=8.0, size=(3, dim))
    x = np.concatenate([c + rng.normal(size=(n_per_class, dim)) for c in centres])
    return x, np.repeat(np.arange(3), n_per_class)


def same_up_to_sign(actual, expected):
    signs = np.sign(np.sum(actual * expected, axis=0))
    np.testing.assert_allclose(actual * signs, expected, rtol=1e-8, atol=1e-8)


def test_pca_is_the_projection_on_the_leading_right_singular_vectors():
    from sklearn.decomposition import PCA

    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 7)) * np.array([5.0, 3.0, 2.0, 1.0, 0.5, 0.2, 0.1]) + 4.0
    points = reduce_dimensions(x, method="pca", dims=3)
    assert points.shape == (60, 3) and points.dtype == np.float64
    centred = x - x.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    same_up_to_sign(points, centred @ vt[:3].T)
    same_up_to_sign(points, PCA(n_components=3).fit_transform(x))


@pytest.fixture
def one_thread():
    """t-SNE's OpenMP threads spin for seconds on a busy 2-core machine; one thread takes
    under a second for 150 points."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        yield


def test_tsne_is_reproducible_and_keeps_clusters_apart(one_thread):
    from sklearn.manifold import trustworthiness
    from sklearn.neighbors import KNeighborsClassifier

    x, labels = blobs()
    first = reduce_dimensions(x, method="tsne", seed=0)
    assert first.shape == (150, 2) and np.all(np.isfinite(first))
    np.testing.assert_array_equal(reduce_dimensions(x, method="tsne", seed=0), first)
    assert trustworthiness(x, first, n_neighbors=5) > 0.9
    knn = KNeighborsClassifier(n_neighbors=5).fit(first[::2], labels[::2])
    assert knn.score(first[1::2], labels[1::2]) == 1.0
    assert reduce_dimensions(x[:10], method="tsne").shape == (10, 2)  # perplexity capped below N


def test_plot_writes_a_png_with_one_colour_per_label(tmp_path):
    import matplotlib.image
    import matplotlib.pyplot as plt

    x, labels = blobs()
    open_before = plt.get_fignums()
    path = tmp_path / "plots" / "features.png"
    fig = plot_embedding(x, labels, path=path, method="pca", title="digits", dpi=50)
    assert path.read_bytes()[:8] == PNG_MAGIC
    image = matplotlib.image.imread(path)
    assert image.shape[:2] == (250, 300)  # figsize (6, 5) inches at 50 dpi
    assert not list(path.parent.glob(".*.tmp")) and plt.get_fignums() == open_before
    ax = fig.axes[0]
    assert ax.get_title() == "digits"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["0", "1", "2"]
    expected = reduce_dimensions(x, method="pca")
    for k, collection in enumerate(ax.collections):
        np.testing.assert_allclose(collection.get_offsets(), expected[labels == k])
    assert len({tuple(c.get_facecolor()[0]) for c in ax.collections}) == 3


def test_two_dimensional_points_are_plotted_as_they_are():
    points = np.random.default_rng(3).normal(size=(20, 2))
    fig = plot_embedding(points)
    (collection,) = fig.axes[0].collections
    np.testing.assert_allclose(collection.get_offsets(), points)
    assert fig.axes[0].get_legend() is None


def test_a_failed_save_leaves_nothing_behind(tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    x, labels = blobs(n_per_class=10)
    blocker = tmp_path / "not_a_dir"
    blocker.write_text("a file where the directory should be")
    with pytest.raises(OSError, match="plot_embedding: cannot write the PNG"):
        plot_embedding(x, labels, path=blocker / "features.png")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["not_a_dir"]

    def fail_half_way(self, handle, **kwargs):
        handle.write(PNG_MAGIC)
        raise OSError("No space left on device")

    monkeypatch.setattr(Figure, "savefig", fail_half_way)
    with pytest.raises(OSError, match="No space left on device"):
        plot_embedding(x, labels, path=tmp_path / "out" / "features.png")
    assert list((tmp_path / "out").iterdir()) == []


def test_bad_input_raises_clear_errors():
    x, labels = blobs(n_per_class=5)
    with pytest.raises(ShapeError, match=r"2-D array \(N, D\)"):
        plot_embedding(x[:, 0])
    with pytest.raises(ShapeError, match=r"2-D array"):
        reduce_dimensions(x[0])
    with pytest.raises(ShapeError, match="at least 2 features"):
        plot_embedding(x[:, :1])
    with pytest.raises(ShapeError, match=r"labels must have shape \(15,\)"):
        plot_embedding(x, labels[:-1])
    with pytest.raises(ValueError, match="method must be one of"):
        plot_embedding(x, labels, method="umap")
    with pytest.raises(ValueError, match="method must be one of"):
        reduce_dimensions(x, method="lda")
    with pytest.raises(ValueError, match=r"dims must be an int in \[1, 10\]"):
        reduce_dimensions(x, dims=11)
    with pytest.raises(ValueError, match="finite"):
        reduce_dimensions(np.full((4, 3), np.nan))
