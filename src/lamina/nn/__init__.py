"""Modules, parameters, layers and initializers."""

from lamina.nn.module import Module
from lamina.nn.parameter import Parameter

__all__ = ["Module", "Parameter"]
