"""Training flow matching models on 2-D toy data (8 Gaussians -> two moons): samples close to
the target in 2-Wasserstein distance, minibatch optimal transport's straighter paths, a reflow
round that makes one Euler step good, paired sources, the weight average, and errors."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import make_moons

import lamina
from lamina.models import DenoisingMLP, FlowMatchingModel, straightness, wasserstein2
from lamina.train import FlowMatchingTrainer, reflow, train_flow_matching

SEEDS = (0, 1)


def eight_gaussians(n: int, rng, radius: float = 5.0, std: float = 0.1 ** 0.5) -> np.ndarray:
    angles = rng.integers(0, 8, n) * np.pi / 4
    centres = radius * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    return (centres + std * rng.standard_normal((n, 2))).astype(np.float32)


def moons(n: int, seed: int) -> np.ndarray:
    points, _ = make_moons(n, noise=0.2, random_state=seed)
    return (points * 3 - 1).astype(np.float32)


def _model(matcher) -> FlowMatchingModel:
    return FlowMatchingModel(DenoisingMLP(hidden=(64, 64)), matcher=matcher)


@pytest.fixture(scope="module")
def toy():
    """For each seed: the held-out source and target points, and a model trained with the
    independent and with the optimal transport coupling (512 points; 25 epochs for the first
    seed, whose samples are measured, 15 for the other)."""
    runs = {}
    for seed in SEEDS:
        rng = np.random.default_rng(seed)
        x0, x1 = eight_gaussians(512, rng), moons(512, seed)
        models = {}
        for matcher in ("cfm", "exact_ot"):
            lamina.manual_seed(seed)
            models[matcher] = _model(matcher)
            train_flow_matching(models[matcher], x1, x0=x0, epochs=25 if seed == SEEDS[0] else 15, batch_size=128,
                                lr=3e-3, seed=seed)
        runs[seed] = {"source": eight_gaussians(300, rng), "target": moons(300, seed + 100), "train_source": x0,
                      **models}
    return runs


def test_samples_approach_the_target(toy):
    run = toy[0]
    source, target = run["source"], run["target"]
    baseline = wasserstein2(source, target)
    assert baseline > 2.0
    for matcher in ("cfm", "exact_ot"):
        model = run[matcher]
        for method, steps in (("euler", 20), ("midpoint", 5)):
            samples = model.sample(start=source, steps=steps, method=method)
            assert wasserstein2(samples, target) < 0.5 * baseline, (matcher, method)
    # the adaptive solver needs few evaluations on the optimal transport model's straight paths
    samples = run["exact_ot"].sample(start=source, method="dopri5", rtol=1e-3, atol=1e-3)
    assert wasserstein2(samples, target) < 0.5 * baseline
    assert 6 < run["exact_ot"].last_nfe < 200


@pytest.mark.parametrize("seed", SEEDS)
def test_optimal_transport_paths_are_straighter(toy, seed):
    run = toy[seed]
    source, target = run["source"], run["target"]
    bent = straightness(run["cfm"], source, steps=10)
    straight = straightness(run["exact_ot"], source, steps=10)
    assert straight < bent / 10
    one_step = {m: wasserstein2(run[m].sample(start=source, steps=1), target) for m in ("cfm", "exact_ot")}
    assert one_step["exact_ot"] < 0.75 * one_step["cfm"]


def test_reflow_makes_one_euler_step_good(toy):
    run = toy[0]
    teacher, source, target = run["cfm"], run["source"], run["target"]
    student = lamina.nn.layer_from_config(lamina.nn.layer_to_config(teacher))
    student(source[:1], 0.0)
    student.load_state_dict(teacher.state_dict())
    lamina.manual_seed(7)
    history = reflow(teacher, student, x0=run["train_source"], steps=10, epochs=15, batch_size=128, lr=1e-3, seed=0)
    assert len(history["loss"]) == 15
    before = wasserstein2(teacher.sample(start=source, steps=1), target)
    after = wasserstein2(student.sample(start=source, steps=1), target)
    assert after < 0.85 * before
    assert straightness(student, source, steps=10) < straightness(teacher, source, steps=10) / 10


def test_paired_sources_stay_paired():
    """Sources paired with their quarter turns: with the pairs kept, one Euler step turns each
    point; drawn independently, the source already has the target's law and points barely move."""
    rng = np.random.default_rng(3)
    x0 = rng.standard_normal((256, 2)).astype(np.float32)
    turned = x0 @ np.array([[0.0, 1.0], [-1.0, 0.0]], np.float32)
    errors = {}
    for paired in (True, False):
        lamina.manual_seed(0)
        model = _model("cfm")
        train_flow_matching(model, turned, x0=x0, paired=paired, epochs=15, batch_size=128, lr=3e-3, seed=0)
        errors[paired] = np.linalg.norm(model.sample(start=x0[:200], steps=10) - turned[:200], axis=1).mean()
    start_error = np.linalg.norm(x0[:200] - turned[:200], axis=1).mean()
    assert errors[True] < 0.25 * start_error and errors[False] > 0.75 * start_error


def test_class_conditional_training_and_guidance():
    """Two clusters labelled 0 (left) and 1 (right): each label's samples land on its side; the
    unconditional model ("no class") gives both."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 256)
    x1 = (np.stack([6.0 * labels - 3, np.zeros(256)], 1) + 0.3 * rng.standard_normal((256, 2))).astype(np.float32)
    lamina.manual_seed(0)
    model = FlowMatchingModel(DenoisingMLP(hidden=(64, 64), num_classes=2), label_dropout=0.2)
    train_flow_matching(model, x1, labels=labels, epochs=15, batch_size=128, lr=3e-3, seed=0)
    for label in (0, 1):
        for guidance in (1.0, 2.0):
            samples = model.sample(200, steps=10, labels=np.full(200, label), guidance_scale=guidance)
            assert np.mean(np.sign(samples[:, 0]) == 2 * label - 1) > 0.95, (label, guidance)
    assert 0.3 < np.mean(model.sample(200, steps=10)[:, 0] > 0) < 0.7


def test_weight_average_and_gaussian_source():
    x1 = (np.random.default_rng(0).standard_normal((64, 2)) * 0.1 + 2).astype(np.float32)
    lamina.manual_seed(0)
    model = _model("target")
    trainer = FlowMatchingTrainer(model, lr=3e-3, ema=0.9)
    history = trainer.fit(x1, epochs=3, batch_size=32, seed=0)
    assert len(history["loss"]) == 3 and trainer.iteration == 6
    assert trainer.ema_model is not model
    weights = [p.numpy() for p in model.parameters()]
    averaged = [p.numpy() for p in trainer.ema_model.parameters()]
    assert any(not np.allclose(w, a) for w, a in zip(weights, averaged))


def test_errors():
    model = _model("cfm")
    x = np.zeros((8, 2), np.float32)
    with pytest.raises(TypeError, match="FlowMatchingTrainer: the model must be a FlowMatchingModel"):
        FlowMatchingTrainer(DenoisingMLP())
    with pytest.raises(ValueError, match="train_flow_matching: paired=True needs the source samples x0"):
        train_flow_matching(model, x, paired=True)
    with pytest.raises(ValueError, match="paired=True needs one source sample per data sample, got 4 and 8"):
        train_flow_matching(model, x, x0=x[:4], paired=True)
    with pytest.raises(ValueError, match=r"source samples of shape \(3,\) do not match the data's \(2,\)"):
        train_flow_matching(model, x, x0=np.zeros((8, 3), np.float32))
    with pytest.raises(ValueError, match="ema must be None or a decay in"):
        FlowMatchingTrainer(model, ema=1.0)
    with pytest.raises(ValueError, match="labels must be 8 integers"):
        train_flow_matching(model, x, labels=np.zeros(8))
