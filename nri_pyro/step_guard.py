"""A guard that skips training steps whose loss or gradient is not finite or spikes.

A charged-particles run can blow up on one step (a close encounter, a sample far in a
relaxed distribution's tail): its gradient is orders of magnitude above the others, Adam's
update throws the weights far away and its second moments keep the damage for thousands of
steps. ``train.step_guard = F`` skips such a step instead (no update; Adam's state is left as
it was): a step whose loss or gradient norm is not finite, whose gradient norm exceeds F
times its running level, or whose loss per trajectory exceeds its running level by F running
mean absolute deviations. Levels are exponential moving averages of the steps that were
taken, after a warm-up of plain means. Every epoch's record counts the skipped steps; many
in a row mean the run diverged (:class:`nri_pyro.training.TrainingDiverged`).
"""

from __future__ import annotations

import math
from typing import Any

WARMUP_STEPS = 20  # steps taken before a spike can be judged against the running levels
DECAY = 0.98  # the running levels' memory: about the last 50 steps taken
MAX_CONSECUTIVE = 25  # skipped steps in a row that mean the run diverged


class StepGuard:
    """Judges each step by its loss per trajectory and its gradient norm (see the module)."""

    def __init__(self, factor: float):
        self.factor = float(factor)
        self.taken = 0  # steps accepted so far (over the whole run)
        self.consecutive = 0  # steps skipped since the last one taken
        self.loss = 0.0  # running level of the loss per trajectory
        self.deviation = 0.0  # running mean absolute deviation of the loss from its level
        self.grad_norm = 0.0  # running level of the gradient norm

    def loss_problem(self, loss: float) -> str | None:
        """Why a step with this loss per trajectory is skipped before its backward pass, or
        None."""
        if not math.isfinite(loss):
            return f"the loss was {loss}"
        if self.taken >= WARMUP_STEPS:
            limit = self.loss + self.factor * max(self.deviation, 1e-6 * abs(self.loss), 1e-12)
            if loss > limit:
                return f"the loss {loss:.4g} per trajectory was above {limit:.4g}"
        return None

    def gradient_problem(self, grad_norm: float) -> str | None:
        """Why a step with this gradient norm is skipped before its update, or None."""
        if not math.isfinite(grad_norm):
            return f"the gradient norm was {grad_norm}"
        if self.taken >= WARMUP_STEPS and grad_norm > self.factor * self.grad_norm:
            return (f"the gradient norm {grad_norm:.4g} was over {self.factor:g} times its "
                    f"running level {self.grad_norm:.4g}")  # fmt: skip
        return None

    def skipped(self) -> bool:
        """Count a skipped step; True when so many in a row were skipped that the run
        diverged."""
        self.consecutive += 1
        return self.consecutive >= MAX_CONSECUTIVE

    def take(self, loss: float, grad_norm: float) -> None:
        """Fold a step that was taken into the running levels."""
        self.consecutive = 0
        self.taken += 1
        # Plain means over the warm-up, then exponential moving averages.
        weight = max(1.0 / self.taken, 1.0 - DECAY)
        if self.taken > 1:
            self.deviation += weight * (abs(loss - self.loss) - self.deviation)
        self.loss += weight * (loss - self.loss)
        self.grad_norm += weight * (grad_norm - self.grad_norm)

    def state_dict(self) -> dict[str, Any]:
        keys = ("taken", "consecutive", "loss", "deviation", "grad_norm")
        return {key: getattr(self, key) for key in keys}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key, value in state.items():
            setattr(self, key, value)
