"""``History``: what ``Trainer.fit`` records, per iteration and per epoch."""

from __future__ import annotations

import os
from collections import defaultdict

import numpy as np

from lamina.io.atomic import save_figure

UNPLOTTED = ("samples_per_s",)
"""Per-epoch quantities that :meth:`History.figure` leaves out (not learning curves)."""


class History:
    def __init__(self) -> None:
        self.epoch: dict[str, list[float]] = defaultdict(list)
        self.iteration: dict[str, list[float]] = defaultdict(list)
        self.epochs: list[int] = []
        self.logged_at: dict[str, list[int]] = defaultdict(list)   # the epochs each quantity was logged at

    def record_iteration(self, logs: dict[str, float]) -> None:
        for key, value in logs.items():
            self.iteration[key].append(float(value))

    def record_epoch(self, epoch: int, logs: dict[str, float]) -> None:
        self.epochs.append(epoch)
        for key, value in logs.items():
            self.epoch[key].append(float(value))
            self.logged_at[key].append(epoch)

    def __getitem__(self, key: str) -> list[float]:
        return self.epoch[key]

    def state_dict(self) -> dict:
        return {"epoch": dict(self.epoch), "iteration": dict(self.iteration), "epochs": list(self.epochs),
                "logged_at": dict(self.logged_at)}

    def load_state_dict(self, state: dict) -> None:
        self.epoch = defaultdict(list, {k: list(v) for k, v in state["epoch"].items()})
        self.iteration = defaultdict(list, {k: list(v) for k, v in state["iteration"].items()})
        self.epochs = list(state["epochs"])
        logged = state.get("logged_at") or {k: self.epochs[: len(v)] for k, v in self.epoch.items()}  # older states
        self.logged_at = defaultdict(list, {k: list(v) for k, v in logged.items()})

    def curve(self, key: str) -> tuple[np.ndarray, np.ndarray]:
        """(epochs, values) of a per-epoch quantity, the epochs as recorded (``Trainer.fit``
        counts from 1): a quantity logged at some epochs only (validation every k epochs) is
        placed at those."""
        values = np.asarray(self.epoch[key])
        logged = self.logged_at.get(key, [])
        epochs = np.asarray(logged) if len(logged) == len(values) else np.arange(1, len(values) + 1)
        return epochs, values

    def plot(self, path: str | os.PathLike) -> None:
        """Save :meth:`figure` as a PNG (atomically)."""
        save_figure(self.figure(), path)

    def figure(self):
        """The learning curves as a matplotlib figure: per-iteration training cost (with its
        moving average), per-epoch training and validation cost, and (when any are logged)
        the per-epoch metrics. Each curve is drawn at the epochs its quantity was logged at
        (see :meth:`curve`), so with ``fit(validation_freq=k)`` a ``val_`` curve has a
        point every k epochs; a training curve is solid, its validation twin dashed in the
        same colour."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        metrics = [key for key in self.epoch if not key.endswith("loss") and key not in UNPLOTTED]
        fig, axes = plt.subplots(1, 3 if metrics else 2, figsize=(16 if metrics else 11, 4))
        left, right = axes[0], axes[1]
        losses = np.asarray(self.iteration.get("loss", []))
        if losses.size:
            left.plot(losses, color="0.75", linewidth=0.8, label="mini-batch cost")
            smooth, average = [], 0.0
            for t, value in enumerate(losses, start=1):  # EWA with bias correction, beta = 0.98
                average = 0.98 * average + 0.02 * value
                smooth.append(average / (1 - 0.98**t))
            left.plot(smooth, color="C0", label="moving average")
        left.set(xlabel="iteration", ylabel="cost J", title="training cost per iteration")
        left.legend()
        self._draw_epoch_curves(right, [key for key in self.epoch if key.endswith("loss")])
        right.set(xlabel="epoch", ylabel="cost J", title="cost per epoch")
        if metrics:
            self._draw_epoch_curves(axes[2], metrics)
            axes[2].set(xlabel="epoch", ylabel="value", title="metrics per epoch")
        fig.tight_layout()
        return fig

    def _draw_epoch_curves(self, axis, keys: list[str]) -> None:
        names = list(dict.fromkeys(key.removeprefix("val_") for key in keys))
        for key in keys:
            name = key.removeprefix("val_")
            colour = f"C{names.index(name) % 10}"
            style = "--" if key.startswith("val_") else "-"
            axis.plot(*self.curve(key), style, color=colour, marker="o", label=key)
        if keys:
            axis.legend()
