"""Keras's models: ``Sequential``, ``Model`` (functional and subclassed), ``load_model``.

All are lamina Modules with Keras's training methods (:class:`~lamina.keras.training.KerasTraining`):

* :class:`Sequential` is lamina's :class:`~lamina.nn.Sequential`; a ``keras.Input(shape)``
  among its layers (Keras 3's way) or ``input_shape=`` on its first layer (Keras 2's) builds
  it at once, so ``summary()`` works before any data is seen.
* ``Model(inputs, outputs)`` gives a :class:`Functional`, lamina's functional
  :class:`~lamina.nn.Model`; a subclass of :class:`Model` defining ``call`` is a subclassed
  model, its layers the attributes set in ``__init__``. ``call`` gets ``training=`` when it
  takes that argument (True in ``fit``, False in ``evaluate`` and ``predict``).

``save(path)`` writes :func:`lamina.save`'s file (architecture as JSON, weights as safetensors,
whatever the extension: ``"model.keras"`` works) with the compile settings given as names
(losses and metrics per output as lists or dicts, ``weighted_metrics``, ``loss_weights``);
:func:`load_model` rebuilds the model and compiles it again from them. A subclassed model
has no architecture to write unless it is registered with ``get_config``
(:func:`lamina.nn.register_layer`): save its weights with ``save_weights`` instead.
"""

from __future__ import annotations

import inspect
import os

import lamina
from lamina import nn
from lamina.keras.summary import print_summary
from lamina.keras.training import KerasTraining
from lamina.nn.functional_model import is_symbolic
from lamina.nn.layer import register_layer
from lamina.saving import load_bundle

__all__ = ["Functional", "Model", "Sequential", "load_model"]


class _Saving:
    """``summary`` and ``save`` of the Keras models."""

    def summary(self, line_length: int | None = None, positions=None, print_fn=None, expand_nested: bool = False,
                show_trainable: bool = False) -> None:
        """Print Keras's table: each layer's name and type, output shape and parameter
        count (all weights, batch norm's moving statistics included), then the totals."""
        print_summary(self, print_fn=print_fn)

    def save(self, filepath: str | os.PathLike, overwrite: bool = True) -> None:
        """Write the model (architecture, weights, compile settings) atomically."""
        if not overwrite and os.path.exists(filepath):
            raise FileExistsError(f"{type(self).__name__}.save: {filepath} exists and overwrite=False")
        lamina.save(self, filepath, info={"keras_compile": getattr(self, "_compile_config", None)})


@register_layer(name="KerasSequential")
class Sequential(KerasTraining, _Saving, nn.Sequential):
    """A stack of layers: ``Sequential([keras.Input((28, 28, 1)), layers.Conv2D(32, 3), ...])``."""

    def __init__(self, *layers, name: str | None = None, trainable: bool = True, **kwargs):
        if "layers" in kwargs:
            layers = (kwargs.pop("layers"),)
        if kwargs:
            raise TypeError(f"Sequential: unexpected argument(s) {sorted(kwargs)}")
        if len(layers) == 1 and isinstance(layers[0], (list, tuple)):
            layers = tuple(layers[0])
        nn.Sequential.__init__(self, name=name)
        self._keras_input_shape = None
        for layer in layers:
            self.add(layer)
        if not trainable:
            if not self.built:
                raise ValueError("Sequential: trainable=False needs the weights: give a keras.Input first")
            for p in self.parameters():
                p.trainable = False

    def add(self, layer) -> None:
        """Append ``layer``; a ``keras.Input`` (first) sets the input shape and builds the model."""
        if is_symbolic(layer):
            if len(self):
                raise ValueError("Sequential.add: an Input must come before the layers")
            self._keras_input_shape = tuple(layer.shape)
            return
        self.append(layer)
        if len(self) == 1 and self._keras_input_shape is None:
            self._keras_input_shape = getattr(layer, "keras_input_shape", None)
        if self._keras_input_shape is not None:
            self.build(self._keras_input_shape)

    def build(self, input_shape=None) -> None:
        shape = self._keras_input_shape if input_shape is None else tuple(input_shape)
        if shape is None:
            raise ValueError("Sequential.build: the input shape is unknown; give it, e.g. build((None, 28, 28, 1))")
        nn.Sequential.build(self, shape)

    def pop(self):
        """Remove and return the last layer."""
        if not len(self):
            raise IndexError("Sequential.pop: the model has no layers")
        key = list(self._modules)[-1]
        return self._modules.pop(key)


class Model(KerasTraining, _Saving, nn.Module):
    """Keras's ``Model``: ``Model(inputs, outputs)`` is a :class:`Functional` model; a
    subclass defining ``call(self, inputs, training=False)`` is a subclassed model."""

    def __new__(cls, *args, **kwargs):
        if cls is Model and (args or "inputs" in kwargs or "outputs" in kwargs):
            return super().__new__(Functional)
        return super().__new__(cls)

    def __init__(self, *args, name: str | None = None, trainable: bool = True, **kwargs):
        if args or kwargs:
            raise TypeError(f"{type(self).__name__}: a subclassed Model takes only name= and trainable=; "
                            "pass inputs and outputs to Model(...) itself for a functional model")
        nn.Module.__init__(self, name=name)

    def forward(self, *inputs, **kwargs):
        if "training" in inspect.signature(self.call).parameters and "training" not in kwargs:
            kwargs["training"] = self.training
        return self.call(*inputs, **kwargs)

    def call(self, inputs, training: bool = False):
        raise NotImplementedError(f"{type(self).__name__}: a subclassed Model must define call(self, inputs)")

    @property
    def layers(self) -> list[nn.Module]:
        return list(self._modules.values())


@register_layer(name="KerasFunctional")
class Functional(Model, nn.Model):
    """A model built from ``keras.Input`` placeholders and layer calls: lamina's functional Model."""

    def __init__(self, inputs, outputs, name: str | None = None, trainable: bool = True):
        nn.Model.__init__(self, inputs, outputs, name=name)
        if not trainable:
            for p in self.parameters():
                p.trainable = False

    forward = nn.Model.forward
    layers = nn.Model.layers


def load_model(filepath: str | os.PathLike, custom_objects=None, compile: bool = True):  # noqa: A002 - Keras's name
    """The model written by ``model.save`` (or :func:`lamina.save`), compiled again from its
    saved settings when they were names and ``compile`` is True."""
    loaded = load_bundle(filepath)
    model = loaded.model
    settings = loaded.info.get("keras_compile") if loaded.info else None
    if compile and settings and settings.get("optimizer") and settings.get("loss") and hasattr(model, "compile"):
        model.compile(optimizer=settings["optimizer"], loss=settings["loss"], metrics=settings.get("metrics"),
                      weighted_metrics=settings.get("weighted_metrics"), loss_weights=settings.get("loss_weights"))
    return model
