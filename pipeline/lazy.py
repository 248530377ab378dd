"""Packages whose public names are imported on first use (PEP 562 module ``__getattr__`` and ``__dir__``).

Importing a light helper module of a package (a slide reader, a manifest check) then loads none of the
heavy modules (torch, shap, the models) that the package's other names live in.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(package: str, exports: Mapping[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The ``__getattr__`` and ``__dir__`` of ``package``, serving ``exports`` (public name -> module).

    A module name without a dot is a submodule of ``package``; one with a dot is a full module path.
    """

    def module_of(name: str) -> str:
        module = exports[name]
        return module if "." in module else f"{package}.{module}"

    def getattr_(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(module_of(name)), name)

    def dir_() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(exports))

    return getattr_, dir_
