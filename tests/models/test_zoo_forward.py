"""Every zoo model runs: a forward pass on one image at its native input size, and a
forward + backward pass on a batch of 2 in training mode at a reduced width or resolution,
with finite outputs and a finite gradient for every trainable parameter."""

import gc

import numpy as np
import pytest

import lamina
from lamina import functional as F
from lamina import models

NATIVE = ["alexnet", "zfnet", "vgg11", "vgg13", "vgg16", "vgg19", "googlenet", "inception_v3", "resnet18",
          "resnet34", "resnet50", "resnet101", "resnet152", "mobilenet", "resnet_cifar"]


@pytest.mark.parametrize("name", NATIVE)
def test_forward_at_native_size(name):
    model = getattr(models, name)()
    x = np.random.default_rng(0).random((1, *model.input_shape[1:]), dtype=np.float32)
    model.eval()
    with lamina.no_grad():
        y = model(lamina.tensor(x)).numpy()
    assert y.shape == (1, 10 if name == "resnet_cifar" else 1000)
    assert np.isfinite(y).all()
    if name in ("alexnet", "zfnet", "mobilenet"):  # these end with a softmax
        np.testing.assert_allclose(y.sum(axis=1), 1.0, rtol=1e-5)
    del model
    gc.collect()


REDUCED = [
    ("alexnet", {"num_classes": 10, "input_shape": (67, 67, 3)}),
    ("zfnet", {"num_classes": 10, "input_shape": (64, 64, 3)}),
    ("vgg11", {"num_classes": 10, "input_shape": (32, 32, 3), "batch_norm": True}),
    ("vgg16", {"num_classes": 10, "input_shape": (32, 32, 3)}),
    ("googlenet", {"num_classes": 10, "input_shape": (64, 64, 3), "aux_logits": True}),
    ("inception_v3", {"num_classes": 10, "input_shape": (75, 75, 3)}),
    ("resnet18", {"num_classes": 10, "input_shape": (64, 64, 3)}),
    ("resnet50", {"num_classes": 10, "input_shape": (64, 64, 3)}),
    ("resnet152", {"num_classes": 10, "input_shape": (32, 32, 3)}),
    ("mobilenet", {"num_classes": 10, "input_shape": (64, 64, 3), "alpha": 0.25}),
    ("mobilenet", {"num_classes": 10, "rho": 0.3, "alpha": 0.5}),
    ("resnet_cifar", {"depth": 20, "shortcut": "A"}),
    ("resnet_cifar", {"depth": 20, "shortcut": "B"}),
]


@pytest.mark.parametrize("name, kwargs", REDUCED, ids=[f"{n}-{i}" for i, (n, _) in enumerate(REDUCED)])
def test_forward_backward_at_reduced_size(name, kwargs):
    model = getattr(models, name)(**kwargs)
    x = np.random.default_rng(1).standard_normal((2, *model.input_shape[1:])).astype(np.float32)
    labels = np.array([1, 3])
    model.train()
    out = model(lamina.tensor(x))
    outputs = out if isinstance(out, tuple) else (out,)
    assert len(outputs) == (3 if kwargs.get("aux_logits") else 1)
    loss = None
    for o in outputs:
        assert o.shape == (2, 10) and np.isfinite(o.numpy()).all()
        from_logits = name not in ("alexnet", "zfnet", "mobilenet")
        term = F.categorical_cross_entropy(o, labels, from_logits=from_logits)
        loss = term if loss is None else loss + term
    loss.backward()
    for pname, p in model.named_parameters(trainable_only=True):
        assert p.grad is not None, f"no gradient reached {pname}"
        assert np.isfinite(p.grad).all(), f"non-finite gradient in {pname}"
    assert any(np.abs(p.grad).max() > 0 for p in model.parameters())
    del model, out, outputs, loss
    gc.collect()
