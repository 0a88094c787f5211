"""lamina.analysis.receptive_field: r_out = r_in + (f - 1) j_in, j_out = j_in s."""

import pytest

from lamina import functional as F
from lamina import nn
from lamina.analysis import receptive_field, receptive_fields, trace


def test_stacked_3x3_convolutions_see_1_3_5_7():
    model = nn.Sequential(nn.Identity(), nn.Conv2D(4, 3), nn.Conv2D(4, 3), nn.Conv2D(4, 3, activation="relu"))
    assert [receptive_field(model, name, (16, 16, 1)) for name in ("identity", "conv2d", "conv2d_1", "conv2d_2")] \
        == [1, 3, 5, 7]
    assert receptive_field(model, model[2], (16, 16, 1)) == 5  # a layer object works too
    assert receptive_field(model, None, (16, 16, 1)) == 7  # the last layer


def test_strides_and_pooling_multiply_the_jump():
    model = nn.Sequential(nn.Conv2D(4, 3), nn.MaxPool2D(2, 2), nn.Conv2D(4, 3), nn.Conv2D(4, 3, stride=2),
                          nn.Conv2D(4, 3))
    # r: 3, 3 + 1*1 = 4 (j 2), 4 + 2*2 = 8, 8 + 2*2 = 12 (j 4), 12 + 2*4 = 20
    assert [receptive_field(model, i, (32, 32, 1)) for i in range(5)] == [3, 4, 8, 12, 20]


def test_lenet5_fields():
    from lamina.models import lenet5

    model = lenet5()
    fields = [f[0] for f in receptive_fields(trace(model))[:5]]
    assert fields == [5, 6, 14, 16, 32]  # a flatten sees the whole 32x32 image


def test_dilation_widens_the_field_without_more_weights():
    # extents 3, 5 (d=2), 9 (d=4): r = 3, 3 + 4 = 7, 7 + 8 = 15, as WaveNet-style stacks grow
    model = nn.Sequential(nn.Conv2D(4, 3), nn.Conv2D(4, 3, dilation=2), nn.Conv2D(4, 3, dilation=4))
    assert [receptive_field(model, i, (32, 32, 1)) for i in range(3)] == [3, 7, 15]


def test_a_non_square_kernel_gives_a_pair():
    model = nn.Sequential(nn.Conv2D(4, (3, 1)), nn.Conv2D(4, (1, 7)))
    assert receptive_field(model, 0, (16, 16, 1)) == (3, 1)
    assert receptive_field(model, 1, (16, 16, 1)) == (3, 7)


def test_branches_follow_the_data_flow_not_the_call_order():
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2D(4, 3, padding=1)
            self.conv2 = nn.Conv2D(4, 3, padding=1)
            self.shortcut = nn.Conv2D(4, 1)  # called last, on the block's input

        def forward(self, x):
            return F.relu(F.add(self.conv2(F.relu(self.conv1(x))), self.shortcut(x)))

    model = nn.Sequential(Block(), nn.Conv2D(4, 3, padding=1))
    assert receptive_field(model, "block.shortcut", (8, 8, 4)) == 1  # not 5 + 0
    assert receptive_field(model, "block.conv2", (8, 8, 4)) == 5
    assert receptive_field(model, "conv2d", (8, 8, 4)) == 7  # after the join: the larger field, + 2


def test_inception_branches_join_at_the_largest_field():
    class Inception(nn.Module):
        def __init__(self):
            super().__init__()
            self.b1 = nn.Conv2D(2, 1)
            self.b5 = nn.Conv2D(2, 5, padding=2)
            self.pool = nn.MaxPool2D(3, 1, padding=1)

        def forward(self, x):
            return F.concat([self.b1(x), self.b5(x), self.pool(x)], axis=-1)

    model = nn.Sequential(Inception(), nn.Conv2D(4, 1))
    assert receptive_field(model, "inception.pool", (8, 8, 3)) == 3
    assert receptive_field(model, "conv2d", (8, 8, 3)) == 5


def test_alexnet_fields(builder):
    tr = trace(builder("alexnet")(), (227, 227, 3))
    fields = [f[0] for c, f in zip(tr.calls, receptive_fields(tr))
              if type(c.module).__name__ in ("Conv2D", "MaxPool2D")]
    # 11/4; pool 3/2: 11 + 2*4; 5: 19 + 4*8; pool: 51 + 2*8; three 3x3: + 2*16 each; pool: + 2*16
    assert fields == [11, 19, 51, 67, 99, 131, 163, 195]


def test_errors_name_the_problem():
    model = nn.Sequential(nn.Conv2D(4, 3), nn.Flatten(), nn.Dense(2))
    with pytest.raises(ValueError, match="no layer named"):
        receptive_field(model, "nope", (8, 8, 1))
    with pytest.raises(ValueError, match="not an image"):
        receptive_field(nn.Sequential(nn.Dense(2)), 0, (5,))
    with pytest.raises(ValueError, match="not part of the model"):
        receptive_field(model, nn.Conv2D(3, 3), (8, 8, 1))
