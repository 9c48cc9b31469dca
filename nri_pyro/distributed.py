"""Data-parallel training across processes, GPUs and machines (PyTorch DDP under torchrun).

``nri-pyro train`` launched by ``torchrun`` trains one model with W processes: gloo on CPUs,
nccl on GPUs (process r uses ``cuda:LOCAL_RANK``). Every epoch has the same shuffled order
of trajectories in every process; each global minibatch of ``train.batch_size``
trajectories is split between the processes (process r takes positions r, r + W, ...: its
own shard), the gradients are averaged by ``DistributedDataParallel``, and only rank 0
writes checkpoints, metrics and logs. The checkpoint does not depend on W: a run resumes
with any number of processes.

A step of W processes computes what one process computes on the whole global batch, up to
floating-point summation order, because every statistic of the minibatch is taken over the
global batch while a step is active (:func:`stepping` enters it as a context variable of
:mod:`nri_pyro.nn.parallel`, where the layers below this one read it):

- the encoders' batch norms (:class:`~nri_pyro.nn.parallel.GlobalBatchNorm1d`, the MLP
  encoder's and the CNN encoder's alike, with statistics in float32 also under bf16
  autocast) and the pooled sums of the guides of global latents (Dirichlet counts, a
  shared graph's logits) use :func:`global_sum`;
- the Gumbel noise of the edge samples is drawn for the whole global batch in every process
  (the random streams stay in step) and each process keeps its own rows
  (:func:`local_rows`);
- each process weights its loss by its share of the global batch before DDP averages.

Dropout masks are drawn per process, so with dropout the runs are equivalent in
distribution, not equal. The last global batch of an epoch is dropped when it has fewer
trajectories than there are processes.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from nri_pyro.nn.parallel import (  # noqa: F401 - the step's computations, named here too
    Step,
    global_count,
    global_sum,
    local_rows,
    paused,
    step_context,
)

DEFAULT_TIMEOUT_S = 300.0
_TORCHRUN_VARS = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


class DistributedError(RuntimeError):
    """A data-parallel run cannot start or went wrong between its processes."""


@dataclass(frozen=True)
class DataParallel:
    """This process's place in a data-parallel run."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    backend: str

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, positions: Tensor) -> Tensor:
        """This process's part of a global batch: positions rank, rank + W, ..."""
        return positions[self.rank :: self.world_size]


def from_environment(
    device: str | torch.device = "cpu", timeout_s: float = DEFAULT_TIMEOUT_S
) -> DataParallel | None:
    """Join the run torchrun started (None when WORLD_SIZE is unset or 1: one process).

    ``device`` "cuda" means this process's GPU, ``cuda:LOCAL_RANK``, with nccl; "cpu" gloo.
    Joining waits at most ``timeout_s`` for the other processes, and every collective
    operation after it as long, so a missing process is an error, not a hang.
    """
    world = os.environ.get("WORLD_SIZE")
    if world is None or int(world) == 1:
        return None
    missing = [name for name in _TORCHRUN_VARS if name not in os.environ]
    if missing:
        raise DistributedError(
            f"WORLD_SIZE={world} asks for a distributed run, but {', '.join(missing)} "
            "is not set: launch with torchrun (see the README, 'Training on several "
            "processes'), which sets RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT"
        )
    rank, local_rank, world_size = (int(os.environ[k]) for k in _TORCHRUN_VARS[:3])
    device = torch.device(device)
    if device.type == "cuda":
        count = torch.cuda.device_count()
        if local_rank >= count:
            raise DistributedError(
                f"process with LOCAL_RANK {local_rank} needs its own GPU, but this machine "
                f"has {count}: start at most {count} processes per machine "
                "(torchrun --nproc_per_node)"
            )
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        backend = "nccl"
    elif device.type == "cpu":
        backend = "gloo"
    else:
        raise ValueError(f"distributed training runs on cpu or cuda, not {device.type}")
    address = f"{os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']}"
    if not dist.is_initialized():
        try:
            dist.init_process_group(
                backend, timeout=datetime.timedelta(seconds=timeout_s),
                **({"device_id": device} if backend == "nccl" else {}),
            )  # fmt: skip
        except Exception as err:  # the store's and backends' errors have no common base
            raise DistributedError(
                f"process {rank} of {world_size} could not join the run at {address} within "
                f"{timeout_s:g} s ({type(err).__name__}: {str(err).strip()[:300]}); are all "
                f"{world_size} processes started, with the same MASTER_ADDR and MASTER_PORT?"
            ) from None
    return DataParallel(rank, world_size, local_rank, device, backend)


def finish() -> None:
    """Leave the run (every process, once its last exchange is done)."""
    if dist.is_initialized():
        dist.destroy_process_group()


def check_same(run: DataParallel, settings: dict[str, Any]) -> None:
    """Raise in every process unless all processes were given the same ``settings``
    (configuration, data shape and fingerprint): names the keys that differ and where."""
    everyone: list[Any] = [None] * run.world_size
    dist.all_gather_object(everyone, settings)
    for rank, theirs in enumerate(everyone):
        if theirs != everyone[0]:
            keys = sorted(k for k in {*theirs, *everyone[0]} if theirs.get(k) != everyone[0].get(k))
            shown = "; ".join(
                f"{k}: rank 0 has {everyone[0].get(k)!r}, rank {rank} has {theirs.get(k)!r}"
                for k in keys
            )
            raise DistributedError(
                f"the {run.world_size} processes were not given the same run: {shown[:1000]}"
            )


def fingerprint(x: Tensor) -> str:
    """A short digest of a tensor's values (to check that every process read the same data)."""
    data = x.detach().cpu().contiguous().numpy().tobytes()
    return hashlib.sha1(data).hexdigest()[:16]


def parameters_fingerprint(module: nn.Module) -> str:
    """A digest of a module's parameters, to compare replicas (not of its buffers: DDP sends
    rank 0's to the others before every step, and rank 0's are the ones saved)."""
    h = hashlib.sha1()
    for name, t in module.named_parameters():
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def broadcast(run: DataParallel | None, obj: Any) -> Any:
    """Rank 0's ``obj`` in every process (``obj`` elsewhere is ignored)."""
    if run is None:
        return obj
    box = [obj if run.is_main else None]
    dist.broadcast_object_list(box, src=0, device=run.device if run.backend == "nccl" else None)
    return box[0]


def all_gather_strings(run: DataParallel, value: str) -> list[str]:
    """Every process's ``value``, in rank order."""
    everyone: list[Any] = [None] * run.world_size
    dist.all_gather_object(everyone, value)
    return everyone


def sum_over_processes(run: DataParallel | None, value: float) -> float:
    """The sum of a number over the processes (itself with one process)."""
    if run is None:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=run.device)
    dist.all_reduce(t)
    return float(t)


# --- a training step of a data-parallel run --------------------------------------------
def stepping(run: DataParallel | None, global_batch: int) -> contextlib.AbstractContextManager:
    """Within it, minibatch statistics and edge noise are those of the global batch of
    ``global_batch`` trajectories (nothing changes with ``run`` None): the step is entered
    as context (:func:`nri_pyro.nn.parallel.step_context`) for the model, guide and encoder."""
    if run is None:
        return contextlib.nullcontext()
    return step_context(Step(run.rank, run.world_size, global_batch))
