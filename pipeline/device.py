"""Choosing the torch device a stage runs on (``auto``, ``cpu``, ``cuda``, ``cuda:N``)."""

from __future__ import annotations

import torch

from pipeline.errors import CohortlabError


class DeviceError(CohortlabError, ValueError):
    """A device that does not exist here, or a name that is not a device."""


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cuda`` without a GPU is an error.

    Raises
    ------
    DeviceError
        CUDA asked for on a machine without a CUDA GPU, or a name torch does not know.
    """
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise DeviceError(f"device {device!r} asked for, but no CUDA GPU is available here (use auto or cpu)")
    try:
        return torch.device(device)
    except RuntimeError:
        raise DeviceError(f"device {device!r}: use auto, cpu, cuda or cuda:N") from None
