"""Keras's model API on lamina: ``compile``/``fit``/``evaluate``/``predict`` and Keras's layer names.

    from lamina import keras
    from lamina.keras import layers

    model = keras.Sequential([keras.Input((28, 28, 1)), layers.Conv2D(32, 3, activation="relu"),
                              layers.Flatten(), layers.Dense(10, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    history = model.fit(x, y, epochs=5, validation_split=0.1)

The models are lamina Modules and every method hands its work to :class:`lamina.train.Trainer`
(see :mod:`lamina.keras.training`); the layers are lamina's under Keras's names and
arguments (:mod:`lamina.keras.layers`); optimizers, losses, metrics and callbacks take Keras's
string identifiers and defaults; :mod:`lamina.keras.datasets` loads mnist, fashion_mnist, cifar10
and digits as Keras's ``load_data`` does. Masks (``Embedding(mask_zero=True)``, ``Masking``) pass
from layer to layer as in Keras (:mod:`lamina.keras.masking`) and reach the recurrent and
attention layers (:mod:`lamina.keras.recurrent`, :mod:`lamina.keras.attention`); a model of
several outputs takes one loss per output, ``loss_weights`` and metrics (and ``weighted_metrics``)
per output, logged as ``"<output>_<metric>"`` (:mod:`lamina.keras.outputs`); the metrics of a
masked sequence output count its unmasked steps only.
"""

from lamina.keras import callbacks, datasets, layers, losses, metrics, optimizers, utils
from lamina.keras import models as models
from lamina.keras.layers import Input
from lamina.keras.models import Functional, Model, Sequential, load_model
from lamina.keras.utils import to_categorical

__all__ = [
    "Functional", "Input", "Model", "Sequential", "callbacks", "datasets", "layers", "load_model", "losses",
    "metrics", "models", "optimizers", "to_categorical", "utils",
]
