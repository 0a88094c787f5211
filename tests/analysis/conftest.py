"""Shared helpers: zoo builders are looked up at run time and their tests skip until the
builder exists in lamina.models."""

import pytest


def zoo_builder(name: str):
    """``lamina.models.<name>`` (resnet_cifar<depth> included), or skip the test when the
    zoo does not have it (yet)."""
    from lamina.analysis.compare import zoo_builder as lookup

    try:
        return lookup(name)
    except (ImportError, ValueError) as exc:
        pytest.skip(f"lamina.models.{name} is not available: {exc}")


@pytest.fixture
def builder():
    return zoo_builder
