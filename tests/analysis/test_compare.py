"""lamina.analysis.compare_architectures: the course's comparison table, drawn."""

from lamina import nn
from lamina.analysis import compare_architectures


def small_net(width: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2D(width, 3, padding=1, activation="relu"), nn.MaxPool2D(2),
                         nn.Conv2D(2 * width, 3, padding=1), nn.GlobalAvgPool2D(), nn.Dense(10))


def test_writes_a_png_and_returns_the_rows(tmp_path, capsys):
    from lamina.models import lenet5

    path = tmp_path / "plots" / "comparison.png"
    rows = compare_architectures([("LeNet-5", lenet5(), (32, 32, 1)), ("small", small_net(8), (32, 32, 3)),
                                  ("wide", lambda: small_net(32), (32, 32, 3))], path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [r["name"] for r in rows] == ["LeNet-5", "small", "wide"]
    assert rows[0]["params"] == 61_706 and rows[0]["macs"] == 422_824
    assert rows[2]["params"] > rows[1]["params"] and rows[2]["macs"] > rows[1]["macs"]
    printed = capsys.readouterr().out
    assert "LeNet-5" in printed and "61,706" in printed and "Architecture" in printed
    assert not list(path.parent.glob(".*.tmp"))  # written atomically: no temporary file left


def test_zoo_names_with_the_course_figures(tmp_path, builder):
    for name in ("alexnet", "vgg16", "resnet152"):
        builder(name)
    rows = compare_architectures(["alexnet", "vgg16", "resnet152"], tmp_path / "zoo.png")
    by_name = {r["name"]: r for r in rows}
    assert by_name["alexnet"]["params"] == 62_378_344 and by_name["alexnet"]["input_shape"] == [227, 227, 3]
    assert by_name["vgg16"]["top5_error"] == 7.3 and by_name["resnet152"]["course_params_m"] == 60
    assert (tmp_path / "zoo.png").read_bytes()[:4] == b"\x89PNG"
