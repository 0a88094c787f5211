"""I-JEPA training: the trainer's steps move the target encoder by the momentum schedule, and a
tiny I-JEPA pretrained briefly on the 8x8 digits gives frozen features that a linear probe reads
far better than those of the same encoder at random initialisation, without collapse."""

import numpy as np
import pytest

import lamina
from helpers import run_readme_section
from lamina.autograd import no_grad
from lamina.data import load_digits
from lamina.models import IJEPA
from lamina.train import IJEPATrainer


def _digits():
    x, y = load_digits(size=8)
    order = np.random.default_rng(0).permutation(len(x))
    x, y = x[order].astype(np.float32), y[order]
    x = (x - x.mean()) / x.std()
    return x.reshape(len(x), 8, 8, 1), y


def _probe_accuracy(model, x, y, n_train=1000):
    """Test accuracy of a ridge-regression classifier on the standardised, mean-pooled target
    encoder features (closed form, one-hot targets), and the features' mean std over images."""
    with no_grad():
        features = model.features(x).numpy().astype(np.float64)
    train, test = features[:n_train], features[n_train:]
    mean, std = train.mean(0), train.std(0) + 1e-8
    design = np.c_[(train - mean) / std, np.ones(len(train))]
    weights = np.linalg.solve(design.T @ design + 1e-2 * np.eye(design.shape[1]), design.T @ np.eye(10)[y[:n_train]])
    scores = np.c_[(test - mean) / std, np.ones(len(test))] @ weights
    return float((scores.argmax(1) == y[n_train:]).mean()), float(features.std(0).mean())


def _tiny():
    return IJEPA(img_size=8, patch_size=2, in_chans=1, embed_dim=16, depth=2, num_heads=2, predictor_embed_dim=8,
                 predictor_depth=1, predictor_num_heads=2)


MASKS = dict(num_targets=2, target_scale=(0.15, 0.25), min_keep=2)


def test_pretrained_features_beat_random_ones_under_a_linear_probe():
    x, y = _digits()
    lamina.manual_seed(0)
    model = _tiny()
    model(x[:2])                                                  # builds: the random initialisation
    baseline, baseline_std = _probe_accuracy(model, x, y)
    trainer = IJEPATrainer(model, epochs=10, steps_per_epoch=10, lr=3e-3, weight_decay=0.0, ema=(0.99, 1.0),
                           mask_options=MASKS, seed=0)
    history = trainer.fit(x[:1000], batch_size=100)
    accuracy, std = _probe_accuracy(model, x, y)
    assert len(history["loss"]) == 10 and history["loss"][-1] < 0.5 * history["loss"][0]
    assert accuracy > baseline + 0.1, (baseline, accuracy)
    assert std > 0.5 * baseline_std and std > 1e-3                # the features did not collapse


def test_a_step_updates_only_the_student_and_moves_the_target_by_the_schedule():
    x, _ = _digits()
    lamina.manual_seed(1)
    model = _tiny()
    model(x[:2])
    trainer = IJEPATrainer(model, epochs=1, steps_per_epoch=2, lr=1e-2, ema=(0.9, 1.0), mask_options=MASKS, seed=1)
    np.testing.assert_allclose(trainer.momentum_schedule, [0.9, 0.95])
    target_before = {k: v.copy() for k, v in model.target_encoder.state_dict().items()}
    context_before = {k: v.copy() for k, v in model.context_encoder.state_dict().items()}
    loss = trainer.train_step(x[:8])
    assert np.isfinite(loss)
    context_after = model.context_encoder.state_dict()
    target_after = model.target_encoder.state_dict()
    moved = [k for k in context_after if not np.array_equal(context_after[k], context_before[k])]
    assert moved and "pos_embed" not in moved
    for key, value in target_after.items():       # the optimizer left it alone; the EMA moved it
        np.testing.assert_allclose(value, 0.9 * target_before[key] + 0.1 * context_after[key], rtol=1e-5,
                                   atol=1e-7, err_msg=key)
    trainer.train_step(x[8:16])
    with pytest.raises(RuntimeError, match="schedule"):
        trainer.train_step(x[:8])
    with pytest.raises(TypeError, match="IJEPA"):
        IJEPATrainer(object(), 1, 1)


def test_readme_example_runs():
    printed, names = run_readme_section("I-JEPA")
    assert printed.split() == ["4", "(2,", "4)", "2", "(3,", "16)"]
    assert names["trainer"].iteration == 8 and all(np.isfinite(names["history"]["loss"]))
