"""Autoencoders, dense and convolutional, and the variational autoencoder (VAE).

An autoencoder is two networks trained as one. The encoder maps an input x to a code
z = e(x) of ``code_size`` values; the decoder maps the code back to a reconstruction
x_hat = d(z) of x's shape. Trained to make x_hat close to x (mean squared error, with the
input as its own target: ``Trainer(model, "mse", ...).fit((x, x))``) through a code smaller
than the input, the network must keep in z what varies most between inputs: a learned,
non-linear cousin of PCA, good for compression, denoising and features.

The VAE (Kingma and Welling, 2014) makes the code a distribution. The encoder gives the
mean mu and the log-variance log sigma^2 of a diagonal Gaussian q(z | x); a code is drawn
from it by the reparameterisation z = mu + sigma * eps, eps ~ N(0, I)
(:func:`lamina.functional.reparameterize`), and the decoder turns z into pixel logits.
Its cost (:func:`lamina.functional.vae_loss`) adds to the reconstruction error the KL
divergence of q(z | x) from the prior N(0, I), which keeps the codes of all inputs in one
smooth region around 0: decoding z ~ N(0, I) then gives new samples (:meth:`VAE.sample`).

Every model here takes ``input_shape`` (the shape of one sample, without the batch axis) or
learns it on its first call; the decoder, whose last layer must produce that shape, is made
then. ``model.input_shape`` is (None, *shape) once known.
"""

from __future__ import annotations

import math

import numpy as np

from lamina import backend
from lamina import functional as F
from lamina.autograd import Tensor, no_grad
from lamina.errors import ShapeError
from lamina.functional.losses_vae import reparameterize
from lamina.nn import Conv2D, Conv2DTranspose, Cropping2D, Dense, Flatten, Reshape, Sequential
from lamina.nn.layer import positive_int, register_layer
from lamina.nn.module import Module, as_tensor

__all__ = ["VAE", "Autoencoder", "ConvAutoencoder"]


def _positive_ints(values, what: str, allow_empty: bool = True) -> tuple[int, ...]:
    """A tuple of positive ints (layer widths, filter counts), or a ValueError naming ``what``."""
    try:
        items = tuple(values)
    except TypeError:
        raise ValueError(f"{what} must be a sequence of positive ints, got {values!r}") from None
    if not items and not allow_empty:
        raise ValueError(f"{what} must hold at least one positive int, got {values!r}")
    for item in items:
        positive_int(item, what)
    return items


def _activation_name(value, what: str) -> str | None:
    """An activation given by name (or None); layer objects are refused, as one instance would
    be shared by every layer of the model."""
    if value is not None and not isinstance(value, str):
        raise ValueError(f"{what} must be an activation name such as 'relu', or None; got {value!r}")
    return value


def _dense_layers(units: tuple[int, ...], activation) -> list[Dense]:
    return [Dense(n, activation=activation) for n in units]


class _Autoencoder(Module):
    """What the three models share: an encoder made at once, a decoder made by ``build`` from
    the sample shape, and the checks on inputs and codes. A subclass sets ``self.encoder``
    and gives :meth:`_make_decoder`."""

    sample_ndim: tuple[int, ...] | None = None      # the sample ranks accepted (None: any)

    def __init__(self, code_size: int, name: str | None = None):
        super().__init__(name=name)
        self.code_size = positive_int(code_size, f"{type(self).__name__}: code_size")
        self.input_shape: tuple | None = None

    def _make_decoder(self, sample_shape: tuple[int, ...]) -> Sequential:
        raise NotImplementedError

    def _build_heads(self, features_shape: tuple) -> None:
        """Build layers after the encoder (the VAE's mean and log-variance heads)."""

    def _sample_shape(self, input_shape) -> tuple[int, ...]:
        shape = tuple(input_shape)
        who = type(self).__name__
        expected = ("(batch, height, width, channels)" if self.sample_ndim == (3,)
                    else "(batch, ...) with a known size on every axis but the batch")
        if len(shape) < 2 or (self.sample_ndim is not None and len(shape) - 1 not in self.sample_ndim):
            raise ShapeError(f"{who}: got an input shape {shape}; expected {expected}")
        if any(not isinstance(n, (int, np.integer)) or n < 1 for n in shape[1:]):
            raise ShapeError(f"{who}: input shape {shape} must have a known positive size on every axis but "
                             f"the batch; expected {expected}")
        return tuple(int(n) for n in shape[1:])

    def build(self, input_shape) -> None:
        sample = self._sample_shape(input_shape)
        self.input_shape = (None, *sample)
        self.decoder = self._make_decoder(sample)
        self.encoder.build((None, *sample))
        self._build_heads(self.encoder.compute_output_shape((None, *sample)))
        self.decoder.build((None, self.code_size))
        self.built = True
        self.build_input_shape = (None, *sample)

    def _build_now(self, sample_shape) -> None:
        """Build for samples of ``sample_shape`` (the constructor's ``input_shape``)."""
        try:
            shape = (None, *sample_shape)
        except TypeError:
            raise ValueError(f"{type(self).__name__}: input_shape must be the shape of one sample (a tuple of "
                             f"ints), got {sample_shape!r}") from None
        self.build(shape)

    def _checked_input(self, x) -> Tensor:
        """``x`` as a tensor whose samples have the model's shape (building the model on the
        first input)."""
        x = as_tensor(x)
        if not self.built:
            self.build(x.shape)
        if x.ndim < 1 or tuple(x.shape[1:]) != self.input_shape[1:]:
            raise ShapeError(f"{self._label()}: got an input of shape {tuple(x.shape)}; expected "
                             f"(batch, {', '.join(map(str, self.input_shape[1:]))}), the shape it was built for")
        return x

    def _require_built(self, what: str) -> None:
        if not self.built:
            raise RuntimeError(f"{self._label()}.{what}: the decoder is made once the input shape is known; give "
                               "input_shape= to the constructor or call the model on an input first")

    def encode(self, x) -> Tensor:
        """The code z = e(x), shape (batch, code_size)."""
        return self.encoder(self._checked_input(x))

    def decode(self, z) -> Tensor:
        """The decoder's output d(z) for codes z of shape (batch, code_size), in the input's shape."""
        self._require_built("decode")
        z = as_tensor(z)
        if z.ndim != 2 or z.shape[1] != self.code_size:
            raise ShapeError(f"{self._label()}.decode: got codes of shape {tuple(z.shape)}; expected "
                             f"(batch, {self.code_size})")
        return self.decoder(z)

    def forward(self, x) -> Tensor:
        """The reconstruction x_hat = d(e(x))."""
        return self.decode(self.encode(x))

    def _shape_config(self) -> list[int] | None:
        return None if self.input_shape is None else list(self.input_shape[1:])


@register_layer
class Autoencoder(_Autoencoder):
    """A dense autoencoder. Encoder: Flatten, Dense layers of ``hidden`` units, a linear
    Dense of ``code_size`` units (the code). Decoder: Dense layers of the ``hidden`` units in
    reverse order, a Dense layer with one unit per input value and ``output_activation``
    (sigmoid, for inputs scaled to [0, 1]; None for unbounded inputs), reshaped to the input's
    shape. ``input_shape``: the shape of one sample, or None to take it from the first call.
    """

    def __init__(self, code_size: int, hidden=(128,), input_shape=None, activation="relu",
                 output_activation="sigmoid", name: str | None = None):
        super().__init__(code_size, name=name)
        self.hidden = _positive_ints(hidden, "Autoencoder: hidden")
        self.activation = _activation_name(activation, "Autoencoder: activation")
        self.output_activation = _activation_name(output_activation, "Autoencoder: output_activation")
        self.encoder = Sequential(Flatten(), *_dense_layers(self.hidden, activation), Dense(self.code_size))
        if input_shape is not None:
            self._build_now(input_shape)

    def _make_decoder(self, sample_shape):
        return Sequential(*_dense_layers(self.hidden[::-1], self.activation),
                          Dense(math.prod(sample_shape), activation=self.output_activation), Reshape(sample_shape))

    def get_config(self) -> dict:
        return {"code_size": self.code_size, "hidden": list(self.hidden), "input_shape": self._shape_config(),
                "activation": self.activation,
                "output_activation": self.output_activation, "name": self.name}

    def extra_repr(self) -> str:
        return f"code_size={self.code_size}, hidden={self.hidden}"


@register_layer
class ConvAutoencoder(_Autoencoder):
    """A convolutional autoencoder for NHWC images.

    Encoder: one Conv2D per entry of ``filters`` (stride 2, 'same' padding, so each halves
    the height and width, rounding up), Flatten, a linear Dense of ``code_size`` units.
    Decoder, the mirror image: a Dense layer reshaped to the encoder's last volume
    (h / 2^k, w / 2^k, filters[-1]), one Conv2DTranspose per entry of ``filters`` (stride 2,
    doubling the size), the last with the input's channels and ``output_activation``, then a
    crop at the bottom and right when the size was rounded up on the way down.
    """

    sample_ndim = (3,)

    def __init__(self, code_size: int, filters=(16, 32), kernel_size=3, input_shape=None, activation="relu",
                 output_activation="sigmoid", name: str | None = None):
        super().__init__(code_size, name=name)
        self.filters = _positive_ints(filters, "ConvAutoencoder: filters", allow_empty=False)
        self.kernel_size = kernel_size
        self.activation = _activation_name(activation, "ConvAutoencoder: activation")
        self.output_activation = _activation_name(output_activation, "ConvAutoencoder: output_activation")
        downsampling = [Conv2D(f, kernel_size, stride=2, padding="same", activation=activation) for f in self.filters]
        self.encoder = Sequential(*downsampling, Flatten(), Dense(self.code_size))
        if input_shape is not None:
            self._build_now(input_shape)

    def _make_decoder(self, sample_shape):
        height, width, channels = sample_shape
        scale = 2 ** len(self.filters)
        h0, w0 = math.ceil(height / scale), math.ceil(width / scale)
        layers: list[Module] = [Dense(h0 * w0 * self.filters[-1], activation=self.activation),
                                Reshape((h0, w0, self.filters[-1]))]
        layers += [Conv2DTranspose(f, self.kernel_size, stride=2, padding="same", activation=self.activation)
                   for f in self.filters[-2::-1]]
        layers.append(Conv2DTranspose(channels, self.kernel_size, stride=2, padding="same",
                                      activation=self.output_activation))
        extra_h, extra_w = h0 * scale - height, w0 * scale - width
        if extra_h or extra_w:
            layers.append(Cropping2D(((0, extra_h), (0, extra_w))))
        return Sequential(*layers)

    def get_config(self) -> dict:
        kernel = list(self.kernel_size) if isinstance(self.kernel_size, (tuple, list)) else self.kernel_size
        return {"code_size": self.code_size, "filters": list(self.filters), "kernel_size": kernel,
                "input_shape": self._shape_config(), "activation": self.activation,
                "output_activation": self.output_activation, "name": self.name}

    def extra_repr(self) -> str:
        return f"code_size={self.code_size}, filters={self.filters}"


@register_layer
class VAE(_Autoencoder):
    """A dense variational autoencoder (see the module notes).

    Encoder: Flatten and Dense layers of ``hidden`` units, then two linear heads of
    ``code_size`` units, ``to_mu`` and ``to_log_var``. Decoder: Dense layers of the
    ``hidden`` units in reverse order and a linear Dense layer with one unit per input
    value, reshaped to the input's shape: the logits of Bernoulli pixel probabilities
    (sigmoid(logits) is the reconstructed image).

    ``model(x)`` returns (reconstruction logits, mu, log_var) for the loss
    :func:`lamina.functional.vae_loss`. In training mode z = mu + sigma * eps with eps drawn
    from lamina's generator (:func:`lamina.manual_seed` fixes it); in evaluation mode z = mu,
    the likeliest code, unless ``eps`` is given.
    """

    def __init__(self, code_size: int, hidden=(128,), input_shape=None, activation="relu",
                 name: str | None = None):
        super().__init__(code_size, name=name)
        self.hidden = _positive_ints(hidden, "VAE: hidden")
        self.activation = _activation_name(activation, "VAE: activation")
        self.encoder = Sequential(Flatten(), *_dense_layers(self.hidden, activation))
        self.to_mu = Dense(self.code_size)
        self.to_log_var = Dense(self.code_size)
        if input_shape is not None:
            self._build_now(input_shape)

    def _make_decoder(self, sample_shape):
        return Sequential(*_dense_layers(self.hidden[::-1], self.activation), Dense(math.prod(sample_shape)),
                          Reshape(sample_shape))

    def _build_heads(self, features_shape) -> None:
        for head in (self.to_mu, self.to_log_var):
            if not head.built:
                head.build(features_shape)
                head.built = True

    def encode(self, x) -> tuple[Tensor, Tensor]:
        """(mu, log_var), each (batch, code_size): the parameters of q(z | x)."""
        features = self.encoder(self._checked_input(x))
        return self.to_mu(features), self.to_log_var(features)

    def forward(self, x, eps=None) -> tuple[Tensor, Tensor, Tensor]:
        """(reconstruction logits in the input's shape, mu, log_var); ``eps`` (batch,
        code_size), when given, is the noise of z = mu + exp(log_var / 2) * eps."""
        mu, log_var = self.encode(x)
        if eps is not None or self.training:
            z = reparameterize(mu, log_var, eps)
        else:
            z = mu
        return self.decode(z), mu, log_var

    def sample(self, n: int) -> np.ndarray:
        """``n`` new samples: the pixel probabilities sigmoid(d(z)) for codes z ~ N(0, I) drawn
        from lamina's generator, as a NumPy array (n, *input shape) with values in [0, 1]."""
        positive_int(n, f"{self._label()}.sample: n")
        self._require_built("sample")
        dtype = self.to_mu.weight.dtype
        z = backend.xp.asarray(backend.rng().standard_normal((n, self.code_size)), dtype=dtype)
        with no_grad():
            probabilities = F.sigmoid(self.decode(Tensor(z, dtype=dtype)))
        return np.asarray(backend.to_numpy(probabilities.data))

    def get_config(self) -> dict:
        return {"code_size": self.code_size, "hidden": list(self.hidden), "input_shape": self._shape_config(),
                "activation": self.activation, "name": self.name}

    def extra_repr(self) -> str:
        return f"code_size={self.code_size}, hidden={self.hidden}"
