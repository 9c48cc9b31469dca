"""Devices: the one check of a requested device, which every entry point makes first."""

from __future__ import annotations

import torch


def resolve_device(device: str | torch.device | None) -> torch.device:
    """A torch device, checked: a clear error where it is not available here."""
    if device is None:
        return torch.device("cpu")
    try:
        device = torch.device(device)
    except RuntimeError as err:
        raise ValueError(f"invalid device {device!r}: {err}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"device {device} was requested but CUDA is not available on this machine "
            "(torch.cuda.is_available() is False); use --device cpu"
        )
    if device.type == "cuda" and device.index is not None:
        if device.index >= torch.cuda.device_count():
            raise ValueError(
                f"device {device} does not exist: this machine has "
                f"{torch.cuda.device_count()} CUDA device(s)"
            )
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {device} was requested but MPS is not available")
    return device
