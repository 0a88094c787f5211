"""Names of a package that load with their submodule on first use.

A package lists the submodules it leaves for later, each with the names it takes from them,
and gets from :func:`names_on_first_use` the module-level ``__getattr__`` and ``__dir__``
(PEP 562): ``package.Name`` or ``from package import Name`` imports the submodule then, and
``dir(package)`` lists those names and submodules as if they were loaded.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

__all__ = ["names_on_first_use"]


def names_on_first_use(package: str, modules: dict[str, tuple[str, ...]],
                       namespace: dict) -> tuple[Callable[[str], object], Callable[[], list[str]]]:
    """(``__getattr__``, ``__dir__``) for ``package`` (its dotted name), whose submodules
    ``modules`` (name -> the names taken from it) load when one of them is first used;
    ``namespace`` is the package's ``globals()`` (read when ``dir`` is called)."""
    owner = {name: module for module, names in modules.items() for name in names}

    def __getattr__(name: str):
        module = owner.get(name)
        if module is not None:
            return getattr(importlib.import_module(f"{package}.{module}"), name)
        if name in modules:
            return importlib.import_module(f"{package}.{name}")
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(namespace.get("__all__", ())) | set(modules))

    return __getattr__, __dir__
