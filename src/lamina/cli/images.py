"""The image commands: train, evaluate, predict, summary, and logistic regression with the
raw engine."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

import lamina
from lamina import functional as F
from lamina.cli.common import (
    OPTIMIZERS,
    SCHEDULES,
    build_optimizer,
    build_schedule,
    positive_int,
    positive_number,
)
from lamina.cli.train_options import (
    add_mixing_and_averaging,
    add_workers,
    check_resumed_mixing,
    report_averaging,
    training_data,
    weight_averaging,
    worker_mode,
)

MODELS = ("lenet5", "mlp", "logistic_regression")


def logistic_regression(iterations: int = 400, lr: float = 0.5, seed: int = 0, every: int = 25) -> float:
    """Fit a = sigma(w^T x + b) on scikit-learn's breast-cancer data with the raw engine.

    Plain gradient descent, w = w - lr dJ/dw, on a standardised training split; prints
    the cost J every ``every`` iterations and returns the accuracy on a held-out test split.
    """
    from sklearn.datasets import load_breast_cancer

    lamina.manual_seed(seed)
    data = load_breast_cancer()
    x, y = data.data.astype(np.float32), data.target.astype(np.float32)
    order = lamina.backend.rng().permutation(len(x))
    n_test = len(x) // 5
    test, train = order[:n_test], order[n_test:]
    mean, std = x[train].mean(axis=0), x[train].std(axis=0) + 1e-8  # statistics of the training split only
    x = (x - mean) / std
    x_train, y_train = lamina.tensor(x[train]), y[train]
    w = lamina.tensor(np.zeros(x.shape[1]), requires_grad=True)
    b = lamina.tensor(0.0, requires_grad=True)
    print(f"logistic regression on breast cancer: {len(train)} training, {len(test)} test samples")
    for it in range(iterations + 1):
        z = x_train @ w + b
        cost = F.binary_cross_entropy(z, y_train, from_logits=True)
        if it % every == 0:
            print(f"iteration {it:4d}  cost {cost.item():.4f}")
        if it == iterations:
            break
        cost.backward()
        with lamina.no_grad():
            w.data -= lr * w.grad
            b.data -= lr * b.grad
        w.zero_grad()
        b.zero_grad()
    with lamina.no_grad():
        predicted = (x[test] @ w.data + b.data) > 0
    accuracy = float((predicted == y[test].astype(bool)).mean())
    print(f"test accuracy {accuracy:.2%}")
    return accuracy


def build_model(name: str, input_shape: tuple[int, ...], num_classes: int, activation: str, pool: str):
    from lamina import models

    if name == "lenet5":
        return models.lenet5(activation=activation, pool=pool, num_classes=num_classes, input_shape=input_shape)
    if name == "mlp":
        return models.mlp(num_classes=num_classes, input_shape=input_shape)
    if name == "logistic_regression":
        return models.logistic_regression(input_shape=input_shape)
    raise ValueError(f"unknown model {name!r}; expected one of {MODELS}")


def augmentation_layers(dataset: str, input_shape: tuple[int, ...]) -> list:
    """The ``--augment`` layers for a dataset (course notes, Data augmentation): shifts of up to
    2 pixels (4 on CIFAR-10's 32x32 photos) by a padded random crop; left-right mirroring
    for photos (CIFAR-10, an image folder) and clothes, small rotations (10 degrees) for
    digits, whose mirror images are not digits."""
    from lamina import nn

    layers = [nn.RandomCrop(tuple(input_shape[:2]), padding=4 if dataset == "cifar10" else 2)]
    if dataset in ("cifar10", "fashion_mnist", "folder"):
        layers.append(nn.RandomFlip("horizontal"))
    else:
        layers.append(nn.RandomRotation(10))
    return layers


def train(args: argparse.Namespace) -> dict:
    from lamina.train import EarlyStopping, ModelCheckpoint, TerminateOnNaN, Trainer
    from lamina.train.recipes import prepare_dataset

    averaging = weight_averaging(args)
    if args.resume is not None:
        check_resumed_mixing(args)
    lamina.manual_seed(args.seed)
    out = Path(args.out or Path("runs") / time.strftime("%Y%m%d-%H%M%S"))
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    data = prepare_dataset(args.dataset, data_dir=args.data_dir, download=not args.offline, seed=args.seed,
                           limit=args.limit, workers=args.workers)
    classes = len(data.info["class_names"])
    print(f"{args.dataset}: {len(data.train[0])} training, {len(data.val[0])} validation, "
          f"{len(data.test[0])} test images of shape {data.input_shape}")
    model = build_model(args.model, data.input_shape, classes, args.activation, args.pool)
    if args.augment:
        from lamina import nn

        model = nn.Sequential(*augmentation_layers(args.dataset, data.input_shape), *model)
    optimizer = build_optimizer(args.optimizer, model.parameters(), args.lr, args.weight_decay)
    if args.sam is not None:
        from lamina.optim import SAM

        optimizer = SAM(optimizer, rho=args.sam)
    loss = "categorical_cross_entropy"
    if args.label_smoothing:
        import functools

        from lamina import functional as F

        loss = functools.partial(F.categorical_cross_entropy, label_smoothing=args.label_smoothing)
    if args.find_lr:
        finder = Trainer(model, loss, optimizer, verbose=0, clip_norm=args.clip_norm)
        args.lr = _find_lr(finder, training_data(data.train, args, classes), args, out)
        optimizer.lr = args.lr
    batches = -(-len(data.train[0]) // args.batch_size)
    iterations = args.epochs * -(-batches // args.accumulate)  # optimizer steps: one per --accumulate batches
    schedule = build_schedule(args.schedule, optimizer, args.lr, iterations, args.warmup)
    checkpoint = out / "checkpoint.safetensors"
    callbacks = [ModelCheckpoint(checkpoint), TerminateOnNaN()]
    if args.patience:
        callbacks.append(EarlyStopping("val_loss", patience=args.patience, restore_best=True))
    if args.profile:
        from lamina.train.profiling import ProfileSteps

        callbacks.append(ProfileSteps(out / "profile.json", first=2, count=args.profile, verbose=bool(args.verbose)))
    if averaging is not None:
        callbacks.append(averaging)  # last: its weights win over EarlyStopping's best ones
    trainer = Trainer(model, loss, optimizer, metrics=("accuracy",), callbacks=callbacks, schedule=schedule,
                      verbose=args.verbose, clip_norm=args.clip_norm, accumulate=args.accumulate)
    history = trainer.fit(training_data(data.train, args, classes), val=data.val, epochs=args.epochs,
                          batch_size=args.batch_size, seed=args.seed, resume_from=args.resume,
                          num_workers=args.workers, worker_mode=worker_mode(args))
    if args.verbose:
        for epoch, (loss, acc, vloss, vacc) in enumerate(zip(history["loss"], history["accuracy"],
                                                             history["val_loss"], history["val_accuracy"]), 1):
            print(f"epoch {epoch:3d}  cost {loss:.4f}  accuracy {acc:.4f}  "
                  f"val cost {vloss:.4f}  val accuracy {vacc:.4f}")
    if averaging is not None:
        report_averaging(averaging, model)
    result = trainer.evaluate(data.test)
    elapsed = time.perf_counter() - started
    info = {**data.info, "model": args.model, "epochs": args.epochs, "optimizer": args.optimizer, "lr": args.lr,
            "mixup": args.mixup, "cutmix": args.cutmix, "ema": args.ema, "swa": args.swa,
            "test_accuracy": result["accuracy"], "test_loss": result["loss"]}
    lamina.save(model, out / "model.safetensors", preprocessing=data.preprocessing, info=info)
    history.plot(out / "cost.png")
    print(f"test accuracy {result['accuracy']:.2%}  (test cost {result['loss']:.4f}, {elapsed:.1f} s)")
    print(f"saved {out / 'model.safetensors'}, {checkpoint} and {out / 'cost.png'}")
    return result


def _find_lr(trainer, train, args: argparse.Namespace, out: Path) -> float:
    """The learning-rate range test before training (``--find-lr``) on ``train`` (arrays, or
    a loader that mixes the batches as training will): its curve to ``lr_finder.png`` in
    ``out``, and the suggested learning rate."""
    from lamina.train import find_learning_rate

    result = find_learning_rate(trainer, train, start=1e-6, end=10.0, iterations=100,
                                batch_size=args.batch_size, seed=args.seed)
    result.plot(out / "lr_finder.png")
    print(f"learning-rate range test: steepest fall of the cost at lr {result.suggestion:.3g} (lowest cost at "
          f"{result.min_loss_lr:.3g}); training with lr {result.suggestion:.3g}; curve in {out / 'lr_finder.png'}")
    return result.suggestion


def evaluate(args: argparse.Namespace) -> dict:
    from lamina.train import Trainer, confusion_matrix
    from lamina.train.recipes import prepare_dataset

    bundle = lamina.load_bundle(args.checkpoint)
    if "vocabulary" in bundle.info:                  # a language model from 'lamina train-text'
        from lamina.cli.text import evaluate_text

        return evaluate_text(bundle, args)
    dataset = args.dataset or bundle.info.get("dataset")
    if dataset is None:
        raise SystemExit("lamina evaluate: the checkpoint names no dataset; pass --dataset")
    data_dir = args.data_dir or bundle.info.get("data_dir")     # an image folder's is saved with the model
    data = prepare_dataset(dataset, data_dir=data_dir, download=not args.offline, seed=bundle.info.get("seed", 0))
    x, y = data.test
    if bundle.preprocessing is not None:  # the statistics saved with the model, not refitted ones
        x = bundle.preprocessing.transform(data.preprocessing.inverse_transform(x))
    from lamina import optim

    trainer = Trainer(bundle.model, "categorical_cross_entropy", optim.SGD(bundle.model.parameters(), lr=0.0),
                      metrics=("accuracy", "top5_error", "f1"), verbose=0)
    result = trainer.evaluate((x, y))
    print(f"{dataset} test: accuracy {result['accuracy']:.2%}  top-1 error {1 - result['accuracy']:.2%}  "
          f"top-5 error {result['top5_error']:.2%}  macro F1 {result['f1']:.4f}  cost {result['loss']:.4f}")
    print("confusion matrix (rows: true class, columns: predicted):")
    print(confusion_matrix(y, trainer.predict(x), num_classes=len(data.info["class_names"])))
    return result


def predict(args: argparse.Namespace) -> list[dict]:
    from lamina.train.recipes import image_to_input

    bundle = lamina.load_bundle(args.checkpoint)
    names = bundle.info.get("class_names")
    results = []
    with lamina.no_grad():
        for path in args.images:
            x = image_to_input(path, bundle.info, bundle.preprocessing)
            probs = bundle.model(lamina.tensor(x)).numpy()[0]
            best = int(probs.argmax())
            label = names[best] if names else str(best)
            results.append({"image": str(path), "class": best, "label": label, "probability": float(probs[best])})
            print(f"{path}: {label} (class {best}, p = {probs[best]:.3f})")
    return results


def summary(args: argparse.Namespace):
    """Print the layer table of lenet5 or any zoo model (``lamina.models.<name>``), built with
    shape-only weights at its native input size unless --input-shape is given."""
    from lamina.analysis import summary as table
    from lamina.analysis.compare import build_for_summary

    try:
        shape = tuple(int(n) for n in args.input_shape.split(",")) if args.input_shape else None
    except ValueError:
        raise SystemExit("lamina summary: --input-shape must be sizes like 224,224,3, "
                         f"got {args.input_shape!r}") from None
    try:
        model, shape = build_for_summary(args.model, shape, args.num_classes)
        result = table(model, shape, batch_size=args.batch_size, optimizer=args.optimizer)
    except (ValueError, lamina.ShapeError) as exc:
        raise SystemExit(f"lamina summary: {exc}") from None
    print(result.to_json(indent=2) if args.json else result)
    return result


def add_commands(sub) -> None:
    """The image commands' parsers, added to the subparsers ``sub``."""
    t = sub.add_parser("train", help="train a model and save it with its cost curves",
                       description="Train a model on a dataset; writes model.safetensors, checkpoint.safetensors "
                                   "and cost.png to --out. With no options: LeNet-5 on the embedded digits.")
    t.add_argument("--model", choices=MODELS, default="lenet5", help="architecture (default lenet5)")
    t.add_argument("--dataset", choices=("digits", "mnist", "fashion_mnist", "cifar10", "folder"), default="digits",
                   help="dataset (default digits, embedded in scikit-learn); folder: the images under --data-dir, "
                        "one subfolder per class, read as 32x32 RGB and split 72/8/20%% into train/val/test")
    t.add_argument("--epochs", type=int, default=30, help="passes over the training data (default 30)")
    t.add_argument("--batch-size", type=int, default=32, help="mini-batch size (default 32)")
    t.add_argument("--optimizer", choices=OPTIMIZERS, default="adam", help="optimizer (default adam)")
    t.add_argument("--lr", type=float, default=2e-3, help="learning rate alpha (default 0.002)")
    t.add_argument("--find-lr", action="store_true",
                   help="first run a learning-rate range test (100 mini-batches, lr from 1e-6 up to 10), save its "
                        "curve as lr_finder.png and train with the lr where the cost fell fastest (replaces --lr)")
    t.add_argument("--weight-decay", type=float, default=0.0, help="L2 weight decay (default 0; decoupled for adamw)")
    t.add_argument("--profile", type=positive_int, default=None, metavar="STEPS",
                   help="time every op's forward and backward over STEPS training steps (from the second), print "
                        "the table and write profile.json, a trace for ui.perfetto.dev")
    t.add_argument("--sam", type=positive_number, default=None, metavar="RHO",
                   help="sharpness-aware minimization around the optimizer: each update uses the gradient at the "
                        "weights moved RHO along the normalised gradient (two passes per update; typical RHO 0.05)")
    t.add_argument("--schedule", choices=SCHEDULES, default="cosine",
                   help="learning-rate schedule over the run from --lr (onecycle: up to --lr and down; default cosine)")
    t.add_argument("--warmup", type=int, default=0, metavar="ITERATIONS",
                   help="linear warm-up from 0 to --lr over this many iterations before the schedule (default 0)")
    t.add_argument("--label-smoothing", type=float, default=0.0, metavar="EPS",
                   help="train on (1 - EPS) one-hot + EPS / classes targets (default 0)")
    t.add_argument("--clip-norm", type=float, default=None, metavar="N",
                   help="rescale the gradients to an L2 norm of at most N before each update (default: off)")
    t.add_argument("--accumulate", type=positive_int, default=1, metavar="K",
                   help="gradient accumulation: one update per K mini-batches, on their summed gradients, as "
                        "with a K times larger batch; schedules and --warmup count these updates (default 1)")
    t.add_argument("--augment", action="store_true",
                   help="augment the training images: random shifts, plus mirroring (cifar10, fashion_mnist, "
                        "folder) or small rotations (digits, mnist)")
    add_mixing_and_averaging(t)
    add_workers(t)
    t.add_argument("--activation", default="tanh", help="LeNet-5 activation (default tanh)")
    t.add_argument("--pool", choices=("avg", "max"), default="avg", help="LeNet-5 pooling (default avg)")
    t.add_argument("--patience", type=int, default=0, help="early-stopping patience in epochs (0: off)")
    t.add_argument("--data-dir", default=None,
                   help="where the dataset files are (searched first); with --dataset folder, the image folder")
    t.add_argument("--offline", action="store_true", help="never download datasets")
    t.add_argument("--limit", type=int, default=None, help="use only this many training samples")
    t.add_argument("--out", default=None, help="output directory (default runs/<timestamp>)")
    t.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    t.add_argument("--resume", default=None, metavar="CHECKPOINT", help="continue from a training checkpoint")
    t.add_argument("--verbose", type=int, default=1, help="0: quiet; 1: progress and per-epoch lines")

    e = sub.add_parser("evaluate", help="evaluate a saved model on a dataset's test split")
    e.add_argument("checkpoint", help="model.safetensors or checkpoint.safetensors")
    e.add_argument("--dataset", default=None, help="dataset (default: the one the model was trained on)")
    e.add_argument("--data-dir", default=None)
    e.add_argument("--offline", action="store_true")

    p = sub.add_parser("predict", help="classify image files (PNG, JPEG) with a saved model")
    p.add_argument("checkpoint", help="model.safetensors written by 'lamina train'")
    p.add_argument("images", nargs="+", help="image files")

    s = sub.add_parser("summary", help="print a model's layers, shapes, parameters, MACs and memory",
                       description="Print the layer table of lenet5 or a zoo model (alexnet, zfnet, vgg11..vgg19, "
                                   "googlenet, inception_v3, resnet18..resnet152, resnet_cifar20/32/56, "
                                   "mobilenet, ...): output volumes, parameters, MACs, activation memory and a "
                                   "training-memory estimate, by shape inference (no weights allocated).")
    s.add_argument("--model", default="lenet5", help="a builder of lamina.models (default lenet5)")
    s.add_argument("--input-shape", default=None, help="H,W,C (default: the model's native input size)")
    s.add_argument("--num-classes", type=int, default=None, help="output classes (default: the builder's)")
    s.add_argument("--batch-size", type=int, default=1, help="batch size of the memory estimate (default 1)")
    s.add_argument("--optimizer", default="adam", choices=OPTIMIZERS,
                   help="optimizer of the memory estimate (default adam: 2 values per parameter)")
    s.add_argument("--json", action="store_true", help="print the table as JSON")

    lr = sub.add_parser("logreg", help="logistic regression on breast cancer with the raw engine")
    lr.add_argument("--iterations", type=int, default=400, help="gradient-descent steps (default 400)")
    lr.add_argument("--lr", type=float, default=0.5, help="learning rate alpha (default 0.5)")
    lr.add_argument("--seed", type=int, default=0, help="random seed for the split (default 0)")
