"""``lamina train --dataset folder``: a model trained on a folder of image files (three classes
of coloured shapes drawn with Pillow), then ``lamina predict`` and ``lamina evaluate`` on it."""

import numpy as np
import pytest
from PIL import Image, ImageDraw

import lamina
from lamina.cli import main

SHAPES = ("circle", "square", "triangle")


def draw_shape(kind: str, rng: np.random.Generator) -> Image.Image:
    """A light shape of a random colour and size on a dark background of a random colour."""
    side = int(rng.integers(36, 56))
    image = Image.new("RGB", (side, side), tuple(int(v) for v in rng.integers(0, 80, 3)))
    colour = tuple(int(v) for v in rng.integers(120, 256, 3))
    low, high = int(rng.integers(2, 10)), side - int(rng.integers(2, 10))
    draw = ImageDraw.Draw(image)
    if kind == "circle":
        draw.ellipse([low, low, high, high], fill=colour)
    elif kind == "square":
        draw.rectangle([low, low, high, high], fill=colour)
    else:
        draw.polygon([(low, high), (high, high), ((low + high) // 2, low)], fill=colour)
    return image


@pytest.fixture(scope="module")
def shapes_run(tmp_path_factory):
    """A folder of 20 PNG and JPEG images per shape, and an empty folder for the run."""
    root = tmp_path_factory.mktemp("shapes")
    rng = np.random.default_rng(0)
    for kind in SHAPES:
        (root / kind).mkdir()
        for k in range(20):
            draw_shape(kind, rng).save(root / kind / f"{k}.{'jpg' if k % 2 else 'png'}")
    out = tmp_path_factory.mktemp("run")
    return root, out


def test_train_on_an_image_folder_then_predict_and_evaluate(shapes_run, capsys):
    root, out = shapes_run
    code = main(["train", "--dataset", "folder", "--data-dir", str(root), "--epochs", "12", "--workers", "2",
                 "--out", str(out), "--verbose", "0"])
    printed = capsys.readouterr().out
    assert code == 0
    assert "folder: 43 training, 5 validation, 12 test images of shape (32, 32, 3)" in printed
    accuracy = float(printed.split("test accuracy")[1].split("%")[0])
    assert accuracy >= 75          # chance is 33%
    bundle = lamina.load_bundle(out / "model.safetensors")
    assert bundle.info["class_names"] == list(SHAPES)

    new = out / "new_triangle.png"
    draw_shape("triangle", np.random.default_rng(99)).save(new)
    assert main(["predict", str(out / "model.safetensors"), str(new), str(root / "circle" / "3.jpg")]) == 0
    printed = capsys.readouterr().out
    assert "new_triangle.png: triangle (class 2" in printed
    assert "3.jpg: circle (class 0" in printed

    assert main(["evaluate", str(out / "model.safetensors")]) == 0
    assert f"folder test: accuracy {accuracy:.2f}%" in capsys.readouterr().out


def test_folder_dataset_errors_are_one_clear_line(tmp_path, capsys):
    assert main(["train", "--dataset", "folder", "--out", str(tmp_path / "run")]) == 1
    assert "needs data_dir" in capsys.readouterr().err
    images = tmp_path / "images"
    (images / "a").mkdir(parents=True)
    (images / "a" / "broken.png").write_bytes(b"not an image")
    assert main(["train", "--dataset", "folder", "--data-dir", str(images), "--out", str(tmp_path / "run")]) == 1
    assert "broken.png" in capsys.readouterr().err
