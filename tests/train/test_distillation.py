"""Distiller and train_distillation: the cost they report is distillation_loss of the two models'
logits, alpha = 0 is plain training, the teacher is left exactly as it was (weights, batch-norm
statistics, mode, trainable flags), bad set-ups are refused, and on the digits a small student
distilled from a larger teacher beats the same student trained on the same few labels alone.
"""

from __future__ import annotations

import numpy as np
import pytest

import lamina
from lamina import nn, optim
from lamina.data import load_digits, train_val_test_split
from lamina.errors import ShapeError
from lamina.functional.losses_distill import distillation_loss
from lamina.train import Callback, History, Trainer
from lamina.train.distillation import Distiller, train_distillation


def blobs(n=120, seed=0):
    """Three Gaussian blobs in 4 dimensions."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((3, 4)) * 3
    y = rng.integers(0, 3, n)
    return (centres[y] + rng.standard_normal((n, 4))).astype(np.float32), y


def classifier(*hidden, classes=3, features=4, softmax=True, seed=0):
    """An MLP built at once, so that ``seed`` alone fixes its weights."""
    lamina.manual_seed(seed)
    layers = [nn.Dense(units, activation="relu") for units in hidden] + [nn.Dense(classes)]
    model = nn.Sequential(*layers, *([nn.Softmax()] if softmax else []))
    model.build((None, features))
    return model


def logits(model, x):
    """The model's output before its last layer (a Softmax) in evaluation mode."""
    model.eval()
    with lamina.no_grad():
        return model[:-1](lamina.tensor(x)).numpy()


def test_evaluate_reports_the_distillation_cost_of_the_two_models():
    x, y = blobs()
    teacher = classifier(8, seed=1)
    student = classifier(6, seed=2)
    distiller = Distiller(student, teacher, optim.Adam(student, lr=1e-2), temperature=3.0, alpha=0.7, verbose=0)
    distiller.fit((x, y), epochs=2, batch_size=16, seed=0)
    scores = distiller.evaluate((x, y), batch_size=50)
    expected = distillation_loss(logits(student, x), logits(teacher, x), y, temperature=3.0, alpha=0.7).item()
    assert scores["loss"] == pytest.approx(expected, rel=1e-5)
    assert scores["accuracy"] == pytest.approx(float((logits(student, x).argmax(1) == y).mean()))
    np.testing.assert_allclose(distiller.predict(x).sum(axis=1), 1, rtol=1e-5)  # the student's Softmax output


def test_alpha_zero_trains_exactly_as_the_trainer_on_the_labels():
    x, y = blobs()
    teacher = classifier(8, seed=1)
    plain, distilled = classifier(6, seed=2), classifier(6, seed=2)
    Trainer(plain, "categorical_cross_entropy", optim.Adam(plain, lr=1e-2), verbose=0).fit(
        (x, y), epochs=3, batch_size=16, seed=0)
    Distiller(distilled, teacher, optim.Adam(distilled, lr=1e-2), alpha=0.0, verbose=0).fit(
        (x, y), epochs=3, batch_size=16, seed=0)
    for a, b in zip(plain.parameters(), distilled.parameters()):
        np.testing.assert_allclose(b.data, a.data, rtol=1e-5, atol=1e-6)


def test_the_teacher_is_left_as_it_was():
    """A teacher with dropout and batch norm: run in training mode, it would change its running
    statistics (and train with dropout); its weights, buffers, mode and flags all come back."""
    x, y = blobs()
    lamina.manual_seed(1)
    teacher = nn.Sequential(nn.Dense(8), nn.BatchNorm(), nn.ReLU(), nn.Dropout(0.5), nn.Dense(3), nn.Softmax())
    Trainer(teacher, "categorical_cross_entropy", optim.Adam(teacher, lr=1e-2), verbose=0).fit(
        (x, y), epochs=2, batch_size=16, seed=0)
    teacher.train()
    teacher.zero_grad()
    teacher[0].weight.freeze()                       # partly frozen already: stays so
    before = {name: np.array(value, copy=True) for name, value in teacher.state_dict().items()}
    flags = [(p.trainable, p.requires_grad) for p in teacher.parameters()]
    student = classifier(6, seed=2)
    history = Distiller(student, teacher, optim.Adam(student, lr=1e-2), verbose=0).fit(
        (x, y), epochs=3, batch_size=16, seed=0, val=(x[:40], y[:40]))
    assert history["loss"][-1] < history["loss"][0]
    after = teacher.state_dict()
    assert any("running" in name for name in before)
    for name, value in before.items():
        np.testing.assert_array_equal(after[name], value, err_msg=name)
    assert teacher.training and all(module.training for module in teacher.modules())
    assert [(p.trainable, p.requires_grad) for p in teacher.parameters()] == flags
    assert all(p.grad is None for p in teacher.parameters())


def test_validation_and_callbacks():
    x, y = blobs()
    teacher = classifier(8, seed=1)
    student = classifier(6, seed=2)

    class Count(Callback):
        epochs = 0

        def on_epoch_end(self, epoch, logs):
            self.epochs += 1

    count = Count()
    distiller = Distiller(student, teacher, optim.Adam(student, lr=1e-2), callbacks=[count], verbose=0)
    history = distiller.fit((x[:80], y[:80]), epochs=3, batch_size=16, seed=0, val=(x[80:], y[80:]))
    assert isinstance(history, History) and len(history["val_loss"]) == 3 and len(history["val_accuracy"]) == 3
    assert count.epochs == 3
    assert history["val_loss"][-1] == pytest.approx(distiller.evaluate((x[80:], y[80:]))["loss"], rel=1e-5)


def test_train_distillation_learns_the_blobs():
    x, y = blobs(240)
    teacher = classifier(16, seed=1)
    Trainer(teacher, "categorical_cross_entropy", optim.Adam(teacher, lr=1e-2), verbose=0).fit(
        (x[:200], y[:200]), epochs=8, batch_size=16, seed=0)
    student = classifier(8, seed=2, softmax=False)   # a student giving logits works as well
    history = train_distillation(student, teacher, (x[:200], y[:200]), epochs=8, batch_size=16, lr=1e-2,
                                 val=(x[200:], y[200:]), seed=0, verbose=0)
    assert history["loss"][-1] < 0.5 * history["loss"][0]
    assert history["val_accuracy"][-1] > 0.9
    assert not student.training


# -- bad set-ups -------------------------------------------------------------------------------


def test_teacher_and_student_of_different_classes_are_refused():
    x, y = blobs()
    teacher = classifier(8, classes=5, seed=1)
    student = classifier(6, seed=2)
    with pytest.raises(ShapeError, match=r"Distiller.fit: the student gives logits of shape \(2, 3\) but the "
                                         r"teacher gives \(2, 5\)"):
        Distiller(student, teacher, optim.Adam(student), verbose=0).fit((x, y), epochs=1)


def test_a_teacher_that_outputs_probabilities_is_refused():
    x, y = blobs()
    lamina.manual_seed(1)
    teacher = nn.Sequential(nn.Dense(8, activation="relu"), nn.Dense(3, activation="softmax"))
    teacher.build((None, 4))
    student = classifier(6, seed=2)
    with pytest.raises(ValueError, match="Distiller.fit: the teacher's outputs are probabilities"):
        Distiller(student, teacher, optim.Adam(student), verbose=0).fit((x, y), epochs=1)


def test_bad_settings_are_refused():
    teacher = classifier(8, seed=1)
    student = classifier(6, seed=2)
    with pytest.raises(ValueError, match="Distiller: temperature must be a finite number > 0, got 0"):
        Distiller(student, teacher, optim.Adam(student), temperature=0)
    with pytest.raises(ValueError, match=r"Distiller: alpha .*\[0, 1\], got 1.2"):
        Distiller(student, teacher, optim.Adam(student), alpha=1.2)
    with pytest.raises(ValueError, match="Distiller: the teacher is not built"):
        Distiller(student, nn.Sequential(nn.Dense(3)), optim.Adam(student))
    with pytest.raises(ValueError, match="Distiller: the student and the teacher must be two different models"):
        Distiller(teacher, teacher, optim.Adam(teacher))
    with pytest.raises(ValueError, match="Distiller: the optimizer holds parameters of the teacher"):
        Distiller(student, teacher, optim.Adam(teacher))
    with pytest.raises(TypeError, match="Distiller: the teacher must be a Module"):
        Distiller(student, lambda x: x, optim.Adam(student))
    x, y = blobs()
    with pytest.raises(ValueError, match=r"Distiller.fit: labels must lie in \[0, 3\)"):
        Distiller(student, teacher, optim.Adam(student), verbose=0).fit((x, y + 1), epochs=1)


# -- learning on the digits --------------------------------------------------------------------


def test_a_small_student_learns_more_from_the_teacher_than_from_few_labels_alone():
    """Teacher 64-96-96-10 trained on the 1348 training digits; student 64-16-10 given only 300
    of them, with their labels, for 30 epochs. Trained on those labels alone it reaches about 0.91
    test accuracy; distilled (T = 4, alpha = 0.9), about 0.94."""
    x, y = load_digits(size=8)
    x = x.reshape(len(x), -1).astype(np.float32) / 255
    (x_train, y_train), _, (x_test, y_test) = train_val_test_split(x, y, val=0.0, test=0.25, seed=0)
    teacher = classifier(96, 96, classes=10, features=64, seed=0)
    Trainer(teacher, "categorical_cross_entropy", optim.Adam(teacher, lr=3e-3), verbose=0).fit(
        (x_train, y_train), epochs=10, batch_size=32, seed=0)
    few = (x_train[:300], y_train[:300])

    def test_accuracy(model) -> float:
        return float((logits(model, x_test).argmax(axis=1) == y_test).mean())

    assert test_accuracy(teacher) > 0.95
    alone = classifier(16, classes=10, features=64, seed=0)
    Trainer(alone, "categorical_cross_entropy", optim.Adam(alone, lr=1e-2), verbose=0).fit(
        few, epochs=30, batch_size=16, seed=0)
    distilled = classifier(16, classes=10, features=64, seed=0)
    Distiller(distilled, teacher, optim.Adam(distilled, lr=1e-2), temperature=4.0, alpha=0.9, verbose=0).fit(
        few, epochs=30, batch_size=16, seed=0)
    labels_alone, from_teacher = test_accuracy(alone), test_accuracy(distilled)
    assert from_teacher >= 0.9, (labels_alone, from_teacher)
    assert from_teacher >= labels_alone - 0.01, (labels_alone, from_teacher)
