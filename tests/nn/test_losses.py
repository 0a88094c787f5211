"""Loss modules under PyTorch's names (nn.losses): each against torch's module (values and
gradients, both precisions), their reprs and errors, and a Trainer that learns with one."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

import lamina
from helpers import compare_with_torch, positive, randn
from lamina import nn, optim
from lamina.train import Trainer


def labels(*shape, classes=5, seed=0):
    return np.random.default_rng(seed).integers(0, classes, shape)


def signs(*shape, seed=0):
    return np.random.default_rng(seed).choice([-1.0, 1.0], shape)


def with_target(module, target):
    return lambda *xs: module(*xs, target)


def with_torch_target(module, target):
    return lambda *xs: module(*xs, torch.tensor(target, dtype=xs[0].dtype if target.dtype.kind == "f" else None))


WEIGHT = positive(5, seed=9)
CLASS_TARGET, TWO_D = labels(6), labels(6, 4, classes=2).astype(np.float64)
MULTILABEL = np.array([[3, 0, -1, 1, 2], [1, -1, 0, 0, 0], [4, 2, 1, 0, 3], [0, 1, -1, 2, 3], [2, -1, 4, 4, 4],
                       [-1, 0, 0, 0, 0]])
# (lamina module, torch module, inputs that get gradients, the target or None)
MODULES = {
    "CrossEntropyLoss": (nn.CrossEntropyLoss(weight=WEIGHT, label_smoothing=0.1),
                         lambda t: torch.nn.CrossEntropyLoss(weight=t(WEIGHT), label_smoothing=0.1),
                         [randn(6, 5)], CLASS_TARGET),
    "NLLLoss": (nn.NLLLoss(ignore_index=2, reduction="sum"),
                lambda t: torch.nn.NLLLoss(ignore_index=2, reduction="sum"), [randn(6, 5)], CLASS_TARGET),
    "BCELoss": (nn.BCELoss(reduction="none"), lambda t: torch.nn.BCELoss(reduction="none"),
                [positive(6, 4, low=0.1, high=0.9)], TWO_D),
    "BCEWithLogitsLoss": (nn.BCEWithLogitsLoss(pos_weight=positive(4, seed=2)),
                          lambda t: torch.nn.BCEWithLogitsLoss(pos_weight=t(positive(4, seed=2))), [randn(6, 4)],
                          TWO_D),
    "MSELoss": (nn.MSELoss(reduction="sum"), lambda t: torch.nn.MSELoss(reduction="sum"),
                [randn(6, 4), randn(6, 4, seed=1)], None),
    "L1Loss": (nn.L1Loss(), lambda t: torch.nn.L1Loss(), [randn(6, 4), randn(6, 4, seed=1)], None),
    "SmoothL1Loss": (nn.SmoothL1Loss(beta=0.5), lambda t: torch.nn.SmoothL1Loss(beta=0.5),
                     [randn(6, 4), randn(6, 4, seed=1)], None),
    "HuberLoss": (nn.HuberLoss(reduction="none", delta=0.5), lambda t: torch.nn.HuberLoss(reduction="none", delta=0.5),
                  [randn(6, 4), randn(6, 4, seed=1)], None),
    "KLDivLoss": (nn.KLDivLoss(reduction="batchmean"), lambda t: torch.nn.KLDivLoss(reduction="batchmean"),
                  [randn(6, 4)], positive(6, 4, seed=3) / 4),
    "MarginRankingLoss": (nn.MarginRankingLoss(margin=0.2), lambda t: torch.nn.MarginRankingLoss(margin=0.2),
                          [randn(6), randn(6, seed=1)], signs(6)),
    "HingeEmbeddingLoss": (nn.HingeEmbeddingLoss(margin=0.5), lambda t: torch.nn.HingeEmbeddingLoss(margin=0.5),
                           [randn(6, 4)], signs(6, 4)),
    "CosineEmbeddingLoss": (nn.CosineEmbeddingLoss(margin=0.1), lambda t: torch.nn.CosineEmbeddingLoss(margin=0.1),
                            [randn(6, 4), randn(6, 4, seed=1)], signs(6)),
    "TripletMarginLoss": (nn.TripletMarginLoss(margin=0.5, swap=True),
                          lambda t: torch.nn.TripletMarginLoss(margin=0.5, swap=True),
                          [randn(6, 4), randn(6, 4, seed=1), randn(6, 4, seed=2)], None),
    "TripletMarginWithDistanceLoss": (nn.TripletMarginWithDistanceLoss(margin=2.0),
                                      lambda t: torch.nn.TripletMarginWithDistanceLoss(margin=2.0),
                                      [randn(6, 4), randn(6, 4, seed=1), randn(6, 4, seed=2)], None),
    "MultiMarginLoss": (nn.MultiMarginLoss(p=2, weight=WEIGHT),
                        lambda t: torch.nn.MultiMarginLoss(p=2, weight=t(WEIGHT)), [randn(6, 5)], CLASS_TARGET),
    "MultiLabelMarginLoss": (nn.MultiLabelMarginLoss(), lambda t: torch.nn.MultiLabelMarginLoss(), [randn(6, 5)],
                             MULTILABEL),
    "MultiLabelSoftMarginLoss": (nn.MultiLabelSoftMarginLoss(weight=WEIGHT),
                                 lambda t: torch.nn.MultiLabelSoftMarginLoss(weight=t(WEIGHT)), [randn(6, 5)],
                                 labels(6, 5, classes=2).astype(np.float64)),
    "SoftMarginLoss": (nn.SoftMarginLoss(reduction="sum"), lambda t: torch.nn.SoftMarginLoss(reduction="sum"),
                       [randn(6, 4)], signs(6, 4)),
    "PoissonNLLLoss": (nn.PoissonNLLLoss(full=True), lambda t: torch.nn.PoissonNLLLoss(full=True), [randn(6, 4)],
                       positive(6, 4, low=0, high=5)),
    "GaussianNLLLoss": (nn.GaussianNLLLoss(reduction="none"), lambda t: torch.nn.GaussianNLLLoss(reduction="none"),
                        [randn(6, 4), randn(6, 4, seed=1), positive(6, 4, seed=2)], None),
}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", list(MODULES))
def test_module_matches_torch(name, dtype):
    ours, make_theirs, inputs, target = MODULES[name]
    theirs = make_theirs(lambda a: torch.tensor(a, dtype=torch.float64 if dtype == np.float64 else torch.float32))
    if target is None:
        compare_with_torch(ours, theirs, *inputs, dtype=dtype)
    else:
        compare_with_torch(with_target(ours, target), with_torch_target(theirs, target), *inputs, dtype=dtype)


def test_ctc_loss_takes_batch_first_log_probs():
    targets, input_lengths, target_lengths = np.array([[1, 2, 2], [3, 1, 0]]), np.array([6, 5]), np.array([3, 2])
    compare_with_torch(
        lambda z: nn.CTCLoss(reduction="sum")(lamina.functional.log_softmax(z), targets, input_lengths, target_lengths),
        lambda z: torch.nn.CTCLoss(reduction="sum")(z.log_softmax(-1).transpose(0, 1), torch.tensor(targets),
                                                    torch.tensor(input_lengths), torch.tensor(target_lengths)),
        randn(2, 6, 4), dtype=np.float64, rtol=1e-8)


def test_reprs_show_the_options_that_differ_from_the_defaults():
    assert repr(nn.CrossEntropyLoss()) == "CrossEntropyLoss()"
    assert repr(nn.CrossEntropyLoss(weight=np.ones(3), ignore_index=0, reduction="sum")) == \
        "CrossEntropyLoss(weight=<(3,)>, ignore_index=0, reduction='sum')"
    assert repr(nn.HuberLoss(delta=2.0)) == "HuberLoss(delta=2.0)"
    assert repr(nn.TripletMarginWithDistanceLoss(distance_function=lamina.functional.pairwise_distance)) == \
        "TripletMarginWithDistanceLoss(distance_function=pairwise_distance)"


@pytest.mark.parametrize("make", [nn.CrossEntropyLoss, nn.MSELoss, nn.BCEWithLogitsLoss, nn.TripletMarginLoss])
def test_a_bad_reduction_is_refused_by_name(make):
    with pytest.raises(ValueError, match=rf"{make.__name__}: reduction must be one of"):
        make(reduction="average")


def test_weight_is_a_buffer_cast_with_the_module():
    loss = nn.CrossEntropyLoss(weight=np.ones(3, dtype=np.float32))
    assert dict(loss.named_buffers())["weight"].dtype == np.float32
    assert loss.double().weight.dtype == np.float64


def test_trainer_learns_with_cross_entropy_loss_on_logits():
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 3, (3, 4))
    y = rng.integers(0, 3, 120)
    x = (centres[y] + rng.normal(0, 0.5, (120, 4))).astype(np.float32)
    lamina.manual_seed(0)
    model = nn.Sequential(nn.Dense(16, activation="relu"), nn.Dense(3))          # logits: no softmax
    model(lamina.tensor(x[:2]))
    trainer = Trainer(model, nn.CrossEntropyLoss(label_smoothing=0.05), optim.Adam(model.parameters(), lr=0.05),
                      verbose=0)
    assert not trainer._fused_softmax()
    history = trainer.fit((x, y), epochs=6, batch_size=16, seed=0)
    assert history["loss"][-1] < 0.5 * history["loss"][0]
    assert trainer.evaluate((x, y))["accuracy"] > 0.9


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("name", ["BCEWithLogitsLoss", "BCELoss"])
def test_binary_cross_entropy_modules_give_a_target_that_requires_grad_its_gradient(name, reduction):
    x = randn(3, 4) if name == "BCEWithLogitsLoss" else positive(3, 4, low=0.05, high=0.95)
    target = positive(3, 4, seed=1, low=0.05, high=0.95)
    compare_with_torch(getattr(nn, name)(reduction=reduction), getattr(torch.nn, name)(reduction=reduction), x,
                       target, dtype=np.float64, grad=[True, True])


EMPTY = np.zeros((0,))
EMPTY_MEANS = {                                  # a module's inputs, each without a value
    "L1Loss": [EMPTY, EMPTY], "HuberLoss": [EMPTY, EMPTY], "SmoothL1Loss": [EMPTY, EMPTY],
    "GaussianNLLLoss": [EMPTY, EMPTY, EMPTY], "MarginRankingLoss": [EMPTY, EMPTY, EMPTY],
    "CrossEntropyLoss": [np.zeros((0, 3)), np.zeros(0, dtype=np.int64)],
    "KLDivLoss": [np.zeros((0, 3)), np.zeros((0, 3))],
}


@pytest.mark.parametrize("name", list(EMPTY_MEANS))
def test_the_mean_over_no_value_is_nan_as_torchs(name):
    inputs = EMPTY_MEANS[name]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")              # torch's notice that KLDivLoss's mean will change
        theirs = getattr(torch.nn, name)()(*(torch.tensor(a) for a in inputs))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ours = getattr(nn, name)()(*(lamina.tensor(a, requires_grad=a.dtype.kind == "f") for a in inputs))
    assert np.isnan(theirs.item()) and np.isnan(ours.item())


@pytest.mark.parametrize("weighted", [False, True])
def test_cross_entropy_with_every_target_ignored_is_nan_with_torchs_zero_gradient(weighted):
    weight = positive(3, seed=4) if weighted else None
    target = np.array([1, 1, 1, 1])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = compare_with_torch(
            lambda x: nn.CrossEntropyLoss(weight=weight, ignore_index=1)(x, target),
            lambda x: torch.nn.CrossEntropyLoss(weight=None if weight is None else torch.tensor(weight),
                                                ignore_index=1)(x, torch.tensor(target)),
            randn(4, 3), dtype=np.float64)
    assert np.isnan(out[0].item())


@pytest.mark.parametrize("reduction", ["mean", "none"])
@pytest.mark.parametrize("margin", [-0.5, 0.0])
def test_multi_margin_loss_takes_any_margin_as_torch(margin, reduction):
    target = labels(6, classes=4)
    compare_with_torch(with_target(nn.MultiMarginLoss(margin=margin, reduction=reduction), target),
                       with_torch_target(torch.nn.MultiMarginLoss(margin=margin, reduction=reduction), target),
                       randn(6, 4, scale=0.3), dtype=np.float64)
    with pytest.raises(ValueError, match="multiclass_hinge: margin must be a finite number >= 0"):
        lamina.functional.multiclass_hinge(lamina.tensor(randn(6, 4)), target, margin=-0.5)
