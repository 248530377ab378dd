"""``<report_dir>/explain/manifest.json``: every figure and value file written, and what each model's came from.

Layout::

    {"format": 1,
     "figures": [{"model", "kind", "patient_id", "path", "caption"}, ...],
     "values":  [{"model", "kind", "path", "description"}, ...],
     "models":  {name: {"digest", "explainer", "space", "method", "notes", ...}},
     "notes":   [every model's notes, in model order]}

Paths are relative to the ``explain/`` folder. ``digest`` identifies the
inputs of a model's explanation (its saved manifest, the cohort hash, the
settings, the patients asked for); a model whose digest is unchanged and
whose files all exist is not explained again.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pipeline import atomic

FORMAT = 1
NAME = "manifest.json"
FIGURE_KINDS = ("shap_beeswarm", "shap_bar", "shap_grouped_bar", "shap_waterfall", "attention_heatmap", "top_tiles",
                "ct_slice_attention")


@dataclass(frozen=True)
class FigureEntry:
    model: str
    kind: str
    patient_id: str | None
    path: str
    caption: str

    def __post_init__(self) -> None:
        if self.kind not in FIGURE_KINDS:
            raise ValueError(f"figure kind {self.kind!r} is not one of {FIGURE_KINDS}")


@dataclass(frozen=True)
class ValueEntry:
    model: str
    kind: str  # shap_values | shap_groups | attention
    path: str
    description: str


@dataclass
class ModelOutputs:
    """Everything written for one model, and the record kept in the manifest."""

    figures: list[FigureEntry] = field(default_factory=list)
    values: list[ValueEntry] = field(default_factory=list)
    record: dict[str, Any] = field(default_factory=dict)

    def files(self) -> list[str]:
        return [f.path for f in self.figures] + [v.path for v in self.values]


def read(folder: Path) -> dict[str, ModelOutputs]:
    """Per model, the outputs an existing manifest lists (empty when there is none or it is unreadable)."""
    try:
        data = json.loads((Path(folder) / NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if data.get("format") != FORMAT:
        return {}
    out: dict[str, ModelOutputs] = {}
    try:
        for name, rec in (data.get("models") or {}).items():
            out[name] = ModelOutputs(record=dict(rec))
        for f in data.get("figures", []):
            out.setdefault(f["model"], ModelOutputs()).figures.append(FigureEntry(**f))
        for v in data.get("values", []):
            out.setdefault(v["model"], ModelOutputs()).values.append(ValueEntry(**v))
    except (TypeError, KeyError, ValueError):
        return {}
    return out


def complete(folder: Path, outputs: ModelOutputs) -> bool:
    """Every file the outputs list exists."""
    return all((Path(folder) / p).is_file() for p in outputs.files())


def write(folder: Path, models: dict[str, ModelOutputs], order: list[str]) -> Path:
    """Write the manifest atomically, models in ``order`` (an unchanged manifest is not rewritten)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    names = [m for m in order if m in models]
    data = {
        "format": FORMAT,
        "figures": [asdict(f) for m in names for f in models[m].figures],
        "values": [asdict(v) for m in names for v in models[m].values],
        "models": {m: models[m].record for m in names},
        "notes": [str(n) for m in names for n in models[m].record.get("notes", [])],
    }
    path = folder / NAME
    text = atomic.json_text(data, indent=2, default=str, end="\n")
    if path.exists() and path.read_text(encoding="utf-8") == text:
        return path  # unchanged: leave the file (and its time stamp) alone
    return atomic.write_text(path, text)
