"""The hooks lamina.analysis stands on: shape-only weights (nn.init.meta), call
interception (nn.module.intercept_calls) and zero-sample batches through every op."""

import numpy as np
import pytest

import lamina
from lamina import functional as F
from lamina import nn
from lamina.analysis import trace
from lamina.nn import init
from lamina.nn.module import intercept_calls


def test_meta_initializers_allocate_nothing_and_draw_nothing():
    state = lamina.backend.get_rng_state()
    with init.meta():
        assert init.is_meta()
        arrays = [init.he_uniform((4096, 25088)), init.get("xavier_normal")((512, 3, 3, 512)),
                  init.normal(0.01)((1000, 10)), init.get(lambda shape, *a, **k: np.ones(shape))((7, 7)),
                  init.constant(0.1)((64,)), init.zeros((3, 4), dtype=np.float64)]
    assert not init.is_meta()
    for a in arrays:
        assert init.is_meta_array(a)
        assert not a.flags.writeable and a.base.nbytes <= 8  # one element, broadcast
    assert arrays[0].shape == (4096, 25088) and arrays[0].dtype == np.float32
    assert arrays[-1].dtype == np.float64
    after = lamina.backend.get_rng_state()
    assert str(after) == str(state)  # no random numbers drawn
    real = init.he_uniform((3, 4))
    assert not init.is_meta_array(real) and real.flags.writeable


def test_layers_built_in_meta_mode_have_shapes_only():
    layer = nn.Dense(4096)
    with init.meta():
        layer.build((None, 25088))
    assert layer.weight.shape == (25088, 4096) and init.is_meta_array(layer.weight)


def test_intercept_calls_sees_every_call_in_order_and_uninstalls():
    model = nn.Sequential(nn.Dense(4, activation="relu"), nn.Dense(2))
    seen = []

    def spy(module, inputs, kwargs, forward):
        seen.append(type(module).__name__)
        out = forward()
        seen.append(f"/{type(module).__name__}")
        return out

    with intercept_calls(spy):
        y = model(np.ones((3, 5), dtype=np.float32))
    assert y.shape == (3, 2)
    assert seen == ["Sequential", "Dense", "/Dense", "Dense", "/Dense", "/Sequential"]
    model(np.ones((3, 5), dtype=np.float32))
    assert len(seen) == 6  # no longer intercepted


def test_conv_rows_plan_accepts_a_zero_sample_batch():
    # stride 1, 3x3, >= 8 channels: the "rows" plan, which computed a negative row count for N = 0
    x = np.zeros((0, 8, 8, 8), dtype=np.float32)
    w = np.ones((4, 3, 3, 8), dtype=np.float32)
    assert F.conv2d(x, w, padding=1).shape == (0, 8, 8, 4)
    assert F.conv2d(x, w).shape == (0, 6, 6, 4)


def test_every_layer_runs_on_zero_samples():
    class Residual(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2D(8, 3, padding=1)
            self.bn = nn.BatchNorm()

        def forward(self, x):
            return F.relu(F.add(self.bn(self.conv(x)), x))

    model = nn.Sequential(
        nn.Conv2D(8, 3, padding="same"), nn.BatchNorm(), nn.ReLU(), nn.LocalResponseNorm(),
        nn.MaxPool2D(3, 2, padding=1, ceil_mode=True), Residual(), nn.DepthwiseConv2D(3, depth_multiplier=2),
        nn.SeparableConv2D(6, 3, padding="same"), nn.PReLU(), nn.AvgPool2D(2), nn.Conv2D(4, 1, groups=2),
        nn.GlobalAvgPool2D(), nn.Dropout(0.5), nn.Dense(5), nn.Softmax(),
    )
    tr = trace(model, (16, 16, 3))
    assert [c.output_shapes[0] for c in tr.calls][-3:] == [(4,), (5,), (5,)]
    assert tr.output[0].shape == (0, 5)
    assert not model.built  # the caller's model was not touched


def test_merge_layers_trace_with_several_inputs():
    class Inception(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2D(4, 1)
            self.b = nn.Conv2D(6, 3, padding=1)
            self.pool = nn.MaxPool2D(3, 1, padding=1)
            self.cat = nn.Concatenate()
            self.add = nn.Add()

        def forward(self, x):
            y = self.cat([self.a(x), self.b(x), self.pool(x)])
            return self.add(y, y)

    tr = trace(Inception(), (8, 8, 3))
    cat = next(c for c in tr.calls if c.path == "cat")
    assert cat.input_shapes == [(8, 8, 4), (8, 8, 6), (8, 8, 3)] and cat.output_shapes == [(8, 8, 13)]
    add = next(c for c in tr.calls if c.path == "add")
    assert add.input_shapes == [(8, 8, 13), (8, 8, 13)]


def test_trace_needs_an_input_shape_for_an_unbuilt_model():
    with pytest.raises(ValueError, match="input_shape"):
        trace(nn.Sequential(nn.Dense(3)))
