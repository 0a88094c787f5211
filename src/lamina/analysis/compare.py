"""The course notes' architecture comparison (parameters, flops, top-5 error), measured on
lamina's builders and drawn: parameters against MACs on log axes, with the table beside.

Builders are looked up in :mod:`lamina.models` by name when needed; each is summarised at
its native input size (227 for AlexNet, 299 for Inception-v3, 32 for the CIFAR ResNets and
LeNet-5, 224 for the others, unless the builder's ``input_shape`` default says otherwise).
"""

from __future__ import annotations

import functools
import inspect
import os
import re
from collections.abc import Callable, Sequence

from lamina.analysis.summary import Summary, format_count, summary
from lamina.nn import init
from lamina.nn.module import Module

__all__ = ["COURSE_TABLE", "build_for_summary", "compare_architectures", "native_input_shape", "zoo_builder"]

# The course notes' comparison table: (parameters in millions, GFLOPs, ImageNet top-5 error %)
COURSE_TABLE = {
    "alexnet": (62, 1, 16.4),
    "zfnet": (108, 2.47, 11.7),
    "vgg16": (138, 13.6, 7.3),
    "googlenet": (6.8, 1.5, 6.7),
    "resnet152": (60, 11.3, 3.57),
}

_NATIVE = {"lenet5": (32, 32, 1), "alexnet": (227, 227, 3), "inception_v3": (299, 299, 3)}
# a text model's summary without a vocabulary size or input shape: Tiny Shakespeare's 65
# characters, windows of 64 steps
TEXT_VOCABULARY, TEXT_STEPS = 65, 64


def zoo_builder(name: str) -> Callable[..., Module]:
    """The builder ``lamina.models.<name>`` (e.g. 'vgg16', 'resnet50'); 'resnet_cifar<depth>'
    (resnet_cifar20, resnet_cifar56, ...) is ``resnet_cifar(depth=<depth>)`` when the zoo has
    no builder of that name."""
    from lamina import models

    builder = getattr(models, name, None) if name and not name.startswith("_") else None
    depth = re.fullmatch(r"resnet_cifar(\d+)", name or "")
    if builder is None and depth and callable(getattr(models, "resnet_cifar", None)):
        builder = functools.partial(models.resnet_cifar, depth=int(depth.group(1)))
    if not callable(builder):
        known = sorted(n for n in getattr(models, "__all__", []) if callable(getattr(models, n, None)))
        raise ValueError(f"unknown model {name!r}; lamina.models has {known}")
    return builder


def _defaults(builder: Callable) -> dict:
    try:
        return {k: p.default for k, p in inspect.signature(builder).parameters.items()}
    except (TypeError, ValueError):
        return {}


def native_input_shape(name: str, builder: Callable | None = None) -> tuple[int, ...]:
    """The input shape (without batch) a zoo model is designed for."""
    default = _defaults(builder or zoo_builder(name)).get("input_shape", inspect.Parameter.empty)
    if isinstance(default, (tuple, list)) and default and all(isinstance(n, int) for n in default):
        return tuple(default)
    if name in _NATIVE:
        return _NATIVE[name]
    if "vocab_size" in _defaults(builder or zoo_builder(name)):
        return (TEXT_STEPS,)
    if name.startswith("resnet_cifar"):
        return (32, 32, 3)
    return (224, 224, 3)


def build_for_summary(name: str, input_shape: tuple[int, ...] | None = None,
                      num_classes: int | None = None) -> tuple[Module, tuple[int, ...]]:
    """Build zoo model ``name`` with shape-only weights (:func:`lamina.nn.init.meta`) for a
    summary; returns (model, input_shape). Arguments the builder does not take are left out;
    a text model reads 64 steps of a 65-token vocabulary unless told otherwise (a language
    model's ``num_classes`` is its vocabulary size)."""
    builder = zoo_builder(name)
    shape = tuple(input_shape) if input_shape is not None else native_input_shape(name, builder)
    accepted = _defaults(builder)
    kwargs: dict = {}
    if num_classes is not None and "num_classes" in accepted:
        kwargs["num_classes"] = num_classes
    if "vocab_size" in accepted:          # a text model; a language model's classes are its vocabulary
        language_model = "num_classes" not in accepted and num_classes is not None
        kwargs["vocab_size"] = num_classes if language_model else TEXT_VOCABULARY
    if "input_shape" in accepted:
        kwargs["input_shape"] = shape
    with init.meta():
        model = builder(**kwargs)
    return model, shape


def _entry(item) -> tuple[str, Module, tuple[int, ...] | None]:
    if isinstance(item, str):
        model, shape = build_for_summary(item)
        return item, model, shape
    try:
        name, model, shape = item
    except (TypeError, ValueError):
        raise TypeError(f"compare_architectures: expected a model name or (name, model, input_shape), "
                        f"got {item!r}") from None
    return str(name), model, None if shape is None else tuple(shape)


def _table(rows: list[dict]) -> str:
    headers = ("Architecture", "Input", "Params", "MACs", "Params (course)", "GFLOPs (course)", "Top-5 (course)")
    body = []
    for r in rows:
        course = COURSE_TABLE.get(r["name"].lower().replace("-", ""))
        body.append((r["name"], "x".join(str(n) for n in r["input_shape"]), f"{r['params']:,}",
                     format_count(r["macs"]),
                     f"{course[0]} M" if course else "", f"{course[1]}" if course else "",
                     f"{course[2]}%" if course else ""))
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(headers)]

    def line(cells) -> str:
        return "  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    rule = "-" * (sum(widths) + 2 * (len(widths) - 1))
    return "\n".join([line(headers), rule, *(line(b) for b in body)])


def compare_architectures(models: Sequence, path: str | os.PathLike | None = None) -> list[dict]:
    """Summarise each model and draw parameters against MACs (log axes, one labelled point
    per architecture) with the comparison table beside it, written as a PNG to ``path``
    (atomically). ``models``: zoo names ('alexnet', 'vgg16', ...) or (name, model or
    builder, input_shape) triples. Prints the table and returns its rows: name,
    input_shape, params, trainable_params, macs, layers, activation_bytes, and the course
    notes' figures (course_params_m, course_gflops, top5_error) where it lists the model.
    """
    rows: list[dict] = []
    for item in models:
        name, model, shape = _entry(item)
        s: Summary = summary(model, shape)
        course = COURSE_TABLE.get(name.lower().replace("-", ""))
        rows.append({
            "name": name,
            "input_shape": list(s.input_shape),
            "params": s.total_params,
            "trainable_params": s.trainable_params,
            "macs": s.total_macs,
            "layers": len(s.rows),
            "activation_bytes": s.activation_bytes_per_sample,
            "course_params_m": course[0] if course else None,
            "course_gflops": course[1] if course else None,
            "top5_error": course[2] if course else None,
        })
    print(_table(rows))
    if path is not None:
        _plot(rows, path)
    return rows


def _plot(rows: list[dict], path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    from lamina.io import atomic_write

    fig = Figure(figsize=(15, 5.5))
    ax = fig.add_axes((0.06, 0.12, 0.37, 0.78))
    for i, r in enumerate(rows):
        x, y = max(r["macs"], 1) / 1e9, max(r["params"], 1) / 1e6
        ax.scatter([x], [y], s=40)
        # alternate the labels above and below their points so that neighbours stay readable
        ax.annotate(r["name"], (x, y), textcoords="offset points", xytext=(5, 4 if i % 2 == 0 else -11),
                    fontsize=8)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("MACs per image (G, log scale)")
    ax.set_ylabel("parameters (M, log scale)")
    ax.set_title("Parameters vs computation (lamina's builders)")
    ax.grid(True, which="both", alpha=0.3)
    side = fig.add_axes((0.47, 0.05, 0.52, 0.85))
    side.axis("off")
    cells = []
    for r in rows:
        course = [r["course_params_m"], r["course_gflops"], r["top5_error"]]
        cells.append([r["name"], "x".join(str(n) for n in r["input_shape"][:2]), f"{r['params'] / 1e6:.2f}",
                      f"{r['macs'] / 1e9:.2f}", *("" if v is None else f"{v}" for v in course)])
    if cells:
        labels = ["architecture", "input", "params (M)", "GMACs", "course: params (M)", "course: GFLOPs",
                  "course: top-5 %"]
        table = side.table(cellText=cells, colLabels=labels, loc="upper center")
        table.auto_set_font_size(False)
        table.set_fontsize(8)
        table.scale(1, 1.3)
    side.set_title("Comparison table")
    with atomic_write(path) as handle:
        fig.savefig(handle, format="png", dpi=100)
