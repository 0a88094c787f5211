"""The command line, run as a user would: ``python -m lamina`` in a subprocess for the help, a training run on
the digits and a language model's training; the other commands in-process through ``lamina.cli.main`` (the
interpreter's start-up, about 5 s, would be most of their time)."""

import math
import os
import subprocess
import sys

import numpy as np
import pytest

from cli_checks import exit_of

ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}


def lamina_cli(*args, cwd=None, timeout=300):
    return subprocess.run([sys.executable, "-m", "lamina", *args], capture_output=True, text=True, cwd=cwd,
                          env=ENV, timeout=timeout)


def test_help_reads_well(capsys):
    result = lamina_cli("train", "--help")
    assert result.returncode == 0
    for option in ("--model", "--dataset", "--epochs", "--batch-size", "--optimizer", "--lr", "--schedule",
                   "--data-dir", "--out", "--seed", "--resume"):
        assert option in result.stdout
    code, top, _ = exit_of(capsys, "--help")
    assert code == 0
    for command in ("train", "evaluate", "predict", "summary", "train-text", "sample"):
        assert command in top


def test_logistic_regression_job(capsys):
    code, out, err = exit_of(capsys, "logreg", "--iterations", "100")
    assert code == 0, err
    costs = [float(line.split("cost")[1]) for line in out.splitlines() if line.startswith("iteration")]
    assert costs[0] == pytest.approx(0.6931, abs=1e-3) and costs[-1] < 0.1
    accuracy = float(out.split("test accuracy")[1].strip().rstrip("%"))
    assert accuracy >= 95


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """The README's main job (``lamina train``: the CNN on the digits for 30 epochs) in a subprocess."""
    out = tmp_path_factory.mktemp("run")
    result = lamina_cli("train", "--out", str(out), "--verbose", "0")
    assert result.returncode == 0, result.stderr
    return out, result


def test_default_job_reaches_97_percent_on_digits(trained_run):
    # measured: 97.78% in-process and in a subprocess alike (OpenBLAS Haswell and SkylakeX)
    out, result = trained_run
    assert "test accuracy" in result.stdout
    accuracy = float(result.stdout.split("test accuracy")[1].split("%")[0])
    assert accuracy >= 97.0, result.stdout
    for name in ("model.safetensors", "checkpoint.safetensors", "cost.png"):
        assert (out / name).exists()
    assert (out / "cost.png").read_bytes()[:4] == b"\x89PNG"


def test_evaluate_a_saved_model(trained_run, capsys):
    out, result = trained_run
    code, evaluated, err = exit_of(capsys, "evaluate", str(out / "model.safetensors"))
    assert code == 0, err
    trained = float(result.stdout.split("test accuracy")[1].split("%")[0])
    assert f"accuracy {trained:.2f}%" in evaluated
    assert "confusion matrix" in evaluated
    f1 = float(evaluated.split("macro F1")[1].split()[0])
    assert 0.5 < f1 <= 1.0


def test_predict_a_png(trained_run, tmp_path, capsys):
    from PIL import Image

    from lamina.data import load_digits

    out, _ = trained_run
    x, y = load_digits(size=8)
    index = int(np.flatnonzero(y == 3)[0])
    Image.fromarray(x[index, :, :, 0]).resize((64, 64), Image.Resampling.NEAREST).save(tmp_path / "three.png")
    code, printed, err = exit_of(capsys, "predict", str(out / "model.safetensors"), str(tmp_path / "three.png"))
    assert code == 0, err
    assert "three.png: 3 (class 3" in printed


def test_resume_from_a_checkpoint(trained_run, tmp_path, capsys):
    out, _ = trained_run
    code, printed, err = exit_of(capsys, "train", "--dataset", "digits", "--epochs", "31", "--out", str(tmp_path),
                                 "--verbose", "0", "--resume", str(out / "checkpoint.safetensors"))
    assert code == 0, err
    assert "test accuracy" in printed


def test_missing_dataset_directory_is_a_clear_error(tmp_path, capsys):
    code, _, err = exit_of(capsys, "train", "--dataset", "mnist", "--data-dir", str(tmp_path), "--offline",
                           "--epochs", "1", "--out", str(tmp_path / "run"))
    assert code != 0
    assert "train-images-idx3-ubyte" in err and str(tmp_path) in err


def test_every_optimizer_choice_builds_its_optimizer():
    from lamina import optim
    from lamina.cli import OPTIMIZERS, build_optimizer
    from lamina.nn import Parameter

    expected = {"adam": (optim.Adam, {}), "adamw": (optim.AdamW, {}), "sgd": (optim.SGD, {"momentum": 0.0}),
                "momentum": (optim.SGD, {"momentum": 0.9, "nesterov": False}),
                "nesterov": (optim.SGD, {"momentum": 0.9, "nesterov": True}),
                "rmsprop": (optim.RMSProp, {}), "adagrad": (optim.Adagrad, {}), "adamax": (optim.Adamax, {}),
                "nadam": (optim.NAdam, {}), "adadelta": (optim.Adadelta, {}), "radam": (optim.RAdam, {}),
                "lion": (optim.Lion, {}), "adafactor": (optim.Adafactor, {}), "asgd": (optim.ASGD, {}),
                "lamb": (optim.LAMB, {}), "lars": (optim.LARS, {"momentum": 0.9}),
                "sgd_schedulefree": (optim.SGDScheduleFree, {"momentum": 0.9}),
                "adamw_schedulefree": (optim.AdamWScheduleFree, {}),
                "radam_schedulefree": (optim.RAdamScheduleFree, {}), "prodigy": (optim.Prodigy, {}),
                "dadapt_adam": (optim.DAdaptAdam, {}), "adabelief": (optim.AdaBelief, {}),
                "adan": (optim.Adan, {}), "ademamix": (optim.AdEMAMix, {})}
    assert set(OPTIMIZERS) == set(expected)
    for name in OPTIMIZERS:
        opt = build_optimizer(name, [Parameter(np.zeros(2))], lr=0.02, weight_decay=0.001)
        kind, hyper = expected[name]
        group = opt.param_groups[0]
        assert type(opt) is kind and group["lr"] == 0.02 and group["weight_decay"] == 0.001, name
        assert all(group[key] == value for key, value in hyper.items()), name
    with pytest.raises(ValueError, match="unknown optimizer 'lbfgs'"):
        build_optimizer("lbfgs", [Parameter(np.zeros(2))], lr=0.1)


def test_every_schedule_choice_builds_its_schedule():
    from lamina.cli import SCHEDULES, build_schedule
    from lamina.nn import Parameter
    from lamina.optim import SGD, schedules

    expected = {"none": None, "cosine": schedules.CosineDecay, "linear": schedules.LinearDecay,
                "exponential": schedules.ExponentialDecay, "step": schedules.StepDecay,
                "polynomial": schedules.PolynomialDecay, "cosine_restarts": schedules.CosineDecayRestarts,
                "onecycle": schedules.OneCycle, "inverse_time": schedules.InverseTimeDecay,
                "cyclic": schedules.CyclicLR}
    assert set(SCHEDULES) == set(expected)
    for name in SCHEDULES:
        opt = SGD([Parameter(np.zeros(2))], lr=1.0)
        schedule = build_schedule(name, opt, 0.1, total_iterations=70)
        if expected[name] is None:
            assert schedule is None and opt.lr == 1.0
            continue
        assert type(schedule) is expected[name] and schedule.optimizer is opt and schedule.per == "iteration", name
        lrs = [schedule(t) for t in range(70)]
        assert opt.lr == lrs[0] and max(lrs) == pytest.approx(0.1), name   # the run peaks at --lr
        if name == "cyclic":
            continue
        assert lrs[-1] < 0.1 * lrs[0], name                               # and ends far below it
    onecycle = build_schedule("onecycle", None, 0.1, total_iterations=70)
    assert onecycle.total_steps == 70 and onecycle(0) == pytest.approx(0.1 / 25) and onecycle(69) < 1e-5
    restarts = build_schedule("cosine_restarts", None, 0.1, total_iterations=70)
    assert [restarts.restart(t)[0] for t in (9, 10, 29, 30, 69)] == [0, 1, 1, 2, 2]   # 3 cycles: 10, 20, 40
    cyclic = build_schedule("cyclic", None, 0.1, total_iterations=80)
    lrs = np.array([cyclic(t) for t in range(80)])
    peaks = [t for t in range(1, 79) if lrs[t] > lrs[t - 1] and lrs[t] >= lrs[t + 1]]
    assert peaks == [10, 30, 50, 70] and lrs[peaks] == pytest.approx([0.1, 0.055, 0.0325, 0.02125])
    assert lrs.min() == pytest.approx(0.01)                              # the troughs sit at --lr / 10
    inverse_time = build_schedule("inverse_time", None, 0.1, total_iterations=70)
    assert inverse_time(69) == pytest.approx(0.1 / 20)
    with pytest.raises(ValueError, match="unknown schedule 'plateau'"):
        build_schedule("plateau", None, 0.1, total_iterations=70)


def test_warmup_goes_before_the_schedule():
    from lamina.cli import build_parser, build_schedule
    from lamina.nn import Parameter
    from lamina.optim import SGD, CosineDecay, Warmup

    assert build_parser().parse_args(["train", "--warmup", "7"]).warmup == 7
    assert build_parser().parse_args(["train"]).warmup == 0
    opt = SGD([Parameter(np.zeros(2))], lr=1.0)
    schedule = build_schedule("cosine", opt, 0.1, total_iterations=100, warmup=20)
    assert isinstance(schedule, Warmup) and isinstance(schedule.schedule, CosineDecay)
    assert schedule.schedule.total_steps == 80 and opt.lr == 0.0
    assert schedule(10) == pytest.approx(0.05) and schedule(20) == pytest.approx(0.1) and schedule(100) == 0.0
    with pytest.raises(ValueError, match="--warmup needs a schedule"):
        build_schedule("none", opt, 0.1, total_iterations=100, warmup=5)
    with pytest.raises(ValueError, match=r"--warmup must lie in \[0, 100\)"):
        build_schedule("cosine", opt, 0.1, total_iterations=100, warmup=100)


def test_augment_puts_the_dataset_augmentation_in_front_of_the_model(tmp_path):
    import lamina
    from lamina import nn
    from lamina.cli import augmentation_layers, build_parser, train

    kinds = {name: [type(layer) for layer in augmentation_layers(name, (32, 32, 3))]
             for name in ("digits", "mnist", "fashion_mnist", "cifar10")}
    assert kinds["digits"] == kinds["mnist"] == [nn.RandomCrop, nn.RandomRotation]     # no mirrored digits
    assert kinds["fashion_mnist"] == kinds["cifar10"] == [nn.RandomCrop, nn.RandomFlip]
    assert augmentation_layers("cifar10", (32, 32, 3))[0].padding == (4, 4)
    args = build_parser().parse_args(["train", "--augment", "--epochs", "1", "--limit", "300", "--out", str(tmp_path),
                                      "--verbose", "0"])
    result = train(args)
    model = lamina.load(tmp_path / "model.safetensors")
    assert [type(layer) for layer in list(model)[:2]] == [nn.RandomCrop, nn.RandomRotation]
    assert model[0].size == (32, 32) and 0 <= result["accuracy"] <= 1


@pytest.fixture
def trainers_made(monkeypatch):
    """The Trainers the CLI builds, in order (Trainer.__init__ watched)."""
    from lamina.train import Trainer

    made = []
    original = Trainer.__init__

    def spy(self, *args, **kwargs):
        original(self, *args, **kwargs)
        made.append(self)

    monkeypatch.setattr(Trainer, "__init__", spy)
    return made


def test_label_smoothing_and_clipping_options_reach_the_trainer(tmp_path, trainers_made):
    import functools

    from lamina import functional as F
    from lamina.cli import build_parser, train

    args = build_parser().parse_args(["train", "--label-smoothing", "0.1", "--clip-norm", "2.5", "--epochs", "1",
                                      "--limit", "200", "--out", str(tmp_path), "--verbose", "0"])
    train(args)
    trainer = trainers_made[0]
    assert isinstance(trainer.loss, functools.partial) and trainer.loss.func is F.categorical_cross_entropy
    assert trainer.loss.keywords == {"label_smoothing": 0.1} and trainer.clip_norm == 2.5
    assert trainer._fused_softmax()


def test_accumulate_option_reaches_the_trainer_and_the_schedule_counts_updates(tmp_path, trainers_made):
    from lamina.cli import build_parser, train

    assert build_parser().parse_args(["train"]).accumulate == 1
    args = build_parser().parse_args(["train", "--accumulate", "3", "--epochs", "2", "--limit", "200", "--out",
                                      str(tmp_path), "--verbose", "0"])
    train(args)
    trainer = trainers_made[0]
    batches = math.ceil(trainer.samples_per_epoch / 32)
    updates = 2 * math.ceil(batches / 3)                 # the last, short group of an epoch steps too
    assert trainer.accumulate == 3 and trainer.steps == trainer.optimizer.step_count == updates
    assert trainer.schedule.total_steps == updates and trainer.schedule.t == updates
    for bad in ("0", "-1", "two"):
        with pytest.raises(SystemExit):
            build_parser().parse_args(["train", "--accumulate", bad])


def test_find_lr_runs_the_range_test_and_trains_with_its_suggestion(tmp_path, trainers_made, capsys):
    import lamina
    from lamina.cli import build_parser, train

    assert not build_parser().parse_args(["train"]).find_lr
    args = build_parser().parse_args(["train", "--find-lr", "--epochs", "1", "--limit", "300", "--out", str(tmp_path),
                                      "--verbose", "0"])
    train(args)
    printed = capsys.readouterr().out
    suggested = float(printed.split("training with lr ")[1].split(";")[0])
    assert 1e-6 < suggested < 10
    assert (tmp_path / "lr_finder.png").read_bytes()[:4] == b"\x89PNG"
    finder, trainer = trainers_made                     # the range test's trainer, then the real one
    assert trainer.schedule.lr0 == args.lr and math.isclose(args.lr, suggested, rel_tol=1e-2)
    assert math.isclose(lamina.load_bundle(tmp_path / "model.safetensors").info["lr"], args.lr)


SHARED_TEXT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data", "text")


@pytest.mark.skipif(not os.path.isdir(SHARED_TEXT), reason="no shared text corpora beside the project")
def test_train_text_then_sample_from_the_saved_model(tmp_path, capsys):
    result = lamina_cli("train-text", "--data-dir", SHARED_TEXT, "--offline", "--limit", "3000", "--epochs", "2",
                        "--hidden", "64", "--out", str(tmp_path), "--verbose", "0", "--samples", "2")
    assert result.returncode == 0, result.stderr
    cost = float(result.stdout.split("test cost")[1].split()[0])
    bigram = float(result.stdout.split("the bigram model:")[1].split()[0])
    assert cost < bigram < math.log(29)                   # context beyond the last character helps
    assert result.stdout.count("sample:") == 2
    for name in ("model.safetensors", "checkpoint.safetensors", "cost.png"):
        assert (tmp_path / name).exists()
    code, evaluated, err = exit_of(capsys, "evaluate", str(tmp_path / "model.safetensors"), "--data-dir", SHARED_TEXT,
                                   "--offline")
    assert code == 0, err
    assert f"names test: cost {cost:.4f}" in evaluated                   # the same test part, the same cost
    code, drawn, err = exit_of(capsys, "sample", str(tmp_path / "model.safetensors"), "--count", "3", "--prompt", "ma",
                               "--seed", "1")
    assert code == 0, err
    lines = drawn.splitlines()
    assert len(lines) == 3 and all(line.startswith("ma") and line.isalpha() for line in lines)
    code, searched, err = exit_of(capsys, "sample", str(tmp_path / "model.safetensors"), "--prompt", "ma", "--beam",
                                  "4")
    assert code == 0, err
    from lamina import load_bundle
    from lamina.text import Vocabulary, beam_search_text
    bundle = load_bundle(tmp_path / "model.safetensors")
    best = beam_search_text(bundle.model, Vocabulary.from_config(bundle.info["vocabulary"]), "ma", beam_width=4,
                            max_length=30)
    assert searched.splitlines() == [best] and best.startswith("ma")
    code, nucleus, err = exit_of(capsys, "sample", str(tmp_path / "model.safetensors"), "--count", "2", "--top-p",
                                 "0.9")
    assert code == 0 and len(nucleus.splitlines()) == 2, err
    code, _, err = exit_of(capsys, "sample", str(tmp_path / "model.safetensors"), "--top-p", "1.5")
    assert code == 2 and "expected a number in (0, 1], got '1.5'" in err


def test_sample_refuses_a_model_without_a_vocabulary(trained_run, capsys):
    out, _ = trained_run
    code, _, err = exit_of(capsys, "sample", str(out / "model.safetensors"))
    assert code != 0 and "holds no vocabulary" in err


@pytest.mark.parametrize("cell", ["gru", "lstm", "rnn", "transformer"])
def test_every_cell_choice_builds_its_language_model(cell):
    from lamina import nn
    from lamina.cli import build_language_model, build_parser

    args = build_parser().parse_args(["train-text", "--cell", cell, "--hidden", "16", "--layers", "2"])
    model = build_language_model(args, 30)
    expected = {"gru": nn.GRU, "lstm": nn.LSTM, "rnn": nn.SimpleRNN, "transformer": nn.TransformerEncoderLayer}[cell]
    assert sum(isinstance(layer, expected) for layer in model) == 2
    assert model[0].input_dim == 30 and model[-1].units == 30
