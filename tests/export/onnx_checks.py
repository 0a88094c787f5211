"""The export-and-compare check that the ONNX test files share: export a model, make sure the
export left its weights as they were, and compare ONNX Runtime's outputs with lamina's."""

from __future__ import annotations

import numpy as np
import pytest

import lamina
from helpers import assert_close
from lamina import nn
from lamina.export import export_onnx

ort = pytest.importorskip("onnxruntime")


def weights(model: nn.Module) -> dict:
    """Copies of the model's state dict."""
    return {name: np.array(value, copy=True) for name, value in model.state_dict().items()}


def perturb(model: nn.Module, scale: float = 0.3, seed: int = 3) -> nn.Module:
    """Every parameter moved off its initial value (zero biases, unit gains and zero gammas
    would hide whole terms of a graph)."""
    rng = np.random.default_rng(seed)
    for p in model.parameters():
        p.data = (p.data + scale * rng.standard_normal(p.shape)).astype(p.data.dtype)
    return model


def export_session(model: nn.Module, tmp_path, input_shape, opset: int = 17):
    """(path, ONNX Runtime session) of ``model``'s export in evaluation mode; the export must
    leave every weight as it was."""
    model.eval()
    before = weights(model)
    path = export_onnx(model, tmp_path / "model.onnx", input_shape=input_shape, opset=opset)
    after = weights(model)
    assert before.keys() == after.keys()
    assert all(np.array_equal(before[name], after[name]) for name in before)
    return path, ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def check_export(model: nn.Module, tmp_path, input_shape, what: str, rtol: float = 1e-5, opset: int = 17,
                 batches=(1, 3), lengths=(), sample=None, build: bool = False, perturb_seed: int | None = None):
    """ONNX Runtime's outputs equal lamina's for inputs of each batch size in ``batches`` (and,
    for sequences, of batch 2 with each of ``lengths`` steps); returns the file's path.

    ``build`` first calls the model on zeros (seeded), ``perturb_seed`` then moves its
    parameters (:func:`perturb`); ``sample(shape, rng)`` draws the inputs (standard normal by
    default)."""
    if build:
        lamina.manual_seed(0)
        model(lamina.tensor(np.zeros((1, *input_shape), dtype=np.float32)))
    if perturb_seed is not None:
        perturb(model, seed=perturb_seed)
    path, session = export_session(model, tmp_path, input_shape, opset)
    sample = sample or (lambda shape, rng: rng.standard_normal(shape))
    shapes = [(batch, *input_shape) for batch in batches] + [(2, steps, *input_shape[1:]) for steps in lengths]
    for i, shape in enumerate(shapes):
        x = sample(shape, np.random.default_rng(i)).astype(np.float32)
        with lamina.no_grad():
            expected = model(lamina.tensor(x)).numpy()
        (got,) = session.run(None, {"input": x})
        assert got.shape == expected.shape, f"{what}: ONNX gave {got.shape}, lamina {expected.shape}"
        assert_close(got, expected, rtol=rtol, what=f"{what}, input {shape}")
    return path
