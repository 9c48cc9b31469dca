"""The data-parallel step as explicit context, and what the lower layers compute with it.

In a training step of a data-parallel run (the training infrastructure's
``distributed.stepping`` enters one) every statistic of the minibatch is taken over the
global batch of all processes, so that W processes compute what one process computes.
The step is a context variable, entered with :func:`step_context` and read with
:func:`current_step`; this module imports nothing of nri_pyro, so the network layer, the
priors, the guide and the edge distribution read the step here without importing the
training infrastructure. Outside a step every function below is the one-process
computation:

- :func:`global_sum` and :func:`global_count`: a sum and a batch size over the global batch
  (the pooled sums of the guides of global latents);
- :func:`local_rows`: noise drawn for the global batch, of which this process keeps its rows
  (the Gumbel noise of the edge samples);
- :class:`GlobalBatchNorm1d`: batch norm with the global batch's statistics, which
  :func:`global_batch_norms` swaps into a module (the guide does so for its encoder).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor, nn

try:
    from torch.compiler import is_compiling
except ImportError:  # torch < 2.3
    from torch._dynamo import is_compiling


@dataclass(frozen=True)
class Step:
    """A data-parallel training step: this process is ``rank`` of ``world_size`` and holds
    its shard (positions rank, rank + W, ...) of a global batch of ``global_batch`` rows."""

    rank: int
    world_size: int
    global_batch: int

    def __post_init__(self) -> None:
        if not 0 <= self.rank < self.world_size:
            raise ValueError(f"rank must be in [0, {self.world_size}), got {self.rank}")
        if self.global_batch < self.world_size:
            raise ValueError(
                f"a global batch of {self.global_batch} rows leaves a process of "
                f"{self.world_size} without rows"
            )

    @property
    def local_batch(self) -> int:
        """The number of this process's rows of the global batch."""
        return len(range(self.rank, self.global_batch, self.world_size))

    def shard(self, rows: Tensor) -> Tensor:
        """This process's rows of ``rows`` (first dimension: the global batch)."""
        return rows[self.rank :: self.world_size]


_STEP: ContextVar[Step | None] = ContextVar("nri_pyro_data_parallel_step", default=None)
# torch.compile cannot read a ContextVar yet (each read splits the graph, pytorch#186449), so
# compiled code reads this thread's copy of the step, which step_context keeps equal to it;
# dynamo guards on that copy, so a graph compiled outside a step is not reused in one.
_TRACEABLE = threading.local()


def current_step() -> Step | None:
    """The active data-parallel step (None outside one)."""
    if is_compiling():
        return getattr(_TRACEABLE, "step", None)
    return _STEP.get()


@contextlib.contextmanager
def step_context(step: Step | None) -> Iterator[None]:
    """Within it, ``step`` is the active data-parallel step (None: none is, as in
    :func:`paused`); the previous one is restored on leaving, also on error."""
    token = _STEP.set(step)
    outer = getattr(_TRACEABLE, "step", None)
    _TRACEABLE.step = step
    try:
        yield
    finally:
        _STEP.reset(token)
        _TRACEABLE.step = outer


def paused() -> contextlib.AbstractContextManager[None]:
    """Within it, a data-parallel step's statistics and noise are this process's own again:
    for values that are already the same in every process (a shared graph's sites)."""
    return step_context(None)


@torch.compiler.disable  # in compiled code, the exchange runs eagerly (between graphs)
def global_sum(t: Tensor) -> Tensor:
    """Sum of ``t`` over the processes of the active step (differentiable; ``t`` itself
    outside one)."""
    if current_step() is None:
        return t
    return _SumOverProcesses.apply(t) if t.requires_grad else _SumOverProcesses.forward(None, t)


class _SumOverProcesses(torch.autograd.Function):
    """all_reduce (sum) as a function: every process's loss depends on the sum, so the
    gradient of each process's ``t`` is the sum of the processes' gradients of the sum."""

    @staticmethod
    def forward(ctx: object, t: Tensor) -> Tensor:
        t = t.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(t)
        return t

    @staticmethod
    def backward(ctx: object, grad: Tensor) -> Tensor:
        return _SumOverProcesses.apply(grad)


def global_count(local: int) -> int:
    """The global batch size of the active step, given this process's ``local`` size
    (``local`` outside a step)."""
    step = current_step()
    if step is None:
        return local
    if local != step.local_batch:
        raise RuntimeError(
            f"a data-parallel step expected {step.local_batch} local rows, got {local}"
        )
    return step.global_batch


def local_rows(shape: torch.Size, draw: Callable[[torch.Size], Tensor]) -> Tensor:
    """``draw(shape)`` for a tensor whose first dimension is this process's rows of the
    active step's global batch: drawn for the global batch, this process's rows kept, so
    that the random stream advances alike in every process. Otherwise ``draw(shape)``."""
    step = current_step()
    if step is None or len(shape) == 0:
        return draw(shape)
    if shape[0] != step.local_batch:  # not per trajectory (a global latent): the same everywhere
        return draw(shape)
    return step.shard(draw(torch.Size((step.global_batch, *shape[1:]))))


class GlobalBatchNorm1d(nn.BatchNorm1d):
    """:class:`torch.nn.BatchNorm1d` whose batch statistics, in training within a
    data-parallel step, are those of the global batch's rows.

    Input [rows, C] or [rows, C, L], as for ``BatchNorm1d``: per channel, the mean and
    (biased) variance over rows (and L) normalise, the running statistics are updated alike
    in every process (unbiased variance, over the global count), and gradients flow through
    the global statistics. The statistics are taken from sums of h and h² in float32, or
    in h's dtype where that is wider (under bf16 autocast, E[h²] - mean² in bf16 would
    cancel catastrophically); the output has h's dtype. Outside a step, or in evaluation,
    it is ``BatchNorm1d`` itself. Its parameters and buffers are ``BatchNorm1d``'s, so state
    dicts are interchangeable.
    """

    @classmethod
    def like(cls, bn: nn.BatchNorm1d) -> GlobalBatchNorm1d:
        """A GlobalBatchNorm1d with ``bn``'s settings, holding ``bn``'s own parameters and
        buffers (the same tensors) and in ``bn``'s mode."""
        new = cls(bn.num_features, bn.eps, bn.momentum, bn.affine, bn.track_running_stats)
        if bn.affine:
            new.weight, new.bias = bn.weight, bn.bias
        if bn.track_running_stats:
            new.running_mean, new.running_var = bn.running_mean, bn.running_var
            new.num_batches_tracked = bn.num_batches_tracked
        return new.train(bn.training)

    def forward(self, h: Tensor) -> Tensor:
        if current_step() is None or not self.training:
            return super().forward(h)
        self._check_input_dim(h)
        channels = h.shape[1]
        dims = (0,) if h.dim() == 2 else (0, 2)
        x = h.to(torch.promote_types(h.dtype, torch.float32))  # also under bf16 autocast
        count = x.new_tensor([x.numel() // max(channels, 1)])
        stats = global_sum(torch.cat([x.sum(dims), (x * x).sum(dims), count]))
        n = stats[-1]
        mean = stats[:channels] / n
        var = (stats[channels : 2 * channels] / n - mean * mean).clamp(min=0)
        if self.running_mean is not None and self.running_var is not None:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                momentum = (
                    self.momentum
                    if self.momentum is not None
                    else 1 / float(self.num_batches_tracked)
                )
                unbiased = var * n / (n - 1).clamp(min=1)
                self.running_mean.lerp_(mean.to(self.running_mean.dtype), momentum)
                self.running_var.lerp_(unbiased.to(self.running_var.dtype), momentum)
        shape = (1, channels) if h.dim() == 2 else (1, channels, 1)
        scale = torch.rsqrt(var + self.eps)
        if self.affine:
            scale = scale * self.weight.to(x.dtype)
        out = (x - mean.view(shape)) * scale.view(shape)
        if self.affine:
            out = out + self.bias.to(x.dtype).view(shape)
        return out.to(h.dtype)


def global_batch_norms(module: nn.Module) -> nn.Module:
    """``module`` with every ``nn.BatchNorm1d`` in it (itself included) swapped for a
    :class:`GlobalBatchNorm1d` holding the same parameters and buffers, so that its state
    dict and what it computes outside a data-parallel step are unchanged. In place, like
    ``nn.SyncBatchNorm.convert_sync_batchnorm``; returns the module (the new one when
    ``module`` is itself a ``BatchNorm1d``)."""
    if type(module) is nn.BatchNorm1d:
        return GlobalBatchNorm1d.like(module)
    for name, child in module.named_children():
        swapped = global_batch_norms(child)
        if swapped is not child:
            module.add_module(name, swapped)
    return module
