"""Checks the zoo tests share: random inputs, a model's evaluation output, torchvision's
published size and cost, and the config + save/load round trip."""

from __future__ import annotations

import numpy as np

import lamina
from lamina import models
from lamina.analysis import summary
from lamina.nn import init
from lamina.nn.layer import layer_from_config, layer_to_config


def random_inputs(shape, seed):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def eval_output(model, x):
    model.eval()
    with lamina.no_grad():
        return model(lamina.tensor(x)).numpy()


def check_published_size(name: str, params: int, gflops: float | None, classes: int = 1000,
                         tolerance: float = 0.002) -> None:
    """The builder ``name`` is unbuilt, has ``params`` parameters once built (shape-only weights:
    counted without allocating them) and, when ``gflops`` is given, torchvision's GFLOPS column
    (multiply-adds, rounded to 2 decimals) within 0.006 + ``tolerance`` * gflops."""
    model = getattr(models, name)()
    assert not model.built and model.parameters() == []
    assert model.compute_output_shape(model.input_shape) == (None, classes)
    with init.meta():
        model.build(model.input_shape)
    assert model.num_parameters() == params
    if gflops is not None:
        macs = summary(getattr(models, name)).total_macs / 1e9
        assert abs(macs - gflops) <= 0.006 + tolerance * gflops, macs


def check_config_and_save_load(model, x, path) -> None:
    """A model rebuilt from its config has the same parameter shapes; one saved to ``path``
    and loaded gives the same outputs on ``x``."""
    expected = eval_output(model, x)
    clone = layer_from_config(layer_to_config(model))
    clone.build(model.build_input_shape)
    assert {k: v.shape for k, v in clone.state_dict().items()} == {k: v.shape for k, v in model.state_dict().items()}
    lamina.save(model, path)
    np.testing.assert_array_equal(eval_output(lamina.load(path), x), expected)
