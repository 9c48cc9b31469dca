"""What the figures share: the colour of failures, the colour cycle, arrays from tensors."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from matplotlib import colormaps

FAILED_COLOR = "tab:red"


def as_array(values: Any, name: str) -> np.ndarray:
    """``values`` (a numpy array, a torch tensor, nested lists) as a float numpy array; a
    ValueError that names ``name`` where they are no numbers."""
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().double().numpy()
    try:
        return np.asarray(values, dtype=float)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name}: expected an array of numbers ({err})") from None


def palette(n: int) -> list[Any]:
    """``n`` colours of the tab10 cycle (repeating after ten)."""
    cmap = colormaps["tab10"]
    return [cmap(i % 10) for i in range(n)]
