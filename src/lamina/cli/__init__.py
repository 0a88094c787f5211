"""The ``lamina`` command line.

``lamina train`` (also ``python -m lamina`` with no arguments) trains LeNet-5 on the
embedded digits; ``lamina train-text`` a character-level language model, ``lamina sample``
draws from it; ``lamina train-diffusion`` a denoising diffusion model, ``lamina
sample-diffusion`` draws from it; ``lamina --help`` lists every subcommand. The image
commands live in :mod:`lamina.cli.images`, the text ones in :mod:`lamina.cli.text`, the
diffusion ones in :mod:`lamina.cli.diffusion`, ``train-detector`` and ``detect`` in
:mod:`lamina.cli.detection`, ``tune``, ``saliency``, ``export`` and ``graph`` in
:mod:`lamina.cli.tools`, ``train-rl`` in :mod:`lamina.cli.rl`, the optimizer and schedule
choices they share in :mod:`lamina.cli.common`.
"""

from __future__ import annotations

import argparse
import sys

from lamina.cli import detection, diffusion, images, rl, text, tools
from lamina.cli.common import OPTIMIZERS, SCHEDULES, build_optimizer, build_schedule
from lamina.cli.detection import detect, train_detector
from lamina.cli.diffusion import sample_diffusion, train_diffusion
from lamina.cli.images import (
    MODELS,
    augmentation_layers,
    build_model,
    evaluate,
    logistic_regression,
    predict,
    summary,
    train,
)
from lamina.cli.rl import train_rl
from lamina.cli.text import build_language_model, sample, train_text
from lamina.cli.tools import export, graph, saliency, tune
from lamina.data import UnreadableImageError
from lamina.errors import ShapeError
from lamina.io import FormatError

__all__ = ["MODELS", "OPTIMIZERS", "SCHEDULES", "augmentation_layers", "build_language_model", "build_model",
           "build_optimizer", "build_parser", "build_schedule", "detect", "evaluate", "export", "graph",
           "logistic_regression", "main", "predict", "saliency", "sample", "sample_diffusion", "summary", "train",
           "train_detector", "train_diffusion", "train_rl", "train_text", "tune"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lamina",
        description="lamina: deep learning on NumPy with its own autodiff engine.",
        epilog="Run 'lamina COMMAND --help' for a command's options. With no command, 'lamina train' runs.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    images.add_commands(sub)
    text.add_commands(sub)
    diffusion.add_commands(sub)
    detection.add_commands(sub)
    tools.add_commands(sub)
    rl.add_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv or ["train"])
    commands = {"train": train, "evaluate": evaluate, "predict": predict, "summary": summary,
                "train-text": train_text, "sample": sample, "train-diffusion": train_diffusion,
                "sample-diffusion": sample_diffusion, "train-detector": train_detector, "detect": detect,
                "tune": tune, "saliency": saliency, "export": export, "graph": graph, "train-rl": train_rl,
                "logreg": lambda a: logistic_regression(iterations=a.iterations, lr=a.lr, seed=a.seed)}
    if args.command not in commands:
        parser.print_help()
        return 0
    try:
        commands[args.command](args)
    except (FileNotFoundError, ShapeError, FormatError, UnreadableImageError) as exc:  # a user's mistake: no traceback
        print(f"lamina {args.command}: {exc}", file=sys.stderr)
        return 1
    return 0
