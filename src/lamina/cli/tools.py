"""The tool commands: tune (random search of the learning rate and weight decay on the
validation split), saliency (which pixels a saved classifier's decision depends on),
export (a saved model as an ONNX file) and graph (the computation graph of one training
step's loss, drawn)."""

from __future__ import annotations

import argparse
import math
import shlex
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

import lamina
from lamina.cli.common import OPTIMIZERS, SCHEDULES, build_optimizer, build_schedule, positive_int
from lamina.cli.images import MODELS, build_model

if TYPE_CHECKING:
    from lamina.train.search import SearchResult, Trial

GRAPH_INPUTS = {"lenet5": (32, 32, 1), "mlp": (28, 28, 1)}
SALIENCY_METHODS = {"gradient": "|gradient|", "smoothgrad": "SmoothGrad", "integrated": "integrated gradients"}


def search_range(zero_allowed: bool = False):
    """An argparse type (argparse names the option in its errors): 'LOW:HIGH' is a log-uniform
    range (0 < LOW < HIGH), a single number a fixed value (> 0, or >= 0 when ``zero_allowed``)."""

    def parse(text: str):
        from lamina.train.search_space import LogUniform

        parts = text.split(":")
        try:
            values = [float(part) for part in parts]
        except ValueError:
            values = []
        if len(values) not in (1, 2) or not all(math.isfinite(v) for v in values):
            raise argparse.ArgumentTypeError(f"expected a number or a range LOW:HIGH, got {text!r}")
        if len(values) == 1:
            if values[0] < 0 or (values[0] == 0 and not zero_allowed):
                bound = ">= 0" if zero_allowed else "> 0"
                raise argparse.ArgumentTypeError(f"expected a value {bound}, got {text!r}")
            return values[0]
        low, high = values
        if low <= 0:
            raise argparse.ArgumentTypeError(f"range {text!r}: LOW must be > 0, as the range is searched on a "
                                             "log scale")
        if low >= high:
            raise argparse.ArgumentTypeError(f"range {text!r}: LOW must be below HIGH")
        return LogUniform(low, high)

    return parse


def _train_command(args: argparse.Namespace, config: dict) -> str:
    """The 'lamina train' command line that trains with ``config`` as the trials did."""
    words = ["lamina", "train", "--model", args.model, "--dataset", args.dataset, "--epochs", str(args.epochs),
             "--batch-size", str(args.batch_size), "--optimizer", args.optimizer, "--lr", f"{config['lr']:.4g}"]
    if config["weight_decay"]:
        words += ["--weight-decay", f"{config['weight_decay']:.4g}"]
    if args.schedule != "cosine":
        words += ["--schedule", args.schedule]
    for option, value in (("--limit", args.limit), ("--data-dir", args.data_dir)):
        if value is not None:
            words += [option, str(value)]
    if args.offline:
        words.append("--offline")
    return shlex.join(words + ["--seed", str(args.seed)])


def tune(args: argparse.Namespace) -> SearchResult:
    """Random search of lr (and weight decay): one 'lamina train' run per trial, scored by
    its validation accuracy after the last epoch. Returns the SearchResult."""
    from lamina.train import Trainer
    from lamina.train.recipes import prepare_dataset
    from lamina.train.search import tune_trainer
    from lamina.train.search_space import Distribution

    space = {"lr": args.lr, "weight_decay": args.weight_decay}
    if not any(isinstance(value, Distribution) for value in space.values()):
        raise SystemExit("lamina tune: nothing to search; give --lr (or --weight-decay) as a range LOW:HIGH")
    lamina.manual_seed(args.seed)
    out = Path(args.out or Path("runs") / time.strftime("tune-%Y%m%d-%H%M%S"))
    out.mkdir(parents=True, exist_ok=True)
    data = prepare_dataset(args.dataset, data_dir=args.data_dir, download=not args.offline, seed=args.seed,
                           limit=args.limit)
    classes = len(data.info["class_names"])
    iterations = args.epochs * -(-len(data.train[0]) // args.batch_size)
    epochs = f"{args.epochs} epoch" + ("s" if args.epochs > 1 else "")
    print(f"{args.dataset}: {len(data.train[0])} training, {len(data.val[0])} validation images; "
          f"{args.trials} trials of {epochs}, scored on the validation split")

    def build(config: dict) -> Trainer:
        model = build_model(args.model, data.input_shape, classes, args.activation, args.pool)
        optimizer = build_optimizer(args.optimizer, model.parameters(), config["lr"], config["weight_decay"])
        schedule = build_schedule(args.schedule, optimizer, config["lr"], iterations)
        return Trainer(model, "categorical_cross_entropy", optimizer, metrics=("accuracy",), schedule=schedule,
                       verbose=0)

    def report(trial: Trial) -> None:
        values = f"lr {trial.config['lr']:.4g}  weight decay {trial.config['weight_decay']:.4g}"
        outcome = f"validation accuracy {trial.score:.4f}" if trial.ok else f"failed: {trial.error}"
        print(f"trial {trial.index}  {values}  {outcome}  ({trial.seconds:.1f} s)")

    csv_path = out / "trials.csv"
    try:
        result = tune_trainer(build, data.train, data.val, space, args.trials, args.epochs,
                              batch_size=args.batch_size, metric="val_accuracy", seed=args.seed, callback=report,
                              csv_path=csv_path)
    except RuntimeError as exc:  # every trial failed: each one's error is in the message and in the CSV
        raise SystemExit(f"lamina tune: {exc}") from None
    best = result.best
    print("\ntrials, best first (score: validation accuracy):")
    print(result.table())
    print(f"\nbest: lr {best.config['lr']:.4g}, weight decay {best.config['weight_decay']:.4g} "
          f"(trial {best.index}, validation accuracy {best.score:.4f})")
    print(f"saved {csv_path}")
    print(f"train with the best values:\n  {_train_command(args, best.config)}")
    return result


def _target_class(target: str | None, names: list[str], classes: int) -> int | None:
    """--target as a class index: an index in [0, classes) or one of the class names."""
    if target is None:
        return None
    if target in names:
        return names.index(target)
    if target.lstrip("-").isdigit() and 0 <= int(target) < classes:
        return int(target)
    raise SystemExit(f"lamina saliency: --target must be a class index in [0, {classes})"
                     + (f" or a class name ({', '.join(names)})" if names else "") + f", got {target!r}")


def _saliency_of(model, x: np.ndarray, target: int, method: str, preprocessing) -> np.ndarray:
    """The (H, W) map of ``method`` for the one image in ``x``: |attribution| reduced by the
    maximum over the channels, as ``saliency_map`` reduces |dS_c/dx|."""
    from lamina.analysis.saliency import integrated_gradients, saliency_map, smooth_grad

    if method == "gradient":
        return saliency_map(model, x, target)[0]
    if method == "smoothgrad":
        attribution = smooth_grad(model, x, target, seed=0)
    else:  # from a black image, as the model would see one
        black = np.zeros_like(x)
        baseline = preprocessing.transform(black) if preprocessing is not None else black
        attribution = integrated_gradients(model, x, target, baseline=baseline)
    return np.abs(attribution).max(axis=-1)[0]


def _write_panels(path: Path, picture: np.ndarray, saliency: np.ndarray, method: str, title: str) -> None:
    """The input and its saliency map side by side, as a PNG written atomically."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from lamina.io import atomic_write

    fig = Figure(figsize=(7.0, 3.4), layout="constrained")
    FigureCanvasAgg(fig)
    left, right = fig.subplots(1, 2)
    gray = picture.shape[-1] == 1
    left.imshow(picture[..., 0] if gray else picture, cmap="gray" if gray else None, vmin=0.0, vmax=1.0)
    left.set_title(f"input ({picture.shape[0]}x{picture.shape[1]})")
    shown = right.imshow(saliency, cmap="inferno")
    right.set_title(f"saliency: {SALIENCY_METHODS[method]}")
    fig.colorbar(shown, ax=right, shrink=0.9)
    for ax in (left, right):
        ax.set_axis_off()
    fig.suptitle(title)
    with atomic_write(path) as handle:
        fig.savefig(handle, format="png", dpi=100, bbox_inches="tight", pad_inches=0.1)


def saliency(args: argparse.Namespace) -> list[dict]:
    """For each image: the model's prediction and a PNG of the input beside its saliency map.
    Returns one dict per image: the predicted class, its probability, the explained class
    ("target"), the (H, W) map and the PNG's path."""
    from PIL import UnidentifiedImageError

    from lamina.train.recipes import image_to_input

    for path, what in [(args.checkpoint, "checkpoint")] + [(image, "image") for image in args.images]:
        if not Path(path).is_file():
            raise FileNotFoundError(f"no such {what} file: {path}")
    outputs = [f"{Path(image).stem}-{args.method}.png" for image in args.images]
    if len(set(outputs)) < len(outputs):
        raise SystemExit(f"lamina saliency: images with the same file name would write the same output: {outputs}")
    bundle = lamina.load_bundle(args.checkpoint)
    if "content_size" not in bundle.info:
        raise SystemExit(f"lamina saliency: {args.checkpoint} is not an image classifier written by 'lamina train' "
                         "(it names no image size)")
    names = list(bundle.info.get("class_names") or [])
    out = Path(args.out or Path("runs") / time.strftime("saliency-%Y%m%d-%H%M%S"))
    results = []
    for image, name in zip(args.images, outputs, strict=True):
        try:
            x = image_to_input(image, bundle.info, bundle.preprocessing)
        except UnidentifiedImageError:
            raise SystemExit(f"lamina saliency: {image} is not an image file Pillow can read") from None
        with lamina.no_grad():
            probs = bundle.model(lamina.tensor(x)).numpy()[0]
        best = int(probs.argmax())
        target = _target_class(args.target, names, len(probs))
        chosen = best if target is None else target
        label = names[best] if names else str(best)
        chosen_label = names[chosen] if names else str(chosen)
        heatmap = _saliency_of(bundle.model, x, chosen, args.method, bundle.preprocessing)
        picture = bundle.preprocessing.inverse_transform(x)[0] if bundle.preprocessing is not None else x[0]
        title = f"predicted {label} (p = {probs[best]:.3f}); saliency of class {chosen_label}"
        _write_panels(out / name, np.clip(picture, 0.0, 1.0), heatmap, args.method, title)
        results.append({"image": str(image), "class": best, "label": label, "probability": float(probs[best]),
                        "target": chosen, "saliency": heatmap, "path": str(out / name)})
        print(f"{image}: {label} (class {best}, p = {probs[best]:.3f}); saliency of class {chosen_label} "
              f"written to {out / name}")
    return results


def export(args: argparse.Namespace) -> Path:
    """Write a model saved by lamina (``lamina.save``, ``lamina train``) as an ONNX file."""
    if not Path(args.checkpoint).is_file():
        raise FileNotFoundError(f"no such checkpoint file: {args.checkpoint}")
    bundle = lamina.load_bundle(args.checkpoint)
    out = Path(args.out) if args.out else Path(args.checkpoint).with_suffix(".onnx")
    input_shape = tuple(args.input_shape) if args.input_shape else None
    try:
        path = lamina.export_onnx(bundle.model, out, input_shape=input_shape, opset=args.opset)
    except (NotImplementedError, ValueError) as exc:
        raise SystemExit(f"lamina export: {exc}") from None
    sample = input_shape or tuple(bundle.model.build_input_shape[1:])
    print(f"{args.checkpoint} exported to {path}: input 'input' (batch, {', '.join(map(str, sample))}), "
          "output 'output'")
    if bundle.preprocessing is not None:
        print(f"  the model reads inputs after the checkpoint's preprocessing ({type(bundle.preprocessing).__name__}); "
              "apply it before running the ONNX model")
    return path


def _training_loss(model, x, labels):
    """The cost 'lamina train' back-propagates for a mini-batch: categorical cross-entropy, with
    a Softmax last layer fused into it (computed on the logits), as the Trainer does."""
    import lamina.functional as F

    layers = list(model)
    if layers and type(layers[-1]).__name__ == "Softmax":
        logits = x
        for layer in layers[:-1]:
            logits = layer(logits)
        return F.categorical_cross_entropy(logits, labels, from_logits=True)
    return F.categorical_cross_entropy(model(x), labels)


def graph(args: argparse.Namespace) -> Path:
    """Draw the computation graph of one training step's loss of a model (random weights, a
    dummy mini-batch) as a PNG, optionally as DOT source too; print its size. Returns the PNG's path."""
    from lamina.analysis import draw_graph, graph_stats
    from lamina.autograd import to_dot

    shape = tuple(args.input_shape) if args.input_shape else GRAPH_INPUTS[args.model]
    lamina.manual_seed(0)
    try:
        model = build_model(args.model, shape, args.classes, args.activation, args.pool)
    except ValueError as exc:
        raise SystemExit(f"lamina graph: {exc}") from None
    rng = np.random.default_rng(0)
    x = lamina.tensor(rng.random((args.batch_size, *shape), dtype=np.float32))
    loss = _training_loss(model, x, rng.integers(0, args.classes, args.batch_size))
    out = Path(args.out)
    title = f"{args.model}: the loss of one training step (batch of {args.batch_size}, input {shape})"
    try:
        draw_graph(loss, model.named_parameters(), path=out, max_nodes=args.max_nodes, title=title)
    except ValueError as exc:
        raise SystemExit(f"lamina graph: {exc}") from None
    print(f"{args.model}: {graph_stats(loss)}")
    print(f"graph drawn to {out}")
    if args.dot:
        to_dot(loss, model.named_parameters(), max_nodes=None).save_dot(args.dot)
        print(f"DOT source written to {args.dot} (render with: dot -Tpng {shlex.quote(args.dot)} -o graph.png)")
    return out


def add_commands(sub) -> None:
    """The tool commands' parsers, added to the subparsers ``sub``."""
    from lamina.train.recipes import DATASETS

    t = sub.add_parser("tune", help="random search of the learning rate (and weight decay) on validation data",
                       description="Random search of the learning rate, log-uniform between LOW and HIGH, and "
                                   "optionally of the weight decay: each trial trains as 'lamina train' would with "
                                   "the sampled values and is scored by its validation accuracy after the last "
                                   "epoch; the test split stays unseen. Prints the trials best first, writes "
                                   "trials.csv to --out and prints the 'lamina train' command for the best values.")
    t.add_argument("--model", choices=MODELS, default="lenet5", help="architecture (default lenet5)")
    t.add_argument("--dataset", choices=DATASETS, default="digits",
                   help="dataset (default digits, embedded in scikit-learn)")
    t.add_argument("--trials", type=positive_int, default=8, help="configurations to try (default 8)")
    t.add_argument("--epochs", type=positive_int, default=2, help="epochs of each trial's training (default 2)")
    t.add_argument("--batch-size", type=positive_int, default=32, help="mini-batch size (default 32)")
    t.add_argument("--optimizer", choices=OPTIMIZERS, default="adam", help="optimizer (default adam)")
    t.add_argument("--lr", type=search_range(), default="1e-4:1e-1", metavar="LOW:HIGH",
                   help="learning-rate range, searched log-uniformly, or one fixed value (default 1e-4:1e-1)")
    t.add_argument("--weight-decay", type=search_range(zero_allowed=True), default="0",
                   metavar="LOW:HIGH", help="weight-decay range, searched log-uniformly, or one fixed value "
                                            "(default 0)")
    t.add_argument("--schedule", choices=SCHEDULES, default="cosine",
                   help="learning-rate schedule of each trial, as in 'lamina train' (default cosine)")
    t.add_argument("--activation", default="tanh", help="LeNet-5 activation (default tanh)")
    t.add_argument("--pool", choices=("avg", "max"), default="avg", help="LeNet-5 pooling (default avg)")
    t.add_argument("--data-dir", default=None, help="where the dataset files are (searched first)")
    t.add_argument("--offline", action="store_true", help="never download datasets")
    t.add_argument("--limit", type=positive_int, default=None, help="use only this many training samples")
    t.add_argument("--out", default=None, help="output directory for trials.csv (default runs/tune-<timestamp>)")
    t.add_argument("--seed", type=int, default=0,
                   help="random seed of the draws, the split and every trial's training (default 0)")

    s = sub.add_parser("saliency", help="draw which pixels a saved classifier's decision depends on",
                       description="For each image: the class a model saved by 'lamina train' predicts, and a PNG "
                                   "in --out of the input as the model sees it beside its saliency map, the size "
                                   "of the class score's gradient with respect to each pixel.")
    s.add_argument("checkpoint", help="model.safetensors or checkpoint.safetensors written by 'lamina train'")
    s.add_argument("images", nargs="+", metavar="IMAGE", help="image files (PNG, JPEG)")
    s.add_argument("--target", default=None, metavar="CLASS",
                   help="the class whose score is explained, an index or a class name (default: the predicted one)")
    s.add_argument("--method", choices=tuple(SALIENCY_METHODS), default="gradient",
                   help="gradient: |dS/dx|; smoothgrad: averaged over noisy copies of the image; integrated: "
                        "integrated gradients from a black image (default gradient)")
    s.add_argument("--out", default=None,
                   help="output directory for IMAGE-METHOD.png (default runs/saliency-<timestamp>)")

    e = sub.add_parser("export", help="write a saved model as an ONNX file (needs the onnx package)",
                       description="Write a model saved by lamina (model.safetensors from 'lamina train', or any "
                                   "lamina.save file) as an ONNX model for ONNX Runtime and other engines: input "
                                   "'input' (NHWC images, any batch size), output 'output'.")
    e.add_argument("checkpoint", help="model.safetensors or checkpoint.safetensors")
    e.add_argument("--out", default=None, help="the ONNX file (default: the checkpoint's name with .onnx)")
    e.add_argument("--input-shape", type=positive_int, nargs="+", default=None, metavar="N",
                   help="one sample's shape, e.g. 32 32 1 (default: the shape the model was built for)")
    e.add_argument("--opset", type=positive_int, default=17, help="ONNX opset version (default 17)")

    g = sub.add_parser("graph", help="draw the computation graph of one training step's loss",
                       description="Build a model with random weights, run one mini-batch of random images "
                                   "through it and its categorical cross-entropy, as 'lamina train' would, and "
                                   "draw the graph back propagation runs through: parameters in blue, ops in "
                                   "grey, the loss in green. Prints the node counts and the bytes the ops keep "
                                   "for backward.")
    g.add_argument("--model", choices=tuple(GRAPH_INPUTS), default="lenet5", help="architecture (default lenet5)")
    g.add_argument("--out", default="graph.png", help="the PNG to write (default graph.png)")
    g.add_argument("--dot", default=None, metavar="PATH", help="also write the graph as Graphviz DOT source")
    g.add_argument("--batch-size", type=positive_int, default=2, help="dummy mini-batch size (default 2)")
    g.add_argument("--input-shape", type=positive_int, nargs="+", default=None, metavar="N",
                   help="one sample's shape, e.g. 32 32 1 (default: 32 32 1 for lenet5, 28 28 1 for mlp)")
    g.add_argument("--classes", type=positive_int, default=10, help="number of classes (default 10)")
    g.add_argument("--activation", default="tanh", help="LeNet-5 activation (default tanh)")
    g.add_argument("--pool", choices=("avg", "max"), default="avg", help="LeNet-5 pooling (default avg)")
    g.add_argument("--max-nodes", type=positive_int, default=300,
                   help="refuse graphs of more ops and leaves than this (default 300)")
