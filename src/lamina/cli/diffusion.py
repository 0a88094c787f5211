"""The diffusion commands: ``train-diffusion`` (a denoising diffusion model on digits, two
moons, Fashion-MNIST or an image folder) and ``sample-diffusion`` (draw from a saved one).

Images are scaled to [-1, 1] and denoised by a :class:`lamina.models.DenoisingUNet`; the
two moons are standardised points denoised by a :class:`lamina.models.DenoisingMLP`. A run
writes ``model.safetensors`` (its ``info`` says how to turn samples back into data),
``checkpoint.safetensors`` (rewritten after every epoch; ``--resume`` continues from it),
``cost.png`` (the training cost per mini-batch and per epoch) and ``samples.png`` (a grid
of images, or the drawn points over the data). ``sample-diffusion`` is a command of its
own rather than a mode of ``lamina sample``: none of the language model's options
(prompt, temperature, top-k, beam) mean anything here, and the samplers' own (steps,
DDPM or DDIM, eta, guidance) mean nothing there.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

import lamina
from lamina.cli.common import ChoicesFrom, _argument_type, positive_int, positive_number, unit_interval
from lamina.errors import ShapeError

DATASETS = ("digits", "moons", "fashion-mnist", "folder")
MOONS = 2000                         # points of the two-moons data set
DEFAULT_EPOCHS = {"digits": 15, "moons": 60, "fashion-mnist": 3, "folder": 30}
TRAINING_SAMPLES = 64                # samples.png of an unconditional run
SAMPLES_PER_CLASS = 8                # ... and of a conditional run, per class
MOON_NAMES = ["upper", "lower"]      # scikit-learn's labels 0 and 1
MOONS_CLIP = 3.0                     # the standardised points' predictions x_0^ are clipped to [-3, 3]

nonnegative_number = _argument_type(float, lambda v: 0 <= v < np.inf, "a number >= 0")


def _dataset_name(text: str) -> str:
    return text.replace("_", "-")    # fashion_mnist, as 'lamina train' spells it, is fashion-mnist


def _load_data(args: argparse.Namespace):
    """(x, labels, info, preprocessing): the training data as floats, images scaled to
    [-1, 1] (x = 2 p - 1, p the pixel in [0, 1]), points standardised."""
    from lamina import data as D

    if args.dataset == "moons":
        points, labels = _moons(args.seed)
        standardizer = D.Standardizer(per="feature").fit(points)
        x = standardizer.transform(points).astype(np.float32)
        return x, labels, {"class_names": MOON_NAMES, "clip_x0": [-MOONS_CLIP, MOONS_CLIP]}, standardizer
    info = {}
    if args.dataset == "digits":
        images, labels = D.load_digits(size=8)
        info["class_names"] = [str(i) for i in range(10)]
    elif args.dataset == "fashion-mnist":
        (images, labels), _ = D.load_fashion_mnist(data_dir=args.data_dir, download=not args.offline)
        info["class_names"] = list(D.FASHION_MNIST_CLASSES)
    else:
        images, labels, info["class_names"] = _read_folder(args.data_dir)
        info["data_dir"] = str(Path(args.data_dir).resolve())
    x = images.astype(np.float32) * np.float32(2 / 255) - np.float32(1)
    return x, np.asarray(labels, dtype=np.int64), {**info, "pixel_range": [-1, 1], "clip_x0": [-1, 1]}, None


def _moons(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's two interleaving half circles: points (float32) and which moon each is on."""
    from sklearn.datasets import make_moons

    points, labels = make_moons(n_samples=MOONS, noise=0.05, random_state=seed)
    return points.astype(np.float32), labels.astype(np.int64)


def _read_folder(root) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """The images of the class folders under ``root``, as RGB 32x32 (uint8 NHWC), as
    ``lamina train --dataset folder`` reads them."""
    from lamina import data as D
    from lamina.train.recipes import FOLDER_IMAGE_SIZE

    if root is None:
        raise FileNotFoundError("--dataset folder needs --data-dir, the folder holding one subfolder of images "
                                "per class")
    folder = D.ImageFolder(root, transform=D.transforms.Resize(FOLDER_IMAGE_SIZE))
    batches = list(D.DataLoader(folder, batch_size=64, shuffle=False))
    return (np.concatenate([xb for xb, _ in batches]), np.concatenate([yb for _, yb in batches]),
            list(folder.classes))


def _check_options(args: argparse.Namespace) -> None:
    """Refuse the options that do not fit the dataset, before anything is read or written."""
    who = "lamina train-diffusion"
    if args.dataset == "moons" and args.base_filters is not None:
        raise SystemExit(f"{who}: --base-filters sets the U-Net of the image datasets; the moons' MLP takes "
                         "--hidden")
    if args.dataset != "moons" and args.hidden is not None:
        raise SystemExit(f"{who}: --hidden sets the MLP of --dataset moons; the U-Net of --dataset "
                         f"{args.dataset} takes --base-filters")
    if args.data_dir is not None and args.dataset in ("digits", "moons"):
        raise SystemExit(f"{who}: --data-dir names where fashion-mnist or an image folder is; --dataset "
                         f"{args.dataset} is built in")


def _build_model(args: argparse.Namespace, num_classes: int | None):
    from lamina.models import DenoisingMLP, DenoisingUNet, DiffusionModel

    if args.dataset == "moons":
        width = args.hidden or 128
        net = DenoisingMLP(hidden=(width, width, width), num_classes=num_classes)
    else:
        base = args.base_filters or 16
        net = DenoisingUNet(base_filters=base, multipliers=(1, 2), groups=min(8, base), num_classes=num_classes)
    try:
        return DiffusionModel(net, schedule=args.schedule, num_timesteps=args.timesteps, prediction=args.prediction)
    except ValueError as exc:
        raise SystemExit(f"lamina train-diffusion: --schedule {args.schedule} with --timesteps {args.timesteps}: "
                         f"{exc}") from None


def train_diffusion(args: argparse.Namespace) -> dict:
    """Train a diffusion model on ``args.dataset``; save it, its cost curves and its samples.
    Returns the per-epoch ``loss``, the ``samples`` drawn (in data units) and the ``out`` folder."""
    from lamina.train import LambdaCallback
    from lamina.train import train_diffusion as fit
    from lamina.train.history import History

    _check_options(args)
    if args.resume is not None and not Path(args.resume).is_file():
        raise SystemExit(f"lamina train-diffusion: --resume {args.resume}: no such checkpoint file")
    epochs = args.epochs or DEFAULT_EPOCHS[args.dataset]
    lamina.manual_seed(args.seed)
    started = time.perf_counter()
    x, labels, info, preprocessing = _load_data(args)
    if args.limit is not None:
        x, labels = x[:args.limit], labels[:args.limit]
    classes = len(info["class_names"])
    model = _build_model(args, classes if args.conditional else None)
    out = Path(args.out or Path("runs") / time.strftime("diffusion-%Y%m%d-%H%M%S"))
    out.mkdir(parents=True, exist_ok=True)
    print(f"{args.dataset}: {len(x)} training samples of shape {x.shape[1:]}; {args.schedule} schedule, "
          f"T = {args.timesteps}, predicting {args.prediction}"
          f"{f', conditioned on {classes} classes' if args.conditional else ''}")

    history = History()

    def epoch_ended(epoch: int, logs: dict) -> None:
        history.record_epoch(epoch + 1, logs)
        if args.verbose:
            print(f"epoch {epoch + 1:3d}  cost {logs['loss']:.4f}  ({time.perf_counter() - started:.1f} s)")

    callback = LambdaCallback(on_batch_end=lambda _, logs: history.record_iteration({"loss": logs["loss"]}),
                              on_epoch_end=epoch_ended)
    checkpoint = out / "checkpoint.safetensors"
    try:
        losses = fit(model, x, labels=labels if args.conditional else None, epochs=epochs,
                     batch_size=args.batch_size, lr=args.lr, ema=args.ema or None, seed=args.seed,
                     callbacks=[callback], checkpoint=checkpoint, resume_from=args.resume)["loss"]
    except (ValueError, ShapeError) as exc:
        if args.resume is None:
            raise
        raise SystemExit(f"lamina train-diffusion: cannot resume from {args.resume} with these options: {exc}"
                         ) from None
    if args.ema:
        print(f"EMA: the exponential moving average of the weights (decay {args.ema}) put in place of the "
              "trained weights")
    info = {**info, "kind": "diffusion", "dataset": args.dataset, "conditional": args.conditional,
            "epochs": epochs, "batch_size": args.batch_size, "lr": args.lr, "ema": args.ema, "seed": args.seed,
            "final_loss": losses[-1]}
    lamina.save(model, out / "model.safetensors", preprocessing=preprocessing, info=info)
    history.plot(out / "cost.png")
    count = classes * SAMPLES_PER_CLASS if args.conditional else TRAINING_SAMPLES
    if args.dataset == "moons":
        count = MOONS // 2
    samples = draw(model, info, preprocessing, count=count, seed=args.seed)
    write_samples(samples, info, out / "samples.png", title=f"{args.dataset}: {count} samples (DDPM, "
                  f"{model.num_timesteps} steps)", columns=classes if args.conditional else None)
    print(f"final cost {losses[-1]:.4f} (first epoch {losses[0]:.4f}; {time.perf_counter() - started:.1f} s)")
    print(f"saved {out / 'model.safetensors'}, {checkpoint}, {out / 'cost.png'} and {out / 'samples.png'}")
    return {"loss": losses, "samples": samples, "out": out}


def sampling_labels(model, info: dict, count: int, label) -> np.ndarray | None:
    """The class of each sample: none for an unconditional model, ``label`` (a class number
    or name) for all, else the classes in turn (sample k gets class k mod classes)."""
    classes = model.num_classes
    if classes is None:
        return None
    if label is None:
        return np.arange(count) % classes
    names = info.get("class_names") or []
    if label in names:
        return np.full(count, names.index(label))
    try:
        number = int(label)
    except ValueError:
        number = -1
    if not 0 <= number < classes:
        known = f" or one of {names}" if names else ""
        raise SystemExit(f"lamina sample-diffusion: --label must be a class number in [0, {classes}){known}, "
                         f"got {label!r}")
    return np.full(count, number)


def draw(model, info: dict, preprocessing, count: int, seed: int, steps: int | None = None, method: str = "ddpm",
         eta: float = 0.0, guidance: float | None = None, label=None) -> np.ndarray:
    """``count`` samples of a diffusion model in data units (images with pixels in [0, 1],
    points in the data's coordinates), lamina's generator seeded with ``seed`` first. The
    predictions x_0^ are clipped to the run's ``clip_x0`` range (the pixels' [-1, 1]): with few
    timesteps, or early in training, an unclipped x_0^ = (x_t - sqrt(1 - abar) eps^) / sqrt(abar)
    at the noisiest step can be far off."""
    labels = sampling_labels(model, info, count, label)
    clip = info.get("clip_x0")
    lamina.manual_seed(seed)
    samples = model.sample(count, steps=steps, method=method, eta=eta, labels=labels,
                           guidance_scale=1.0 if guidance is None else guidance,
                           clip_x0=None if clip is None else tuple(clip))
    if "pixel_range" in info:
        low, high = info["pixel_range"]
        return np.clip((samples - low) / (high - low), 0.0, 1.0)
    return preprocessing.inverse_transform(samples) if preprocessing is not None else samples


def write_samples(samples: np.ndarray, info: dict, path: Path, title: str, columns: int | None = None) -> Path:
    """A PNG of the samples: a grid of images in ``columns`` columns (one per class when they
    are as many as the classes of a conditional model), or for the moons a scatter plot over
    the training data."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from lamina.io.atomic import save_figure

    if samples.ndim == 2:
        fig, ax = plt.subplots(figsize=(7, 4))
        if info.get("dataset") == "moons":
            data, _ = _moons(info.get("seed", 0))
            ax.scatter(data[:, 0], data[:, 1], s=4, color="0.75", label="data")
        ax.scatter(samples[:, 0], samples[:, 1], s=4, color="C3", label="samples")
        ax.set(title=title, aspect="equal")
        ax.legend(loc="upper right")
        return save_figure(fig, path)
    columns = columns or int(np.ceil(np.sqrt(len(samples))))
    grid = _tile(samples, columns)
    inches = max(4.0, min(12.0, columns * 0.8))
    fig, ax = plt.subplots(figsize=(inches, inches * grid.shape[0] / grid.shape[1] + 0.6))
    ax.imshow(grid[..., 0] if grid.shape[-1] == 1 else grid, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.set_title(title, fontsize=9)
    ax.set_yticks([])
    names = info.get("class_names") if info.get("conditional") else None
    if names and columns == len(names):
        width = samples.shape[2] + 1
        ax.set_xticks(np.arange(columns) * width + width / 2 - 1, [str(n)[:8] for n in names], fontsize=7,
                      rotation=45 if max(len(str(n)) for n in names) > 3 else 0)
    else:
        ax.set_xticks([])
    fig.tight_layout()
    return save_figure(fig, path)


def _tile(images: np.ndarray, columns: int) -> np.ndarray:
    """(n, h, w, c) images in rows of ``columns``, a line of grey between them."""
    n, h, w, c = images.shape
    rows = -(-n // columns)
    grid = np.full((rows * (h + 1) - 1, columns * (w + 1) - 1, c), 0.4, dtype=np.float32)
    for k, image in enumerate(images):
        r, q = divmod(k, columns)
        grid[r * (h + 1):r * (h + 1) + h, q * (w + 1):q * (w + 1) + w] = image
    return grid


def sample_diffusion(args: argparse.Namespace) -> np.ndarray:
    """Draw from a model saved by ``lamina train-diffusion``; write the grid (or scatter plot)
    to ``--out``; returns the samples in data units."""
    from lamina.models import DiffusionModel

    who = "lamina sample-diffusion"
    bundle = lamina.load_bundle(args.checkpoint)
    model, info = bundle.model, bundle.info
    if not isinstance(model, DiffusionModel):
        raise SystemExit(f"{who}: {args.checkpoint} holds a {type(model).__name__}, not a diffusion model "
                         "('lamina train-diffusion' writes one)")
    if model.num_classes is None:
        for option, value in (("--guidance", args.guidance), ("--label", args.label)):
            if value is not None:
                raise SystemExit(f"{who}: {option} needs a model trained with --conditional; {args.checkpoint} "
                                 "is unconditional")
    if args.method == "ddpm" and args.eta != 0:
        raise SystemExit(f"{who}: --eta sets the noise of DDIM steps; add --method ddim (DDPM's steps always add "
                         "the posterior's noise)")
    if args.steps is not None and args.steps > model.num_timesteps:
        raise SystemExit(f"{who}: --steps {args.steps} exceeds the model's {model.num_timesteps} timesteps")
    samples = draw(model, info, bundle.preprocessing, count=args.count, seed=args.seed, steps=args.steps,
                   method=args.method, eta=args.eta, guidance=args.guidance, label=args.label)
    steps = args.steps or model.num_timesteps
    what = f"{args.method.upper()}, {steps} steps" + (f", eta {args.eta}" if args.eta else "") + (
        f", guidance {args.guidance}" if args.guidance is not None else "")
    by_class = model.num_classes is not None and args.label is None and args.count >= model.num_classes
    columns = model.num_classes if by_class else None
    if args.label is not None:
        what += f", class {args.label}"
    out = Path(args.out)
    write_samples(samples, info, out, title=f"{info.get('dataset', 'diffusion')}: {args.count} samples ({what})",
                  columns=columns)
    print(f"wrote {args.count} samples ({what}) to {out}")
    return samples


def add_commands(sub) -> None:
    """The diffusion commands' parsers, added to the subparsers ``sub``."""
    # the model's own lists, imported (with the zoo) only when a diffusion command runs or shows
    # its help (a metavar keeps argparse from reading them while the parser is built)
    PREDICTIONS = ChoicesFrom("lamina.models.diffusion", "PREDICTIONS")
    SAMPLERS = ChoicesFrom("lamina.models.diffusion", "SAMPLERS")
    SCHEDULES = ChoicesFrom("lamina.models.diffusion", "SCHEDULES")

    t = sub.add_parser("train-diffusion", help="train a denoising diffusion model (digits, moons, Fashion-MNIST)",
                       description="Train a denoising diffusion model (DDPM): a U-Net on images scaled to [-1, 1], "
                                   "or an MLP on the two moons; writes model.safetensors, checkpoint.safetensors, "
                                   "cost.png and samples.png (a grid of samples, or for the moons the samples over "
                                   "the data) to --out.")
    t.add_argument("--dataset", type=_dataset_name, choices=DATASETS, default="digits",
                   help="digits: scikit-learn's 8x8 digits (default; under a minute); moons: 2,000 2-D points; "
                        "fashion-mnist: 28x28 clothes (--data-dir); folder: the images under --data-dir, one "
                        "subfolder per class, as 32x32 RGB")
    t.add_argument("--epochs", type=positive_int, default=None,
                   help="passes over the data (default: digits 15, moons 60, fashion-mnist 3, folder 30)")
    t.add_argument("--batch-size", type=positive_int, default=64, help="mini-batch size (default 64)")
    t.add_argument("--lr", type=positive_number, default=2e-3, help="Adam's learning rate (default 0.002)")
    t.add_argument("--timesteps", type=positive_int, default=200,
                   help="diffusion steps T (default 200; the linear schedule needs more than 20)")
    t.add_argument("--schedule", choices=SCHEDULES, default="cosine", metavar="NAME",
                   help="noise schedule: %(choices)s (default cosine)")
    t.add_argument("--prediction", choices=PREDICTIONS, default="eps", metavar="TARGET",
                   help="what the net predicts (%(choices)s): the noise eps, the clean x0, or v (default eps)")
    t.add_argument("--ema", type=unit_interval, default=0.99, metavar="DECAY",
                   help="keep v = DECAY v + (1 - DECAY) theta after every step and save v (default 0.99; 0: off)")
    t.add_argument("--base-filters", type=positive_int, default=None,
                   help="the U-Net's filters at full resolution, twice as many at half (default 16)")
    t.add_argument("--hidden", type=positive_int, default=None,
                   help="units of each of the moons MLP's three hidden layers (default 128)")
    t.add_argument("--conditional", action="store_true",
                   help="condition on the dataset's labels, dropped 10%% of the time, for classifier-free guidance")
    t.add_argument("--limit", type=positive_int, default=None, help="use only this many training samples")
    t.add_argument("--data-dir", default=None,
                   help="where Fashion-MNIST is (searched first); with --dataset folder, the image folder")
    t.add_argument("--offline", action="store_true", help="never download datasets")
    t.add_argument("--out", default=None, help="output directory (default runs/diffusion-<timestamp>)")
    t.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    t.add_argument("--resume", default=None, metavar="CHECKPOINT",
                   help="continue from a checkpoint.safetensors of an earlier run with the same options; --epochs "
                        "counts its epochs too")
    t.add_argument("--verbose", type=int, default=1, help="0: quiet; 1: per-epoch lines")

    s = sub.add_parser("sample-diffusion", help="draw samples from a model saved by 'lamina train-diffusion'",
                       description="Draw samples from a diffusion model saved by 'lamina train-diffusion' and "
                                   "write them as a grid of images (or a scatter plot of points) to --out.")
    s.add_argument("checkpoint", help="model.safetensors written by 'lamina train-diffusion'")
    s.add_argument("--count", type=positive_int, default=64, help="how many samples (default 64)")
    s.add_argument("--steps", type=positive_int, default=None,
                   help="timesteps to visit, evenly spaced (default: all T of the model)")
    s.add_argument("--method", choices=SAMPLERS, default="ddpm", metavar="SAMPLER",
                   help="%(choices)s; ddpm: ancestral steps; ddim: deterministic with --eta 0 (default ddpm)")
    s.add_argument("--eta", type=nonnegative_number, default=0.0,
                   help="DDIM's noise scale: 0 deterministic, 1 as DDPM (default 0)")
    s.add_argument("--guidance", type=positive_number, default=None, metavar="W",
                   help="classifier-free guidance of a --conditional model: out = uncond + W (cond - uncond) "
                        "(default: 1, plain conditional)")
    s.add_argument("--label", default=None,
                   help="the class of every sample, a number or a class name (default: the classes in turn, "
                        "one column each)")
    s.add_argument("--out", default="samples.png", help="the PNG to write (default samples.png)")
    s.add_argument("--seed", type=int, default=0, help="random seed (default 0)")

