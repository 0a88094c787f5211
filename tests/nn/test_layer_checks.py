"""The argument checks every layer shares (lamina.nn.layer.positive_int and dropout_rate)."""

import pytest

from lamina import nn
from lamina.nn.layer import dropout_rate, positive_int


def test_positive_int_takes_ints_from_one_and_names_the_argument():
    assert positive_int(3, "Conv2D: filters") == 3
    for bad in (0, -2, 2.0, True, "4", None):
        with pytest.raises(ValueError, match=r"Conv2D: filters must be a positive int, got"):
            positive_int(bad, "Conv2D: filters")


def test_dropout_rate_lies_in_zero_to_one():
    assert dropout_rate(0, "X") == 0.0 and dropout_rate(0.5, "X") == 0.5
    for bad in (1.0, -0.1, True, "0.1"):
        with pytest.raises(ValueError, match=r"X: dropout must be in \[0, 1\), got"):
            dropout_rate(bad, "X")


@pytest.mark.parametrize("make, words", [
    (lambda: nn.MultiHeadAttention(8, 2, dropout=1.0), "MultiHeadAttention: dropout"),
    (lambda: nn.TransformerEncoderLayer(8, 2, dropout=-0.5), "TransformerEncoderLayer: dropout"),
    (lambda: nn.PositionalEncoding(dropout=2), "PositionalEncoding: dropout"),
    (lambda: nn.Conv2DTranspose(0, 3), "Conv2DTranspose: filters"),
    (lambda: nn.Conv1D(4, 0), "Conv1D: kernel_size"),
    (lambda: nn.GRU(-1), "GRU: units"),
    (lambda: nn.Embedding(10, 0), "Embedding: output_dim"),
])
def test_layers_refuse_bad_sizes_and_rates(make, words):
    with pytest.raises(ValueError, match=words):
        make()
