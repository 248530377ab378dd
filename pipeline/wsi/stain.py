"""Stain normalisation of H&E tiles: a reference fitted once with torchstain, tile batches normalised on the device.

Two methods, both as implemented by torchstain (``torchstain.normalizers``):

* **Macenko** (Macenko et al., "A method for normalizing histology slides for
  quantitative analysis", ISBI 2009). Pixels become optical densities
  ``OD = -log((I + 1) / Io)``; those with OD >= ``beta`` in every channel are
  stained; the two stain vectors are the ``alpha`` and ``100 - alpha`` angle
  percentiles in the plane of the two main eigenvectors of their covariance,
  the concentrations are the least-squares solution against them, and the
  tile is rebuilt with the reference's stain matrix and its concentrations
  rescaled to the reference's 99th percentiles.
* **Reinhard** (Reinhard et al., "Color transfer between images", IEEE CG&A
  2001): each CIE-L*a*b* channel is standardised and given the reference's
  mean and standard deviation.

The reference is fitted with torchstain itself (:func:`fit_reference`) on one
mosaic of reference tiles, on the CPU in float32, so it does not depend on
the device. torchstain normalises one image at a time; :class:`StainNormalizer`
does the same arithmetic on a whole batch on the encoder's device (per-tile
eigen-decompositions, percentiles and 2x2 solves); tests check it against
torchstain tile by tile. A tile on which Macenko is undefined (too few stained
pixels, coincident stain vectors, a stain all but absent so that its rescaling
would invent it, non-finite values) or Reinhard is (a channel without spread)
is passed through unchanged and reported as failed.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from pipeline.errors import CohortlabError

METHODS = ("macenko", "reinhard")
# torchstain's (and Macenko's) defaults: transmitted light, angle percentile, OD threshold of a stained pixel
IO = 240.0
ALPHA = 1.0
BETA = 0.15
# a tile with fewer stained pixels than this share is left as it is (its stain vectors would be noise)
MIN_STAINED_FRACTION = 0.01
# |cos| between the two stain vectors above which they are taken as one (a single-colour tile)
MAX_STAIN_COS = 0.9999
# a tile whose 99th-percentile concentration of a stain is this many times below (or above) the reference's
# hardly holds that stain (e.g. stroma without nuclei): rescaling it would invent the stain, so it is left as it is
MAX_CONC_SCALE = 5.0
MIN_LAB_STD = 1e-3
CPU_CHUNK = 4  # tiles normalised at a time on the CPU

# sRGB (D65) to CIE XYZ and the D65 white point, as in torchstain's rgb2lab / lab2rgb
_RGB2XYZ = ((0.412453, 0.357580, 0.180423), (0.212671, 0.715160, 0.072169), (0.019334, 0.119193, 0.950227))
_WHITE = (0.95047, 1.0, 1.08883)


class StainError(CohortlabError, ValueError):
    """A stain reference that cannot be fitted or read; the message says which and why."""


def _chw(tiles: np.ndarray) -> torch.Tensor:
    """uint8 tiles (k, h, w, 3) as one (3, k*h, w) mosaic: every tile's pixels count once in the fit."""
    if tiles.ndim != 4 or tiles.shape[-1] != 3 or tiles.dtype != np.uint8:
        raise StainError(f"reference tiles must be uint8 (k, h, w, 3), got {tiles.dtype} {tiles.shape}")
    return torch.from_numpy(np.ascontiguousarray(tiles.reshape(-1, tiles.shape[2], 3))).permute(2, 0, 1)


def fit_reference(method: str, tiles: np.ndarray) -> dict[str, Any]:
    """Fit a reference with torchstain on the pixels of ``tiles`` (uint8 (k, h, w, 3)), on the CPU.

    Returns
    -------
    dict
        Macenko: ``stain_matrix`` (3 x 2, columns haematoxylin then eosin, RGB
        optical densities) and ``max_concentrations`` (their 99th percentiles);
        Reinhard: ``lab_mean`` and ``lab_std`` (L*, a*, b*). Plain floats.
    """
    image = _chw(tiles)
    # one thread: reductions then add in one order whatever the machine's thread count, so that a reference
    # fitted by the local runner and one fitted in a Ray actor are the same bytes (and the same identity)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        values = _fit(method, image)
    finally:
        torch.set_num_threads(threads)
    flat = np.asarray([v for vs in values.values() for v in np.ravel(vs)], dtype=np.float64)
    if not np.isfinite(flat).all() or (method == "reinhard" and min(values["lab_std"]) < MIN_LAB_STD):
        raise StainError(f"the {method} reference fitted on these tiles is degenerate: {values}")
    return values


def _fit(method: str, image: torch.Tensor) -> dict[str, Any]:
    import torchstain

    with torch.inference_mode():
        if method == "macenko":
            norm = torchstain.normalizers.MacenkoNormalizer(backend="torch")
            try:
                norm.fit(image, Io=IO, alpha=ALPHA, beta=BETA)
            except (RuntimeError, IndexError) as exc:  # too few stained pixels: a percentile of an empty set
                raise StainError(f"the Macenko reference cannot be fitted on these tiles (no pixel with optical "
                                 f"density >= {BETA} in every channel?): {exc}") from None
            values = {"stain_matrix": norm.HERef.double().tolist(), "max_concentrations": norm.maxCRef.double().tolist()}
        elif method == "reinhard":
            norm = torchstain.normalizers.ReinhardNormalizer(backend="torch")
            norm.fit(image)
            values = {"lab_mean": norm.target_means.double().tolist(), "lab_std": norm.target_stds.double().tolist()}
        else:
            raise StainError(f"unknown stain normalisation {method!r} (one of {', '.join(METHODS)})")
    return values


def _rgb_to_lab(rgb: torch.Tensor) -> torch.Tensor:
    """uint8 RGB (..., 3) to CIE L*a*b* (..., 3), float32 (torchstain's conversion, batched)."""
    x = rgb.float() / 255.0
    x = torch.where(x > 0.04045, ((x + 0.055) / 1.055) ** 2.4, x / 12.92)
    m = torch.tensor(_RGB2XYZ, dtype=x.dtype, device=x.device)
    white = torch.tensor(_WHITE, dtype=x.dtype, device=x.device)
    xyz = (x @ m.T) / white
    f = torch.where(xyz > 0.008856, xyz.clamp_min(0) ** (1 / 3), 7.787 * xyz + 16 / 116)
    fx, fy, fz = f.unbind(-1)
    return torch.stack((116.0 * fy - 16.0, 500.0 * (fx - fy), 200.0 * (fy - fz)), dim=-1)


def _lab_to_rgb(lab: torch.Tensor) -> torch.Tensor:
    """CIE L*a*b* (..., 3) to RGB in [0, 1] (torchstain's conversion, batched)."""
    L, a, b = lab.unbind(-1)
    y = (L + 16.0) / 116.0
    f = torch.stack((a / 500.0 + y, y, y - b / 200.0), dim=-1)
    xyz = torch.where(f > 0.2068966, f**3, (f - 16 / 116) / 7.787)
    m = torch.tensor(_RGB2XYZ, dtype=lab.dtype, device=lab.device)
    white = torch.tensor(_WHITE, dtype=lab.dtype, device=lab.device)
    rgb = (xyz * white) @ torch.linalg.inv(m).T
    rgb = torch.where(rgb > 0.0031308, 1.055 * rgb.clamp_min(0.0031308) ** (1 / 2.4) - 0.055, rgb * 12.92)
    return rgb.clamp(0, 1)


class StainNormalizer:
    """Normalises uint8 RGB tile batches (n, h, w, 3) to a fitted reference on ``device``.

    ``normalizer(batch)`` returns the normalised batch (uint8, on ``device``)
    and a bool mask (n,) of the tiles left unchanged because the method is
    undefined on them.
    """

    def __init__(self, method: str, values: dict[str, Any], device: torch.device | str = "cpu") -> None:
        if method not in METHODS:
            raise StainError(f"unknown stain normalisation {method!r} (one of {', '.join(METHODS)})")
        self.method = method
        self.device = torch.device(device)
        try:
            if method == "macenko":
                self.stain_matrix = torch.tensor(values["stain_matrix"], dtype=torch.float32, device=self.device)
                self.max_c = torch.tensor(values["max_concentrations"], dtype=torch.float32, device=self.device)
                ok = self.stain_matrix.shape == (3, 2) and self.max_c.shape == (2,)
            else:
                self.lab_mean = torch.tensor(values["lab_mean"], dtype=torch.float32, device=self.device)
                self.lab_std = torch.tensor(values["lab_std"], dtype=torch.float32, device=self.device)
                ok = self.lab_mean.shape == (3,) and self.lab_std.shape == (3,)
        except (KeyError, TypeError, ValueError) as exc:
            raise StainError(f"{method} reference values are incomplete or malformed: {exc}") from None
        if not ok:
            raise StainError(f"{method} reference values have the wrong shape: {values}")

    @torch.inference_mode()
    def __call__(self, batch: torch.Tensor | np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.as_tensor(batch)
        if x.ndim != 4 or x.shape[-1] != 3 or x.dtype != torch.uint8:
            raise ValueError(f"stain normalisation takes uint8 (n, h, w, 3) RGB batches, got {x.dtype} {tuple(x.shape)}")
        x = x.to(self.device, non_blocking=True)
        if x.shape[0] == 0:
            return x, torch.zeros(0, dtype=torch.bool, device=self.device)
        step = self._macenko if self.method == "macenko" else self._reinhard
        # a few tiles at a time on the CPU keep the per-pixel temporaries in cache (measured 1.3-1.6x faster
        # than a whole batch of 16); a GPU takes the whole batch at once
        chunk = x.shape[0] if x.device.type != "cpu" else CPU_CHUNK
        # float32 throughout, also inside an autocast region (bf16 OD, eigenvectors and percentiles would be coarse)
        with torch.autocast(device_type=x.device.type, enabled=False):
            parts = [step(x[i:i + chunk]) for i in range(0, x.shape[0], chunk)]
        out, failed = torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
        # a tile the method cannot handle goes on unnormalised
        out = torch.where(failed.view(-1, 1, 1, 1), x, out)
        return out, failed

    def _macenko(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n, h, w, _ = x.shape
        od = -torch.log((x.reshape(n, -1, 3).float() + 1.0) / IO)  # (n, P, 3)
        stained = ~(od < BETA).any(-1)  # (n, P)
        count = stained.sum(1)
        weight = stained.unsqueeze(-1).float()
        cnt = count.clamp_min(2).float().view(n, 1, 1)
        mean = (od * weight).sum(1, keepdim=True) / cnt
        dev = (od - mean) * weight
        cov = dev.transpose(1, 2) @ dev / (cnt - 1.0)  # (n, 3, 3): covariance of the stained pixels
        _, vecs = torch.linalg.eigh(cov)
        plane = vecs[..., 1:3]  # eigenvectors of the two largest eigenvalues
        proj = od @ plane
        phi = torch.atan2(proj[..., 1], proj[..., 0]).masked_fill(~stained, float("inf"))
        # torchstain's percentile: the (1 + round(q/100 * (m - 1)))-th smallest of the m stained angles (the
        # unstained ones are +inf, after them); a selection per tile, as the rank differs (cheaper than a sort)
        angles = torch.empty((n, 2), dtype=phi.dtype, device=phi.device)
        for i, m in enumerate(count.tolist()):
            for j, q in enumerate((ALPHA, 100.0 - ALPHA)):
                angles[i, j] = phi[i].kthvalue(1 + round(0.01 * q * max(m - 1, 0))).values
        ends = plane @ torch.stack((torch.cos(angles), torch.sin(angles)), dim=1)  # (n, 3, 2): v_min, v_max
        v_min, v_max = ends[..., 0], ends[..., 1]
        first = (v_min[:, 0] > v_max[:, 0]).view(n, 1)  # haematoxylin first: the vector with the larger red OD
        he = torch.stack((torch.where(first, v_min, v_max), torch.where(first, v_max, v_min)), dim=2)
        # least squares of OD = HE C: C = (HE^T HE)^-1 HE^T OD, the 2x2 inverse written out
        g = he.transpose(1, 2) @ he
        det = g[:, 0, 0] * g[:, 1, 1] - g[:, 0, 1] * g[:, 1, 0]
        inv = torch.stack((torch.stack((g[:, 1, 1], -g[:, 0, 1]), -1), torch.stack((-g[:, 1, 0], g[:, 0, 0]), -1)), 1)
        inv = inv / det.view(n, 1, 1)
        conc = inv @ he.transpose(1, 2) @ od.transpose(1, 2)  # (n, 2, P)
        k = 1 + round(0.01 * 99 * (conc.shape[2] - 1))
        max_c = torch.kthvalue(conc, k, dim=2).values  # (n, 2)
        scale = self.max_c.view(1, 2) / max_c
        conc = conc * scale.unsqueeze(-1)
        rgb = IO * torch.exp(-(self.stain_matrix @ conc))  # (n, 3, P)
        out = rgb.clamp(0, 255).to(torch.uint8).transpose(1, 2).reshape(n, h, w, 3)  # truncation, as torchstain
        cos = (he[..., 0] * he[..., 1]).sum(-1).abs() / (he.norm(dim=1).prod(-1) + 1e-12)
        failed = (
            (count < max(2, MIN_STAINED_FRACTION * h * w))
            | (cos > MAX_STAIN_COS)
            | ~torch.isfinite(max_c).all(1)
            | (max_c <= 0).any(1)
            | ((scale > MAX_CONC_SCALE) | (scale < 1 / MAX_CONC_SCALE)).any(1)
            | ~torch.isfinite(rgb).all(2).all(1)
        )
        return out, failed

    def _reinhard(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n = x.shape[0]
        lab = _rgb_to_lab(x.reshape(n, -1, 3))  # (n, P, 3)
        std, mean = torch.std_mean(lab, dim=1, keepdim=True)  # unbiased, as torchstain
        failed = (std < MIN_LAB_STD).any(-1).view(n)
        lab = (lab - mean) / std.clamp_min(MIN_LAB_STD) * self.lab_std + self.lab_mean
        out = (_lab_to_rgb(lab) * 255.0).to(torch.uint8).reshape(x.shape)  # truncation, as torchstain
        return out, failed
