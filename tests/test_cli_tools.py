"""The tool commands ``lamina tune``, ``lamina saliency`` and ``lamina export``, run in-process through
``lamina.cli.main`` (one subprocess run checks the ``python -m lamina`` entry point)."""

import csv
import shlex
import subprocess
import sys

import numpy as np
import pytest

import lamina
from cli_checks import exit_of
from lamina.cli import main

TUNE_FAST = ["tune", "--model", "mlp", "--dataset", "digits", "--epochs", "1", "--limit", "300"]


def read_trials(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_help_of_both_commands_reads_well(capsys):
    code, out, _ = exit_of(capsys, "tune", "--help")
    assert code == 0
    for option in ("--model", "--dataset", "--trials", "--epochs", "--batch-size", "--optimizer", "--lr",
                   "--weight-decay", "--seed", "--data-dir", "--out", "LOW:HIGH", "validation"):
        assert option in out, option
    code, out, _ = exit_of(capsys, "saliency", "--help")
    assert code == 0
    for option in ("checkpoint", "IMAGE", "--target", "--method", "gradient", "smoothgrad", "integrated",
                   "--out"):
        assert option in out, option
    _, out, _ = exit_of(capsys, "--help")
    assert "tune" in out and "saliency" in out


def test_python_dash_m_lamina_tune_help():
    result = subprocess.run([sys.executable, "-m", "lamina", "tune", "--help"], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert "usage: lamina tune" in result.stdout and "--lr LOW:HIGH" in result.stdout


def test_tune_searches_the_lr_range_and_its_best_command_reproduces_the_best_trial(capsys, tmp_path):
    code, out, err = exit_of(capsys, *TUNE_FAST, "--trials", "3", "--lr", "1e-4:1e-1", "--out", str(tmp_path / "tune"))
    assert code == 0, err
    rows = read_trials(tmp_path / "tune" / "trials.csv")
    assert [row["trial"] for row in rows] == ["0", "1", "2"]
    lrs = [float(row["lr"]) for row in rows]
    assert all(1e-4 <= lr <= 1e-1 for lr in lrs) and len(set(lrs)) == 3        # drawn, not fixed
    assert all(float(row["weight_decay"]) == 0.0 for row in rows)
    scores = [float(row["score"]) for row in rows]
    best_line = next(line for line in out.splitlines() if line.startswith("best:"))
    best_lr = float(best_line.split("lr")[1].split(",")[0])
    best_score = float(best_line.split("validation accuracy")[1].strip(" )"))
    assert 1e-4 <= best_lr <= 1e-1
    assert best_score == pytest.approx(max(scores), abs=5e-5)
    assert best_lr == pytest.approx(lrs[int(np.argmax(scores))], rel=1e-3)
    table = out.split("best first")[1].split("best:")[0]
    assert table.index(f"{lrs[int(np.argmax(scores))]:.4g}") < table.index(f"{lrs[int(np.argmin(scores))]:.4g}")

    # the printed command trains as the best trial did: the same validation accuracy after its epoch
    command = out.split("train with the best values:")[1].strip().splitlines()[0]
    words = shlex.split(command)
    assert words[:2] == ["lamina", "train"] and f"{best_lr:.4g}" == words[words.index("--lr") + 1]
    code, out, err = exit_of(capsys, *words[1:], "--out", str(tmp_path / "train"), "--verbose", "1")
    assert code == 0, err
    validation = int(out.split("training, ")[1].split(" validation")[0])
    epoch_line = next(line for line in out.splitlines() if line.startswith("epoch"))
    assert float(epoch_line.split("val accuracy")[1]) == pytest.approx(best_score, abs=1 / validation)


def test_tune_searches_weight_decay_and_never_touches_the_test_split(capsys, tmp_path, monkeypatch):
    import lamina.train.recipes as recipes

    prepare = recipes.prepare_dataset

    def without_test(*args, **kwargs):
        data = prepare(*args, **kwargs)
        data.test = None          # any use of the test split would fail
        return data

    monkeypatch.setattr(recipes, "prepare_dataset", without_test)
    code, _, err = exit_of(capsys, *TUNE_FAST, "--trials", "2", "--lr", "0.003", "--weight-decay", "1e-5:1e-2",
                       "--out", str(tmp_path))
    assert code == 0, err
    rows = read_trials(tmp_path / "trials.csv")
    assert len(rows) == 2 and all(float(row["lr"]) == 0.003 for row in rows)
    assert all(1e-5 <= float(row["weight_decay"]) <= 1e-2 for row in rows)
    assert all(0.0 <= float(row["score"]) <= 1.0 for row in rows)


@pytest.mark.parametrize("option, value, reason", [
    ("--lr", "0.1:0.001", "LOW must be below HIGH"),
    ("--lr", "0.01:0.01", "LOW must be below HIGH"),
    ("--lr", "0:0.1", "LOW must be > 0"),
    ("--lr", "-0.1", "expected a value > 0"),
    ("--lr", "0", "expected a value > 0"),
    ("--lr", "fast", "expected a number or a range LOW:HIGH"),
    ("--lr", "1e-4:1e-2:1", "expected a number or a range LOW:HIGH"),
    ("--lr", "1e-4:inf", "expected a number or a range LOW:HIGH"),
    ("--weight-decay", "-1e-4", "expected a value >= 0"),
    ("--weight-decay", "0:1e-3", "LOW must be > 0"),
])
def test_bad_ranges_are_usage_errors_naming_the_option(capsys, option, value, reason):
    code, _, err = exit_of(capsys, "tune", f"{option}={value}")
    assert code == 2
    assert f"argument {option}:" in err and reason in err and repr(value) in err


def test_tune_with_nothing_to_search_says_so(capsys, tmp_path):
    code, _, err = exit_of(capsys, "tune", "--lr", "0.01", "--out", str(tmp_path))
    assert code == 1 and "nothing to search" in err
    assert not (tmp_path / "trials.csv").exists()


@pytest.fixture(scope="module")
def checkpoint_and_digit(tmp_path_factory):
    """A LeNet-5 trained for one epoch by 'lamina train', and a digit 3 as a 64x64 PNG."""
    from PIL import Image

    from lamina.data import load_digits

    out = tmp_path_factory.mktemp("train")
    assert main(["train", "--epochs", "1", "--limit", "300", "--out", str(out), "--verbose", "0"]) == 0
    x, y = load_digits(size=8)
    image = out / "three.png"
    Image.fromarray(x[int(np.flatnonzero(y == 3)[0]), :, :, 0]).resize((64, 64), Image.Resampling.NEAREST) \
        .save(image)
    return out / "model.safetensors", image


@pytest.mark.parametrize("method", ["gradient", "smoothgrad", "integrated"])
def test_saliency_writes_the_input_beside_its_map(capsys, tmp_path, checkpoint_and_digit, method):
    from PIL import Image

    from lamina.cli import build_parser, saliency

    model, image = checkpoint_and_digit
    code, predict_out, _ = exit_of(capsys, "predict", str(model), str(image))
    assert code == 0
    results = saliency(build_parser().parse_args(["saliency", str(model), str(image), "--method", method,
                                                  "--out", str(tmp_path)]))
    out = capsys.readouterr().out
    written = tmp_path / f"three-{method}.png"
    assert f"written to {written}" in out and results[0]["path"] == str(written)
    assert sorted(p.name for p in tmp_path.iterdir()) == [written.name]      # no temporary file left behind
    label = int(out.split(": ")[1].split()[0])
    assert 0 <= label <= 9 and out.split(";")[0] == predict_out.strip()      # the class and p 'predict' gives
    assert written.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(written) as picture:
        picture.verify()
    with Image.open(written) as picture:
        width, height = picture.size
    assert 400 <= width <= 1400 and 200 <= height < width                   # two panels side by side
    heatmap = results[0]["saliency"]
    assert heatmap.shape == (32, 32) and np.all(np.isfinite(heatmap)) and np.all(heatmap >= 0)
    assert heatmap[4:28, 4:28].max() > 0
    if method == "integrated":                 # the 4-pixel padding equals the black baseline: no attribution
        border = np.ones((32, 32), bool)
        border[4:28, 4:28] = False
        assert np.all(heatmap[border] == 0)


def test_saliency_of_another_target_class(capsys, tmp_path, checkpoint_and_digit):
    from lamina.cli import build_parser, saliency

    model, image = checkpoint_and_digit
    args = ["saliency", str(model), str(image), "--out", str(tmp_path)]
    own = saliency(build_parser().parse_args(args))[0]
    other = (own["class"] + 1) % 10
    chosen = saliency(build_parser().parse_args(args + ["--target", str(other)]))[0]
    assert chosen["class"] == own["class"] and chosen["target"] == other
    assert f"saliency of class {other}" in capsys.readouterr().out
    assert not np.allclose(chosen["saliency"], own["saliency"])
    code, _, err = exit_of(capsys, *args, "--target", "10")
    assert code == 1 and "--target must be a class index in [0, 10)" in err


def test_saliency_errors_are_clean_messages(capsys, tmp_path, checkpoint_and_digit):
    model, image = checkpoint_and_digit
    code, _, err = exit_of(capsys, "saliency", str(tmp_path / "missing.safetensors"), str(image))
    assert code == 1 and err.startswith("lamina saliency: no such checkpoint file") and "Traceback" not in err
    code, _, err = exit_of(capsys, "saliency", str(model), str(image), str(tmp_path / "missing.png"), "--out",
                       str(tmp_path / "out"))
    assert code == 1 and "no such image file" in err and "missing.png" in err
    assert not (tmp_path / "out").exists()                                  # checked before any work
    (tmp_path / "notes.png").write_text("not a picture")
    code, _, err = exit_of(capsys, "saliency", str(model), str(tmp_path / "notes.png"), "--out", str(tmp_path))
    assert code == 1 and "is not an image file Pillow can read" in err
    code, _, err = exit_of(capsys, "saliency", str(model), str(image), "--method", "occlusion")
    assert code == 2 and "invalid choice: 'occlusion'" in err


def test_export_writes_an_onnx_model_that_predicts_as_the_checkpoint(capsys, tmp_path, checkpoint_and_digit):
    ort = pytest.importorskip("onnxruntime")
    model_path, _ = checkpoint_and_digit
    target = tmp_path / "lenet.onnx"
    code, out, _ = exit_of(capsys, "export", str(model_path), "--out", str(target))
    assert code == 0 and f"exported to {target}" in out and "input 'input' (batch, 32, 32, 1)" in out
    bundle = lamina.load_bundle(model_path)
    x = np.random.default_rng(0).uniform(0, 1, (4, 32, 32, 1)).astype(np.float32)
    bundle.model.eval()
    expected = bundle.model(lamina.tensor(x)).numpy()
    (got,) = ort.InferenceSession(str(target), providers=["CPUExecutionProvider"]).run(None, {"input": x})
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6)
    code, _, err = exit_of(capsys, "export", str(tmp_path / "missing.safetensors"))
    assert code == 1 and "no such checkpoint file" in err
