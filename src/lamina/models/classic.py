"""The small classic models: logistic regression, the multilayer perceptron and LeNet-5."""

from __future__ import annotations

from lamina import nn


def lenet5(activation: str = "tanh", pool: str = "avg", num_classes: int = 10,
           input_shape: tuple[int, int, int] = (32, 32, 1)) -> nn.Sequential:
    """LeNet-5 as in the course notes' table, for (32, 32, 1) inputs.

    Conv K=6 f=5 -> (28, 28, 6); pool 2/2 -> (14, 14, 6); Conv K=16 f=5 -> (10, 10, 16);
    pool 2/2 -> (5, 5, 16); Flatten (400); Dense 120; Dense 84; Dense 10 with softmax.
    Parameters 156 + 2,416 + 48,120 + 10,164 + 850 = 61,706.
    """
    if pool not in ("avg", "max"):
        raise ValueError(f"lenet5: pool must be 'avg' or 'max', got {pool!r}")
    Pool = nn.AvgPool2D if pool == "avg" else nn.MaxPool2D
    model = nn.Sequential(
        nn.Conv2D(6, 5, activation=activation),
        Pool(2, 2),
        nn.Conv2D(16, 5, activation=activation),
        Pool(2, 2),
        nn.Flatten(),
        nn.Dense(120, activation=activation),
        nn.Dense(84, activation=activation),
        nn.Dense(num_classes),
        nn.Softmax(),
    )
    model.build((None, *input_shape))
    return model


def mlp(hidden: tuple[int, ...] = (512, 512), num_classes: int = 10, activation: str = "relu",
        input_shape: tuple[int, ...] | None = None, dropout: float = 0.0) -> nn.Sequential:
    """Flatten, then Dense layers of ``hidden`` units (optionally with dropout), then softmax."""
    layers: list = [nn.Flatten()]
    for units in hidden:
        layers.append(nn.Dense(units, activation=activation))
        if dropout:
            layers.append(nn.Dropout(dropout))
    layers += [nn.Dense(num_classes), nn.Softmax()]
    model = nn.Sequential(*layers)
    if input_shape is not None:
        model.build((None, *input_shape))
    return model


def logistic_regression(input_shape: tuple[int, ...] | None = None) -> nn.Sequential:
    """a = sigma(w^T x + b): one Dense unit with a sigmoid, for binary classification."""
    model = nn.Sequential(nn.Flatten(), nn.Dense(1, activation="sigmoid", kernel_init="zeros"))
    if input_shape is not None:
        model.build((None, *input_shape))
    return model
