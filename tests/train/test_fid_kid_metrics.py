"""FID and KID as Trainer metrics: the epoch's score of a generator's outputs equals the one-shot
score (and the SciPy formula) on the same features, with the real features given once or taken
from the labels, through ``Trainer.evaluate`` and the validation of ``Trainer.fit``."""

import numpy as np
import pytest
import scipy.linalg

from lamina import nn, optim
from lamina.analysis import extract_features, fid, kid
from lamina.train import FIDMetric, KIDMetric, Trainer


def fid_by_formula(x, y):
    mu1, mu2 = x.mean(0), y.mean(0)
    s1, s2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    return np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * scipy.linalg.sqrtm(s1 @ s2).real)


def generator_and_features(seed=0):
    """A small generator (codes (N, 4) -> samples (N, 6)) and a feature model (samples -> (N, 3))."""
    rng = np.random.default_rng(seed)
    generator = nn.Sequential([nn.Dense(8, activation="tanh"), nn.Dense(6)])
    generator.build((None, 4))
    features = nn.Sequential([nn.Dense(5, activation="relu"), nn.Dense(3)])
    features.build((None, 6))
    codes = rng.standard_normal((37, 4)).astype(np.float32)
    real = (rng.standard_normal((37, 6)) * 1.5 + 0.3).astype(np.float32)
    return generator, features, codes, real


def generated(generator, codes):
    return extract_features(generator, codes)


def test_fid_metric_in_evaluate_equals_one_shot_fid_with_fixed_real_features():
    generator, features, codes, real = generator_and_features()
    real_features = extract_features(features, real)
    metric = FIDMetric(features, real_features=real_features)
    trainer = Trainer(generator, "mse", optim.SGD(generator.parameters(), lr=0.0), metrics=[metric], verbose=0)
    labels = np.zeros((len(codes), 6), np.float32)            # the fixed real features make the labels unused
    logs = trainer.evaluate((codes, labels), batch_size=10)    # uneven batches: 10, 10, 10, 7
    fake_features = extract_features(features, generated(generator, codes))
    expected = fid(real_features, fake_features)
    assert logs["fid"] == pytest.approx(expected, rel=1e-9, abs=1e-12)
    assert logs["fid"] == pytest.approx(fid_by_formula(real_features.astype(np.float64),
                                                       fake_features.astype(np.float64)), rel=1e-5)
    assert trainer.evaluate((codes, labels), batch_size=16)["fid"] == pytest.approx(expected, rel=1e-9)


def test_fid_metric_takes_the_real_samples_from_the_labels_and_a_callable_feature_model():
    generator, features, codes, real = generator_and_features(1)
    metric = FIDMetric(lambda x: extract_features(features, x), name="val_quality")
    trainer = Trainer(generator, "mse", optim.SGD(generator.parameters(), lr=0.0), metrics=[metric], verbose=0)
    got = trainer.evaluate((codes, real), batch_size=9)["val_quality"]
    expected = fid(extract_features(features, real), extract_features(features, generated(generator, codes)))
    assert got == pytest.approx(expected, rel=1e-6)       # float32 features of other batchings
    shifted = trainer.evaluate((codes, real + 3.0), batch_size=9)["val_quality"]   # the real set is per epoch
    assert shifted == pytest.approx(fid(extract_features(features, real + 3.0),
                                        extract_features(features, generated(generator, codes))), rel=1e-6)
    assert shifted != pytest.approx(got)


def test_kid_metric_equals_one_shot_kid_and_keeps_the_std():
    generator, features, codes, real = generator_and_features(2)
    options = dict(subsets=5, subset_size=20, seed=3)
    metric = KIDMetric(features, real_features=extract_features(features, real), **options)
    trainer = Trainer(generator, "mse", optim.SGD(generator.parameters(), lr=0.0), metrics=[metric], verbose=0)
    got = trainer.evaluate((codes, real), batch_size=8)["kid"]
    mean, std = kid(extract_features(features, real), extract_features(features, generated(generator, codes)),
                    **options)
    assert got == pytest.approx(mean, rel=1e-9) and metric.std == pytest.approx(std, rel=1e-9)


def test_fid_metric_follows_a_generator_trained_with_fit():
    generator, features, codes, _ = generator_and_features(3)
    mixing = np.random.default_rng(4).standard_normal((4, 6)).astype(np.float32)
    targets = codes @ mixing + 0.5                   # real samples the generator can learn to produce
    real_features = extract_features(features, targets)
    trainer = Trainer(generator, "mse", optim.Adam(generator.parameters(), lr=0.03),
                      metrics=[FIDMetric(features, real_features=real_features)], verbose=0)
    before = trainer.evaluate((codes, targets), batch_size=16)["fid"]
    history = trainer.fit((codes, targets), val=(codes, targets), epochs=30, batch_size=16, seed=0)
    after = trainer.evaluate((codes, targets), batch_size=16)["fid"]
    assert after == pytest.approx(fid(real_features, extract_features(features, generated(generator, codes))),
                                  rel=1e-9)
    assert history["val_fid"][-1] == pytest.approx(after, rel=1e-6)
    assert after < 0.5 * before            # fitting the real samples brings the generated ones towards them
    assert np.isnan(history.iteration["fid"]).all() and len(history["fid"]) == 30    # an epoch score only
