"""``lamina train`` with batch mixing (--mixup, --cutmix) and weight averaging (--ema, --swa), run in-process
on a few hundred digits for one to three epochs."""

import numpy as np
import pytest
import torch

import lamina
from helpers import compare_with_torch
from lamina import functional as F
from lamina.cli import build_parser, main, train
from lamina.data import CutMix, DataLoader, MixUp
from lamina.train import Trainer, WeightAveraging
from lamina.train.checkpoint import read as read_checkpoint

QUICK = ["--limit", "300", "--verbose", "0"]   # 300 training digits: 10 mini-batches of 32 per epoch


def train_run(out, *options):
    """Parse and run ``lamina train`` with ``options``, writing to ``out``; returns its test result."""
    return train(build_parser().parse_args(["train", *QUICK, "--out", str(out), *options]))


def saved_model(out):
    """(weights, info) of the model.safetensors a run wrote to ``out``."""
    bundle = lamina.load_bundle(out / "model.safetensors")
    return {name: np.asarray(values) for name, values in bundle.model.state_dict().items()}, bundle.info


def printed_accuracy(text: str) -> float:
    return float(text.split("test accuracy")[1].split("%")[0]) / 100


@pytest.fixture
def trainers_made(monkeypatch):
    """The Trainers the command builds, in order (Trainer.__init__ watched)."""
    made = []
    original = Trainer.__init__

    def spy(self, *args, **kwargs):
        original(self, *args, **kwargs)
        made.append(self)

    monkeypatch.setattr(Trainer, "__init__", spy)
    return made


def exit_of(capsys, *argv):
    """(exit code, stdout, stderr) of ``lamina ARGV`` that exits through argparse or with a message."""
    with pytest.raises(SystemExit) as exited:
        main(list(argv))
    code = exited.value.code
    out, err = capsys.readouterr()
    if isinstance(code, str):          # a message for the user, which the interpreter prints to stderr
        return 1, out, err + code
    return code, out, err


def test_help_describes_the_options_and_they_are_off_by_default(capsys):
    code, help_text, _ = exit_of(capsys, "train", "--help")
    assert code == 0
    for words in ("--mixup ALPHA", "--cutmix ALPHA", "--ema DECAY", "--swa START_EPOCH", "Beta(ALPHA, ALPHA)",
                  "--sam RHO", "sharpness-aware"):
        assert words in help_text, words
    args = build_parser().parse_args(["train"])
    assert args.mixup is None and args.cutmix is None and args.ema is None and args.swa is None
    assert args.sam is None
    edges = build_parser().parse_args(["train", "--cutmix", "0.01", "--ema", "0"])
    assert edges.cutmix == 0.01 and edges.ema == 0.0
    assert build_parser().parse_args(["train", "--swa", "0"]).swa == 0


def test_mixup_mixes_the_training_batches_and_is_recorded(tmp_path, trainers_made, capsys):
    result = train_run(tmp_path, "--epochs", "2", "--mixup", "0.4")
    trainer = trainers_made[0]
    mixer = trainer.loader.batch_transform
    assert isinstance(mixer, MixUp) and mixer.alpha == 0.4 and mixer.num_classes == 10
    assert trainer.loader.epoch == 2 and trainer.loader.batch_size == 32      # every training batch went through it
    assert mixer.last_applied and 0 < mixer.last_lambda < 1
    _, info = saved_model(tmp_path)
    assert info["mixup"] == 0.4 and info["cutmix"] is None and info["ema"] is None and info["swa"] is None
    assert info["test_accuracy"] == result["accuracy"]
    assert printed_accuracy(capsys.readouterr().out) == pytest.approx(result["accuracy"], abs=5e-5)
    assert result["accuracy"] > 0.75       # 87% with these seeds; a plain run reaches 88%


def test_cutmix_goes_with_augment_accumulate_and_label_smoothing(tmp_path, trainers_made):
    from lamina import nn

    result = train_run(tmp_path, "--epochs", "2", "--cutmix", "1", "--augment", "--accumulate", "2",
                       "--label-smoothing", "0.1")
    trainer = trainers_made[0]
    mixer = trainer.loader.batch_transform
    assert isinstance(mixer, CutMix) and mixer.alpha == 1.0 and mixer.last_box is not None
    assert trainer.loss.keywords == {"label_smoothing": 0.1} and trainer.accumulate == 2
    assert trainer.steps == 2 * 5                                  # 10 mini-batches an epoch, 2 per update
    assert [type(layer) for layer in list(trainer.model)[:2]] == [nn.RandomCrop, nn.RandomRotation]
    _, info = saved_model(tmp_path)
    assert info["cutmix"] == 1.0 and info["mixup"] is None
    assert result["accuracy"] > 0.4        # 10 updates on pasted, shifted, rotated digits: 63% with these seeds


def test_label_smoothing_takes_the_soft_targets_of_mixing():
    # the CLI lets --label-smoothing go with --mixup / --cutmix: the cost smooths soft rows as PyTorch does
    rng = np.random.default_rng(3)
    logits = rng.standard_normal((6, 10)).astype(np.float32)
    _, soft = MixUp(0.5, num_classes=10, seed=1)(np.zeros((6, 2), np.float32), rng.integers(0, 10, 6))
    assert not np.allclose(soft.max(axis=1), 1)                    # the rows really are soft
    compare_with_torch(lambda z: F.categorical_cross_entropy(z, soft, from_logits=True, label_smoothing=0.1),
                       lambda z: torch.nn.functional.cross_entropy(z, torch.tensor(soft), label_smoothing=0.1),
                       logits)


def test_a_mixing_run_resumes_exactly_from_its_checkpoint(tmp_path, capsys):
    options = ["--mixup", "0.4", "--schedule", "none"]   # no schedule: a 2-epoch run is a 3-epoch one cut short
    train_run(tmp_path / "whole", "--epochs", "3", *options)
    train_run(tmp_path / "first", "--epochs", "2", *options)
    checkpoint = tmp_path / "first" / "checkpoint.safetensors"
    _, state = read_checkpoint(checkpoint)
    assert "batch_transform" in state["loader"]                   # the mixer's generator goes with the checkpoint
    train_run(tmp_path / "resumed", "--epochs", "3", "--resume", str(checkpoint), *options)
    whole, _ = saved_model(tmp_path / "whole")
    resumed, _ = saved_model(tmp_path / "resumed")
    for name in whole:
        np.testing.assert_array_equal(resumed[name], whole[name], err_msg=name)
    code, _, err = exit_of(capsys, "train", *QUICK, "--epochs", "3", "--out", str(tmp_path / "plain"),
                        "--resume", str(checkpoint))
    assert code != 0 and "--mixup or --cutmix" in err and str(checkpoint) in err


def test_find_lr_runs_its_range_test_on_mixed_batches(tmp_path, trainers_made, monkeypatch):
    import lamina.train as training

    seen = []
    original = training.find_learning_rate

    def watched(trainer, data, **kwargs):
        seen.append(data)
        return original(trainer, data, **kwargs)

    monkeypatch.setattr(training, "find_learning_rate", watched)
    train_run(tmp_path, "--epochs", "1", "--cutmix", "0.5", "--find-lr")
    (tested,) = seen
    _, trainer = trainers_made
    assert isinstance(tested, DataLoader) and isinstance(tested.batch_transform, CutMix)
    assert tested.batch_transform.last_box is not None
    assert tested is not trainer.loader and trainer.loader.epoch == 1    # training starts on a fresh loader
    assert (tmp_path / "lr_finder.png").read_bytes()[:4] == b"\x89PNG"


def test_ema_saves_and_evaluates_the_average_of_the_weights(tmp_path, trainers_made, capsys):
    train_run(tmp_path / "plain", "--epochs", "3")
    result = train_run(tmp_path / "ema", "--epochs", "3", "--ema", "0.8")
    printed = capsys.readouterr().out
    trainer = trainers_made[1]
    (averaging,) = [c for c in trainer.callbacks if isinstance(c, WeightAveraging)]
    assert averaging.decay == 0.8 and averaging.every == "iteration"
    assert averaging.averaged.n_averaged == trainer.steps == 30          # one update per optimizer step
    plain, _ = saved_model(tmp_path / "plain")
    ema, info = saved_model(tmp_path / "ema")
    trained, _ = read_checkpoint(tmp_path / "ema" / "checkpoint.safetensors")
    average = averaging.averaged.module.state_dict()
    for name in plain:
        np.testing.assert_array_equal(trained[name], plain[name], err_msg=name)   # averaging leaves training alone
        np.testing.assert_array_equal(ema[name], np.asarray(average[name]), err_msg=name)
    assert any(not np.allclose(ema[name], plain[name]) for name in plain)
    assert "EMA: the exponential moving average of the weights (decay 0.8, 30 updates) put in place" in printed
    assert info["ema"] == 0.8 and info["test_accuracy"] == result["accuracy"]
    assert printed_accuracy(printed.split("EMA:")[1]) == pytest.approx(result["accuracy"], abs=5e-5)
    assert result["accuracy"] > 0.75       # 89% with these seeds (the last iterate: 89%)


def test_swa_saves_the_equal_average_of_the_epoch_end_weights(tmp_path, capsys):
    options = ["--schedule", "none"]                               # the first epoch is the same in both runs
    train_run(tmp_path / "one", "--epochs", "1", *options)
    result = train_run(tmp_path / "two", "--epochs", "2", "--swa", "0", *options)
    after_first, _ = read_checkpoint(tmp_path / "one" / "checkpoint.safetensors")
    after_second, _ = read_checkpoint(tmp_path / "two" / "checkpoint.safetensors")
    swa, info = saved_model(tmp_path / "two")
    for name in swa:
        np.testing.assert_allclose(swa[name], (after_first[name] + after_second[name]) / 2, rtol=1e-6, atol=1e-7,
                                   err_msg=name)
    assert "SWA: the equal average of the weights at the end of 2 epochs put in place" in capsys.readouterr().out
    assert info["swa"] == 0 and info["ema"] is None
    assert result["accuracy"] > 0.75       # 87% with these seeds (the last iterate: 88%)


def test_a_resumed_swa_run_carries_on_its_average(tmp_path):
    options = ["--schedule", "none", "--swa", "0"]
    train_run(tmp_path / "whole", "--epochs", "3", *options)
    train_run(tmp_path / "first", "--epochs", "2", *options)
    train_run(tmp_path / "resumed", "--epochs", "3", "--resume", str(tmp_path / "first" / "checkpoint.safetensors"),
              *options)
    whole, _ = saved_model(tmp_path / "whole")
    resumed, _ = saved_model(tmp_path / "resumed")   # the average of 3 epoch ends, not of the last one alone
    for name in whole:
        np.testing.assert_array_equal(resumed[name], whole[name], err_msg=name)


@pytest.mark.parametrize("pair", [("--mixup", "--cutmix"), ("--ema", "--swa")], ids=["mixing", "averaging"])
def test_options_of_one_kind_exclude_each_other(capsys, pair):
    code, _, err = exit_of(capsys, "train", pair[0], "0.5", pair[1], "1")
    assert code == 2 and f"argument {pair[1]}: not allowed with argument {pair[0]}" in err


@pytest.mark.parametrize("option, value", [("--mixup", "0"), ("--mixup", "-0.2"), ("--cutmix", "inf"),
                                           ("--cutmix", "nan"), ("--cutmix", "much"), ("--ema", "1"),
                                           ("--ema", "-0.01"), ("--ema", "2"), ("--swa", "-1"), ("--swa", "2.5")])
def test_bad_values_are_refused_naming_the_option(capsys, option, value):
    code, _, err = exit_of(capsys, "train", option, value)
    assert code == 2 and f"argument {option}:" in err and repr(value) in err


def test_swa_must_start_before_the_last_epoch(tmp_path, capsys):
    code, _, err = exit_of(capsys, "train", *QUICK, "--epochs", "3", "--swa", "3", "--out", str(tmp_path / "run"))
    assert code == 1 and "--swa START_EPOCH must be below --epochs (3" in err and "got 3" in err
    assert not (tmp_path / "run").exists()                        # refused before anything was written


def test_sam_option_wraps_the_optimizer_and_trains(tmp_path, trainers_made):
    from lamina.optim import SAM, Adam

    result = train_run(tmp_path, "--epochs", "2", "--sam", "0.05")
    trainer = trainers_made[0]
    assert isinstance(trainer.optimizer, SAM) and isinstance(trainer.optimizer.optimizer, Adam)
    assert trainer.optimizer.rho == 0.05
    assert trainer.optimizer.optimizer.step_count == trainer.steps == 2 * 10
    assert result["accuracy"] > 0.5                     # LeNet-5 after 2 short epochs on 300 digits
    for bad in ("0", "-0.1", "x"):
        with pytest.raises(SystemExit):
            build_parser().parse_args(["train", "--sam", bad])
