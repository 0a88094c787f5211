"""lamina.analysis.summary and trace for models of several inputs and several outputs: a
Dense branch on a vector and a Conv2D branch on an image, merged by Concatenate. The
figures are checked against the layer formulas, against PyTorch's parameter and flop
counts of the same layers, and against the summaries of the branches taken one by one."""

import json
import math

import numpy as np
import pytest

from lamina import nn
from lamina.analysis import receptive_field, summary, trace

VECTOR = (4,)
IMAGE = (8, 8, 1)
UNITS = 6                      # the Dense branch
FILTERS, KERNEL = 3, 3         # the Conv2D branch (no padding, stride 1)
CLASSES = 5                    # the head
CONV_OUT = (IMAGE[0] - KERNEL + 1, IMAGE[1] - KERNEL + 1, FILTERS)
JOINED = UNITS + math.prod(CONV_OUT)
FLOAT_BYTES = 4


def two_input_model(head_units=(CLASSES,), head_activation=None) -> nn.Model:
    vector, image = nn.Input(VECTOR, name="vec"), nn.Input(IMAGE, name="img")
    a = nn.Dense(UNITS, activation="relu", name="vector_dense")(vector)
    b = nn.Flatten()(nn.Conv2D(FILTERS, KERNEL, name="image_conv")(image))
    joined = nn.Concatenate()([a, b])
    heads = [nn.Dense(n, activation=head_activation, name=f"head_{k}")(joined) for k, n in enumerate(head_units)]
    return nn.Model([vector, image], heads if len(heads) > 1 else heads[0])


def _row(table, name: str) -> dict:
    (row,) = [r for r in table.rows if r["name"] == name]
    return row


def _batch(shape, n=3, seed=0):
    return np.random.default_rng(seed).standard_normal((n, *shape)).astype(np.float32)


def test_rows_add_up_to_the_model_and_follow_the_layer_formulas():
    model = two_input_model()
    table = summary(model)
    assert table.input_shapes == [VECTOR, IMAGE] and table.input_shape == [VECTOR, IMAGE]
    assert sum(r["params"] for r in table.rows) == table.total_params == model.num_parameters()
    dense, conv, head = _row(table, "vector_dense"), _row(table, "image_conv"), _row(table, "head_0")
    assert dense["macs"] == VECTOR[0] * UNITS                                   # n_in n_out
    h_out, w_out, k = CONV_OUT
    assert conv["macs"] == h_out * w_out * k * KERNEL * KERNEL * IMAGE[-1]      # h_out w_out K f f c_in
    assert head["macs"] == JOINED * CLASSES
    assert table.total_macs == sum(r["macs"] for r in table.rows)
    assert dense["params"] == UNITS * (VECTOR[0] + 1) and conv["params"] == k * (KERNEL * KERNEL * IMAGE[-1] + 1)
    concat = _row(table, "concatenate")
    assert concat["input_shape"] == [[UNITS], [math.prod(CONV_OUT)]] and concat["output_shape"] == [JOINED]
    out = model(_batch(VECTOR), _batch(IMAGE, seed=1))
    assert head["output_shape"] == list(out.shape[1:])
    assert all(r["receptive_field"] is None for r in table.rows)               # blank for several inputs
    sample_bytes = (math.prod(VECTOR) + math.prod(IMAGE)) * FLOAT_BYTES
    assert table.input_bytes == sample_bytes and table.training_memory(batch_size=8)["input"] == 8 * sample_bytes


def test_parameters_and_macs_match_pytorch_on_the_same_layers():
    torch = pytest.importorskip("torch")
    from torch.utils.flop_counter import FlopCounterMode

    table = summary(two_input_model())
    dense, conv = torch.nn.Linear(VECTOR[0], UNITS), torch.nn.Conv2d(IMAGE[-1], FILTERS, KERNEL)
    head = torch.nn.Linear(JOINED, CLASSES)
    assert table.total_params == sum(p.numel() for m in (dense, conv, head) for p in m.parameters())
    with FlopCounterMode(display=False) as counter:                            # counts 2 flops per MAC
        a = torch.relu(dense(torch.zeros(1, *VECTOR)))
        b = conv(torch.zeros(1, IMAGE[-1], *IMAGE[:2])).flatten(1)
        head(torch.cat([a, b], dim=1))
    assert table.total_macs * 2 == counter.get_total_flops()


def test_memory_is_the_sum_of_the_branches_taken_one_by_one():
    whole = summary(two_input_model(), batch_size=4, optimizer="sgd")
    pieces = [summary(nn.Sequential(nn.Dense(UNITS, activation="relu")), VECTOR, batch_size=4, optimizer="sgd"),
              summary(nn.Sequential(nn.Conv2D(FILTERS, KERNEL), nn.Flatten()), IMAGE, batch_size=4, optimizer="sgd"),
              summary(nn.Sequential(nn.Dense(CLASSES)), (JOINED,), batch_size=4, optimizer="sgd")]
    concat_bytes = JOINED * FLOAT_BYTES                                        # the one layer no piece has
    assert whole.activation_bytes_per_sample == sum(p.activation_bytes_per_sample for p in pieces) + concat_bytes
    assert whole.intermediate_bytes_per_sample == sum(p.intermediate_bytes_per_sample for p in pieces) > 0
    memory, parts = whole.training_memory(), [p.training_memory() for p in pieces]
    for key in ("parameters", "gradients", "optimizer_state", "buffers"):
        assert memory[key] == sum(part[key] for part in parts)
    assert memory["input"] == parts[0]["input"] + parts[1]["input"]           # the head's input is not an input
    assert memory["activations"] == 4 * whole.activation_bytes_per_sample


def test_printed_and_json_tables_list_every_input():
    table = summary(two_input_model())
    text = str(table)
    header = text.splitlines()[0]
    assert "vec (4,)" in header and "img (8, 8, 1)" in header and "float32" in header
    assert "RF: left blank" in text and "several inputs" in text
    assert "vector_dense (Dense)" in text and "image_conv (Conv2D)" in text
    as_json = json.loads(table.to_json())
    assert as_json["input_shape"] == [list(VECTOR), list(IMAGE)]
    assert as_json["total_params"] == table.total_params
    assert str(two_input_model().summary()) == text


def test_two_outputs_are_both_in_the_table():
    model = two_input_model(head_units=(2, CLASSES), head_activation="relu")
    table = summary(model)
    first, second = _row(table, "head_0"), _row(table, "head_1")
    assert first["output_shape"] == [2] and second["output_shape"] == [CLASSES]
    assert first["macs"] == JOINED * 2 and second["macs"] == JOINED * CLASSES
    assert sum(r["params"] for r in table.rows) == table.total_params == model.num_parameters()
    # the pre-activations inside the three Dense layers with a ReLU, found back from both outputs
    assert table.intermediate_bytes_per_sample == (UNITS + 2 + CLASSES) * FLOAT_BYTES
    outs = model(_batch(VECTOR), _batch(IMAGE, seed=1))
    assert [list(o.shape[1:]) for o in outs] == [first["output_shape"], second["output_shape"]]


def test_one_image_input_with_two_outputs_keeps_its_receptive_fields():
    image = nn.Input(IMAGE)
    trunk = nn.Conv2D(4, 3, padding="same", name="trunk")(image)
    model = nn.Model(image, [nn.Conv2D(2, 3, padding="same", name="left")(trunk),
                             nn.Conv2D(2, 5, padding="same", name="right")(trunk)])
    table = summary(model)
    fields = {r["name"]: r["receptive_field"] for r in table.rows}
    assert fields == {"trunk": [3, 3], "left": [5, 5], "right": [7, 7]}       # r + (f - 1) j, j = 1
    assert receptive_field(model, "right") == 7 and table.input_shape == IMAGE
    assert sum(r["params"] for r in table.rows) == model.num_parameters()


class TwoArguments(nn.Module):
    """Built lazily; its forward takes the vector and the image as two arguments."""

    def __init__(self):
        super().__init__()
        self.vector = nn.Dense(UNITS, activation="relu")
        self.image = nn.Sequential(nn.Conv2D(FILTERS, KERNEL), nn.Flatten())
        self.join = nn.Concatenate()
        self.head = nn.Dense(CLASSES)

    def forward(self, vector, image):
        return self.head(self.join(self.vector(vector), self.image(image)))


class OneList(TwoArguments):
    """The same, with a forward that takes one list [vector, image]."""

    def forward(self, inputs):
        vector, image = inputs
        return super().forward(vector, image)


@pytest.mark.parametrize("model_class", [TwoArguments, OneList])
def test_a_lazily_built_model_is_summarised_for_the_given_shapes_and_stays_unbuilt(model_class):
    model = model_class()
    with pytest.raises(ValueError, match="list of shapes"):
        summary(model)
    table = model.summary([VECTOR, IMAGE])
    assert not model.built and not model.head.built                           # the caller's model is untouched
    assert table.input_shapes == [VECTOR, IMAGE]
    assert [r["type"] for r in table.rows] == ["Dense", "Conv2D", "Flatten", "Concatenate", "Dense"]
    assert table.rows[-1]["macs"] == JOINED * CLASSES
    xs = [_batch(VECTOR), _batch(IMAGE, seed=1)]
    out = model(*xs) if model_class is TwoArguments else model(xs)
    assert list(out.shape[1:]) == table.rows[-1]["output_shape"]
    assert model.num_parameters() == table.total_params
    again = summary(model)                                                     # now from the built shapes
    assert again.input_shapes == [VECTOR, IMAGE] and again.rows == table.rows


def test_trace_feeds_one_zero_batch_per_input():
    single = trace(nn.Sequential(nn.Dense(3)), VECTOR)
    assert single.input is single.inputs[0] and single.input.shape == (0, *VECTOR)
    tr = trace(two_input_model())
    assert [t.shape for t in tr.inputs] == [(0, *VECTOR), (0, *IMAGE)]
    with pytest.raises(ValueError, match=r"takes 2 inputs.*\(4,\), \(8, 8, 1\)"):
        _ = tr.input
    lazy = trace(TwoArguments(), [(7,), (10, 10, 1)])
    assert [t.shape for t in lazy.inputs] == [(0, 7), (0, 10, 10, 1)]
    assert lazy.calls[-1].input_shapes == [(UNITS + 8 * 8 * FILTERS,)]


def test_an_integer_input_gets_integer_ids():
    ids, vector = nn.Input((5,), name="ids", dtype="int64"), nn.Input(VECTOR, name="vec")
    words = nn.Flatten()(nn.Embedding(10, 3)(ids))
    model = nn.Model([ids, vector], nn.Dense(2)(nn.Concatenate()([words, vector])))
    table = summary(model)
    assert table.dtype == "int64/float32"
    assert table.input_bytes == 5 * 8 + math.prod(VECTOR) * FLOAT_BYTES
    assert _row(table, "embedding")["params"] == 10 * 3
    assert table.total_params == model.num_parameters()


def test_bad_input_shapes_are_refused_clearly():
    model = two_input_model()
    with pytest.raises(ValueError, match="positive sizes"):
        summary(model, [VECTOR, (0, 3)])
    with pytest.raises(ValueError, match="called on 1 input"):
        summary(model, IMAGE)
    with pytest.raises(ValueError, match="receptive fields.*one input"):
        receptive_field(model)
