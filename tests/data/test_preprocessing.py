import numpy as np
import pytest

from lamina.data import (
    MeanSubtraction,
    NotFittedError,
    PCAWhitening,
    Preprocessor,
    Standardizer,
    ZCAWhitening,
)
from lamina.errors import ShapeError


def _correlated(n=4000, d=6, seed=0):
    rng = np.random.default_rng(seed)
    mixing = rng.normal(size=(d, d)) + 2 * np.eye(d)
    return rng.normal(size=(n, d)) @ mixing + rng.normal(size=d) * 5


def _images(n=300, seed=1):
    rng = np.random.default_rng(seed)
    scale = np.array([10.0, 50.0, 2.0])
    shift = np.array([100.0, 20.0, -3.0])
    return rng.normal(size=(n, 4, 5, 3)) * scale + shift


def _cov(z):
    zc = z - z.mean(axis=0)
    return zc.T @ zc / len(z)


def test_mean_subtraction_feature_and_channel():
    x = _correlated()
    out = MeanSubtraction().fit_transform(x)
    np.testing.assert_allclose(out.mean(axis=0), 0, atol=1e-9)
    img = _images()
    per_channel = MeanSubtraction(axis="channel").fit_transform(img)
    np.testing.assert_allclose(per_channel.mean(axis=(0, 1, 2)), 0, atol=1e-9)
    assert np.abs(per_channel.mean(axis=0)).max() > 0.1  # pixels not individually centred
    per_pixel = MeanSubtraction(axis="feature").fit_transform(img)
    np.testing.assert_allclose(per_pixel.mean(axis=0), 0, atol=1e-9)


def test_standardizer_per_feature():
    x = _correlated()
    s = Standardizer()
    z = s.fit_transform(x)
    np.testing.assert_allclose(z.mean(axis=0), 0, atol=1e-9)
    np.testing.assert_allclose(z.std(axis=0), 1, atol=1e-6)
    np.testing.assert_allclose(s.inverse_transform(z), x, rtol=1e-10, atol=1e-9)


def test_standardizer_per_channel_on_uint8_images():
    img = np.clip(_images(), 0, 255).astype(np.uint8)
    s = Standardizer(per="channel")
    z = s.fit_transform(img)
    assert z.dtype == np.float32 and z.shape == img.shape
    np.testing.assert_allclose(z.mean(axis=(0, 1, 2)), 0, atol=1e-4)
    np.testing.assert_allclose(z.std(axis=(0, 1, 2)), 1, atol=1e-4)
    np.testing.assert_allclose(s.inverse_transform(z), img, atol=1e-3)
    assert s.state_dict()["mean"].shape == (3,)


def test_standardizer_constant_feature_is_finite():
    x = np.column_stack([np.arange(10.0), np.full(10, 3.0)])
    z = Standardizer().fit_transform(x)
    assert np.all(np.isfinite(z)) and np.all(z[:, 1] == 0)


def test_transform_uses_training_statistics():
    train, test = _correlated(seed=0), _correlated(seed=5)
    s = Standardizer().fit(train)
    expected = (test - train.mean(axis=0)) / np.sqrt(train.var(axis=0) + 1e-8)
    np.testing.assert_allclose(s.transform(test), expected, rtol=1e-10)


@pytest.mark.parametrize("make", [MeanSubtraction, Standardizer, PCAWhitening, ZCAWhitening])
def test_transform_before_fit(make):
    p = make()
    with pytest.raises(NotFittedError, match="not fitted yet; call fit"):
        p.transform(np.zeros((3, 2)))
    with pytest.raises(NotFittedError):
        p.inverse_transform(np.zeros((3, 2)))
    with pytest.raises(NotFittedError):
        p.state_dict()


def test_shape_mismatch_after_fit():
    s = Standardizer().fit(np.zeros((5, 3)) + np.arange(5)[:, None])
    with pytest.raises(ShapeError, match=r"\(3,\).*\(4,\)"):
        s.transform(np.zeros((2, 4)))
    c = Standardizer(per="channel").fit(_images())
    with pytest.raises(ShapeError, match="3 channels"):
        c.transform(np.zeros((2, 4, 5, 1)))


def test_bad_options():
    with pytest.raises(ValueError, match="axis must be 'feature' or 'channel'"):
        MeanSubtraction(axis="pixel")
    with pytest.raises(ValueError, match="per must be"):
        Standardizer(per="sample")
    with pytest.raises(ValueError, match="n_components"):
        PCAWhitening(n_components=0)
    with pytest.raises(ValueError, match="exceeds"):
        PCAWhitening(n_components=7).fit(_correlated())


def test_pca_whitening_identity_covariance():
    x = _correlated()
    p = PCAWhitening(eps=1e-8)
    z = p.fit_transform(x)
    assert z.shape == x.shape
    np.testing.assert_allclose(z.mean(axis=0), 0, atol=1e-9)
    np.testing.assert_allclose(_cov(z), np.eye(6), atol=1e-6)
    assert np.all(np.diff(p.explained_variance) <= 0)
    np.testing.assert_allclose(p.inverse_transform(z), x, rtol=1e-9, atol=1e-8)


def test_pca_whitening_n_components_and_image_shapes():
    img = _images()
    p = PCAWhitening(n_components=10, eps=1e-8)
    z = p.fit_transform(img)
    assert z.shape == (300, 10)
    np.testing.assert_allclose(_cov(z), np.eye(10), atol=1e-6)
    back = p.inverse_transform(z)
    assert back.shape == img.shape
    # The 10-component reconstruction is the best rank-10 approximation: closer than the mean.
    assert np.linalg.norm(back - img) < np.linalg.norm(img - img.mean(axis=0))


def test_zca_whitening_identity_covariance_and_close_to_data():
    x = _correlated()
    zca = ZCAWhitening(eps=1e-8)
    z = zca.fit_transform(x)
    assert z.shape == x.shape
    np.testing.assert_allclose(_cov(z), np.eye(6), atol=1e-6)
    w = zca.whitening_matrix
    np.testing.assert_allclose(w, w.T, atol=1e-12)
    np.testing.assert_allclose(zca.inverse_transform(z), x, rtol=1e-9, atol=1e-8)
    # ZCA stays close to the (standardised) data: each output feature is strongly
    # correlated with its input feature, unlike the PCA rotation.
    pca = PCAWhitening(eps=1e-8).fit_transform(x)

    def own_correlation(out):
        return np.array([np.corrcoef(out[:, j], x[:, j])[0, 1] for j in range(6)])

    assert own_correlation(z).min() > 0.5
    assert own_correlation(z).mean() > np.abs(own_correlation(pca)).mean()
    # Among whitening transforms, ZCA minimises the distance to the centred data
    # (here against PCA whitening and a random rotation of the ZCA output).
    xc = x - x.mean(axis=0)
    rotation, _ = np.linalg.qr(np.random.default_rng(3).normal(size=(6, 6)))
    assert np.linalg.norm(z - xc) < np.linalg.norm(pca - xc)
    assert np.linalg.norm(z - xc) < np.linalg.norm(z @ rotation - xc)


def test_zca_keeps_image_shape():
    img = _images().astype(np.float32)
    z = ZCAWhitening(eps=1e-6).fit_transform(img)
    assert z.shape == img.shape and z.dtype == np.float32
    np.testing.assert_allclose(_cov(z.reshape(300, -1).astype(np.float64)), np.eye(60), atol=1e-3)


@pytest.mark.parametrize("make", [
    lambda: MeanSubtraction(axis="channel"),
    lambda: Standardizer(per="feature", eps=1e-6),
    lambda: PCAWhitening(n_components=3, eps=1e-4),
    lambda: ZCAWhitening(eps=1e-3),
])
def test_config_and_state_round_trip(make):
    x = _correlated(n=500)
    p = make().fit(x)
    config, state = p.get_config(), p.state_dict()
    assert all(isinstance(v, np.ndarray) for v in state.values())
    for builder in (type(p), Preprocessor):
        q = builder.from_state(config, state)
        assert type(q) is type(p) and q.get_config() == config
        np.testing.assert_array_equal(q.transform(x), p.transform(x))


def test_from_state_errors():
    p = Standardizer().fit(_correlated(n=50))
    with pytest.raises(ValueError, match="unknown preprocessor class 'Nope'"):
        Preprocessor.from_state({"class": "Nope"}, {})
    with pytest.raises(ValueError, match="describes a Standardizer"):
        ZCAWhitening.from_state(p.get_config(), p.state_dict())
    with pytest.raises(KeyError, match="std"):
        Standardizer().load_state_dict({"mean": np.zeros(6), "shape": np.array([6])})
