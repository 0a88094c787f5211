"""MoCo v2/v3, BYOL, SimSiam and SwAV trainers: momentum updates and schedules, the queue,
prototype freezing, multi-crop, the monitors, and learning on scikit-learn's digits."""

import copy
import math

import numpy as np
import pytest

import lamina
from helpers import run_readme_section
from lamina import functional as F
from lamina import nn
from lamina.data import load_digits
from lamina.errors import ShapeError
from lamina.models import projection_head
from lamina.train import (
    BYOLTrainer,
    MoCoV2Trainer,
    MoCoV3Trainer,
    MultiCrop,
    SimSiamTrainer,
    SwAVTrainer,
    embedding_std,
    knn_accuracy,
    linear_probe,
    momentum_schedule,
    momentum_update,
)


def _digits():
    x, y = load_digits(size=8)
    order = np.random.default_rng(0).permutation(len(x))
    x, y = x[order].astype(np.float32) / 255, y[order]
    return (x[:800], y[:800]), (x[1000:], y[1000:])


def _encoder():
    # an 8-feature bottleneck: random features of that size are poor, so learning shows
    return nn.Sequential(nn.Flatten(), nn.Dense(64, activation="relu"), nn.Dense(8))


def _augment():
    # light augmentations: shifts of up to a pixel, noise, masking
    return nn.Sequential(nn.RandomCrop(8, padding=1), nn.GaussianNoise(0.1), nn.RandomErasing(p=0.3))


def _identity(x):
    return x


# ---- momentum -------------------------------------------------------------------------------

def test_momentum_schedule_is_byols_cosine():
    for k, total in [(0, 10), (3, 10), (5, 10), (10, 10), (7, 9)]:
        expected = 1 - (1 - 0.996) * (math.cos(math.pi * k / total) + 1) / 2
        assert momentum_schedule(k, total, 0.996) == pytest.approx(expected, abs=1e-15)
    assert momentum_schedule(0, 10, 0.99) == pytest.approx(0.99) and momentum_schedule(10, 10, 0.99) == 1.0


def test_momentum_update_is_the_ema_formula():
    lamina.manual_seed(0)
    online, target = _encoder(), _encoder()
    x = lamina.tensor(np.ones((2, 8, 8, 1), dtype=np.float32))
    online(x), target(x)
    before = [p.data.copy() for p in target.parameters()]
    momentum_update(target, online, 0.9)
    for old, new, theta in zip(before, target.parameters(), online.parameters(), strict=True):
        np.testing.assert_allclose(new.data, 0.9 * old + 0.1 * theta.data, rtol=1e-6)
    with pytest.raises(ValueError, match=r"momentum must be a number in \[0, 1\], got 1.5"):
        momentum_update(target, online, 1.5)
    other = nn.Sequential(nn.Dense(3))
    other(lamina.tensor(np.ones((1, 4), dtype=np.float32)))
    with pytest.raises(ShapeError, match="same parameters"):
        momentum_update(target, other, 0.5)


@pytest.mark.parametrize("trainer_class, base, scheduled", [(BYOLTrainer, 0.9, True), (MoCoV3Trainer, 0.8, True),
                                                             (MoCoV2Trainer, 0.7, False)])
def test_target_follows_the_momentum_update_and_schedule(trainer_class, base, scheduled):
    lamina.manual_seed(3)
    extra = {"queue_size": 8} if trainer_class is MoCoV2Trainer else {}
    trainer = trainer_class(_encoder(), _augment(), projection_head(4, 8), momentum=base, **extra)
    seen = []
    update = trainer.update_target

    def recording_update():
        seen.append((trainer.momentum(), [p.data.copy() for p in trainer.target["encoder"].parameters()]))
        update()
        tau, old = seen[-1]
        for before, after, theta in zip(old, trainer.target["encoder"].parameters(), trainer.encoder.parameters(),
                                        strict=True):
            np.testing.assert_allclose(after.data, tau * before + (1 - tau) * theta.data, rtol=1e-5, atol=1e-7)
            assert after.grad is None and not after.trainable          # no gradient reaches the target
    trainer.update_target = recording_update
    x = np.random.default_rng(0).random((16, 8, 8, 1)).astype(np.float32)
    trainer.fit(x, epochs=2, batch_size=4, seed=0)
    taus = [tau for tau, _ in seen]
    expected = [momentum_schedule(k, 8, base) if scheduled else base for k in range(8)]
    np.testing.assert_allclose(taus, expected, rtol=1e-12)


# ---- MoCo v2's queue, SwAV's prototypes and crops -------------------------------------------

def test_moco_v2_enqueues_the_momentum_keys_of_each_step():
    lamina.manual_seed(4)
    trainer = MoCoV2Trainer(_encoder(), _identity, projection_head(4, 8), queue_size=12, momentum=0.5)
    x = np.random.default_rng(1).random((4, 8, 8, 1)).astype(np.float32)
    trainer.train_step(x)
    for _ in range(2):
        target = copy.deepcopy(trainer.target)
        trainer.train_step(x)
        keys = F.normalize(target["projector"](target["encoder"](lamina.tensor(x))), axis=-1).numpy()
        np.testing.assert_allclose(trainer.queue.keys()[-4:], keys, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="queue_size 12 is not a multiple of batch_size 5"):
        trainer.fit(np.zeros((10, 8, 8, 1), dtype=np.float32), epochs=1, batch_size=5)


def test_swav_freezes_prototypes_then_trains_them_and_renormalises():
    lamina.manual_seed(5)
    trainer = SwAVTrainer(_encoder(), _augment(), projection_head(4, 8), n_prototypes=6, freeze_prototypes_steps=2)
    x = np.random.default_rng(2).random((8, 8, 8, 1)).astype(np.float32)
    trainer.train_step(x)
    frozen = trainer.prototypes.weight.data.copy()
    trainer.train_step(x)
    trainer.prototypes.normalize_()
    frozen /= np.linalg.norm(frozen, axis=0, keepdims=True)
    np.testing.assert_allclose(trainer.prototypes.weight.data, frozen, rtol=1e-6)   # only renormalised
    trainer.train_step(x)
    assert np.abs(trainer.prototypes.weight.data - frozen).max() > 1e-4
    np.testing.assert_allclose(np.linalg.norm(trainer.prototypes.weight.data, axis=0), 1.0, rtol=1e-2)


def test_swav_trains_on_multi_crop_views_with_a_queue():
    lamina.manual_seed(6)
    encoder = nn.Sequential(nn.Conv2D(4, 3, padding="same", activation="relu"), nn.GlobalAvgPool2D())
    crops = MultiCrop(8, 6, local_crops_number=2, global_scale=(0.6, 1.0), local_scale=(0.3, 0.6), flip=False)
    trainer = SwAVTrainer(encoder, crops, projection_head(4, 8), n_prototypes=5, queue_size=8)
    views = crops(lamina.tensor(np.zeros((4, 8, 8, 1), dtype=np.float32)))
    assert [v.shape[1] for v in views] == [8, 8, 6, 6]
    x = np.random.default_rng(3).random((16, 8, 8, 1)).astype(np.float32)
    history = trainer.fit(x, epochs=2, batch_size=4, seed=0)
    assert np.all(np.isfinite(history["loss"])) and trainer.queued == 32


# ---- monitors -------------------------------------------------------------------------------

def test_embedding_std_tells_collapse_from_spread():
    rng = np.random.default_rng(0)
    assert embedding_std(np.tile(rng.normal(size=(1, 16)), (50, 1))) < 1e-7
    assert embedding_std(rng.normal(size=(4000, 16))) == pytest.approx(1 / math.sqrt(16), rel=0.03)


def test_knn_accuracy_matches_a_brute_force_vote():
    rng = np.random.default_rng(1)
    bank, labels = rng.normal(size=(40, 3)), rng.integers(0, 3, 40)
    query, truth = rng.normal(size=(15, 3)), rng.integers(0, 3, 15)
    unit = bank / np.linalg.norm(bank, axis=1, keepdims=True)
    predictions = []
    for q in query / np.linalg.norm(query, axis=1, keepdims=True):
        s = unit @ q
        top = np.argsort(-s)[:5]
        votes = [sum(np.exp(s[i] / 0.1) for i in top if labels[i] == c) for c in range(3)]
        predictions.append(int(np.argmax(votes)))
    expected = float(np.mean(np.array(predictions) == truth))
    assert knn_accuracy(bank, labels, query, truth, k=5, temperature=0.1) == expected
    assert knn_accuracy(bank, labels, bank, labels, k=1) == 1.0
    with pytest.raises(ValueError, match="k=41 exceeds the 40"):
        knn_accuracy(bank, labels, query, truth, k=41)


# ---- errors ---------------------------------------------------------------------------------

def test_trainers_reject_bad_arguments():
    with pytest.raises(ValueError, match=r"momentum must be a number in \[0, 1\], got -0.1"):
        BYOLTrainer(_encoder(), _augment(), momentum=-0.1)
    with pytest.raises(TypeError, match="augment"):
        SimSiamTrainer(_encoder(), 3)

    def mismatched(x):
        return [x, x[:, :6, :6]]
    trainer = BYOLTrainer(_encoder(), mismatched, projection_head(4, 8))
    with pytest.raises(ShapeError, match="two views of one shape"):
        trainer.train_step(np.zeros((4, 8, 8, 1), dtype=np.float32))


# ---- learning on digits ---------------------------------------------------------------------

TRAINERS = {
    # short runs: momentum 0.99 rather than 0.999 / 0.996, so that the target moves in 72 steps
    "moco_v2": lambda e: MoCoV2Trainer(e, _augment(), projection_head(32, 64), queue_size=512, momentum=0.99,
                                       lr=3e-3),
    "moco_v3": lambda e: MoCoV3Trainer(e, _augment(), projection_head(32, 64),
                                       projection_head(32, 64, batch_norm=True), lr=3e-3),
    "byol": lambda e: BYOLTrainer(e, _augment(), projection_head(32, 64, batch_norm=True),
                                  projection_head(32, 64, batch_norm=True), momentum=0.99, lr=3e-3),
    "simsiam": lambda e: SimSiamTrainer(e, _augment(), projection_head(16, 64, batch_norm=True),
                                        projection_head(16, 4, batch_norm=True), lr=3e-3),
    "swav": lambda e: SwAVTrainer(e, _augment(), projection_head(32, 64, batch_norm=True), n_prototypes=10,
                                  temperature=0.2, lr=3e-3),
}
# measured linear-probe test accuracy after 12 epochs (about a second each), seed 0 (seed 1): random encoder 0.59
# (0.71), MoCo v2 0.80 (0.78), MoCo v3 0.81 (0.80), BYOL 0.70 (0.76), SimSiam 0.78 (0.72), SwAV 0.83 (0.84)


@pytest.fixture(scope="module")
def random_probe():
    train, test = _digits()
    lamina.manual_seed(0)
    encoder = _encoder()
    encoder(lamina.tensor(train[0][:2]))
    return linear_probe(encoder, train, test)["test_accuracy"]


@pytest.mark.parametrize("method", sorted(TRAINERS))
def test_pretrained_encoder_beats_random_one_without_collapse(method, random_probe):
    train, test = _digits()
    lamina.manual_seed(0)
    encoder = _encoder()
    history = TRAINERS[method](encoder).fit(train[0], epochs=12, batch_size=128, seed=0, knn=(train, test))
    probe = linear_probe(encoder, train, test)["test_accuracy"]
    assert probe > random_probe + 0.08, (method, random_probe, probe)
    # no collapse: about 1 / sqrt(D) = 0.18 (D = 32) for spread embeddings, 0 for collapsed ones
    assert min(history["embedding_std"]) > 0.02, history["embedding_std"]
    assert history["knn_accuracy"][-1] > 0.65 and len(history["loss"]) == 12
    assert not encoder.training


# ---- README ---------------------------------------------------------------------------------

def test_readme_example_runs():
    _, names = run_readme_section("Momentum encoders and online clustering: MoCo, BYOL, SimSiam, SwAV")
    assert names["history"]["embedding_std"][-1] > 0.03
    assert names["history"]["knn_accuracy"][-1] > 0.68          # a random encoder's: 0.61
