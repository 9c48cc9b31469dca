"""SVI training of an NRI model and guide.

Training is a straight loop over epochs and shuffled minibatches around an ELBO module
(for the "nri" objective the trace-free :class:`~nri_pyro.objectives.MeanFieldLoss`, which
computes what ``TraceMeanField_ELBO`` does, where it applies, else Pyro's own; ``Trace_ELBO``
for "concrete"; every epoch's record says which) and a torch optimiser over the model's and
guide's parameters. After each epoch: a check that
the weights still give finite outputs, validation, a line in metrics.jsonl and in the log,
the last checkpoint, and the best one by the chosen validation metric. Without a validation
split the best epoch is the one with the lowest training loss: the mean over its minibatches,
each measured before that minibatch's update, so it describes the weights during the epoch,
while the checkpoint holds those at its end. Training that diverges (a non-finite loss,
parameters or outputs) stops with :class:`TrainingDiverged`, which names the epoch and what
to try; no such weights are ever saved. Checkpoints are written atomically and hold
everything needed to continue exactly: parameters, optimiser and scheduler state, the RNG
state, the epoch.
Minibatch order is a function of (seed, epoch), so a resumed run sees the same batches; a
resumed run must have the specs, settings and data it was started with. With a
:class:`~nri_pyro.distributed.DataParallel` the same loop runs in every process of a
torchrun launch on its shard of each minibatch (see :mod:`nri_pyro.distributed`).
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
from contextlib import nullcontext
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pyro
import torch
import yaml
from pyro.infer.util import is_validation_enabled
from torch import Tensor

from nri_pyro import distributed
from nri_pyro.checkpoints import (
    RUN_FILES,
    check_run_folder,
    differences,
    load_checkpoint,
    model_state,
)
from nri_pyro.data.dataset import Normalizer, batch_slices
from nri_pyro.evaluation import evaluate
from nri_pyro.files import atomic_save, atomic_write_text
from nri_pyro.guide import NRIGuide
from nri_pyro.logs import progress_bar
from nri_pyro.model import NRIModel
from nri_pyro.nn import compile_loss, compile_modules
from nri_pyro.nn.modes import eval_mode
from nri_pyro.objectives import fast_path_unsupported, training_loss
from nri_pyro.step_guard import MAX_CONSECUTIVE, StepGuard
from nri_pyro.train_config import SELECT_METRICS, TrainConfig

logger = logging.getLogger(__name__)

# Training settings that a resumed run may change: how long it trains (never fewer epochs
# than it has done; the change is recorded in resumes.jsonl), how it reports, and how
# its ELBO is computed (the fast path and Pyro's compute the same, on the same draws). Any other
# change would make the run's record describe training it did not have.
RESUME_MAY_CHANGE = ("epochs", "progress", "eval_batch_size", "elbo", "eval_refine")
# Trajectories whose outputs are checked after every epoch (see Trainer._check_outputs).
OUTPUT_CHECK_TRAJECTORIES = 8


class TrainingDiverged(ValueError, FloatingPointError):
    """Training diverged: its loss, parameters or outputs became NaN or infinite. The
    message names the epoch and what to try. A ValueError, so that the command line
    reports it in one line as it does bad settings; a FloatingPointError, as a non-finite
    loss was reported before."""


class Trainer:
    """Trains a model and guide on normalised data; writes a run folder when given one."""

    def __init__(
        self,
        model: NRIModel,
        guide: NRIGuide,
        train: tuple[Tensor, Tensor | None],
        valid: tuple[Tensor, Tensor | None] | None,
        config: TrainConfig,
        *,
        normalizer: Normalizer,
        run_dir: str | Path | None = None,
        device: torch.device | str = "cpu",
        data_info: dict[str, Any] | None = None,
        data_parallel: distributed.DataParallel | None = None,
    ) -> None:
        self.model, self.guide, self.config = model, guide, config
        self.device = torch.device(device)
        self.dp = data_parallel
        # Only one process writes the run folder and logs.
        self.writes = data_parallel is None or data_parallel.is_main
        self.train_x, self.train_edges = train
        self.valid = valid
        self.normalizer = normalizer
        self.run_dir = None if run_dir is None else Path(run_dir)
        x = self.train_x
        self.data_info = {
            "num_objects": x.shape[1],
            "num_frames": x.shape[2],
            "num_features": x.shape[3],
            **(data_info or {}),
        }
        if self.run_dir is not None:
            # A digest of the training data: a resumed run must continue on the same data.
            self.data_info["train_digest"] = distributed.fingerprint(x)
        # A prior that assumes something about the system (prior.name=charges) refuses
        # training data whose true graphs contradict it, before any work.
        model.prior.check_truth(self.train_edges, x.shape[1])
        # graph.known.fraction: a fixed part of the training edges is observed (semi-supervised)
        self.train_mask = model.structure.training_mask(x.shape[0], x.shape[1])
        if self.train_mask is not None and self.train_edges is None:
            raise ValueError(
                "graph.known.fraction reveals true edges in training, but the training data "
                "have no graphs"
            )
        if self.train_mask is not None and self.train_edges.dim() != 2:
            raise ValueError(
                "graph.known.fraction reveals one graph per training trajectory, but the "
                "training data have graphs that change over time (per-frame truth)"
            )
        # The training loss: the trace-free fast path of the "nri" objective where it
        # applies (train.elbo), else Pyro's ELBO module; every epoch's record names it.
        self.loss_fn, self.elbo_path = training_loss(config.objective, model, guide, config.elbo)
        if config.elbo == "auto" and self.elbo_path == "pyro":
            reason = fast_path_unsupported(model, guide, config.objective)
            logger.info(f"training with Pyro's ELBO (the fast path does not apply: {reason})")
        if config.compile and self.elbo_path == "fast":
            compile_loss(self.loss_fn)  # the whole loss, forward and backward
        elif config.compile:
            compile_modules(model), compile_modules(guide)
        self.step_fn = self.loss_fn if data_parallel is None else self._data_parallel(x)
        # train.step_guard's judge of each step, and the epoch's skipped and clipped steps
        # (counted by train_step, reset by train_epoch).
        self.step_guard = None if config.step_guard is None else StepGuard(config.step_guard)
        self.steps = {"skipped": 0, "clipped": 0, "loss": 0, "gradient": 0}
        # Fused Adam: one kernel for every parameter instead of about 20 operations each
        # (the same update to float rounding; benchmarks/step_overhead.py counts them).
        fused = self.device.type in ("cpu", "cuda")
        self.optimizer = torch.optim.Adam(self.loss_fn.parameters(), lr=config.lr, fused=fused)
        self.scheduler = torch.optim.lr_scheduler.StepLR(
            self.optimizer, step_size=config.lr_decay_every, gamma=config.lr_decay
        )
        self.epoch = 0  # epochs completed
        self.best: dict[str, Any] = {"value": None, "epoch": None}
        # Without a run folder, the best epoch's weights are kept here (with one, in
        # checkpoint_best.pt), so that fit returns the model select_metric chose either way.
        self.best_weights: dict[str, Any] | None = None
        self.history: list[dict[str, Any]] = []

    def _data_parallel(self, x: Tensor) -> torch.nn.Module:
        """The ELBO module under DistributedDataParallel, after checking that every process
        has the same run and that the data can be split between them."""
        dp, c = self.dp, self.config
        assert dp is not None
        if dp.world_size > x.shape[0]:
            raise ValueError(
                f"{dp.world_size} processes cannot share {x.shape[0]} training trajectories: "
                "start at most as many processes as there are trajectories"
            )
        if dp.world_size > c.batch_size:
            raise ValueError(
                f"train.batch_size = {c.batch_size} is the global minibatch, split between "
                f"{dp.world_size} processes: it must be at least the number of processes"
            )
        if self.device != dp.device:
            raise ValueError(f"this process trains on {dp.device}, not on {self.device}")
        distributed.check_same(
            dp,
            {
                "model spec": self.model.spec,
                "guide spec": self.guide.spec,
                "train config": asdict(c),
                "data shape": list(x.shape),
                # the digest a run folder records already, else computed for this check
                "data": self.data_info.get("train_digest") or distributed.fingerprint(x),
                "run folder": None if self.run_dir is None else str(self.run_dir),
            },
        )
        return torch.nn.parallel.DistributedDataParallel(
            self.loss_fn,
            device_ids=[dp.device] if dp.device.type == "cuda" else None,
            find_unused_parameters=True,  # a spec may leave some parameter out of a step
        )

    # --- checkpoints -------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []
        return {
            **model_state(self.model, self.guide, self.config, self.normalizer, self.data_info),
            "epoch": self.epoch,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": {"torch": torch.get_rng_state(), "cuda": cuda, "device": str(self.device)},
            "best": dict(self.best),
            "step_guard": None if self.step_guard is None else self.step_guard.state_dict(),
        }

    def restore(self, state: dict[str, Any]) -> None:
        """Continue from a checkpoint of the same configuration."""
        for key in ("num_objects", "num_frames", "num_features"):
            if state["data"][key] != self.data_info[key]:
                raise ValueError(
                    f"the checkpoint was trained with {key} = {state['data'][key]}, "
                    f"the data have {self.data_info[key]}"
                )
        self.model.load_state_dict(state["model_state"])
        self.guide.load_state_dict(state["guide_state"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"]["torch"])
        cuda = state["rng"]["cuda"]
        if cuda and torch.cuda.is_available():
            saved = torch.device(state["rng"].get("device", "cpu"))
            if self.device.type == "cuda" and saved.type == "cuda":
                # The training device continues the stream of the one that wrote the
                # checkpoint (in a data-parallel run: rank 0's; every process's is alike).
                index = saved.index or 0
                torch.cuda.set_rng_state(cuda[min(index, len(cuda) - 1)], self.device)
            else:
                torch.cuda.set_rng_state_all(cuda)
        self.epoch = state["epoch"]
        self.best = dict(state["best"])
        if self.step_guard is not None and state.get("step_guard"):
            self.step_guard.load_state_dict(state["step_guard"])

    def _write_run_files(self) -> None:
        assert self.run_dir is not None
        self.run_dir.mkdir(parents=True, exist_ok=True)
        contents = (self.model.spec, self.guide.spec, asdict(self.config))
        for name, content in zip(RUN_FILES, contents, strict=True):
            atomic_write_text(self.run_dir / name, yaml.safe_dump(content, sort_keys=False))

    def _record_resume(self, state: dict[str, Any]) -> None:
        """Append this resume to resumes.jsonl, with the settings it changed (only those of
        RESUME_MAY_CHANGE can differ), so that train.yaml's values have their history."""
        assert self.run_dir is not None
        before, now = state["train_config"], asdict(self.config)
        changed = {k: {"was": before.get(k), "now": now[k]} for k in now if before.get(k) != now[k]}
        for key, change in changed.items():
            logger.info(
                f"train.{key}: {change['was']} in the run so far, {change['now']} from now on"
            )
        entry = {"after_epoch": self.epoch, "time": time.strftime("%Y-%m-%d %H:%M:%S"),
                 "changed": changed}  # fmt: skip
        with (self.run_dir / "resumes.jsonl").open("a") as f:
            f.write(json.dumps(entry) + "\n")

    def _truncate_metrics(self) -> None:
        """Drop metric lines of epochs after the checkpoint (a run killed in between)."""
        path = self.run_dir / "metrics.jsonl"
        if not path.exists():
            return
        lines = _read_metrics(path) if self.epoch else []  # a new run keeps none
        kept = [(line, record) for line, record in lines if record["epoch"] <= self.epoch]
        atomic_write_text(path, "".join(f"{line}\n" for line, _ in kept))
        self.history = [record for _, record in kept]

    # --- the loop ----------------------------------------------------------------------
    def _autocast(self) -> torch.autocast:
        """bf16 autocast of a training step's networks with train.precision = bfloat16 (the
        model and guide return their outputs in the data's dtype, so Pyro's densities and
        KL stay in it)."""
        enabled = self.config.precision == "bfloat16"
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=enabled)

    def kl_weight(self, epoch: int) -> float:
        c = self.config
        if c.kl_anneal_epochs <= 0:
            return c.kl_weight
        return c.kl_weight * min(1.0, (epoch + 1) / c.kl_anneal_epochs)

    def train_epoch(self, epoch: int) -> float:
        """One pass over shuffled minibatches; returns the mean loss per trajectory."""
        c = self.config
        num = self.train_x.shape[0]
        generator = torch.Generator().manual_seed(c.seed * 100_003 + epoch)
        order = torch.randperm(num, generator=generator, device="cpu")
        weight = self.kl_weight(epoch)
        self.model.train()
        self.guide.train()
        total, skipped = 0.0, 0
        # this epoch's step counts, for its record
        self.steps = {"skipped": 0, "clipped": 0, "loss": 0, "gradient": 0}
        batches = batch_slices(num, c.batch_size)
        dp = self.dp
        if dp is not None and batches[-1].stop - batches[-1].start < dp.world_size:
            batches = batches[:-1]  # fewer trajectories than processes: left for other epochs
        bar = progress_bar(
            batches, enabled=c.progress and self.writes, desc=f"epoch {epoch + 1}/{c.epochs}",
            leave=False,
        )  # fmt: skip
        # Pyro's and torch's checks of every distribution's arguments, on the epoch's first
        # step only (where they find a spec's mistakes; later steps' non-finite values are
        # found by the loss check): they are about a tenth of a small step's operations.
        checks = is_validation_enabled()
        for i, batch in enumerate(bar):
            positions = order[batch]
            idx = positions if dp is None else dp.shard(positions)
            x = self.train_x[idx].to(self.device, non_blocking=True)
            known = {}
            if self.train_mask is not None:
                known = {
                    "edges": self.train_edges[idx].to(self.device),
                    "edge_mask": self.train_mask[idx].to(self.device),
                }
            batch_loss = self.train_step(x, known, num_trajectories=num, kl_weight=weight,
                                         batch_size=len(positions), epoch=epoch,
                                         validate=checks and i == 0)  # fmt: skip
            if batch_loss is None:  # skipped by the step guard: not in the epoch's loss
                skipped += len(positions)
                continue
            total += batch_loss
            bar.set_postfix(loss=f"{batch_loss / len(positions):.4g}")
        self.scheduler.step()
        seen = sum(b.stop - b.start for b in batches) - skipped
        return total / seen if seen else math.nan

    def train_step(
        self, x: Tensor, known: dict[str, Tensor], *, num_trajectories: int, kl_weight: float,
        batch_size: int | None = None, epoch: int = 0, validate: bool | None = None,
    ) -> float | None:  # fmt: skip
        """One SVI step on the minibatch ``x`` (on the device; ``known``: its revealed edges
        and their mask, or nothing): the ELBO of ``num_trajectories`` estimated from it, its
        gradients and an optimizer update. Returns the minibatch's summed loss (over every
        process, where ``batch_size`` is the minibatch of all processes together).
        ``epoch`` (0-based) only names the epoch in a divergence error; ``validate``: check
        the distributions' arguments (Pyro's validation) or not; None leaves it as it is.
        Returns None for a step that train.step_guard skipped (no update)."""
        dp, c = self.dp, self.config
        num, weight, count = num_trajectories, kl_weight, x.shape[0]
        positions = count if batch_size is None else batch_size
        # The ELBO of the whole training set, estimated from this minibatch, per trajectory.
        checks = nullcontext() if validate is None else pyro.validation_enabled(validate)
        try:
            with distributed.stepping(dp, positions), self._autocast(), checks:
                loss = self.step_fn(x, num_trajectories=num, kl_weight=weight, **known) / num
        except ValueError as err:  # Pyro's checks of distributions fed NaN, after updates
            if self._diverged(err):
                raise self._divergence(epoch, "the model's or guide's values became NaN or "
                                       "infinite in a training step") from err  # fmt: skip
            raise
        # Summed over the processes (every one sees the same), before any can stop.
        batch_loss = distributed.sum_over_processes(dp, float(loss.detach()) * count)
        guard = self.step_guard
        problem = None if guard is None else guard.loss_problem(batch_loss / positions)
        if guard is not None and self._skip(epoch, problem, "loss"):
            return None
        if not math.isfinite(batch_loss):
            raise self._divergence(epoch, f"the loss became {batch_loss}")
        if dp is not None:  # DDP averages the gradients: weight by the share of the batch
            loss = loss * (dp.world_size * count / positions)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if c.grad_clip is not None or guard is not None:
            # The norm before clipping (the same on every process: DDP's gradients are).
            limit = math.inf if c.grad_clip is None else c.grad_clip
            if c.grad_clip is None:  # the guard alone reads the norm: nothing to rescale
                grads = [p.grad for p in self.loss_fn.parameters() if p.grad is not None]
                norm = float(torch.nn.utils.get_total_norm(grads))
            else:
                norm = float(torch.nn.utils.clip_grad_norm_(self.loss_fn.parameters(), limit))
            if guard is not None:
                if self._skip(epoch, guard.gradient_problem(norm), "gradient"):
                    self.optimizer.zero_grad(set_to_none=True)
                    return None
                guard.take(batch_loss / positions, norm)
            self.steps["clipped"] += int(norm > limit)
        self.optimizer.step()
        return batch_loss

    def _skip(self, epoch: int, problem: str | None, kind: str) -> bool:
        """With the step guard: whether to skip this step for ``problem`` (None: take it),
        counting it, and by ``kind`` ("loss" or "gradient": which check found it); many
        skipped in a row are a divergence."""
        if problem is None:
            return False
        self.steps["skipped"] += 1
        self.steps[kind] += 1
        if self.writes:
            logger.info(f"epoch {epoch + 1}: skipped a step: {problem}")
        if self.step_guard.skipped():
            raise self._divergence(
                epoch, f"{MAX_CONSECUTIVE} steps in a row were skipped by train.step_guard "
                f"(the last: {problem})",
            )  # fmt: skip
        return True

    # --- divergence --------------------------------------------------------------------
    def _divergence(self, epoch: int, what: str) -> TrainingDiverged:
        """The error for training that diverged at ``epoch`` (0-based): what happened, and
        what to try with this run's settings."""
        c = self.config
        clip = (
            "set train.grad_clip (e.g. 1.0)" if c.grad_clip is None
            else f"lower train.grad_clip (now {c.grad_clip:g})"
        )  # fmt: skip
        return TrainingDiverged(
            f"training diverged at epoch {epoch + 1}: {what}; lower train.lr (now {c.lr:g}) "
            f"or {clip}"
        )

    def _diverged(self, err: ValueError) -> bool:
        """Whether ``err``, raised in a training step, comes from diverged weights: some
        parameter is not finite, or a distribution was given NaN or infinite values (torch's
        and Pyro's argument checks, and this package's, say so)."""
        if not _finite(self.loss_fn.parameters()):
            return True
        return bool(_NON_FINITE_MESSAGE.search(str(err)))

    @torch.no_grad()
    def _check_outputs(self, epoch: int) -> None:
        """Raise :class:`TrainingDiverged` when the weights after ``epoch`` are not finite or
        give non-finite outputs (finite but huge weights can: their edge probabilities or
        predictions are NaN), so that such weights are never validated, kept or saved as
        best. The outputs are the guide's edge probabilities and the decoder's one-step
        predictions of the first training trajectories, in evaluation mode: deterministic,
        and no random numbers are drawn (a resumed run continues exactly)."""
        modules = (self.model, self.guide)
        if not all(_finite([*m.parameters(), *m.buffers()]) for m in modules):
            raise self._divergence(epoch, "the parameters became NaN or infinite")
        x = self.train_x[:OUTPUT_CHECK_TRAJECTORIES].to(self.device)
        try:
            with eval_mode(*modules):
                probs = self.guide.edge_probs(x)
                z = torch.nn.functional.one_hot(probs.argmax(-1), probs.shape[-1]).to(x.dtype)
                outputs = [probs, self.model.predict(x[:, :, : self.guide.num_frames], z)]
        except ValueError as err:
            if not _NON_FINITE_MESSAGE.search(str(err)):
                raise
            outputs = [torch.tensor(math.nan)]
        if not _finite(outputs):
            raise self._divergence(
                epoch, "the weights at its end give NaN or infinite edge probabilities or "
                "predictions"
            )  # fmt: skip

    def fit(self, resume: bool = False) -> list[dict[str, Any]]:
        """Train to ``config.epochs``; with ``resume`` continue from the run's last checkpoint.

        The best checkpoint is the epoch with the best ``valid_<select_metric>``; without a
        validation split, the epoch with the lowest training loss (the mean over its
        minibatches, each measured before that minibatch's update, while the checkpoint
        holds the weights after the epoch's last update). Weights that give non-finite
        outputs stop training (:class:`TrainingDiverged`) before they are saved."""
        c = self.config
        if self.run_dir is not None:
            # Rank 0 reads the run folder (the others may not see it) and sends them the
            # outcome: the checkpoint to continue from, or the error every process raises.
            problem, state = None, None
            if self.writes:
                try:
                    state = self._checkpoint_to_resume(resume)
                except (FileNotFoundError, FileExistsError, ValueError) as err:
                    problem = err
            problem, state = distributed.broadcast(self.dp, (problem, state))
            if problem is not None:
                raise problem
            if state is not None:
                self.restore(state)
            if self.writes:
                # A new run drops metric lines of a start that never reached a checkpoint.
                self._truncate_metrics()
                if state is not None:  # recorded once every check has passed
                    logger.info(f"resuming {self.run_dir} after epoch {self.epoch}")
                    self._record_resume(state)
                self._write_run_files()
        larger_better = SELECT_METRICS[c.select_metric]
        if self.valid is None and self.writes and self.epoch < c.epochs:
            logger.info(
                "no validation split: the best checkpoint is the epoch with the lowest training "
                "loss (the mean over its minibatches, each measured before that minibatch's "
                "update; the checkpoint holds the weights at the epoch's end)"
            )
        while self.epoch < c.epochs:
            epoch = self.epoch
            start = time.perf_counter()
            train_loss = self.train_epoch(epoch)
            self._check_outputs(epoch)  # before anything is measured or saved with them
            record: dict[str, Any] = {
                "epoch": epoch + 1,
                "train_loss": train_loss,
                "lr": self.optimizer.param_groups[0]["lr"],
                "kl_weight": self.kl_weight(epoch),
                "elbo": self.elbo_path,  # how its steps computed the ELBO: "fast" or "pyro"
            }
            if c.step_guard is not None:
                record["skipped_steps"] = self.steps["skipped"]  # no update: not in train_loss
                # which check found them: a loss far above its level, or a gradient's norm
                record["skipped_for"] = {k: self.steps[k] for k in ("loss", "gradient")}
            if c.grad_clip is not None:
                record["clipped_steps"] = self.steps["clipped"]
            if self.valid is not None:
                vx, vedges = self.valid
                metrics = evaluate(
                    self.model, self.guide, vx, vedges, objective_name=c.objective,
                    batch_size=c.eval_batch_size, device=self.device,
                )  # fmt: skip
                record.update({f"valid_{k}": v for k, v in metrics.items()})
            record["seconds"] = time.perf_counter() - start
            self.epoch = epoch + 1
            improved = self._update_best(record, larger_better)
            self.history.append(record)
            if self.writes:
                logger.info(_format_record(record))
            if improved and self.run_dir is None:
                self.best_weights = {
                    "model_state": _detached_copy(self.model.state_dict()),
                    "guide_state": _detached_copy(self.guide.state_dict()),
                }
            if self.run_dir is not None and self.writes:
                with (self.run_dir / "metrics.jsonl").open("a") as f:
                    f.write(json.dumps(record) + "\n")
                state = self.state()
                if improved:
                    atomic_save(state, self.run_dir / "checkpoint_best.pt")
                atomic_save(state, self.run_dir / "checkpoint_last.pt")
        if self.dp is not None:
            self._check_replicas()
        return self.history

    def _checkpoint_to_resume(self, resume: bool) -> dict[str, Any] | None:
        """The checkpoint to continue from (None: a new run), after checking that the run
        folder is one and that resuming continues the run as its record says."""
        assert self.run_dir is not None
        last = check_run_folder(self.run_dir, resume)
        if last is None:
            return None
        state = load_checkpoint(last)
        self._check_resume(state, last)
        metrics = self.run_dir / "metrics.jsonl"
        if metrics.exists():
            _read_metrics(metrics)  # a line torn in the middle is refused here, by rank 0
        return state

    def _check_resume(self, state: dict[str, Any], path: Path) -> None:
        """Refuse to resume with other specs, settings or data than the run was trained with,
        naming every difference; more epochs are allowed (and recorded by :meth:`fit`)."""
        pairs = (
            ("model", state["model_spec"], self.model.spec),
            ("guide", state["guide_spec"], self.guide.spec),
            ("train", state["train_config"], asdict(self.config)),
        )
        differ = [
            f"{kind}.{key}: {was!r} in the run, {now!r} now"
            for kind, saved_spec, spec in pairs
            for key, was, now in differences(saved_spec, spec)
            if not (kind == "train" and key in RESUME_MAY_CHANGE)
        ]
        saved = state["data"]
        for key in ("num_objects", "num_frames", "num_features"):
            if saved.get(key) != self.data_info[key]:
                differ.append(f"data {key}: {saved.get(key)} in the run, {self.data_info[key]} now")
        digest = saved.get("train_digest")
        if digest is not None and digest != self.data_info.get("train_digest"):
            differ.append("the training data (their digest differs: other values)")
        if differ:
            raise ValueError(
                f"cannot resume {path.parent}: it was trained with other settings than these; "
                f"{'; '.join(differ)}. A resumed run continues as recorded (its model.yaml, "
                "guide.yaml and train.yaml): give the options it was started with, or train a "
                "new run in another --out"
            )
        done = state["epoch"]
        if self.config.epochs < done:
            raise ValueError(
                f"cannot resume {path.parent} with train.epochs = {self.config.epochs}: it has "
                f"done {done} epochs already; give at least {done} (or evaluate the run as it is)"
            )

    def _check_replicas(self) -> None:
        """Every process must end with rank 0's parameters and statistics; each says so."""
        dp = self.dp
        assert dp is not None
        mine = distributed.parameters_fingerprint(self.loss_fn)
        everyone = distributed.all_gather_strings(dp, mine)
        differ = [r for r, d in enumerate(everyone) if d != everyone[0]]
        if differ:
            raise distributed.DistributedError(
                f"the replicas of ranks {differ} ended with other parameters than rank 0's "
                f"({everyone}): the processes went out of step"
            )
        logger.info(
            f"rank {dp.rank} of {dp.world_size}: {self.epoch} epochs done, replicas agree "
            f"(parameters {mine})"
        )

    def _update_best(self, record: dict[str, Any], larger_better: bool) -> bool:
        key = f"valid_{self.config.select_metric}"
        value = record.get(key)
        if value is None or (isinstance(value, float) and math.isnan(value)):
            value = -record["train_loss"] if larger_better else record["train_loss"]
        best = self.best["value"]
        if best is None or (value > best if larger_better else value < best):
            self.best = {"value": value, "epoch": record["epoch"], "metric": key}
            return True
        return False


# How torch's and Pyro's checks of distribution arguments (and this package's) describe
# NaN or infinite values: "found invalid values", "got nan", "got values in [nan, nan]".
_NON_FINITE_MESSAGE = re.compile(r"invalid values|\bnan\b|\binf\b", re.IGNORECASE)


def _finite(tensors: Any) -> bool:
    """Whether every floating-point tensor of ``tensors`` holds finite values only."""
    return all(bool(torch.isfinite(t).all()) for t in tensors if t.is_floating_point())


def _read_metrics(path: Path) -> list[tuple[str, dict[str, Any]]]:
    """The lines of a run's metrics.jsonl and their records, in order.

    A torn last line (the run crashed while writing it) is what a crash leaves: it is
    dropped from the file (rewritten whole) and the drop logged. A line that does not read
    before the last is damage no crash explains, and an error naming the file and line."""
    text = path.read_text()
    numbered = [(i, line) for i, line in enumerate(text.splitlines(), 1) if line.strip()]
    out = []
    for i, line in numbered:
        try:
            record = json.loads(line)
            if not isinstance(record, dict) or not isinstance(record.get("epoch"), int):
                raise ValueError("not a record with an epoch")
        except ValueError as err:
            if i == numbered[-1][0]:
                atomic_write_text(path, "".join(f"{kept}\n" for kept, _ in out))
                logger.info(
                    f"{path}: dropped line {i}, the last, which a crash left half-written "
                    f"({line[:40]!r}...)"
                )
                break
            raise ValueError(
                f"{path}, line {i}, is not a metrics record ({err}), and it is not the last "
                "line (which a crash may leave torn): the file was damaged otherwise; repair "
                "or remove that line, then resume"
            ) from None
        out.append((line, record))
    return out


def _detached_copy(state: dict[str, Tensor]) -> dict[str, Tensor]:
    return {key: value.detach().clone() for key, value in state.items()}


def _format_record(record: dict[str, Any]) -> str:
    parts = [f"epoch {record['epoch']}", f"loss {record['train_loss']:.4g}"]
    for key, label in (("valid_edge_accuracy", "acc"), ("valid_nll", "nll"), ("valid_mse", "mse")):
        if key in record:
            parts.append(f"{label} {record[key]:.4g}")
    if record.get("skipped_steps"):
        parts.append(f"skipped {record['skipped_steps']} steps")
    parts.append(f"{record['seconds']:.1f}s")
    return "  ".join(parts)
