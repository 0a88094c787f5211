"""Fixtures for lamina.data tests: no network, no real caches."""

import pytest

from lamina.data.datasets import fetch


@pytest.fixture(autouse=True)
def _no_network(monkeypatch):
    """Any download attempt in these tests fails as if offline (tests may re-patch it)."""

    def offline(url, timeout=None):
        raise OSError(f"network disabled in tests (tried {url})")

    monkeypatch.setattr(fetch, "urlopen", offline)


@pytest.fixture
def isolated(monkeypatch, tmp_path):
    """A fresh HOME (so ~/.cache/lamina is empty) and no $LAMINA_DATA."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("LAMINA_DATA", raising=False)
    return home
