"""``lamina train-diffusion`` and ``lamina sample-diffusion``, run in-process at tiny sizes: the
files a run writes, sampling a reloaded model, seeding, and the errors that name the option."""


import numpy as np
import pytest
from PIL import Image

import lamina
from cli_checks import command, exit_of, is_png
from lamina.cli.diffusion import sample_diffusion, train_diffusion

TINY_DIGITS = ["--epochs", "1", "--timesteps", "8", "--limit", "96", "--batch-size", "32", "--base-filters", "4",
               "--verbose", "0"]
TINY_MOONS = ["--dataset", "moons", "--epochs", "1", "--timesteps", "8", "--limit", "128", "--hidden", "16",
              "--verbose", "0"]


@pytest.fixture(scope="module")
def conditional_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("digits")
    result = train_diffusion(command("train-diffusion", *TINY_DIGITS, "--conditional", "--out", str(out)))
    return out, result


@pytest.fixture(scope="module")
def moons_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("moons")
    return out, train_diffusion(command("train-diffusion", *TINY_MOONS, "--out", str(out)))


def test_help_lists_the_options(capsys):
    for name, options in (("train-diffusion", ("--dataset", "moons", "fashion-mnist", "--epochs", "--batch-size",
                                               "--lr", "--timesteps", "--schedule", "--prediction", "--ema",
                                               "--base-filters", "--conditional", "--seed", "--out", "--resume")),
                          ("sample-diffusion", ("--count", "--steps", "--method", "--eta", "--guidance", "--label",
                                                "--out"))):
        code, out, _ = exit_of(capsys, name, "--help")
        assert code == 0 and all(option in out for option in options), name
    _, out, _ = exit_of(capsys, "--help")
    assert "train-diffusion" in out and "sample-diffusion" in out


def test_the_choices_are_the_model_s_own_read_when_needed(capsys):
    from lamina.models.diffusion import PREDICTIONS, SAMPLERS, SCHEDULES

    _, out, _ = exit_of(capsys, "train-diffusion", "--help")
    out = " ".join(out.split())
    assert ", ".join(SCHEDULES) in out and ", ".join(PREDICTIONS) in out
    _, out, _ = exit_of(capsys, "sample-diffusion", "--help")
    assert ", ".join(SAMPLERS) in " ".join(out.split())
    code, _, err = exit_of(capsys, "train-diffusion", "--schedule", "quadratic")
    assert code == 2 and "invalid choice: 'quadratic' (choose from 'linear', 'cosine', 'sigmoid')" in err
    assert command("train-diffusion", "--schedule", "sigmoid").schedule == "sigmoid"


def test_a_conditional_run_writes_its_files_and_samples_one_column_per_class(conditional_run):
    out, result = conditional_run
    for name in ("model.safetensors", "cost.png", "samples.png"):
        assert is_png(out / name) or name.endswith(".safetensors") and (out / name).exists(), name
    bundle = lamina.load_bundle(out / "model.safetensors")
    assert bundle.model.num_classes == 10 and bundle.model.sample_shape == (8, 8, 1)
    assert bundle.info["kind"] == "diffusion" and bundle.info["final_loss"] == result["loss"][-1]
    samples = result["samples"]
    assert samples.shape == (80, 8, 8, 1) and samples.min() >= 0 and samples.max() <= 1
    width, height = Image.open(out / "samples.png").size
    assert width > height                                            # 10 columns of 8 rows


def test_the_reloaded_model_draws_the_run_s_samples_again(conditional_run, tmp_path):
    out, result = conditional_run
    again = sample_diffusion(command("sample-diffusion", str(out / "model.safetensors"), "--count", "80",
                                     "--out", str(tmp_path / "again.png")))
    np.testing.assert_array_equal(again, result["samples"])
    assert is_png(tmp_path / "again.png")


def test_ddim_with_guidance_towards_one_class(conditional_run, tmp_path):
    out, _ = conditional_run
    argv = ["sample-diffusion", str(out / "model.safetensors"), "--count", "6", "--steps", "4", "--method", "ddim",
            "--guidance", "3", "--out", str(tmp_path / "threes.png")]
    threes = sample_diffusion(command(*argv, "--label", "3"))
    assert threes.shape == (6, 8, 8, 1) and is_png(tmp_path / "threes.png")
    np.testing.assert_array_equal(sample_diffusion(command(*argv, "--label", "3")), threes)   # DDIM, eta 0
    assert not np.array_equal(sample_diffusion(command(*argv, "--label", "7")), threes)
    noisy = sample_diffusion(command(*argv, "--label", "3", "--eta", "1"))
    assert not np.array_equal(noisy, threes)


def test_moons_are_points_in_data_units_plotted_over_the_data(moons_run, tmp_path):
    out, result = moons_run
    points = result["samples"]
    assert points.shape == (1000, 2) and is_png(out / "samples.png")
    # standardised data drawn back through the saved standardizer: the moons span about [-1, 2] x [-0.5, 1]
    assert -3 < points[:, 0].mean() < 3 and 0.2 < points[:, 0].std() < 5
    drawn = sample_diffusion(command("sample-diffusion", str(out / "model.safetensors"), "--count", "1000",
                                     "--out", str(tmp_path / "moons.png")))
    np.testing.assert_array_equal(drawn, points)


def test_a_seed_fixes_the_run_and_another_changes_it(moons_run, tmp_path):
    _, first = moons_run
    again = train_diffusion(command("train-diffusion", *TINY_MOONS, "--out", str(tmp_path / "a")))
    other = train_diffusion(command("train-diffusion", *TINY_MOONS, "--seed", "1", "--out", str(tmp_path / "b")))
    assert again["loss"] == first["loss"]
    np.testing.assert_array_equal(again["samples"], first["samples"])
    assert other["loss"] != first["loss"]


def test_digits_cost_falls_below_the_first_epoch_s(tmp_path):
    result = train_diffusion(command("train-diffusion", "--epochs", "3", "--timesteps", "50", "--limit", "256",
                                     "--base-filters", "8", "--batch-size", "16", "--lr", "3e-3", "--verbose", "0",
                                     "--out", str(tmp_path)))
    losses = result["loss"]
    assert len(losses) == 3 and losses[-1] < 0.8 * losses[0], losses


def test_an_image_folder_gives_a_grid_of_colour_samples(tmp_path):
    rng = np.random.default_rng(0)
    for name in ("red", "blue"):
        (tmp_path / "images" / name).mkdir(parents=True)
        for k in range(4):
            colour = (200, 30, 30) if name == "red" else (30, 30, 200)
            pixels = np.clip(np.array(colour) + rng.integers(-20, 20, (12, 12, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(tmp_path / "images" / name / f"{k}.png")
    result = train_diffusion(command("train-diffusion", "--dataset", "folder", "--data-dir", str(tmp_path / "images"),
                                     "--epochs", "1", "--timesteps", "4", "--base-filters", "4", "--verbose", "0",
                                     "--conditional", "--out", str(tmp_path / "run")))
    assert result["samples"].shape == (16, 32, 32, 3) and is_png(tmp_path / "run" / "samples.png")
    model = tmp_path / "run" / "model.safetensors"
    assert lamina.load_bundle(model).info["class_names"] == ["blue", "red"]
    argv = ["sample-diffusion", str(model), "--count", "2", "--steps", "2", "--out", str(tmp_path / "reds.png")]
    np.testing.assert_array_equal(sample_diffusion(command(*argv, "--label", "red")),    # a class name is a label
                                  sample_diffusion(command(*argv, "--label", "1")))


@pytest.mark.parametrize("options, message", [
    (["--guidance", "2"], "--guidance needs a model trained with --conditional"),
    (["--label", "1"], "--label needs a model trained with --conditional"),
    (["--method", "ddpm", "--eta", "0.5"], "--eta sets the noise of DDIM steps"),
    (["--steps", "9"], "--steps 9 exceeds the model's 8 timesteps"),
])
def test_sampling_options_that_do_not_fit_the_model_are_refused(capsys, moons_run, options, message):
    out, _ = moons_run
    code, _, err = exit_of(capsys, "sample-diffusion", str(out / "model.safetensors"), *options,
                        "--out", str(out / "refused.png"))
    assert code == 1 and message in err
    assert not (out / "refused.png").exists()


@pytest.mark.parametrize("label", ["10", "-1", "seven"])
def test_a_label_outside_the_classes_is_refused(capsys, conditional_run, label):
    out, _ = conditional_run
    code, _, err = exit_of(capsys, "sample-diffusion", str(out / "model.safetensors"), "--label", label)
    assert code == 1 and "--label must be a class number in [0, 10)" in err and repr(label) in err


@pytest.mark.parametrize("options, message", [
    (["--dataset", "moons", "--base-filters", "8"], "--base-filters sets the U-Net"),
    (["--hidden", "8"], "--hidden sets the MLP of --dataset moons"),
    (["--data-dir", "somewhere"], "--data-dir names where fashion-mnist or an image folder is"),
    (["--schedule", "linear", "--timesteps", "10"], "--schedule linear with --timesteps 10"),
])
def test_training_options_that_do_not_fit_are_refused_before_writing(capsys, tmp_path, options, message):
    code, _, err = exit_of(capsys, "train-diffusion", *options, "--out", str(tmp_path / "run"))
    assert code == 1 and message in err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("option, value", [("--eta", "-1"), ("--guidance", "0"), ("--count", "0"),
                                           ("--method", "euler")])
def test_bad_sampling_values_are_usage_errors(capsys, moons_run, option, value):
    out, _ = moons_run
    code, _, err = exit_of(capsys, "sample-diffusion", str(out / "model.safetensors"), option, value)
    assert code == 2 and f"argument {option}:" in err


def test_other_models_point_to_the_right_command(capsys, moons_run, tmp_path):
    out, _ = moons_run
    code, _, err = exit_of(capsys, "sample", str(out / "model.safetensors"))
    assert code == 1 and "is a diffusion model; draw from it with 'lamina sample-diffusion'" in err
    dense = lamina.nn.Dense(3)
    dense(np.zeros((1, 2), dtype=np.float32))
    lamina.save(dense, tmp_path / "dense.safetensors")
    code, _, err = exit_of(capsys, "sample-diffusion", str(tmp_path / "dense.safetensors"))
    assert code == 1 and "holds a Dense, not a diffusion model" in err


def test_resume_continues_a_run_to_the_same_weights(tmp_path, capsys):
    def run(epochs, name, *more):
        options = [*TINY_MOONS, "--epochs", epochs, "--out", str(tmp_path / name), *more]
        return train_diffusion(command("train-diffusion", *options))

    whole = run("3", "whole")
    run("1", "first")
    checkpoint = str(tmp_path / "first" / "checkpoint.safetensors")
    resumed = run("3", "resumed", "--resume", checkpoint)
    assert resumed["loss"] == whole["loss"]
    np.testing.assert_array_equal(resumed["samples"], whole["samples"])
    code, _, err = exit_of(capsys, "train-diffusion", *TINY_MOONS, "--hidden", "8", "--out", str(tmp_path / "x"),
                           "--resume", checkpoint)
    assert code == 1 and "cannot resume" in err and "shape" in err
    code, _, err = exit_of(capsys, "train-diffusion", *TINY_MOONS, "--resume", str(tmp_path / "none"))
    assert code == 1 and "no such checkpoint" in err
