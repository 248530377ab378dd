"""Every lazily exported name resolves to the object its module defines; unknown names fail as attributes do."""

from __future__ import annotations

import importlib

import pytest

LAZY_PACKAGES = ["cohortlab", "analytics.explain", "analytics.models", "pipeline.ct", "pipeline.synth", "pipeline.wsi"]


@pytest.mark.parametrize("package", LAZY_PACKAGES)
def test_lazy_names_resolve_and_are_listed(package: str) -> None:
    mod = importlib.import_module(package)
    table = getattr(mod, "_EXPORTS", None) or mod._LAZY
    for name, where in table.items():
        home = importlib.import_module(where if "." in where else f"{package}.{where}")
        assert getattr(mod, name) is getattr(home, name), (package, name)
    assert set(table) <= set(dir(mod)) and "__name__" in dir(mod)
    with pytest.raises(AttributeError, match=f"module '{package}' has no attribute 'no_such_name'"):
        mod.no_such_name  # noqa: B018
    assert not hasattr(mod, "no_such_name")
