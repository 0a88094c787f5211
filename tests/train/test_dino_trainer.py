"""DINO training: the cosine schedule against the reference's formula, multi-crop views, the
multi-crop wrapper, one training step (the teacher gets no gradient and follows the EMA of
the student, the last layer stays frozen in the first epoch), and a tiny run on the digits
that does not collapse."""

import numpy as np
import pytest

import lamina
from helpers import randn
from lamina import nn
from lamina.data import load_digits
from lamina.models import DINOHead, DINOLoss
from lamina.train import DINOTrainer, MultiCrop, MultiCropWrapper, cosine_schedule, encode


def test_cosine_schedule_is_the_reference_formula():
    values = cosine_schedule(0.996, 1.0, epochs=3, steps_per_epoch=4)
    steps = np.arange(12)
    np.testing.assert_allclose(values, 1.0 + 0.5 * (0.996 - 1.0) * (1 + np.cos(np.pi * steps / 12)), rtol=1e-15)
    assert values[0] == 0.996 and np.all(np.diff(values) > 0) and values[-1] < 1.0
    warm = cosine_schedule(1e-3, 1e-6, epochs=3, steps_per_epoch=2, warmup_epochs=1, start_warmup_value=0.0)
    np.testing.assert_allclose(warm[:2], [0.0, 1e-3])
    assert len(warm) == 6 and warm[2] == 1e-3
    with pytest.raises(ValueError, match="warmup_epochs"):
        cosine_schedule(1.0, 0.0, 2, 3, warmup_epochs=2)


def test_multi_crop_views_and_wrapper_grouping():
    lamina.manual_seed(0)
    crops = MultiCrop(8, 4, local_crops_number=3)(lamina.tensor(randn(5, 10, 10, 2)))
    assert [c.shape for c in crops] == [(5, 8, 8, 2)] * 2 + [(5, 4, 4, 2)] * 3
    assert not np.allclose(crops[0].numpy(), crops[1].numpy())
    calls = []
    backbone = nn.Sequential(nn.GlobalAvgPool2D(), nn.Dense(3))
    backbone.register_forward_hook(lambda module, inputs, output: calls.append(inputs[0].shape))
    out = MultiCropWrapper(backbone, nn.Dense(6))(crops)
    assert out.shape == (25, 6) and calls == [(10, 8, 8, 2), (15, 4, 4, 2)]


def _trainer(freeze_last_layer=1, momentum=0.9):
    lamina.manual_seed(1)
    backbone = nn.Sequential(nn.Flatten(), nn.Dense(12, activation="relu"), nn.Dense(6))
    head = DINOHead(6, 10, hidden_dim=8, bottleneck_dim=4)
    loss = DINOLoss(10, 3, 0.04, 0.04, 0, 2)
    augment = MultiCrop(6, 6, local_crops_number=1, global_scale=(0.5, 1.0), local_scale=(0.3, 0.5))
    return DINOTrainer(backbone, head, loss, augment, epochs=2, steps_per_epoch=2, momentum_teacher=momentum,
                       lr=1e-2, freeze_last_layer=freeze_last_layer)


def test_step_updates_teacher_by_ema_only_and_freezes_last_layer():
    trainer = _trainer()
    images = lamina.tensor(randn(4, 6, 6, 1, seed=2))
    trainer.train_step(images, epoch=0)
    student, teacher = trainer.student, trainer.teacher
    assert all(not p.trainable and p.grad is None for p in teacher.parameters())
    assert all(p.grad is None for p in student.head.last_layer.parameters())      # frozen in epoch 0
    first_v = student.head.last_layer.v.numpy().copy()
    before = {name: p.numpy().copy() for name, p in teacher.named_parameters()}
    trainer.train_step(images, epoch=1)
    np.testing.assert_array_equal(student.head.last_layer.g.numpy(), 1.0)            # norm_last_layer
    assert not np.allclose(student.head.last_layer.v.numpy(), first_v)               # learns from epoch 1
    m = trainer.momentum_schedule[1]
    assert 0.9 < m < 1.0
    for name, p in student.named_parameters():
        expected = m * before[name] + (1 - m) * p.numpy()
        np.testing.assert_allclose(dict(teacher.named_parameters())[name].numpy(), expected, rtol=1e-6, atol=1e-7,
                                   err_msg=name)
    trainer.train_step(images, epoch=1)
    trainer.train_step(images, epoch=1)
    with pytest.raises(RuntimeError, match="schedule"):                # 2 epochs of 2 steps are done
        trainer.train_step(images, epoch=1)


def test_teacher_starts_as_the_student_and_gets_no_gradient():
    trainer = _trainer(freeze_last_layer=0, momentum=1.0)          # momentum 1: the teacher never moves
    images = lamina.tensor(randn(4, 6, 6, 1, seed=3))
    lamina.manual_seed(4)
    crops = trainer.augment(images)
    with lamina.no_grad():
        trainer.student(crops[:1])                                  # built: these are the first weights
    student_before = {name: p.numpy().copy() for name, p in trainer.student.named_parameters()}
    trainer.train_step(images, epoch=0)
    for name, t in trainer.teacher.named_parameters():
        np.testing.assert_array_equal(t.numpy(), student_before[name], err_msg=name)
        assert t.grad is None
    assert any(not np.array_equal(p.numpy(), student_before[name]) for name, p in trainer.student.named_parameters())


def test_bad_arguments():
    loss = DINOLoss(10, 4, 0.04, 0.04, 0, 2)
    with pytest.raises(ValueError, match="ncrops=4"):
        DINOTrainer(nn.Dense(3), DINOHead(3, 10), loss, MultiCrop(6, 6, 1), 2, 2)
    with pytest.raises(ValueError, match="momentum_teacher"):
        DINOTrainer(nn.Dense(3), DINOHead(3, 10), loss, MultiCrop(6, 6, 2), 2, 2, momentum_teacher=1.5)


def _knn_accuracy(train, test, k: int = 10) -> float:
    """Cosine k-nearest-neighbour accuracy of features (train = (features, labels))."""
    (f_train, y_train), (f_test, y_test) = train, test
    f_train = f_train / np.linalg.norm(f_train, axis=1, keepdims=True)
    f_test = f_test / np.linalg.norm(f_test, axis=1, keepdims=True)
    nearest = np.argsort(-(f_test @ f_train.T), axis=1)[:, :k]
    votes = np.array([np.bincount(row, minlength=10).argmax() for row in y_train[nearest]])
    return float((votes == y_test).mean())


def test_tiny_dino_on_digits_does_not_collapse(capsys):
    """After a short run the teacher's sharpened outputs are neither one class for all images
    (entropy of their mean well above 0) nor uniform (each image's entropy well below log K),
    and the backbone's features still tell the digits apart by k-NN (a collapsed one would be
    near chance, 0.1) about as well as or better than at its random start. At this size the gain
    over the random start is within the spread between seeds (-0.01 to +0.02)."""
    lamina.manual_seed(0)
    x, y = load_digits(size=8)
    x = x.astype(np.float32) / 255.0
    x = (x - x.mean()) / x.std()
    order = np.random.default_rng(0).permutation(len(x))
    x_train, y_train, x_test, y_test = x[order[:1200]], y[order[:1200]], x[order[1200:]], y[order[1200:]]
    backbone = nn.Sequential(nn.Flatten(), nn.Dense(128, activation="relu"), nn.Dense(32))
    backbone.build((None, 8, 8, 1))
    random_features = [encode(backbone, v) for v in (x_train, x_test)]
    out_dim, epochs, batch = 64, 6, 32
    loss = DINOLoss(out_dim, 2, 0.04, 0.04, 0, epochs)
    augment = MultiCrop(8, 8, local_crops_number=0, global_scale=(0.6, 1.0), flip=False)
    trainer = DINOTrainer(backbone, DINOHead(32, out_dim, hidden_dim=64, bottleneck_dim=16), loss, augment, epochs,
                          len(x_train) // batch, momentum_teacher=0.99, lr=2e-3)
    history = trainer.fit(x_train, batch_size=batch, seed=1)
    with lamina.no_grad():
        scores = trainer.teacher(lamina.tensor(x_test)).numpy()
    probs = loss.teacher_targets(scores, epochs - 1)
    mean_probs = probs.mean(axis=0)
    entropy_of_mean = float(-(mean_probs * np.log(mean_probs)).sum())
    entropy_each = float(-(probs * np.log(np.maximum(probs, 1e-30))).sum(axis=1).mean())
    learned = _knn_accuracy((encode(backbone, x_train), y_train), (encode(backbone, x_test), y_test))
    teacher = _knn_accuracy((encode(trainer.teacher.backbone, x_train), y_train),
                            (encode(trainer.teacher.backbone, x_test), y_test))
    chance = _knn_accuracy((random_features[0], y_train), (random_features[1], y_test))
    with capsys.disabled():
        print(f"\nDINO digits: loss {history['loss'][0]:.3f} -> {history['loss'][-1]:.3f}; teacher entropy of the "
              f"mean {entropy_of_mean:.2f}, per image {entropy_each:.2f} (log K {np.log(out_dim):.2f}); k-NN student "
              f"{learned:.3f}, teacher {teacher:.3f}, random {chance:.3f}")
    assert entropy_of_mean > 0.6 * np.log(out_dim)
    assert entropy_each < 0.85 * np.log(out_dim)
    assert learned > 0.9 and learned > chance - 0.02
