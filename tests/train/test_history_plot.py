"""History.figure/plot: per-epoch curves drawn at the epochs their quantity was logged at."""

import numpy as np
import pytest

import lamina
from lamina import nn, optim
from lamina.train import History, Trainer

pytest.importorskip("matplotlib")


def drawn(axis) -> dict[str, list[float]]:
    return {line.get_label(): np.asarray(line.get_xdata(), dtype=float).tolist() for line in axis.get_lines()}


def test_validation_curves_are_drawn_at_the_validated_epochs():
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((12, 3)).astype(np.float32), rng.integers(0, 2, 12)
    lamina.manual_seed(0)
    model = nn.Sequential(nn.Dense(2), nn.Softmax())
    model.build((None, 3))
    trainer = Trainer(model, optimizer=optim.SGD(model, lr=0.1), verbose=0)
    history = trainer.fit((x, y), val=(x, y), epochs=5, batch_size=4, validation_freq=2)
    figure = history.figure()
    try:
        _, costs, metrics = figure.axes
        assert drawn(costs) == {"loss": [1, 2, 3, 4, 5], "val_loss": [2, 4]}
        assert drawn(metrics) == {"accuracy": [1, 2, 3, 4, 5], "val_accuracy": [2, 4]}
        val_line = next(line for line in metrics.get_lines() if line.get_label() == "val_accuracy")
        np.testing.assert_allclose(val_line.get_ydata(), history["val_accuracy"])
        assert val_line.get_linestyle() == "--"
    finally:
        import matplotlib.pyplot as plt

        plt.close(figure)


def test_a_history_without_metrics_has_two_panels_and_plot_writes_a_png(tmp_path):
    history = History()
    for epoch in (1, 2, 3):
        history.record_iteration({"loss": 1.0 / epoch})
        history.record_epoch(epoch, {"loss": 1.0 / epoch, "samples_per_s": 100.0,
                                     **({"val_loss": 0.5} if epoch == 3 else {})})
    figure = history.figure()
    try:
        assert len(figure.axes) == 2
        assert drawn(figure.axes[1]) == {"loss": [1, 2, 3], "val_loss": [3]}
    finally:
        import matplotlib.pyplot as plt

        plt.close(figure)
    history.plot(tmp_path / "curves.png")
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
