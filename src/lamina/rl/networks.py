"""Small fully connected networks for value functions and policies."""

from __future__ import annotations

from collections.abc import Sequence

import numpy

from lamina import nn
from lamina.autograd import Tensor, tensor
from lamina.backend import get_default_dtype


def mlp(n_in: int, hidden: Sequence[int], n_out: int, activation: str = "relu",
        kernel_init="he_uniform", output_init=None) -> nn.Sequential:
    """Dense layers n_in -> hidden... -> n_out with ``activation`` between them and a linear
    output, built for inputs of shape (batch, n_in); initializers as nn.Dense takes them."""
    layers = [nn.Dense(units, activation=activation, kernel_init=kernel_init) for units in hidden]
    layers.append(nn.Dense(n_out, kernel_init=output_init or kernel_init))
    net = nn.Sequential(layers)
    net.build((None, n_in))
    return net


def copy_weights(source: nn.Module, target: nn.Module) -> None:
    """Load ``source``'s parameters into ``target`` (copies)."""
    target.load_state_dict(source.state_dict())


def soft_update(source: nn.Module, target: nn.Module, tau: float) -> None:
    """Polyak averaging, in place: theta_target <- tau theta_source + (1 - tau) theta_target."""
    for p_source, p_target in zip(source.parameters(), target.parameters()):
        p_target.data *= 1.0 - tau
        p_target.data += tau * p_source.data


def obs_tensor(obs) -> Tensor:
    """Observations as a constant tensor of the default float dtype."""
    return tensor(numpy.asarray(obs, dtype=get_default_dtype()))
