"""lamina.analysis.summary: the layer table, computed by shape inference."""

import json
import time
import tracemalloc

import numpy as np
import pytest

import lamina
from lamina import functional as F
from lamina import nn, optim
from lamina.analysis import Summary, summary
from lamina.models import lenet5
from lamina.nn import init

LENET = [  # (type, output volume, parameters, MACs) as in the course notes' LeNet table
    ("Conv2D", [28, 28, 6], 156, 117_600),
    ("AvgPool2D", [14, 14, 6], 0, 4_704),
    ("Conv2D", [10, 10, 16], 2_416, 240_000),
    ("AvgPool2D", [5, 5, 16], 0, 1_600),
    ("Flatten", [400], 0, 0),
    ("Dense", [120], 48_120, 48_000),
    ("Dense", [84], 10_164, 10_080),
    ("Dense", [10], 850, 840),
    ("Softmax", [10], 0, 0),
]


def vgg16_like() -> nn.Sequential:
    """VGG16 (configuration D) written out here, so the performance test never skips."""
    layers = []
    for c in (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"):
        layers.append(nn.MaxPool2D(2, 2) if c == "M" else nn.Conv2D(c, 3, padding=1, activation="relu"))
    layers += [nn.Flatten(), nn.Dense(4096, activation="relu"), nn.Dropout(), nn.Dense(4096, activation="relu"),
               nn.Dropout(), nn.Dense(1000), nn.Softmax()]
    return nn.Sequential(*layers)


def test_lenet5_matches_the_course_table():
    s = lenet5().summary()
    assert [(r["type"], r["output_shape"], r["params"], r["macs"]) for r in s.rows] == LENET
    assert s.total_params == s.trainable_params == 61_706 and s.non_trainable_params == 0
    assert s.total_macs == sum(row[3] for row in LENET)
    assert s.rows[0]["hyperparameters"].startswith("K=6 f=5 s=1 p=0")
    assert s.rows[1]["hyperparameters"] == "f=2 s=2"
    assert s.rows[5]["hyperparameters"].startswith("n=120")
    assert s.rows[0]["activation_bytes"] == 28 * 28 * 6 * 4


def test_the_printed_table_is_aligned_and_has_the_totals():
    text = str(lenet5().summary())
    lines = text.splitlines()
    assert "Total params: 61,706" in text and "Trainable params: 61,706" in text
    assert "Non-trainable params: 0" in text and "Total MACs" in text and "422,824" in text
    header = next(i for i, line in enumerate(lines) if line.startswith("Layer (type)"))
    rows = lines[header + 2:header + 2 + len(LENET)]
    assert rows[0].startswith("conv2d (Conv2D)") and "(28, 28, 6)" in rows[0] and "117,600" in rows[0]
    # right-aligned numeric columns: every row's MACs end under the end of the header's "MACs"
    end = lines[header].index("MACs") + len("MACs")
    assert all(line[:end].endswith(f" {macs:,}") for line, (*_, macs) in zip(rows, LENET))


def test_rows_and_json_for_programs():
    s = summary(lenet5(), (32, 32, 1), batch_size=4)
    data = json.loads(s.to_json())
    assert data["total_params"] == 61_706 and data["total_macs"] == s.total_macs
    assert data["rows"][0]["name"] == "conv2d" and data["rows"][0]["output_shape"] == [28, 28, 6]
    assert data["rows"][0]["activation_bytes"] == 4 * 28 * 28 * 6 * 4
    assert not any(k.startswith("_") for k in data["rows"][0])
    assert isinstance(s, Summary) and "61,706" in repr(s)


def test_training_memory_adds_the_courses_sources():
    s = summary(lenet5(), batch_size=32, optimizer="adam")
    mem = s.training_memory()
    p = 61_706 * 4
    assert mem["parameters"] == mem["gradients"] == p and mem["optimizer_state"] == 2 * p
    per_sample = sum(r["activation_bytes"] for r in s.rows) // 32
    assert mem["activations"] == 32 * per_sample
    # the pre-activations z inside the three tanh layers' Conv2D/Dense calls: 28*28*6 + 10*10*16 + 120 + 84
    assert mem["intermediates"] == 32 * 4 * (28 * 28 * 6 + 10 * 10 * 16 + 120 + 84)
    assert mem["activation_gradients"] == mem["activations"] + mem["intermediates"]
    assert mem["input"] == 32 * 32 * 32 * 1 * 4
    assert mem["total"] == sum(v for k, v in mem.items() if k != "total")
    assert s.training_memory(optimizer="sgd")["optimizer_state"] == 0
    assert s.training_memory(optimizer="momentum")["optimizer_state"] == p
    assert s.training_memory(batch_size=64)["activations"] == 2 * mem["activations"]
    with pytest.raises(ValueError, match="optimizer"):
        summary(lenet5(), optimizer="lbfgs")


def test_frozen_parameters_and_buffers_are_counted_apart():
    model = nn.Sequential(nn.Conv2D(8, 3, use_bias=False), nn.BatchNorm(), nn.Flatten(), nn.Dense(2))
    model.build((None, 6, 6, 3))
    model[0].freeze()
    s = model.summary()
    conv, bn = s.rows[0], s.rows[1]
    assert conv["trainable_params"] == 0 and conv["non_trainable_params"] == 8 * 27
    assert bn["params"] == 16  # gamma and beta; the running statistics are buffers
    assert s.non_trainable_params == 216 and s.total_params == 216 + 16 + 4 * 4 * 8 * 2 + 2
    assert s.training_memory()["buffers"] == 16 * 4
    assert s.training_memory()["gradients"] == (s.trainable_params) * 4


def test_grouped_depthwise_and_separable_macs_follow_the_formulas():
    model = nn.Sequential(nn.Conv2D(8, 3, groups=2, padding=1), nn.DepthwiseConv2D(3, depth_multiplier=2),
                          nn.SeparableConv2D(4, 3, padding="same"), nn.GlobalAvgPool2D())
    rows = summary(model, (10, 10, 4)).rows
    assert rows[0]["macs"] == 10 * 10 * 8 * 3 * 3 * (4 // 2) and rows[0]["params"] == 8 * (9 * 2 + 1)
    assert rows[1]["macs"] == 8 * 8 * 16 * 3 * 3 and rows[1]["params"] == 16 * 9 + 16
    assert rows[2]["macs"] == 8 * 8 * 16 * 9 + 8 * 8 * 4 * 16
    assert rows[3]["macs"] == 8 * 8 * 4 and rows[3]["hyperparameters"] == "f=8"


def test_dilated_convolutions_count_their_taps_and_show_the_dilation():
    model = nn.Sequential(nn.Conv2D(8, 3, dilation=2), nn.SeparableConv2D(4, 3, dilation=(1, 3), padding="same"))
    rows = summary(model, (12, 12, 2)).rows
    assert rows[0]["output_shape"] == [8, 8, 8] and rows[0]["params"] == 8 * (9 * 2 + 1)
    assert rows[0]["macs"] == 8 * 8 * 8 * 3 * 3 * 2          # f^2 taps, not the 5x5 extent
    assert rows[0]["hyperparameters"] == "K=8 f=3 s=1 p=0 d=2"
    assert rows[1]["hyperparameters"] == "K=4 f=3 s=1 p=same d=1x3"


def test_composite_blocks_show_their_layers_with_dotted_names():
    class Residual(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2D(4, 3, padding=1)
            self.conv2 = nn.Conv2D(4, 3, padding=1)

        def forward(self, x):
            return F.relu(self.conv2(F.relu(self.conv1(x))) + x)

    model = nn.Sequential(Residual(), Residual(), name="net")
    s = summary(model, (5, 5, 4))
    assert [r["name"] for r in s.rows] == ["residual.conv1", "residual.conv2", "residual_1.conv1",
                                           "residual_1.conv2"]
    assert s.total_params == 4 * (4 * 36 + 4)
    assert str(s).startswith('Model: "net"')


def test_a_layer_called_twice_counts_its_parameters_once():
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.dense = nn.Dense(3)

        def forward(self, x):
            return self.dense(self.dense(x))

    s = summary(Twice(), (3,))
    assert [r["params"] for r in s.rows] == [12, 0]
    assert [r["macs"] for r in s.rows] == [9, 9]
    assert s.total_params == 12


def test_summary_of_an_unbuilt_model_leaves_it_unbuilt_then_it_trains_with_real_weights():
    model = nn.Sequential(nn.Conv2D(4, 3, activation="relu"), nn.Flatten(), nn.Dense(3))
    s = model.summary((6, 6, 2))
    assert s.total_params == 4 * 19 + 64 * 3 + 3
    assert not model.built and not any(layer.built for layer in model) and model.parameters() == []
    x = np.random.default_rng(0).standard_normal((5, 6, 6, 2)).astype(np.float32)
    y = np.eye(3, dtype=np.float32)[[0, 1, 2, 0, 1]]
    model(x)
    params = model.parameters()
    assert sum(p.size for p in params) == s.total_params
    assert all(not init.is_meta_array(p) and p.data.flags.writeable for p in params)
    before = [p.data.copy() for p in params]
    opt = optim.SGD(params, lr=0.1)
    loss = F.categorical_cross_entropy(model(x), y, from_logits=True)
    loss.backward()
    opt.step()
    assert any(not np.array_equal(b, p.data) for b, p in zip(before, params))


def test_summary_of_a_built_model_changes_nothing():
    model = lenet5()
    model.train()
    weights = {k: v.copy() for k, v in model.state_dict().items()}
    model.summary()
    assert all(m.training for m in model.modules())
    assert all(np.array_equal(weights[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())


def test_a_builder_is_summarised_with_shape_only_weights():
    s = summary(lambda: lenet5(), (32, 32, 1))
    assert s.total_params == 61_706


def test_vgg16_summary_is_shape_inference_fast_and_small():
    """The issue's requirement: VGG16 at 224x224 in under 2 s and 200 MB. Its weights alone
    are 528 MiB in float32, so this can only pass without allocating them; it takes about
    0.02 s and 0.2 MB here, which leaves a wide margin for slow machines."""
    model = vgg16_like()
    tracemalloc.start()
    try:
        start = time.perf_counter()
        s = summary(model, (224, 224, 3))
        elapsed = time.perf_counter() - start
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert s.total_params == 138_357_544
    assert abs(s.total_macs - 15.47e9) / 15.47e9 < 0.03
    assert peak < 200 * 2**20, (elapsed, peak)  # shapes only: no weights are made
    assert not model.built


def test_zoo_vgg16_summary_is_fast_and_small(builder):
    vgg16 = builder("vgg16")
    tracemalloc.start()
    try:
        start = time.perf_counter()
        s = summary(vgg16(), (224, 224, 3))  # the zoo's builders return unbuilt models
        s2 = summary(vgg16, (224, 224, 3))  # a builder is built in meta mode
        elapsed = time.perf_counter() - start
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert s.total_params == s2.total_params == 138_357_544
    assert peak < 200 * 2**20, (elapsed, peak)  # two summaries, same margin


def test_float64_summaries_count_eight_bytes():
    lamina.set_default_dtype(np.float64)
    s = summary(nn.Sequential(nn.Dense(10)), (5,))
    assert s.dtype == "float64" and s.rows[0]["activation_bytes"] == 80 and s.param_bytes == 60 * 8


def test_optimizer_state_counts_match_the_optimizers():
    """The memory estimate's values of state per parameter are what each optimizer (as
    `lamina train --optimizer` builds it) holds after a step; every CLI choice is known."""
    from lamina.analysis.summary import OPTIMIZER_STATES
    from lamina.cli import OPTIMIZERS, build_optimizer

    assert set(OPTIMIZERS) == set(OPTIMIZER_STATES)
    for name in OPTIMIZERS:
        w = nn.Parameter(np.ones((3, 2)))
        opt = build_optimizer(name, [w], lr=0.01)
        if hasattr(opt, "train_mode"):
            opt.train()                      # schedule-free: steps only in training mode
        w.grad = np.full((3, 2), 0.5)
        opt.step()
        arrays = [v for v in opt.state[0].values() if isinstance(v, np.ndarray) and v.shape == w.shape]
        assert len(arrays) == OPTIMIZER_STATES[name], (name, sorted(opt.state[0]))


def test_a_text_model_is_traced_with_integer_ids_and_its_attention_counted():
    from lamina.nn.embedding import Embedding
    from lamina.nn.multi_head_attention import MultiHeadAttention

    model = nn.Sequential(Embedding(100, 16), MultiHeadAttention(16, 4), nn.Dense(100))
    s = summary(model, (12,))
    assert s.dtype == "int64"
    embed, attention, dense = s.rows
    assert (embed["params"], embed["macs"], embed["output_shape"]) == (100 * 16, 0, [12, 16])
    assert embed["hyperparameters"] == "W=100 A=16" and attention["hyperparameters"] == "E=16 h=4"
    e, t = 16, 12
    assert attention["params"] == 4 * e * e + 4 * e
    assert attention["macs"] == e * e * 4 * t + 2 * t * t * e      # projections, scores and context
    assert dense["macs"] == t * e * 100
    assert not model.built                                         # shape inference only


def test_recurrent_layers_count_their_steps():
    model = nn.Sequential(nn.Embedding(50, 8), nn.Bidirectional(nn.LSTM(16, return_sequences=True)),
                          nn.GRU(12), nn.Dense(3))
    s = summary(model, (20,))
    types = [r["type"] for r in s.rows]
    assert types == ["Embedding", "LSTM", "LSTM", "GRU", "Dense"]
    forward, backward, gru = s.rows[1], s.rows[2], s.rows[3]
    assert forward["macs"] == backward["macs"] == 20 * 4 * 16 * (8 + 16)
    assert forward["params"] == 4 * 16 * (8 + 16) + 2 * 4 * 16
    assert forward["hyperparameters"] == "H=16 return_sequences"
    assert backward["hyperparameters"] == "H=16 return_sequences go_backwards"
    assert gru["output_shape"] == [12] and gru["macs"] == 20 * 3 * 12 * (32 + 12)


def test_cross_attention_counts_the_keys_given_by_keyword():
    class Decoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.attention = nn.MultiHeadAttention(8, 2)

        def forward(self, x):
            memory = F.concat([x, x, x], axis=1)                    # 3 T keys
            return self.attention(x, key=memory, value=memory)

    row = summary(Decoder(), (5, 8)).rows[0]
    e, t_q, t_k = 8, 5, 15
    assert row["macs"] == e * e * (2 * t_q + 2 * t_k) + 2 * t_q * t_k * e


def test_time_first_intermediates_count_per_sample():
    """A recurrent layer keeps its steps time-first, (T + 2, N, H): the batch axis is not the
    first one, and the tensor still counts T + 2 rows of H values per sample."""
    from lamina.analysis.trace import trace

    tr = trace(nn.Sequential(nn.LSTM(16), nn.Dense(3)), (10, 8))
    shapes = [tuple(t.shape) for t in tr.intermediates()]
    assert shapes == [(12, 0, 16)]
    assert tr.intermediate_bytes() == 12 * 16 * 4
