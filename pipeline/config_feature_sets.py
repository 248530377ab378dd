"""``[[feature_sets]]`` of ``study.toml``: one immutable way of turning slides or CT volumes into features.

Stain normalisation follows Macenko et al. (ISBI 2009) or Reinhard et al. (IEEE CG&A 2001).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, PrivateAttr, ValidationInfo, field_validator, model_validator

from pipeline.config_base import Name, Strict

STAIN_NORMS = ("macenko", "reinhard", "none")  # feature_sets[].stain_norm
Pooling = Literal["mean", "max", "meanmax"]


def _every_pooling() -> list[Pooling]:
    """The default ``pooling``: every way of pooling tile or slice features into one vector per patient."""
    return ["mean", "max", "meanmax"]


class FeatureSet(Strict):
    """One immutable way of turning images into features.

    Fields not relevant to a modality must be left out; ``params`` holds
    encoder-specific extras and is part of the feature set's identity.
    """

    name: Name
    modality: Literal["wsi", "ct"]
    encoder: str
    weights: str = "pretrained"  # "pretrained" | "random" | a local file | a hf-hub: name
    pooling: list[Pooling] = Field(default_factory=_every_pooling)
    batch_size: int = Field(default=32, ge=1)
    num_workers: int = Field(default=2, ge=0)
    # whole-slide images
    mpp: float | None = Field(default=None, gt=0)
    magnification: str | None = None
    tile_size: int | None = Field(default=None, ge=16)
    overlap: int = Field(default=0, ge=0)
    tissue_threshold: float = Field(default=0.25, ge=0, le=1)
    # colour normalisation of tiles before the encoder: "macenko" (Macenko et al. 2009), "reinhard"
    # (Reinhard et al. 2001) or "none"; its reference is fitted on tiles of the development centres' slides
    stain_norm: Literal["macenko", "reinhard", "none"] = "none"
    # CT volumes
    mode: Literal["3d", "2.5d", "radiomics"] | None = None
    spacing: list[float] | None = None
    window: list[float] | None = None
    margin_mm: float | None = Field(default=None, ge=0)
    input_size: list[int] | None = None
    bin_width: float | None = Field(default=None, gt=0)
    params: dict[str, Any] = Field(default_factory=dict)

    @field_validator("magnification")
    @classmethod
    def _mag(cls, v: str | None) -> str | None:
        if v is not None and not re.fullmatch(r"\d+(\.\d+)?[xX]", v):
            raise ValueError("write an objective magnification as e.g. '20x'")
        return v

    @field_validator("stain_norm", mode="before")
    @classmethod
    def _stain_norm(cls, v: Any, info: ValidationInfo) -> Any:
        if v not in STAIN_NORMS:
            name = info.data.get("name", "?")
            raise ValueError(f"feature set '{name}': stain_norm {v!r} is not one of "
                             f"{', '.join(repr(m) for m in STAIN_NORMS)}")
        return v

    @field_validator("spacing")
    @classmethod
    def _spacing(cls, v: list[float] | None) -> list[float] | None:
        if v is not None and (len(v) != 3 or any(s <= 0 for s in v)):
            raise ValueError("spacing is three positive numbers in mm (x, y, z)")
        return v

    @field_validator("window")
    @classmethod
    def _window(cls, v: list[float] | None) -> list[float] | None:
        if v is not None and (len(v) != 2 or v[0] >= v[1]):
            raise ValueError("window is [low, high] in HU with low < high")
        return v

    @model_validator(mode="after")
    def _modality_fields(self) -> FeatureSet:
        wsi_only = {"mpp", "magnification", "tile_size", "stain_norm"}
        ct_only = {"mode", "spacing", "window", "margin_mm", "input_size", "bin_width"}
        wrong = (ct_only if self.modality == "wsi" else wsi_only) & self.model_fields_set
        if wrong:
            raise ValueError(f"{sorted(wrong)} do not apply to modality '{self.modality}'")
        if self.mpp is not None and self.magnification is not None:
            raise ValueError("give either mpp or magnification, not both")
        return self

    def target_mpp(self) -> float:
        """Microns per pixel asked for (magnification 20x is taken as 0.5 mpp)."""
        if self.mpp is not None:
            return self.mpp
        if self.magnification is not None:
            return 10.0 / float(self.magnification[:-1])
        return 0.5

    # the folder of the study.toml that declared this feature set (set by parse_study)
    _base: Path | None = PrivateAttr(default=None)

    def weights_source(self) -> str:
        """``weights`` as the encoder loaders take it: a relative local file is found beside study.toml.

        Named choices (``pretrained``, ``random``, ``hf-hub:`` names, weight enums) pass unchanged, and a
        relative file that is not in the study folder is left to the loaders (relative to the working
        directory, as before), so the stored ``weights_spec`` never depends on where the study lives.
        """
        w = self.weights
        if w in ("pretrained", "random") or w.startswith("hf-hub:") or self._base is None:
            return w
        path = Path(w).expanduser()
        if path.is_absolute():
            return w
        beside = self._base / path
        return str(beside) if beside.is_file() else w


__all__ = ["STAIN_NORMS", "FeatureSet"]
