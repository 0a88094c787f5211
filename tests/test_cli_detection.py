"""``lamina train-detector`` and ``lamina detect``, run in-process at tiny sizes: the files a run
writes, reloading and detecting in image files, seeding, every architecture, and the errors that
name the option."""


import numpy as np
import pytest
from PIL import Image

import lamina
from cli_checks import command, exit_of, is_png
from lamina.cli.detection import detect_batch, train_detector
from lamina.vision import digit_scenes

TINY = ["--steps", "2", "--scenes", "8", "--test-scenes", "4", "--batch-size", "4", "--verbose", "0"]
METRICS = ("AP", "AP50", "AP75", "AP_small", "AP_medium", "AP_large", "AR1", "AR10", "AR100", "AR_small",
           "AR_medium", "AR_large")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("retinanet")
    return out, train_detector(command("train-detector", *TINY, "--seed", "3", "--out", str(out)))


def _scene_file(tmp_path, name="scene.png", seed=5, rgb=False):
    images, _, _ = digit_scenes(1, seed=seed)
    pixels = images[0, ..., 0]
    image = Image.fromarray(np.stack([pixels] * 3, axis=-1) if rgb else pixels)
    path = tmp_path / name
    image.save(path)
    return path, images[0].astype(np.float32) / 255


def test_help_lists_the_options(capsys):
    for name, options in (("train-detector", ("--model", "retinanet", "fcos", "fasterrcnn", "ssd", "--steps",
                                              "--batch-size", "--lr", "--scenes", "--seed", "--out")),
                          ("detect", ("--out", "--score-threshold"))):
        code, out, _ = exit_of(capsys, name, "--help")
        assert code == 0 and all(option in out for option in options), name
    _, out, _ = exit_of(capsys, "--help")
    assert "train-detector" in out and "detect" in out


def test_a_run_writes_its_files_and_reports_coco_metrics(run, capsys):
    out, result = run
    assert (out / "model.safetensors").exists() and is_png(out / "cost.png") and is_png(out / "detections.png")
    assert tuple(result["metrics"]) == METRICS
    assert all(np.isnan(v) or 0 <= v <= 1 for v in result["metrics"].values())
    assert list(result["losses"]) == ["total", "classification", "bbox_regression"]
    assert len(result["losses"]["total"]) == 2
    bundle = lamina.load_bundle(out / "model.safetensors")
    assert bundle.info["model"] == "retinanet" and bundle.info["label_offset"] == 0
    assert bundle.info["class_names"] == [str(d) for d in range(10)]
    assert bundle.info["final_loss"] == result["losses"]["total"][-1]


def test_the_metrics_are_printed(tmp_path, capsys):
    code, out, _ = exit_of(capsys, "train-detector", *TINY, "--out", str(tmp_path))
    assert code == 0
    assert "AP@[.5:.95]" in out and "AP@.5 " in out and "AR100" in out and "model.safetensors" in out


def test_the_reloaded_model_detects_as_the_trained_one(run):
    out, result = run
    loaded = lamina.load(out / "model.safetensors")
    assert type(loaded).__name__ == "RetinaNet"
    images, _, _ = digit_scenes(3, seed=9)
    x = images.astype(np.float32) / 255
    for want, got in zip(detect_batch(result["model"], x, 0), detect_batch(loaded, x, 0)):
        for key in ("boxes", "scores", "labels"):
            np.testing.assert_array_equal(got[key], want[key])


def test_detect_draws_the_boxes_of_png_and_jpeg_files(run, tmp_path, capsys):
    out, _ = run
    png, pixels = _scene_file(tmp_path)
    jpeg, _ = _scene_file(tmp_path, "photo.jpg", seed=6, rgb=True)
    code, printed, _ = exit_of(capsys, "detect", str(out / "model.safetensors"), str(png), str(jpeg), "--out",
                               str(tmp_path / "drawn"), "--score-threshold", "0")
    assert code == 0
    assert is_png(tmp_path / "drawn" / "scene.detections.png") and is_png(tmp_path / "drawn" / "photo.detections.png")
    assert str(png) in printed and str(jpeg) in printed
    from lamina.cli.detection import detect

    results = detect(command("detect", str(out / "model.safetensors"), str(png), "--out", str(tmp_path / "again"),
                             "--score-threshold", "0"))
    expected = detect_batch(lamina.load(out / "model.safetensors"), pixels[None], 0)[0]
    np.testing.assert_array_equal(results[0]["boxes"], expected["boxes"])
    strict = detect(command("detect", str(out / "model.safetensors"), str(png), "--out", str(tmp_path / "strict"),
                            "--score-threshold", "1"))
    assert (strict[0]["scores"] >= 1).all() and len(strict[0]["scores"]) <= len(results[0]["scores"])


def test_the_seed_repeats_a_run_and_another_seed_changes_it(run, tmp_path):
    _, first = run
    lamina.manual_seed(123)                  # the run seeds the weights itself
    again = train_detector(command("train-detector", *TINY, "--seed", "3", "--test-scenes", "0", "--out",
                                   str(tmp_path / "a")))
    other = train_detector(command("train-detector", *TINY, "--seed", "4", "--test-scenes", "0", "--out",
                                   str(tmp_path / "b")))
    assert again["losses"] == first["losses"]
    assert other["losses"]["total"] != first["losses"]["total"]
    assert again["metrics"] == {} and not (tmp_path / "a" / "detections.png").exists()


@pytest.mark.parametrize("model, terms, offset", [
    ("fcos", ["total", "classification", "bbox_regression", "bbox_ctrness"], 0),
    ("fasterrcnn", ["total", "loss_objectness", "loss_rpn_box_reg", "loss_classifier", "loss_box_reg"], 1),
    ("ssd", ["total", "bbox_regression", "classification"], 1),
])
def test_every_architecture_trains_saves_and_reports(model, terms, offset, tmp_path):
    result = train_detector(command("train-detector", *TINY, "--steps", "1", "--model", model, "--out",
                                    str(tmp_path)))
    assert sorted(result["losses"]) == sorted(terms) and tuple(result["metrics"]) == METRICS
    bundle = lamina.load_bundle(tmp_path / "model.safetensors")
    assert bundle.info["model"] == model and bundle.info["label_offset"] == offset
    assert bundle.model.num_classes == 10 + offset
    images, _, _ = digit_scenes(2, seed=1)
    found = detect_batch(bundle.model, images.astype(np.float32) / 255, offset)
    assert all(((d["labels"] >= 0) & (d["labels"] < 10)).all() for d in found)


def test_options_that_do_not_fit_are_refused(run, tmp_path, capsys):
    code, _, err = exit_of(capsys, "train-detector", *TINY, "--batch-size", "16", "--out", str(tmp_path))
    assert code == 1 and "--batch-size 16" in err and "--scenes" in err
    code, _, err = exit_of(capsys, "train-detector", "--model", "yolo")
    assert code == 2 and "--model" in err and "yolo" in err
    code, _, err = exit_of(capsys, "train-detector", "--steps", "0")
    assert code == 2 and "--steps" in err
    out, _ = run
    code, _, err = exit_of(capsys, "detect", str(out / "model.safetensors"), "x.png", "--score-threshold", "1.5")
    assert code == 2 and "--score-threshold" in err


def test_detect_refuses_other_models_and_missing_or_broken_images(run, tmp_path, capsys):
    classifier = lamina.models.mlp(num_classes=3, input_shape=(4, 4, 1))
    lamina.save(classifier, tmp_path / "mlp.safetensors")
    png, _ = _scene_file(tmp_path)
    code, _, err = exit_of(capsys, "detect", str(tmp_path / "mlp.safetensors"), str(png))
    assert code == 1 and "not a detector" in err and "mlp.safetensors" in err
    out, _ = run
    code, _, err = exit_of(capsys, "detect", str(out / "model.safetensors"), str(tmp_path / "missing.png"),
                           "--out", str(tmp_path / "drawn"))
    assert code == 1 and "missing.png" in err
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    code, _, err = exit_of(capsys, "detect", str(out / "model.safetensors"), str(broken), "--out",
                           str(tmp_path / "drawn"))
    assert code == 1 and "broken.png" in err


def test_augment_trains_on_moved_boxes_and_none_keeps_the_plain_run(run, tmp_path, capsys):
    from lamina.cli.detection import CANVAS, build_augmentation

    _, plain = run
    same = train_detector(command("train-detector", *TINY, "--seed", "3", "--augment", "none", "--test-scenes", "0",
                                  "--out", str(tmp_path / "none")))
    assert same["losses"] == plain["losses"]
    for name in ("flip", "ssd"):
        result = train_detector(command("train-detector", *TINY, "--seed", "3", "--augment", name, "--out",
                                        str(tmp_path / name)))
        assert np.isfinite(result["losses"]["total"]).all() and result["losses"]["total"] != plain["losses"]["total"]
        assert lamina.load_bundle(tmp_path / name / "model.safetensors").info["augment"] == name
    images, boxes, labels = digit_scenes(3, seed=2)
    augment = build_augmentation("ssd", seed=0)
    for image, b, lab in zip(images, boxes, labels):
        moved, target = augment(image.astype(np.float32) / 255, {"boxes": b, "labels": lab})
        assert moved.shape == (CANVAS, CANVAS, 1) and len(target["boxes"]) == len(target["labels"]) >= 1
    assert build_augmentation("none", seed=0) is None
    code, _, err = exit_of(capsys, "train-detector", "--augment", "mosaic")
    assert code == 2 and "--augment" in err and "mosaic" in err
    code, out, _ = exit_of(capsys, "train-detector", "--help")
    assert "--augment" in out and "ssd" in out
