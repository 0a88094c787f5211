"""The train command's batch-mixing and weight-averaging options: ``--mixup`` / ``--cutmix``
(:class:`lamina.data.MixUp`, :class:`lamina.data.CutMix`) and ``--ema`` / ``--swa``
(:class:`lamina.train.WeightAveraging`)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from lamina.cli.common import nonnegative_int, positive_number, unit_interval

if TYPE_CHECKING:
    from lamina.data import CutMix, MixUp
    from lamina.train import WeightAveraging


def add_mixing_and_averaging(parser: argparse.ArgumentParser) -> None:
    """The two groups of options, each of mutually exclusive choices."""
    mixing = parser.add_mutually_exclusive_group()
    mixing.add_argument("--mixup", type=positive_number, default=None, metavar="ALPHA",
                        help="MixUp: train on blends lam x_i + (1 - lam) x_j of pairs of images and of their "
                             "one-hot labels, lam ~ Beta(ALPHA, ALPHA) per mini-batch (e.g. 0.2; default: off)")
    mixing.add_argument("--cutmix", type=positive_number, default=None, metavar="ALPHA",
                        help="CutMix: paste a box of another image, a fraction 1 - lam of the area, lam ~ "
                             "Beta(ALPHA, ALPHA), into each image and mix the labels by area (e.g. 1; default: off)")
    averaging = parser.add_mutually_exclusive_group()
    averaging.add_argument("--ema", type=unit_interval, default=None, metavar="DECAY",
                           help="keep v = DECAY v + (1 - DECAY) theta, the moving average of the weights, after "
                                "every update; evaluate and save it (e.g. 0.999; default: off)")
    averaging.add_argument("--swa", type=nonnegative_int, default=None, metavar="START_EPOCH",
                           help="stochastic weight averaging: evaluate and save the equal average of the weights "
                                "at the end of every epoch from START_EPOCH on, counted from 0 (default: off)")


def add_workers(parser: argparse.ArgumentParser) -> None:
    """--workers: background threads (or, with --worker-processes, processes) that make the
    training batches."""
    parser.add_argument("--workers", type=nonnegative_int, default=0, metavar="N",
                        help="make the training mini-batches in N background threads, ahead of the training "
                             "step; the batches are the same as with 0 (default: 0, in the training thread)")
    parser.add_argument("--worker-processes", action="store_true",
                        help="--workers are processes, not threads: for image folders, whose decoding and "
                             "augmentation in Python hold the GIL")


def worker_mode(args: argparse.Namespace) -> str:
    """The DataLoader's worker_mode for --worker-processes."""
    return "process" if getattr(args, "worker_processes", False) else "thread"


def batch_mixer(args: argparse.Namespace, num_classes: int) -> MixUp | CutMix | None:
    """The --mixup or --cutmix mixer of a run, or None when neither is given: each mini-batch
    is built from pairs (i, pi(i)) of its samples, with lam ~ Beta(alpha, alpha) and soft
    targets y~_i = lam y_i + (1 - lam) y_pi(i) (CutMix: lam the share of the image kept)."""
    from lamina.data import CutMix, MixUp

    # the mixer's own stream, apart from the shuffling, which --seed seeds as in a run without mixing
    if args.mixup is not None:
        return MixUp(args.mixup, num_classes=num_classes, seed=args.seed + 1)
    if args.cutmix is not None:
        return CutMix(args.cutmix, num_classes=num_classes, seed=args.seed + 1)
    return None


def training_data(train: tuple, args: argparse.Namespace, num_classes: int):
    """What a trainer iterates: the (x, y) arrays, or with --mixup / --cutmix a loader that
    shuffles them as ``fit`` would and mixes every mini-batch. Each call makes a fresh one."""
    from lamina.data import ArrayDataset, DataLoader

    mixer = batch_mixer(args, num_classes)
    if mixer is None:
        return train
    return DataLoader(ArrayDataset(*train), batch_size=args.batch_size, shuffle=True, seed=args.seed,
                      batch_transform=mixer, num_workers=getattr(args, "workers", 0), worker_mode=worker_mode(args))


def check_resumed_mixing(args: argparse.Namespace) -> None:
    """Refuse to resume a run that mixed its batches without --mixup or --cutmix (the
    checkpoint holds a mixer's state that a plain loader cannot take)."""
    from lamina.train.checkpoint import read

    _, state = read(args.resume)
    mixed = "batch_transform" in (state.get("loader") or {})
    if mixed and args.mixup is None and args.cutmix is None:
        raise SystemExit(f"lamina train: {args.resume} was trained with --mixup or --cutmix; "
                         "pass the same option to resume it")


def weight_averaging(args: argparse.Namespace) -> WeightAveraging | None:
    """The --ema or --swa callback, or None when neither is given. --ema: after every
    optimizer step v_t = beta v_{t-1} + (1 - beta) theta_t; --swa: at the end of every epoch
    from START_EPOCH on v_t = v_{t-1} + (theta_t - v_{t-1}) / t, the equal average. Both start
    from v_1 = theta_1 and put v in the model when training ends."""
    from lamina.train import WeightAveraging

    if args.ema is not None:
        return WeightAveraging(decay=args.ema, every="iteration")
    if args.swa is not None:
        if args.swa >= args.epochs:
            raise SystemExit(f"lamina train: --swa START_EPOCH must be below --epochs ({args.epochs}; epochs "
                             f"count from 0), got {args.swa}")
        return WeightAveraging(start_epoch=args.swa, every="epoch")
    return None


def report_averaging(averaging, model) -> None:
    """One line on the weights that --ema / --swa put in the model."""
    from lamina import nn

    name = "EMA" if averaging.decay is not None else "SWA"
    updates = averaging.averaged.n_averaged if averaging.averaged is not None else 0
    if updates == 0:
        print(f"{name}: no weights were averaged (training ended first); the trained weights are kept")
        return
    if averaging.decay is not None:
        what = f"the exponential moving average of the weights (decay {averaging.decay}, {updates} updates)"
    else:
        what = f"the equal average of the weights at the end of {updates} epoch{'s' if updates > 1 else ''}"
    recomputed = any(isinstance(m, nn.BatchNorm) for m in model.modules())
    print(f"{name}: {what} put in place of the trained weights"
          f"{'; batch-norm statistics recomputed for them' if recomputed else ''}")
