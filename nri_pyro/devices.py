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


# A CUDA context of its own in every process, besides what its tensors take.
CUDA_CONTEXT_BYTES = 600 * 2**20


def gpu_share(device: str | torch.device, jobs: int, run_bytes: int) -> float:
    """The fraction of the GPU's memory each of ``jobs`` processes may take when they share
    ``device`` (``ablate --jobs K --device cuda``), after checking, before any work, that
    ``jobs`` runs of about ``run_bytes`` each (and a CUDA context each) fit in the memory
    it has free; a clear error naming how many would fit when they do not."""
    device = torch.device(device)
    if device.type != "cuda":
        raise ValueError(f"gpu_share plans runs on one CUDA device, not on {device}")
    free, total = torch.cuda.mem_get_info(device)
    each = run_bytes + CUDA_CONTEXT_BYTES
    if jobs * each > free:
        fit = free // each
        gib = 2**30
        raise ValueError(
            f"{jobs} runs at once on {device} need about {jobs * each / gib:.1f} GiB "
            f"({each / gib:.2f} GiB each, a CUDA context included), but it has "
            f"{free / gib:.1f} GiB free of {total / gib:.1f}: use --jobs {max(1, fit)}"
            + ("" if fit else " (one run alone may not fit: lower train.batch_size)")
        )
    return 1.0 / jobs
