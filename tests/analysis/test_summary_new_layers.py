"""The layer table and the receptive fields of a volumetric network (Conv3D, MaxPool3D,
AvgPool3D, GlobalAvgPool3D), each value checked against the course notes' formulas."""

import math

from lamina import nn
from lamina.analysis import receptive_field

INPUT = (6, 8, 8, 2)                     # (d, h, w, c)

# (layer, kernel or window (f_d, f_h, f_w), stride, padding per axis, dilation, groups)
SPECS = [
    (lambda: nn.Conv3D(4, 3, padding="same", activation="relu"), (3, 3, 3), (1, 1, 1), "same", (1, 1, 1), 1),
    (lambda: nn.MaxPool3D(2), (2, 2, 2), (2, 2, 2), (0, 0, 0), (1, 1, 1), 1),
    (lambda: nn.Conv3D(6, (1, 3, 3), stride=(1, 2, 2), groups=2, dilation=(1, 2, 1), padding=(0, 1, 1)),
     (1, 3, 3), (1, 2, 2), (0, 1, 1), (1, 2, 1), 2),
    (lambda: nn.AvgPool3D(2, padding=1), (2, 2, 2), (2, 2, 2), (1, 1, 1), (1, 1, 1), 1),
]


def _model() -> nn.Sequential:
    model = nn.Sequential(*(spec[0]() for spec in SPECS), nn.GlobalAvgPool3D(), nn.Dense(3))
    model.build((None, *INPUT))
    return model


def _expected_rows():
    """(output volume, parameters, MACs, (r_h, r_w)) per row, from the formulas: per axis
    n_out = floor((n + 2p - e) / s) + 1 with e = d (f - 1) + 1 ('same': ceil(n / s));
    convolution parameters K (f_d f_h f_w c_in / g + 1), MACs d' h' w' K f_d f_h f_w c_in / g;
    pooling MACs d' h' w' c f_d f_h f_w; r_out = r_in + (e - 1) j_in, j_out = j_in s on the
    h and w axes."""
    shape, r, j = INPUT, [1, 1], [1, 1]
    rows = []
    for make, kernel, stride, padding, dilation, groups in SPECS:
        layer = make()
        extent = [d * (f - 1) + 1 for f, d in zip(kernel, dilation)]
        if padding == "same":
            dhw = [-(-n // s) for n, s in zip(shape[:3], stride)]
        else:
            dhw = [(n + 2 * p - e) // s + 1 for n, p, e, s in zip(shape[:3], padding, extent, stride)]
        c_in = shape[3]
        if isinstance(layer, nn.Conv3D):
            k = layer.filters
            params = k * (math.prod(kernel) * c_in // groups + 1)
            macs = math.prod(dhw) * k * math.prod(kernel) * c_in // groups
        else:
            k, params = c_in, 0
            macs = math.prod(dhw) * c_in * math.prod(kernel)
        r = [r[a] + (extent[a + 1] - 1) * j[a] for a in range(2)]
        j = [j[a] * stride[a + 1] for a in range(2)]
        shape = (*dhw, k)
        rows.append((list(shape), params, macs, r))
    d, h, w, c = shape                                              # global pooling: f = s = h, w
    r = [r[0] + (h - 1) * j[0], r[1] + (w - 1) * j[1]]
    rows.append(([c], 0, d * h * w * c, r))
    rows.append(([3], 3 * (c + 1), 3 * c, r))                      # the dense layer keeps the field
    return rows


def test_a_volumetric_network_has_the_formulas_shapes_parameters_macs_and_fields():
    s = _model().summary()
    got = [(row["output_shape"], row["params"], row["macs"], row["receptive_field"]) for row in s.rows]
    assert got == _expected_rows()
    assert s.total_macs == sum(row[2] for row in _expected_rows())
    assert s.total_params == sum(row[1] for row in _expected_rows())


def test_the_hyperparameter_column_writes_the_3d_kernel_in_full():
    columns = [row["hyperparameters"] for row in _model().summary().rows]
    assert columns[:5] == ["K=4 f=3x3x3 s=1 p=same relu", "f=2x2x2 s=2", "K=6 f=1x3x3 s=1x2x2 p=0x1x1 d=1x2x1 g=2",
                           "f=2x2x2 s=2 p=1", "f=2x1x2"]
    valid = nn.Sequential(nn.Conv3D(2, (2, 3, 3), stride=2))
    valid.build((None, 5, 6, 6, 1))
    assert valid.summary().rows[0]["hyperparameters"] == "K=2 f=2x3x3 s=2 p=0"


def test_receptive_field_of_a_volume_is_along_its_height_and_width():
    model = _model()
    expected = _expected_rows()
    for index in range(len(SPECS)):
        r_h, r_w = expected[index][3]
        assert receptive_field(model, index) == (r_h if r_h == r_w else (r_h, r_w))
    # a depth-only kernel leaves the field as it was
    flat = nn.Sequential(nn.Conv3D(2, (5, 1, 1)), nn.Conv3D(2, (1, 3, 3)))
    flat.build((None, 6, 7, 7, 1))
    assert receptive_field(flat, 0) == 1 and receptive_field(flat) == 3


def test_a_layer_with_its_own_window_over_frames_leaves_the_field_blank():
    model = nn.Sequential(nn.Conv3D(2, 3, padding="same"), nn.TimeDistributed(nn.Conv2D(3, 3)),
                          nn.GlobalAvgPool3D())
    model.build((None, 4, 8, 8, 2))
    fields = [row["receptive_field"] for row in model.summary().rows]
    assert fields[0] == [3, 3] and fields[1:] == [None, None]


def test_upsample_counts_its_taps_and_leaves_the_receptive_field_unknown():
    from lamina.analysis.layer_rules import layer_macs

    up = nn.Upsample(size=(8, 6), mode="bilinear")
    assert layer_macs(up, [(4, 6, 3)], [(8, 6, 3)]) == 8 * 6 * 3 * 2          # only the height is resized
    assert layer_macs(nn.Upsample(scale_factor=2, mode="bicubic"), [(4, 4, 3)], [(8, 8, 3)]) == 8 * 8 * 3 * 16
    assert layer_macs(nn.Upsample(size=2, mode="area"), [(4, 4, 3)], [(2, 2, 3)]) == 4 * 4 * 3
    assert layer_macs(nn.Upsample(scale_factor=2), [(4, 4, 3)], [(8, 8, 3)]) == 0
    model = nn.Sequential(nn.Conv2D(2, 3), nn.Upsample(scale_factor=1.5, mode="bilinear"), nn.Conv2D(2, 3))
    model.build((None, 8, 8, 1))
    from lamina.analysis.receptive import receptive_fields
    from lamina.analysis.trace import trace

    fields = receptive_fields(trace(model))
    assert fields[0] is not None and fields[1] is None and fields[2] is None
