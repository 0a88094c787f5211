"""Training checkpoints: everything needed to continue a run exactly where it stopped.

One safetensors file holds the model's weights, the optimizer's state arrays, and as
JSON metadata the model's architecture, the optimizer's and schedule's positions, the
epoch, iteration and optimizer steps, the random generators' states, the history and the
callbacks' states (best values, patience counters, weight averages).
Resuming from the checkpoint written after epoch k and training on gives, on the CPU with
the same seed, the same weights bit for bit as a run that was never interrupted.
"""

from __future__ import annotations

import json
import os

from lamina import backend
from lamina.distributed import DistributedDataParallel
from lamina.io import load_file, save_file
from lamina.io.state import flatten_state, unflatten_state
from lamina.saving import model_config

FORMAT = "lamina-checkpoint-1"


def save(path: str | os.PathLike, trainer, epoch: int) -> None:
    arrays = {f"model/{k}": backend.to_numpy(v) for k, v in trainer.model.state_dict().items()}
    state = {
        "epoch": epoch,
        "iteration": trainer.iteration,
        "steps": getattr(trainer, "steps", trainer.iteration),
        "optimizer": trainer.optimizer.state_dict(),
        "schedule": trainer.schedule.state_dict() if trainer.schedule is not None else None,
        "rng": backend.get_rng_state(),
        "loader": trainer.loader.state_dict() if trainer.loader is not None else None,
        "history": trainer.history.state_dict(),
        "callbacks": [{"class": type(cb).__name__, "state": cb.state_dict()} for cb in trainer.callbacks],
    }
    tree, extra = flatten_state(state, "state")
    arrays.update(extra)
    metadata = {"format": FORMAT, "state": json.dumps(tree)}
    config = _model_config(_unwrapped(trainer.model))
    if config is not None:
        metadata["config"] = json.dumps(config)
    save_file(arrays, path, metadata)


def _unwrapped(model):
    """The model a DistributedDataParallel wraps (its state dict is the wrapped model's, so the
    checkpoint loads as that model); any other model itself."""
    return model.module if isinstance(model, DistributedDataParallel) else model


def _model_config(model):
    """The architecture, or None for a model with custom layers that cannot describe themselves
    (its checkpoint still resumes training; only ``lamina.load`` needs the architecture)."""
    try:
        return model_config(model)
    except (NotImplementedError, ValueError):
        return None


def read(path: str | os.PathLike) -> tuple[dict, dict]:
    """(model state dict, training state) of a checkpoint file."""
    arrays, metadata = load_file(path)
    if metadata.get("format") != FORMAT:
        raise ValueError(f"{path}: not a lamina training checkpoint (format {metadata.get('format')!r})")
    state = unflatten_state(json.loads(metadata["state"]), arrays)
    weights = {k[len("model/"):]: v for k, v in arrays.items() if k.startswith("model/")}
    return weights, state


def restore(path: str | os.PathLike, trainer) -> tuple[int, list | None]:
    """Load a checkpoint into ``trainer``; returns the epoch to continue from and the callbacks'
    saved states (for :func:`restore_callbacks` once the callbacks have begun training)."""
    weights, state = read(path)
    trainer.model.load_state_dict(weights)
    if trainer.schedule is not None and state["schedule"] is not None:
        trainer.schedule.load_state_dict(state["schedule"])
    # after the schedule, which sets the rate of its position t: the saved rate wins, as it was
    # when saved (a callback such as ReduceLROnPlateau may have changed it since the last step)
    trainer.optimizer.load_state_dict(state["optimizer"])
    backend.set_rng_state(state["rng"])
    if trainer.loader is not None and state["loader"] is not None:
        trainer.loader.load_state_dict(state["loader"])
    trainer.history.load_state_dict(state["history"])
    trainer.iteration = state["iteration"]
    trainer.steps = int(state.get("steps", state["iteration"]))  # older checkpoints: one step per iteration
    return int(state["epoch"]), state.get("callbacks")


def restore_callbacks(saved: list | None, callbacks) -> None:
    """Give each callback the state saved for it: the saved entry at the same position, if it
    is of the same class (callbacks added or removed since then start fresh)."""
    for cb, entry in zip(callbacks, saved or []):
        if entry["class"] == type(cb).__name__ and entry["state"] is not None:
            cb.load_state_dict(entry["state"])
