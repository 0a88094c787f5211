"""lamina.analysis.summary of TimeDistributed layers: one row per wrapper with the figures of
the whole sequence, checked against the summary of the wrapped layer on a single frame (a
sequence of T frames costs T times one frame)."""

import numpy as np
import pytest

from lamina import nn
from lamina.analysis import summary
from lamina.nn import Conv2D, Dense, Flatten, MaxPool2D, TimeDistributed
from lamina.nn.recurrent import LSTM

FRAME = (8, 8, 1)


def frame_model():
    return nn.Sequential(TimeDistributed(Conv2D(4, 3)), TimeDistributed(Flatten()), LSTM(8))


@pytest.mark.parametrize("steps", [3, 6])
def test_each_wrapper_is_one_row_with_the_figures_of_the_whole_sequence(steps):
    table = summary(frame_model(), (steps, *FRAME))
    conv_alone = summary(nn.Sequential(Conv2D(4, 3)), FRAME).rows[0]
    assert [row["type"] for row in table.rows] == ["TimeDistributed", "TimeDistributed", "LSTM"]
    conv, flatten, lstm = table.rows
    assert conv["name"] == "time_distributed" and flatten["name"] == "time_distributed_1"
    assert conv["input_shape"] == [steps, *FRAME]
    assert conv["output_shape"] == [steps, *conv_alone["output_shape"]] == [steps, 6, 6, 4]
    assert flatten["output_shape"] == [steps, 6 * 6 * 4] and lstm["input_shape"] == [steps, 6 * 6 * 4]
    assert conv["macs"] == steps * conv_alone["macs"]
    assert conv["params"] == conv_alone["params"] == 4 * (3 * 3 * 1 + 1)
    assert conv["hyperparameters"] == f"Conv2D {conv_alone['hyperparameters']}"
    assert flatten["params"] == flatten["macs"] == 0 and flatten["hyperparameters"] == "Flatten"
    assert lstm["macs"] == steps * 4 * 8 * (6 * 6 * 4 + 8)
    assert table.total_macs == sum(row["macs"] for row in table.rows)


def test_parameter_totals_match_the_built_model_and_the_model_stays_unbuilt():
    model = frame_model()
    table = summary(model, (5, *FRAME))
    assert not model.built and not model[0].layer.built
    assert table.total_params == sum(row["params"] for row in table.rows) == table.trainable_params
    assert table.uncalled_params == 0
    model(np.zeros((2, 5, *FRAME), dtype=np.float32))
    assert table.total_params == model.num_parameters()


def test_a_frozen_wrapped_layer_counts_as_non_trainable():
    model = frame_model()
    model.build((None, 5, *FRAME))
    model[0].freeze()
    row = summary(model).rows[0]
    assert row["trainable_params"] == 0 and row["non_trainable_params"] == row["params"] == 40


@pytest.mark.parametrize("make_frame_layers", [
    lambda: [Conv2D(4, 3, activation="relu"), Flatten()],
    lambda: [nn.Sequential(Conv2D(4, 3, padding="same", activation="relu"), MaxPool2D(2), Flatten())],
], ids=["wrapper_per_layer", "one_wrapper_around_a_block"])
@pytest.mark.parametrize("batch_size", [1, 4])
def test_memory_is_t_times_that_of_one_frame_without_the_folding_reshapes(make_frame_layers, batch_size):
    """Activations and intermediate tensors (the pre-activation inside the Conv2D, the
    outputs of the layers inside a wrapped block) count once per step; the reshapes that
    fold time into the batch axis and back are views and count nothing."""
    steps = 5
    per_frame = summary(nn.Sequential(*make_frame_layers()), FRAME, batch_size=batch_size)
    sequence = summary(nn.Sequential(*(TimeDistributed(layer) for layer in make_frame_layers())),
                       (steps, *FRAME), batch_size=batch_size)
    frame_memory, sequence_memory = per_frame.training_memory(), sequence.training_memory()
    kept = sequence_memory["activations"] + sequence_memory["intermediates"]
    assert kept == steps * (frame_memory["activations"] + frame_memory["intermediates"])
    assert sequence_memory["input"] == steps * frame_memory["input"]
    assert sequence.total_macs == steps * per_frame.total_macs
    # the last row's activation is the sequence of the frame model's outputs
    assert sequence.rows[-1]["activation_bytes"] == steps * per_frame.rows[-1]["activation_bytes"]


def test_one_row_per_wrapper_for_a_wrapped_block_and_nested_wrappers():
    steps, rows, features = 4, 3, 6
    block = summary(nn.Sequential(TimeDistributed(nn.Sequential(Dense(5, activation="tanh"), Dense(2)))),
                    (steps, features)).rows
    assert len(block) == 1 and block[0]["type"] == "TimeDistributed"
    assert block[0]["hyperparameters"] == "Sequential" and block[0]["output_shape"] == [steps, 2]
    assert block[0]["macs"] == steps * (features * 5 + 5 * 2)
    assert block[0]["params"] == (features + 1) * 5 + (5 + 1) * 2
    nested = summary(nn.Sequential(TimeDistributed(TimeDistributed(Dense(3)))), (steps, rows, features)).rows
    assert len(nested) == 1 and nested[0]["output_shape"] == [steps, rows, 3]
    assert nested[0]["macs"] == steps * rows * features * 3 and nested[0]["params"] == (features + 1) * 3
    assert nested[0]["hyperparameters"] == "TimeDistributed"


def test_the_printed_table_shows_the_wrapper_rows():
    text = str(summary(frame_model(), (5, *FRAME)))
    conv = next(line for line in text.splitlines() if line.startswith("time_distributed (TimeDistributed)"))
    assert "Conv2D K=4 f=3 s=1 p=0" in conv and "(5, 6, 6, 4)" in conv and f"{5 * 6 * 6 * 4 * 9:,}" in conv
