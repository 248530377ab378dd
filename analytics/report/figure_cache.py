"""The report's figures cached as PNG under a digest of what they are drawn from, so that a report rendered again
after a change (a model added, new predictions of one model) draws only the figures whose data changed.

A figure's *key* is the sha256 of the drawing function's name, its arguments (numbers, texts, arrays with their
dtype and shape, the figure dataclasses field by field) and :func:`code_digest` (the source of
:mod:`analytics.figures` and the versions of matplotlib and numpy). Its entry, ``<study folder>/cache/figures/<key>.json``,
holds the PNG (base64) and its sha256; one that does not parse, whose PNG does not match its sha256 or is not a
PNG is ignored and drawn again. Same inputs give the same bytes as drawing anew (the figures are deterministic:
:mod:`analytics.figures`), so the report's HTML is the same with or without the cache. Entries are written to a
temporary name and renamed; :meth:`FigureCache.prune` removes the ones the last report did not use.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import json
import logging
from collections.abc import Callable, Mapping
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np

from pipeline import atomic

log = logging.getLogger("cohortlab.report")

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
FORMAT = 1


class Unhashable(TypeError):
    """An argument whose content cannot be digested: the figure is drawn every time, never cached."""


def code_digest() -> str:
    """sha256 of what draws the figures and computes what is drawn with them (a ROC band): ``analytics/figures.py``,
    ``analytics/thinning.py``, ``analytics/report/competing.py`` and ``nomogram.py``, the ``analytics/stats``
    package, and the versions of matplotlib, numpy and Pillow."""
    h = hashlib.sha256(f"format {FORMAT}\n".encode())
    analytics = Path(__file__).resolve().parents[1]
    # the report's competing-risk figures and nomograms are drawn by modules of analytics/report, and every
    # curve is thinned by analytics/thinning.py before it is drawn
    for path in [analytics / "figures.py", analytics / "thinning.py", analytics / "report" / "competing.py",
                 analytics / "report" / "nomogram.py", *sorted((analytics / "stats").rglob("*.py"))]:
        raw = path.read_bytes()
        h.update(f"{path.relative_to(analytics).as_posix()}:{len(raw)}:".encode())
        h.update(raw)
    for lib in ("matplotlib", "numpy", "pillow"):
        try:
            h.update(f"{lib}={version(lib)}\n".encode())
        except PackageNotFoundError:
            h.update(f"{lib}=-\n".encode())
    return h.hexdigest()


def _feed(h: Any, value: Any) -> None:
    """Add ``value``'s type and content to the hash ``h`` (raises :class:`Unhashable` for anything else)."""
    if value is None or isinstance(value, (bool, int, str)):
        h.update(f"{type(value).__name__}:{value!r};".encode())
    elif isinstance(value, float):
        h.update(f"float:{value!r};".encode())  # repr: the shortest text that reads back as the same float
    elif isinstance(value, (np.floating, np.integer, np.bool_)):
        _feed(h, value.item())
    elif isinstance(value, np.ndarray):
        if value.dtype == object:
            _feed(h, value.tolist())
        else:
            arr = np.ascontiguousarray(value)
            h.update(f"ndarray:{arr.dtype.str}:{arr.shape};".encode())
            h.update(arr.tobytes())
    elif isinstance(value, (list, tuple)):
        h.update(f"{type(value).__name__}:{len(value)}[".encode())
        for v in value:
            _feed(h, v)
        h.update(b"]")
    elif isinstance(value, Mapping):
        h.update(f"map:{len(value)}{{".encode())
        for k in sorted(value, key=repr):
            _feed(h, k)
            _feed(h, value[k])
        h.update(b"}")
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        h.update(f"dc:{type(value).__qualname__}(".encode())
        for f in dataclasses.fields(value):
            h.update(f"{f.name}=".encode())
            _feed(h, getattr(value, f.name))
        h.update(b")")
    else:
        raise Unhashable(f"cannot digest a {type(value).__name__}")


def figure_key(code: str, name: str, *args: Any, **kwargs: Any) -> str:
    """The key of a figure: ``code`` (:func:`code_digest`), the drawing's ``name`` and its arguments."""
    h = hashlib.sha256(f"{code}:{name};".encode())
    _feed(h, list(args))
    _feed(h, dict(kwargs))
    return h.hexdigest()


class FigureCache:
    """PNG figures by key in ``folder`` (``<study folder>/cache/figures``); ``folder`` None draws every figure.

    ``hits`` and ``misses`` count the figures found and drawn; :meth:`prune` removes entries not used since
    the cache was opened.
    """

    def __init__(self, folder: Path | None) -> None:
        self.folder = folder
        self.code = code_digest() if folder is not None else ""
        self.hits = 0
        self.misses = 0
        self.used: set[str] = set()

    def _path(self, key: str) -> Path:
        assert self.folder is not None
        return self.folder / f"{key}.json"

    def get(self, key: str) -> bytes | None:
        """The PNG cached under ``key``, or None (missing, unreadable, or not what it says it is)."""
        if self.folder is None:
            return None
        path = self._path(key)
        if not path.is_file():
            return None
        try:
            entry = json.loads(path.read_text(encoding="ascii"))
            png = base64.b64decode(entry["png"], validate=True)
            ok = (entry.get("format") == FORMAT and entry.get("key") == key and png.startswith(PNG_SIGNATURE)
                  and entry.get("sha256") == hashlib.sha256(png).hexdigest())
        except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, binascii.Error):
            ok = False
        if not ok:
            log.warning("%s: not a valid figure cache entry; drawn again", path)
            return None
        return png

    def put(self, key: str, png: bytes) -> None:
        if self.folder is None:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        entry = {"format": FORMAT, "key": key, "sha256": hashlib.sha256(png).hexdigest(),
                 "png": base64.b64encode(png).decode("ascii")}
        atomic.write_text(self._path(key), json.dumps(entry, sort_keys=True) + "\n")

    def key(self, name: str, *args: Any, **kwargs: Any) -> str | None:
        """The key of a drawing of ``name`` from these arguments; None when the cache is off or an argument
        cannot be digested."""
        if self.folder is None:
            return None
        try:
            return figure_key(self.code, name, *args, **kwargs)
        except Unhashable as exc:
            log.info("figure %s not cached: %s", name, exc)
            return None

    def png(self, draw: Callable[..., bytes], *args: Any, **kwargs: Any) -> bytes:
        """``draw(*args, **kwargs)`` (a function of :mod:`analytics.figures` returning PNG bytes), from the
        cache when drawn before from equal arguments."""
        key = self.key(f"{draw.__module__}.{draw.__qualname__}", *args, **kwargs)
        return self.lookup(key, lambda: draw(*args, **kwargs))

    def lookup(self, key: str | None, make: Callable[[], bytes]) -> bytes:
        """The PNG under ``key``, else ``make()`` stored under it (``key`` None: ``make()``, not stored)."""
        if key is not None:
            self.used.add(key)
            found = self.get(key)
            if found is not None:
                self.hits += 1
                return found
        self.misses += 1
        png = make()
        if key is not None:
            self.put(key, png)
        return png

    def value(self, name: str, make: Callable[[], dict[str, Any]], *args: Any) -> dict[str, Any]:
        """``make()``, a JSON object computed from ``args`` by code of ``analytics/stats`` (e.g. a sample size from
        a simulation), from the cache when computed before from equal arguments; stored beside the figures and
        checked the same way."""
        key = self.key(f"value:{name}", *args)
        if key is not None:
            self.used.add(key)
            try:
                entry = json.loads(self._path(key).read_text(encoding="ascii"))
                text = json.dumps(entry["value"], sort_keys=True)
                if (entry.get("format") == FORMAT and entry.get("key") == key and isinstance(entry["value"], dict)
                        and entry.get("sha256") == hashlib.sha256(text.encode()).hexdigest()):
                    self.hits += 1
                    return dict(entry["value"])
            except FileNotFoundError:
                pass
            except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError):
                log.warning("%s: not a valid cache entry; computed again", self._path(key))
        self.misses += 1
        out = make()
        if key is not None and self.folder is not None:
            text = json.dumps(out, sort_keys=True)
            self.folder.mkdir(parents=True, exist_ok=True)
            atomic.write_text(self._path(key), json.dumps({"format": FORMAT, "key": key, "value": out,
                                                           "sha256": hashlib.sha256(text.encode()).hexdigest()},
                                                          sort_keys=True) + "\n")
        return out

    def prune(self) -> None:
        """Remove the entries not used since this cache was opened (figures of an earlier report only)."""
        if self.folder is None or not self.folder.is_dir():
            return
        for path in self.folder.glob("*.json"):
            if path.stem not in self.used:
                path.unlink(missing_ok=True)
