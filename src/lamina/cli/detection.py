"""The detection commands: ``train-detector`` (a small RetinaNet, FCOS, Faster R-CNN or SSD on
scenes of handwritten digits) and ``detect`` (draw a saved detector's boxes on image files).

The scenes are :func:`lamina.vision.digit_scenes`: 48 x 48 grey canvases holding one to three
enlarged 8 x 8 digits, the digit's class and tight box its ground truth. The detectors are
torchvision's architectures on a narrow ResNet-18 with an FPN on two of its stages (strides 8
and 16; 4 and 8 for Faster R-CNN), so a default run trains in well under a minute on a CPU.
A run writes
``model.safetensors`` (its ``info`` has the class names and what the labels are shifted by),
``cost.png`` (the loss terms per step) and ``detections.png`` (held-out scenes with the
predicted boxes in colour and the true ones dashed), and prints COCO's metrics
(:func:`lamina.vision.coco_evaluate`) on the held-out scenes. ``--augment flip`` or ``ssd``
augments the training scenes with their boxes (:mod:`lamina.data.detection_transforms`).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

import lamina
from lamina.cli.common import _argument_type, positive_int, positive_number

DETECTORS = ("retinanet", "fcos", "fasterrcnn", "ssd")
CLASS_NAMES = [str(digit) for digit in range(10)]
CANVAS = 48                       # the scenes' height and width in pixels
SHOWN = 8                         # held-out scenes drawn in detections.png
DEFAULT_STEPS = {"retinanet": 600, "fcos": 600, "fasterrcnn": 250, "ssd": 600}   # each well under a minute
AUGMENTATIONS = ("none", "flip", "ssd")

score_fraction = _argument_type(float, lambda v: 0 <= v <= 1, "a number in [0, 1]")


def build_detector(name: str, num_classes: int = 10, width: int = 8, channels: int = 32):
    """A small detector for 1-channel images with ``num_classes`` object classes: a ResNet-18
    of ``width`` base filters with an FPN of ``channels`` on strides 8 and 16 (4 and 8 for
    Faster R-CNN) under the architecture ``name``'s heads. Faster R-CNN and SSD get one more
    class, the background (label 0), so their labels are the classes shifted by one."""
    from lamina import models

    if name not in DETECTORS:
        raise ValueError(f"build_detector: unknown detector {name!r}; expected one of {DETECTORS}")
    returned = (1, 2) if name == "fasterrcnn" else (2, 3)  # the RoI heads want the finer stride-4 map
    backbone = models.resnet_fpn_backbone(18, returned_layers=returned, extra_blocks=None, out_channels=channels,
                                          width=width, frozen_batch_norm=False)
    grey = {"image_mean": (0.5,), "image_std": (0.5,)}
    if name == "retinanet":
        return models.RetinaNet(backbone, num_classes, anchor_sizes=[[16], [32]], aspect_ratios=[[1.0, 2.0]] * 2,
                                head_convs=1, **grey)
    if name == "fcos":
        return models.FCOS(backbone, num_classes, anchor_sizes=[[8], [16]], head_convs=1, head_groups=4, **grey)
    if name == "fasterrcnn":
        return models.FasterRCNN(backbone, num_classes + 1, anchor_sizes=[[16], [32]], aspect_ratios=[[1.0, 2.0]] * 2,
                                 representation_size=128, box_featmap_names=["0", "1"], rpn_pre_nms_top_n_train=50,
                                 rpn_post_nms_top_n_train=30, rpn_pre_nms_top_n_test=100, rpn_post_nms_top_n_test=50,
                                 rpn_batch_size_per_image=64, box_batch_size_per_image=64, **grey)
    return models.SSD(backbone, models.DefaultBoxGenerator([[2], [2]], scales=[0.3, 0.5, 0.7]), num_classes + 1,
                      **grey)


def _scenes(count: int, seed: int, offset: int) -> tuple[np.ndarray, list[dict]]:
    """Digit scenes as images in [0, 1] and targets whose labels are shifted by ``offset``."""
    from lamina.vision import digit_scenes

    images, boxes, labels = digit_scenes(count, canvas=CANVAS, seed=seed)
    return (images / np.float32(255)).astype(np.float32), [{"boxes": b, "labels": lab + offset}
                                                           for b, lab in zip(boxes, labels)]


def build_augmentation(name: str, seed: int):
    """The training augmentation ``name`` (one of AUGMENTATIONS) as a callable on (image, target),
    or None for 'none': 'flip' mirrors left-right with probability 1/2; 'ssd' is torchvision's
    SSD recipe (:func:`lamina.data.detection_transforms.ssd_augmentation`) resized back to the
    scene size, since every batch needs one size and these detectors ask for no fixed input.
    Its draws come from their own generator, so the batches drawn stay those of 'none'."""
    from lamina.data import detection_transforms as dt

    if name not in AUGMENTATIONS:
        raise ValueError(f"build_augmentation: unknown augmentation {name!r}; expected one of {AUGMENTATIONS}")
    if name == "none":
        return None
    rng = np.random.default_rng([seed, 1])
    if name == "flip":
        return dt.RandomHorizontalFlip(0.5, rng=rng)
    return dt.ssd_augmentation((CANVAS, CANVAS), fill=0.0, rng=rng)


def _augmented(augment, images: np.ndarray, targets: list[dict]) -> tuple[np.ndarray, list[dict]]:
    """A mini-batch with ``augment`` applied to each scene (the input unchanged when it is None)."""
    if augment is None:
        return images, targets
    pairs = [augment(image, target) for image, target in zip(images, targets)]
    return np.stack([image for image, _ in pairs]).astype(np.float32), [target for _, target in pairs]


def detect_batch(model, images: np.ndarray, offset: int, batch_size: int = 32) -> list[dict]:
    """The detections of ``images`` with the labels shifted back to the object classes."""
    found = []
    model.eval()
    with lamina.no_grad():
        for start in range(0, len(images), batch_size):
            for d in model(lamina.tensor(images[start:start + batch_size])):
                found.append({**d, "labels": d["labels"] - offset})
    return found


def _check_options(args: argparse.Namespace) -> None:
    who = "lamina train-detector"
    if args.batch_size > args.scenes:
        raise SystemExit(f"{who}: --batch-size {args.batch_size} exceeds the {args.scenes} training scenes of "
                         "--scenes; lower --batch-size or raise --scenes")


def train_detector(args: argparse.Namespace) -> dict:
    """Train a detector on digit scenes (module docstring); returns the COCO metrics on the
    held-out scenes, the per-step losses, the output folder and the trained model."""
    from lamina import optim
    from lamina.vision import coco_evaluate, format_coco_metrics

    _check_options(args)
    steps = args.steps or DEFAULT_STEPS[args.model]
    lamina.manual_seed(args.seed)
    started = time.perf_counter()
    model = build_detector(args.model)
    offset = model.first_label
    images, targets = _scenes(args.scenes + args.test_scenes, args.seed, offset)
    train_images, train_targets = images[:args.scenes], targets[:args.scenes]
    test_images, test_targets = images[args.scenes:], targets[args.scenes:]
    model.build((None, CANVAS, CANVAS, 1))
    out = Path(args.out or Path("runs") / time.strftime("detector-%Y%m%d-%H%M%S"))
    out.mkdir(parents=True, exist_ok=True)
    print(f"{args.model} on digit scenes: {args.scenes} training and {args.test_scenes} held-out scenes of "
          f"{CANVAS}x{CANVAS} pixels; {model.num_parameters():,} parameters")
    optimizer = optim.Adam(model.parameters(trainable_only=True), lr=args.lr)
    rng = np.random.default_rng(args.seed)
    augmentation = getattr(args, "augment", "none")
    augment = build_augmentation(augmentation, args.seed)
    losses: dict[str, list[float]] = {}
    model.train()
    for step in range(1, steps + 1):
        batch = rng.choice(args.scenes, args.batch_size, replace=False)
        batch_images, batch_targets = _augmented(augment, train_images[batch], [train_targets[i] for i in batch])
        terms = model(lamina.tensor(batch_images), batch_targets)
        total = sum(terms.values())
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
        for key, value in {"total": total, **terms}.items():
            losses.setdefault(key, []).append(float(value.item()))
        if args.verbose and (step % max(steps // 10, 1) == 0 or step == steps):
            print(f"step {step:4d}  cost {losses['total'][-1]:.4f}  ({time.perf_counter() - started:.1f} s)")
    train_seconds = time.perf_counter() - started
    found = detect_batch(model, test_images, offset)
    truths = [{"boxes": t["boxes"], "labels": t["labels"] - offset} for t in test_targets]
    metrics = coco_evaluate(found, truths, len(CLASS_NAMES)) if args.test_scenes else {}
    info = {"kind": "detector", "model": args.model, "class_names": CLASS_NAMES, "label_offset": offset,
            "channels": 1, "steps": steps, "batch_size": args.batch_size, "lr": args.lr,
            "scenes": args.scenes, "seed": args.seed, "augment": augmentation,
            "final_loss": losses["total"][-1],
            "coco": {key: None if np.isnan(value) else value for key, value in metrics.items()}}
    lamina.save(model, out / "model.safetensors", info=info)
    plot_losses(losses, out / "cost.png", title=f"{args.model} on digit scenes")
    shown = min(SHOWN, args.test_scenes)
    if shown:
        plot_detections(test_images[:shown], found[:shown], truths[:shown], CLASS_NAMES, out / "detections.png",
                        threshold=args.score_threshold)
    if metrics:
        print(f"COCO metrics on the {args.test_scenes} held-out scenes:")
        print(format_coco_metrics(metrics))
    print(f"final cost {losses['total'][-1]:.4f} (first step {losses['total'][0]:.4f}; trained in "
          f"{train_seconds:.1f} s, {time.perf_counter() - started:.1f} s in all)")
    print(f"saved {out / 'model.safetensors'}, {out / 'cost.png'}" + (f" and {out / 'detections.png'}"
                                                                       if shown else ""))
    return {"metrics": metrics, "losses": losses, "out": out, "model": model}


def plot_losses(losses: dict[str, list[float]], path: Path, title: str) -> Path:
    """Each loss term and their sum per training step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from lamina.io.atomic import save_figure

    fig, ax = plt.subplots(figsize=(7, 4))
    for key, values in losses.items():
        ax.plot(np.arange(1, len(values) + 1), values, linewidth=1.6 if key == "total" else 0.9,
                color="black" if key == "total" else None, label=key)
    ax.set(xlabel="step", ylabel="cost", title=title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)


def draw_boxes(ax, image: np.ndarray, detections: dict, names: list[str], threshold: float,
               truth: dict | None = None) -> None:
    """``image`` on ``ax`` with the detections scored at least ``threshold`` (solid, labelled
    'class score') and the ground truth ``truth`` (dashed, green)."""
    from matplotlib.patches import Rectangle

    ax.imshow(image[..., 0] if image.shape[-1] == 1 else image, cmap="gray", vmin=0, vmax=1,
              interpolation="nearest")
    if truth is not None:
        for x1, y1, x2, y2 in np.asarray(truth["boxes"], dtype=np.float64).reshape(-1, 4):
            ax.add_patch(Rectangle((x1 - 0.5, y1 - 0.5), x2 - x1, y2 - y1, fill=False, edgecolor="lime",
                                   linestyle="--", linewidth=1.0))
    for (x1, y1, x2, y2), score, label in zip(detections["boxes"], detections["scores"], detections["labels"]):
        if score < threshold:
            continue
        color = f"C{int(label) % 10}"
        ax.add_patch(Rectangle((x1 - 0.5, y1 - 0.5), x2 - x1, y2 - y1, fill=False, edgecolor=color, linewidth=1.4))
        name = names[int(label)] if 0 <= int(label) < len(names) else str(int(label))
        ax.text(x1 - 0.5, y1 - 1.0, f"{name} {score:.2f}", color="white", fontsize=6,
                bbox={"facecolor": color, "edgecolor": "none", "pad": 0.5})
    ax.set_xticks([])
    ax.set_yticks([])


def plot_detections(images: np.ndarray, found: list[dict], truths: list[dict], names: list[str], path: Path,
                    threshold: float) -> Path:
    """A grid of scenes with their detections and ground truth (see :func:`draw_boxes`)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from lamina.io.atomic import save_figure

    columns = min(4, len(images))
    rows = -(-len(images) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(2.4 * columns, 2.4 * rows + 0.4), squeeze=False)
    for ax in axes.flat[len(images):]:
        ax.axis("off")
    for ax, image, detections, truth in zip(axes.flat, images, found, truths):
        draw_boxes(ax, image, detections, names, threshold, truth)
    fig.suptitle(f"held-out scenes: detections with score >= {threshold:g} (true boxes dashed)", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)


def detect(args: argparse.Namespace) -> list[dict]:
    """Detect objects in image files with a model saved by ``lamina train-detector``; write each
    image with its boxes to ``--out`` as NAME.detections.png; returns the detections per image
    (labels are object classes)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from lamina.data import read_image
    from lamina.io.atomic import save_figure
    from lamina.models.detection_base import DetectorBase

    who = "lamina detect"
    bundle = lamina.load_bundle(args.checkpoint)
    model, info = bundle.model, bundle.info
    if not isinstance(model, DetectorBase):
        raise SystemExit(f"{who}: {args.checkpoint} holds a {type(model).__name__}, not a detector "
                         "('lamina train-detector' writes one)")
    offset = int(info.get("label_offset", model.first_label))
    names = info.get("class_names") or [str(k) for k in range(model.num_classes - offset)]
    mode = "L" if len(model.image_mean) == 1 else "RGB"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = []
    for path in args.images:
        image = read_image(path, mode=mode).astype(np.float32) / np.float32(255)
        detections = detect_batch(model, image[None], offset)[0]
        keep = detections["scores"] >= args.score_threshold
        detections = {key: value[keep] for key, value in detections.items()}
        height, width = image.shape[:2]
        fig, ax = plt.subplots(figsize=(max(3.0, min(10.0, width / 16)), max(3.0, min(10.0, height / 16))))
        draw_boxes(ax, image, detections, names, args.score_threshold)
        ax.set_title(f"{Path(path).name}: {len(detections['scores'])} objects", fontsize=9)
        fig.tight_layout()
        written = save_figure(fig, out / f"{Path(path).stem}.detections.png")
        found = ", ".join(f"{names[int(c)]} {s:.2f} at ({', '.join(f'{v:.0f}' for v in b)})"
                          for b, s, c in zip(detections["boxes"], detections["scores"], detections["labels"]))
        print(f"{path}: {found or 'nothing'} -> {written}")
        results.append({"image": str(path), **detections, "out": written})
    return results


def add_commands(sub) -> None:
    """The detection commands' parsers, added to the subparsers ``sub``."""
    t = sub.add_parser("train-detector", help="train an object detector on scenes of handwritten digits",
                       description="Train a small detector (torchvision's RetinaNet, FCOS, Faster R-CNN or SSD on a "
                                   "narrow ResNet-18 FPN) on 48x48 scenes of one to three digits; writes "
                                   "model.safetensors, cost.png and detections.png to --out and prints COCO's "
                                   "metrics on held-out scenes.")
    t.add_argument("--model", choices=DETECTORS, default="retinanet", help="architecture (default retinanet)")
    t.add_argument("--steps", type=positive_int, default=None,
                   help="training steps, one mini-batch each (default 600; fasterrcnn 250, its steps being slower)")
    t.add_argument("--batch-size", type=positive_int, default=16, help="scenes per mini-batch (default 16)")
    t.add_argument("--lr", type=positive_number, default=3e-3, help="Adam's learning rate (default 0.003)")
    t.add_argument("--scenes", type=positive_int, default=1024, help="training scenes (default 1024)")
    t.add_argument("--test-scenes", type=_argument_type(int, lambda v: v >= 0, "an integer >= 0"), default=64,
                   help="held-out scenes for the metrics and detections.png (default 64; 0: none)")
    t.add_argument("--score-threshold", type=score_fraction, default=0.5,
                   help="the lowest score of a box drawn in detections.png (default 0.5)")
    t.add_argument("--augment", choices=AUGMENTATIONS, default="none",
                   help="training augmentation of boxes and images: none; flip (left-right, p 0.5); ssd "
                        "(torchvision's SSD recipe: photometric distortion, zoom out, IoU crop, flip, resized "
                        "back to 48x48) (default none)")
    t.add_argument("--out", default=None, help="output directory (default runs/detector-<timestamp>)")
    t.add_argument("--seed", type=int, default=0, help="random seed of the weights, scenes and batches (default 0)")
    t.add_argument("--verbose", type=int, default=1, help="0: quiet; 1: ten progress lines")

    d = sub.add_parser("detect", help="draw a saved detector's boxes on image files (PNG, JPEG)",
                       description="Detect objects in image files with a model saved by 'lamina train-detector'; "
                                   "writes each image with its boxes to --out as NAME.detections.png.")
    d.add_argument("checkpoint", help="model.safetensors written by 'lamina train-detector'")
    d.add_argument("images", nargs="+", help="image files, read as grey or RGB as the model was trained")
    d.add_argument("--out", default="detections", help="output directory (default detections)")
    d.add_argument("--score-threshold", type=score_fraction, default=0.5,
                   help="the lowest score of a box reported and drawn (default 0.5)")
