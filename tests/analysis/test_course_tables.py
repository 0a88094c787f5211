"""The course notes' LeNet, AlexNet and ZFNet tables, figure by figure.

Two checks. ``test_course_tables_against_their_own_formulas`` audits the printed tables
with the notes' own formulas (output volume floor((h + 2p - f) / s) + 1, parameters
K (f f c_in + 1) and n (n_prev + 1), flops h_out w_out K f f c_in, h_out w_out c f f and
n n_prev), each row judged from the previous printed row: the figures that disagree are
exactly ``DISAGREEMENTS`` (listed in docs/zoo.md). The builder tests then check that
lamina's summary reproduces every row, with the formula's figure where the print is wrong.
"""

import math

import pytest

from lamina.analysis import summary

# (layer, hyperparameters, printed output volume, printed parameters, printed flops)
# flops as printed: LeNet in units ("117k"), AlexNet and ZFNet in Mflops
LENET = [
    ("conv", {"K": 6, "f": 5, "s": 1}, (28, 28, 6), 156, "117k"),
    ("pool", {"f": 2, "s": 2}, (14, 14, 6), None, "4074"),
    ("conv", {"K": 16, "f": 5, "s": 1}, (10, 10, 16), 2_416, "240k"),
    ("pool", {"f": 2, "s": 2}, (5, 5, 16), None, "1.6k"),
    ("flatten", {}, (400,), None, "0"),
    ("fc", {"n": 120}, (120,), 48_120, "48k"),
    ("fc", {"n": 84}, (84,), 10_164, "10k"),
    ("fc", {"n": 10}, (10,), 850, "840"),
]
ALEXNET = [
    ("conv", {"K": 96, "f": 11, "s": 4}, (55, 55, 96), 34_857, "105"),
    ("pool", {"f": 3, "s": 2}, (27, 27, 96), 0, "0.6"),
    ("conv", {"K": 256, "f": 5, "s": 1, "p": "same"}, (27, 27, 256), 614_656, "448"),
    ("pool", {"f": 3, "s": 2}, (13, 13, 256), 0, "0.4"),
    ("conv", {"K": 384, "f": 3, "s": 1, "p": "same"}, (13, 13, 384), 885_120, "150"),
    ("conv", {"K": 384, "f": 3, "s": 1, "p": "same"}, (13, 13, 384), 1_327_488, "224"),
    ("conv", {"K": 256, "f": 3, "s": 1, "p": "same"}, (13, 13, 256), 884_992, "150"),
    ("pool", {"f": 3, "s": 2}, (6, 6, 256), 0, "0.08"),
    ("flatten", {}, (9216,), 0, None),
    ("fc", {"n": 4096}, (4096,), 37_752_832, "38"),
    ("fc", {"n": 4096}, (4096,), 16_781_312, "17"),
    ("fc", {"n": 1000}, (1000,), 4_097_000, "4"),
]
ZFNET = [
    ("conv", {"K": 96, "f": 7, "s": 2}, (110, 110, 96), 14_208, "170.8"),
    ("pool", {"f": 3, "s": 2}, (55, 55, 96), 0, "2.6"),
    ("conv", {"K": 256, "f": 5, "s": 1, "p": "same"}, (26, 26, 256), 614_656, "415.3"),
    ("pool", {"f": 3, "s": 2}, (13, 13, 256), 0, "0.09"),
    ("conv", {"K": 512, "f": 3, "s": 1, "p": "same"}, (13, 13, 512), 1_180_160, "199.4"),
    ("conv", {"K": 1024, "f": 3, "s": 1, "p": "same"}, (13, 13, 1024), 4_719_616, "797.4"),
    ("conv", {"K": 512, "f": 3, "s": 1, "p": "same"}, (13, 13, 512), 4_719_616, "797.4"),
    ("pool", {"f": 3, "s": 2}, (6, 6, 512), 0, "0.17"),
    ("flatten", {}, (18432,), 0, None),
    ("fc", {"n": 4096}, (4096,), 75_515_904, "75.5"),
    ("fc", {"n": 4096}, (4096,), 16_781_312, "16.8"),
    ("fc", {"n": 1000}, (1000,), 4_097_000, "4.1"),
]
TABLES = {"lenet5": ((32, 32, 1), LENET, 1), "alexnet": ((227, 227, 3), ALEXNET, 1e6),
          "zfnet": ((224, 224, 3), ZFNET, 1e6)}

# (table, row index, column) -> the figure the formula gives
DISAGREEMENTS = {
    ("lenet5", 1, "flops"): 4_704,          # printed 4074 (digits swapped): 14*14*6*2*2
    ("alexnet", 0, "params"): 34_944,       # printed 34,857: 96 (11*11*3 + 1)
    ("zfnet", 0, "output"): (109, 109, 96),  # printed 110: (224 - 7) / 2 + 1 = 109.5 needs p = 1
    ("zfnet", 1, "output"): (54, 54, 96),    # printed 55: floor((110 - 3) / 2) + 1; 55 rounds up
    ("zfnet", 2, "output"): (55, 55, 256),   # printed 26: s = 1 'same' keeps 55; 26 needs s = 2, p = 0
    ("zfnet", 3, "output"): (12, 12, 256),   # printed 13: floor((26 - 3) / 2) + 1; 13 rounds up
    ("zfnet", 3, "flops"): 389_376,         # printed 0.09 M: 13*13*256*3*3 = 0.39 M
    ("zfnet", 6, "params"): 4_719_104,      # printed 4,719,616 (conv4's count): 512 (3*3*1024 + 1)
    ("zfnet", 9, "params"): 75_501_568,     # printed 75,515,904 = (4096 + 1) 18432: 4096 (18432 + 1)
}


def _printed_value(text: str, scale: float) -> tuple[float, float]:
    """A printed flops figure as (value, one unit of its last digit), in MACs."""
    factor = scale
    if text.endswith("k"):
        text, factor = text[:-1], 1e3
    decimals = len(text.split(".")[1]) if "." in text else 0
    return float(text) * factor, 10.0 ** -decimals * factor


def _agrees(ours: int, text: str, scale: float) -> bool:
    value, unit = _printed_value(text, scale)
    return abs(ours - value) < unit  # the print rounds or truncates to its last digit


def _formula_rows(input_shape, table):
    """Each row's output volume, parameters and flops by the notes' formulas, from the
    previous *printed* row (so every row is judged on its own)."""
    prev = input_shape
    out = []
    for kind, hp, printed_out, _, _ in table:
        if kind in ("conv", "pool"):
            h, w, c = prev
            f, s = hp["f"], hp["s"]
            p = (f - 1) // 2 if hp.get("p") == "same" else hp.get("p", 0)
            size = (h + 2 * p - f) // s + 1, (w + 2 * p - f) // s + 1
            k = hp["K"] if kind == "conv" else c
            ho, wo, ko = printed_out  # flops from the printed output volume
            if kind == "conv":
                out.append(((*size, k), k * (f * f * c + 1), ho * wo * k * f * f * c))
            else:
                out.append(((*size, k), 0, ho * wo * ko * f * f))
        elif kind == "flatten":
            out.append(((math.prod(prev),), 0, 0))
        else:
            n, n_prev = hp["n"], prev[0]
            out.append(((n,), n * (n_prev + 1), n * n_prev))
        prev = printed_out
    return out


def test_course_tables_against_their_own_formulas():
    found = {}
    for name, (input_shape, table, scale) in TABLES.items():
        for i, ((output, params, flops), row) in enumerate(zip(_formula_rows(input_shape, table), table)):
            _, _, printed_out, printed_params, printed_flops = row
            if output != printed_out:
                found[(name, i, "output")] = output
            if printed_params is not None and params != printed_params:
                found[(name, i, "params")] = params
            if printed_flops is not None and not _agrees(flops, printed_flops, scale):
                found[(name, i, "flops")] = flops
    assert found == DISAGREEMENTS


def _layer_rows(s):
    kinds = {"Conv2D": "conv", "MaxPool2D": "pool", "AvgPool2D": "pool", "Flatten": "flatten", "Dense": "fc"}
    return [r for r in s.rows if r["type"] in kinds]


@pytest.mark.parametrize("name", list(TABLES))
def test_lamina_reproduces_the_table(name, builder):
    input_shape, table, scale = TABLES[name]
    s = summary(builder(name)(), input_shape)
    rows = _layer_rows(s)
    assert len(rows) == len(table)
    for i, (row, (kind, hp, printed_out, printed_params, printed_flops)) in enumerate(zip(rows, table)):
        # the printed output volumes are what the networks compute (ZFNet's hyperparameters in
        # the table are the ones that disagree; the builder follows the paper)
        assert tuple(row["output_shape"]) == printed_out, (name, i)
        expected_params = DISAGREEMENTS.get((name, i, "params"), printed_params or 0)
        assert row["params"] == expected_params, (name, i)
        if (name, i, "flops") in DISAGREEMENTS:
            assert row["macs"] == DISAGREEMENTS[(name, i, "flops")], (name, i)
        elif printed_flops is not None:
            assert _agrees(row["macs"], printed_flops, scale), (name, i, row["macs"], printed_flops)
        if kind == "conv":
            assert row["hyperparameters"].startswith(f"K={hp['K']} f={hp['f']}"), (name, i)


def test_exact_alexnet_and_zfnet_macs(builder):
    alex = summary(builder("alexnet")(), (227, 227, 3))
    assert [r["macs"] for r in _layer_rows(alex)] == [
        105_415_200, 629_856, 447_897_600, 389_376, 149_520_384, 224_280_576, 149_520_384, 82_944, 0,
        37_748_736, 16_777_216, 4_096_000]
    assert alex.total_params == 62_378_344
    zf = summary(builder("zfnet")(), (224, 224, 3))
    assert [r["macs"] for r in _layer_rows(zf)] == [
        170_755_200, 2_613_600, 415_334_400, 389_376, 199_360_512, 797_442_048, 797_442_048, 165_888, 0,
        75_497_472, 16_777_216, 4_096_000]
    assert zf.total_params == 107_627_624


# -- totals: the published figures ---------------------------------------------------------
PUBLISHED_MACS = {  # multiply-accumulates per image, in G
    "resnet18": 1.82, "resnet50": 4.12, "resnet152": 11.58, "vgg16": 15.47, "googlenet": 1.51,
    "inception_v3": 5.73, "mobilenet": 0.57,
}
PUBLISHED_PARAMS = {
    "alexnet": 62_378_344, "zfnet": 107_627_624, "vgg11": 132_863_336, "vgg13": 133_047_848,
    "vgg16": 138_357_544, "vgg19": 143_667_240, "resnet18": 11_689_512, "resnet34": 21_797_672,
    "resnet50": 25_557_032, "resnet101": 44_549_160, "resnet152": 60_192_808, "googlenet": 6_624_904,
    "inception_v3": 23_834_568, "mobilenet": 4_231_976,
}


@pytest.mark.parametrize("name", list(PUBLISHED_MACS))
def test_total_macs_match_the_published_figures(name, builder):
    from lamina.analysis.compare import native_input_shape

    s = summary(builder(name), native_input_shape(name))
    assert abs(s.total_macs / 1e9 - PUBLISHED_MACS[name]) / PUBLISHED_MACS[name] < 0.03, s.total_macs


@pytest.mark.parametrize("name", list(PUBLISHED_PARAMS))
def test_total_params_match_the_published_counts(name, builder):
    from lamina.analysis.compare import native_input_shape

    s = summary(builder(name), native_input_shape(name))
    assert s.total_params == PUBLISHED_PARAMS[name]
