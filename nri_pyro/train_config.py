"""Training settings: one small dataclass, the paper's recipe as its defaults.

Read by the training loop, saved with every checkpoint, resolved from specs and presets
(``train.lr=1e-3`` on the command line) by :mod:`nri_pyro.specs`.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from nri_pyro.objectives import ELBO_PATHS, OBJECTIVES
from nri_pyro.refine import check_refine


@dataclass
class TrainConfig:
    """Training settings; the paper's recipe is the default."""

    epochs: int = 500
    batch_size: int = 128
    lr: float = 5e-4
    lr_decay_every: int = 200
    lr_decay: float = 0.5
    grad_clip: float | None = None
    # Skip a step whose loss or gradient norm is not finite or spikes above this factor of
    # its running level (nri_pyro.step_guard); None: every step is taken.
    step_guard: float | None = None
    objective: str = "nri"
    kl_weight: float = 1.0
    kl_anneal_epochs: int = 0
    select_metric: str = "nll"
    eval_batch_size: int = 256
    seed: int = 0
    progress: bool = True
    # "bfloat16": the encoder and decoder run under bf16 autocast in training steps (mixed
    # precision: parameters, likelihood and KL stay float32); evaluation is float32.
    precision: str = "float32"
    # torch.compile the whole training loss on the fast path (train.elbo), else the encoder
    # and decoder (never Pyro's ELBO); off: it pays only on some devices and sizes
    # (benchmarks/step_overhead.py --compile measures it) and compiles for a minute or more.
    compile: bool = False
    # How the "nri" objective's training steps are computed: "auto" on the trace-free fast
    # path where it applies (nri_pyro.objectives.MeanFieldLoss; the same ELBO, checked
    # against Pyro's), else Pyro's ELBO; "fast" refuses a run it does not cover; "pyro".
    elbo: str = "auto"
    # How the held-out split that `nri-pyro train` reads after training (and `evaluate`
    # without --refine) is scored: 0, the encoder's logits; K, after K steps of
    # semi-amortized refinement; "exact", a node-level prior's exact posterior
    # (nri_pyro.refine). Training never uses it; every evaluation records refine_steps.
    eval_refine: int | str = 0

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            number = isinstance(value, (int, float)) and not isinstance(value, bool)
            if f.type in ("int", "float") and not number:
                raise ValueError(f"train.{f.name} must be a number, got {value!r}")
            if f.type == "int" and isinstance(value, float):
                if not value.is_integer():
                    raise ValueError(f"train.{f.name} must be a whole number, got {value!r}")
                setattr(self, f.name, int(value))
            if f.type == "float" and number:
                setattr(self, f.name, float(value))
            if f.type == "bool" and not isinstance(value, bool):
                raise ValueError(f"train.{f.name} must be true or false, got {value!r}")
        if self.grad_clip is not None and not isinstance(self.grad_clip, (int, float)):
            raise ValueError(f"train.grad_clip must be a number, got {self.grad_clip!r}")
        if self.step_guard is not None and (
            not isinstance(self.step_guard, (int, float)) or isinstance(self.step_guard, bool)
            or not self.step_guard > 1
        ):  # fmt: skip
            raise ValueError(
                f"train.step_guard must be a factor above 1 (e.g. 10) or null, "
                f"got {self.step_guard!r}"
            )
        if self.eval_refine is None:  # null in a spec, as in a run saved with it: none
            self.eval_refine = 0
        try:
            check_refine(self.eval_refine)
        except ValueError as err:
            raise ValueError(f"train.eval_refine: {err}") from None
        checks = [
            (self.epochs >= 1, "train.epochs must be >= 1"),
            (self.batch_size >= 1, "train.batch_size must be >= 1"),
            (self.lr > 0, "train.lr must be positive"),
            (self.lr_decay_every >= 1, "train.lr_decay_every must be >= 1"),
            (0 < self.lr_decay <= 1, "train.lr_decay must lie in (0, 1]"),
            (self.grad_clip is None or self.grad_clip > 0, "train.grad_clip must be positive"),
            (
                self.objective in OBJECTIVES,
                f"train.objective must be one of {', '.join(OBJECTIVES)}, got {self.objective!r}",
            ),
            (
                self.elbo in ELBO_PATHS,
                f"train.elbo must be one of {', '.join(ELBO_PATHS)}, got {self.elbo!r}",
            ),
            (
                self.precision in PRECISIONS,
                f"train.precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}",
            ),
            (self.kl_weight > 0, "train.kl_weight must be positive"),
            (self.kl_anneal_epochs >= 0, "train.kl_anneal_epochs must be >= 0"),
            (
                self.select_metric in SELECT_METRICS,
                f"train.select_metric must be one of {', '.join(SELECT_METRICS)}",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)


PRECISIONS = ("float32", "bfloat16")

# Validation metric -> whether larger is better.
SELECT_METRICS = {"nll": False, "elbo_loss": False, "edge_accuracy": True, "mse": False}
