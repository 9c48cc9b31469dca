"""SVI training and evaluation of an NRI model and guide.

Training is a straight loop over epochs and shuffled minibatches around an ELBO module
(``TraceMeanField_ELBO`` for the "nri" objective, ``Trace_ELBO`` for "concrete") and a
torch optimiser over the model's and guide's parameters. After each epoch: validation,
a line in metrics.jsonl, the last checkpoint, and the best one by the chosen validation
metric. Checkpoints are written atomically and hold everything needed to continue
exactly: parameters, optimiser and scheduler state, the RNG state, the epoch. Minibatch
order is a function of (seed, epoch), so a resumed run sees the same batches. With a
:class:`~nri_pyro.distributed.DataParallel` the same loop runs in every process of a
torchrun launch on its shard of each minibatch (see :mod:`nri_pyro.distributed`).
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pyro
import pyro.distributions as dist
import torch
import yaml
from pyro import poutine
from torch import Tensor
from tqdm.auto import tqdm

from nri_pyro import distributed
from nri_pyro.data.dataset import Normalizer, TrajectoryDataset
from nri_pyro.guide import NRIGuide
from nri_pyro.metrics import EdgeAccumulator, MSEAccumulator
from nri_pyro.model import NRIModel, check_trajectories
from nri_pyro.nn import MLPDecoder, compile_modules, recompute_threshold
from nri_pyro.specs import SELECT_METRICS, TrainConfig

CHECKPOINT_FORMAT = "nri-pyro-checkpoint"
CHECKPOINT_VERSION = 1
ROLLOUT_PREFIX = 50  # the encoder reads frames 0..48; the rollout starts at frame 49
ROLLOUT_STEPS = 20
EVAL_SEED = 1234


def objective(name: str) -> pyro.infer.ELBO:
    """The ELBO of an objective name: "nri" (analytic categorical KL) or "concrete"."""
    if name == "nri":
        return pyro.infer.TraceMeanField_ELBO()
    if name == "concrete":
        return pyro.infer.Trace_ELBO()
    raise ValueError(f"unknown objective {name!r}; valid objectives: nri, concrete")


def normalizer_for(train: TrajectoryDataset) -> Normalizer:
    """The training statistics: those stored with the data, else fitted per feature."""
    if train.normalizer is not None:
        return train.normalizer
    groups = tuple((i,) for i in range(train.num_features))
    return Normalizer.fit(train.trajectories, groups)


def prepare(data: TrajectoryDataset, normalizer: Normalizer) -> tuple[Tensor, Tensor | None]:
    """Normalised float32 trajectories [S, N, T, D] and flattened true edges [S, E] (or None)."""
    check_trajectories(data.trajectories)
    x = normalizer.apply(data.trajectories.double()).float()
    edges = data.edges if data.adjacency is not None else None
    return x, edges


def memory_safe_batch(
    requested: int, model: NRIModel, guide: NRIGuide, x: Tensor, device: torch.device | str
) -> int:
    """``requested``, or fewer trajectories where one batch's widest per-edge tensors (the
    decoder's messages over all blocks, the encoder's edge activations) would exceed a
    sixteenth of the device's memory: evaluation of large systems (N = 100 has 9,900 edges,
    about 100 MB of messages per trajectory at hidden 256) without running out of memory."""
    num_objects, num_frames = x.shape[1], x.shape[2]
    edges = num_objects * (num_objects - 1)
    blocks = 1
    if isinstance(model.decoder, MLPDecoder):  # every block of the trajectory advances at once
        blocks = math.ceil((min(num_frames, guide.num_frames) - 1) / model.prediction_steps)
    encoder_hidden = int(guide.spec["encoder"].get("hidden", 256))
    per_trajectory = edges * max(
        blocks * model.decoder.messages.bytes_per_edge(), 4 * 4 * encoder_hidden
    )
    budget = recompute_threshold(torch.device(device)) // 4
    return max(1, min(requested, budget // per_trajectory))


def _batches(num: int, size: int) -> list[slice]:
    return [slice(i, min(i + size, num)) for i in range(0, num, size)]


@torch.no_grad()
def evaluate(
    model: NRIModel,
    guide: NRIGuide,
    x: Tensor,
    edges: Tensor | None = None,
    *,
    objective_name: str = "nri",
    batch_size: int = 256,
    device: torch.device | str = "cpu",
    anchor_first: bool | None = None,
) -> dict[str, float]:
    """Held-out metrics of normalised trajectories x: [S, N, T, D].

    - edge_accuracy / edge_auroc / edge_density: posterior argmax against the true types,
      best relabelling over the whole set (type 0 fixed when skip-first anchors it);
    - nll: NRI's Gaussian NLL (no constant), summed over frames and features, per object,
      of the multi-step predictions with hard edge samples; mse: their mean squared error;
    - elbo_loss: the objective's negative ELBO per trajectory;
    - mse_1 .. mse_20: rollout error after k steps from frame 49, where T >= 70.

    Runs in eval mode with a fixed seed for the Gumbel noise, without touching the
    global RNG state.
    """
    device = torch.device(device)
    modes = model.training, guide.training
    model.eval()
    guide.eval()
    if anchor_first is None:
        anchor_first = bool(getattr(model.decoder, "skip_first", False))
    frames = guide.num_frames
    elbo = objective(objective_name)
    accumulator = EdgeAccumulator() if edges is not None else None
    rollout = MSEAccumulator()
    totals = {"nll": 0.0, "mse": 0.0, "elbo_loss": 0.0}
    count = x.shape[0]
    batch_size = memory_safe_batch(batch_size, model, guide, x, device)
    variance = model.sigma.detach().square()  # a scalar, or [D] per feature
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(EVAL_SEED)
        for batch in _batches(count, batch_size):
            xb = x[batch].to(device)
            if accumulator is not None:
                accumulator.update(guide.edge_probs(xb).cpu(), edges[batch].cpu())
            xt = xb[:, :, :frames]
            z = guide.sample_edges(xb)
            err = (model.predict(xt, z) - xt[:, :, 1:]).square()
            totals["nll"] += float((err / (2 * variance.to(err))).sum()) / xt.shape[1]
            totals["mse"] += float(err.mean(dim=(1, 2, 3)).sum())
            totals["elbo_loss"] += elbo.loss(model, guide, xt)
            if _has_rollout(xb):
                prefix = xb[:, :, :ROLLOUT_PREFIX]
                preds = model.rollout(prefix, z, ROLLOUT_STEPS)
                target = xb[:, :, ROLLOUT_PREFIX : ROLLOUT_PREFIX + ROLLOUT_STEPS]
                rollout.update(preds, target)
    model.train(modes[0])
    guide.train(modes[1])
    metrics = {k: v / count for k, v in totals.items()}
    if accumulator is not None:
        metrics["edge_accuracy"] = accumulator.accuracy(anchor_first)
        metrics["edge_auroc"] = accumulator.auroc(anchor_first)
        metrics["edge_density"] = accumulator.density(anchor_first)
    if _has_rollout(x):
        per_step = rollout.result()
        for k in range(ROLLOUT_STEPS):
            metrics[f"mse_{k + 1}"] = float(per_step[k])
    return metrics


@torch.no_grad()
def importance_log_weights(
    model: NRIModel,
    guide: NRIGuide,
    x: Tensor,
    *,
    num_samples: int = 64,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
) -> Tensor:
    """Importance log-weights log p(x, z) - log q(z | x) of trajectories x: [S, num_samples].

    The weights are those of the discrete model that NRI evaluates: z are one-hot edge types
    drawn from the guide's categorical probabilities, the decoder reads the first
    ``num_frames`` frames (as in training), and the Gaussian likelihood keeps its constant,
    so ``logsumexp(w) - log(num_samples)`` estimates the held-out log evidence log p(x) in
    the model's (normalised) units. Global latents (e.g. Dirichlet edge frequencies) are
    drawn from the guide, whose evaluation state is their posterior given the training
    data, and enter the weights through p(z | globals): the estimate is of the posterior
    predictive density of a new trajectory. A shared graph is drawn from its posterior too,
    so its weights are the likelihood alone. Known edges are fixed and not counted.
    """
    if not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"num_samples must be a positive integer, got {num_samples!r}")
    device = torch.device(device)
    modes = model.training, guide.training
    model.eval()
    guide.eval()
    k = model.num_edge_types
    structure = model.structure
    out = []
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(EVAL_SEED)
        for batch in _batches(x.shape[0], batch_size):
            xt = x[batch, :, : guide.num_frames].to(device)
            b = xt.shape[0]
            layout = structure.layout(xt.shape[1], xt.device)
            probs = guide.slot_probs(xt)  # [B or 1, U, K]
            known = structure.known_slots(None, None, layout, b)
            latent = torch.ones(probs.shape[:-1], dtype=torch.bool, device=xt.device)
            if known is not None:
                latent = ~known[1][: probs.shape[0]]
            weights = []
            per_pass = max(1, batch_size // b)  # samples decoded together, as one batch
            for first in range(0, num_samples, per_pass):
                s = min(per_pass, num_samples - first)
                prior_probs = (
                    torch.stack([_prior_probs(model, guide, probs, xt) for _ in range(s)])
                    .unsqueeze(-2)
                    .unsqueeze(-2)
                )  # [s, 1, 1, K]
                types = dist.Categorical(probs=probs).sample((s,))  # [s, B or 1, U]
                z = torch.nn.functional.one_hot(types, k).to(xt.dtype)
                z = layout.to_edges(z).expand(s, b, -1, -1).flatten(0, 1)
                xs = xt.expand(s, *xt.shape).flatten(0, 1)
                loc = model.predict(xs, z)
                sigma = model.sigma.to(loc.dtype)
                log_lik = dist.Normal(loc, sigma).log_prob(xs[:, :, 1:]).sum((1, 2, 3))
                log_w = log_lik.view(s, b)
                if not structure.shared:
                    index = types.unsqueeze(-1)
                    log_prior = prior_probs.log().expand(s, *probs.shape).gather(-1, index)
                    log_q = probs.log().expand(s, *probs.shape).gather(-1, index)
                    log_w = log_w + ((log_prior - log_q).squeeze(-1) * latent).sum(-1)
                weights.append(log_w)
            out.append(torch.cat(weights).T.cpu())
    model.train(modes[0])
    guide.train(modes[1])
    return torch.cat(out)


def _prior_probs(model: NRIModel, guide: NRIGuide, slot_probs: Tensor, like: Tensor) -> Tensor:
    """The prior's edge-type probabilities, its global latents drawn from the guide."""
    if guide.prior_guide is None:
        return model.prior.sample(like)
    trace = poutine.trace(guide.prior_guide).get_trace(slot_probs, 1.0)
    return poutine.replay(model.prior.sample, trace=trace)(like)


def log_evidence(log_weights: Tensor) -> Tensor:
    """Per-trajectory log evidence estimates [S] from importance log-weights [S, K]."""
    return torch.logsumexp(log_weights, dim=-1) - math.log(log_weights.shape[-1])


def _has_rollout(x: Tensor) -> bool:
    return x.shape[2] >= ROLLOUT_PREFIX + ROLLOUT_STEPS


def atomic_save(obj: Any, path: Path) -> None:
    """torch.save to a temporary file beside ``path``, then rename: never half-written."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """A checkpoint written by :class:`Trainer`, with clear errors for anything else."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # any unpickling failure means the same thing
        raise ValueError(
            f"{path} is not a readable checkpoint ({type(err).__name__}: {err})"
        ) from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not an nri-pyro checkpoint")
    if state.get("version", 0) > CHECKPOINT_VERSION:
        raise ValueError(f"{path} was written by a newer nri-pyro (format {state['version']})")
    return state


def model_state(
    model: NRIModel,
    guide: NRIGuide,
    config: TrainConfig,
    normalizer: Normalizer,
    data_info: dict[str, Any],
) -> dict[str, Any]:
    """What rebuilds a trained model and guide: specs, weights, data shape, statistics."""
    return {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "model_spec": model.spec,
        "guide_spec": guide.spec,
        "train_config": asdict(config),
        "data": data_info,
        "normalization": normalizer.to_dict(),
        "model_state": model.state_dict(),
        "guide_state": guide.state_dict(),
    }


def build_from_checkpoint(state: dict[str, Any], device: torch.device) -> tuple[NRIModel, NRIGuide]:
    info = state["data"]
    model = NRIModel(state["model_spec"], info["num_features"]).to(device)
    guide = NRIGuide.for_model(
        state["guide_spec"], model, info["num_frames"], info["num_objects"]
    ).to(device)
    model.load_state_dict(state["model_state"])
    guide.load_state_dict(state["guide_state"])
    return model, guide


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
        log: Callable[[str], None] | None = print,
        data_parallel: distributed.DataParallel | None = None,
    ) -> None:
        self.model, self.guide, self.config = model, guide, config
        self.device = torch.device(device)
        self.dp = data_parallel
        # Only one process writes the run folder and logs.
        self.writes = data_parallel is None or data_parallel.is_main
        if not self.writes:
            log = None
        self.train_x, self.train_edges = train
        self.valid = valid
        self.normalizer = normalizer
        self.run_dir = None if run_dir is None else Path(run_dir)
        self.log = log or (lambda _message: None)
        x = self.train_x
        self.data_info = {
            "num_objects": x.shape[1],
            "num_frames": x.shape[2],
            "num_features": x.shape[3],
            **(data_info or {}),
        }
        # graph.known.fraction: a fixed part of the training edges is observed (semi-supervised)
        self.train_mask = model.structure.training_mask(x.shape[0], x.shape[1])
        if self.train_mask is not None and self.train_edges is None:
            raise ValueError(
                "graph.known.fraction reveals true edges in training, but the training data "
                "have no graphs"
            )
        if config.compile:
            compile_modules(model), compile_modules(guide)
        self.loss_fn = objective(config.objective)(model, guide)
        self.step_fn = self.loss_fn if data_parallel is None else self._data_parallel(x)
        self.optimizer = torch.optim.Adam(self.loss_fn.parameters(), lr=config.lr)
        self.scheduler = torch.optim.lr_scheduler.StepLR(
            self.optimizer, step_size=config.lr_decay_every, gamma=config.lr_decay
        )
        self.epoch = 0  # epochs completed
        self.best: dict[str, Any] = {"value": None, "epoch": None}
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
                "data": distributed.fingerprint(x),
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

    def _write_run_files(self) -> None:
        assert self.run_dir is not None
        self.run_dir.mkdir(parents=True, exist_ok=True)
        for name, content in (
            ("model.yaml", self.model.spec),
            ("guide.yaml", self.guide.spec),
            ("train.yaml", asdict(self.config)),
        ):
            (self.run_dir / name).write_text(yaml.safe_dump(content, sort_keys=False))

    def _truncate_metrics(self) -> None:
        """Drop metric lines of epochs after the checkpoint (a run killed in between)."""
        path = self.run_dir / "metrics.jsonl"
        if not path.exists():
            return
        kept = [
            line
            for line in path.read_text().splitlines()
            if line.strip() and json.loads(line)["epoch"] <= self.epoch
        ]
        path.write_text("".join(f"{line}\n" for line in kept))
        self.history = [json.loads(line) for line in kept]

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
        total = 0.0
        batches = _batches(num, c.batch_size)
        dp = self.dp
        if dp is not None and batches[-1].stop - batches[-1].start < dp.world_size:
            batches = batches[:-1]  # fewer trajectories than processes: left for other epochs
        bar = tqdm(
            batches,
            desc=f"epoch {epoch + 1}/{c.epochs}",
            # None: a bar on a terminal only, never carriage returns in a log file
            disable=None if c.progress and self.writes else True,
            leave=False,
        )
        for batch in bar:
            positions = order[batch]
            idx = positions if dp is None else dp.shard(positions)
            x = self.train_x[idx].to(self.device, non_blocking=True)
            known = {}
            if self.train_mask is not None:
                known = {
                    "edges": self.train_edges[idx].to(self.device),
                    "edge_mask": self.train_mask[idx].to(self.device),
                }
            # The ELBO of the whole training set, estimated from this minibatch, per trajectory.
            with distributed.stepping(dp, len(positions)), self._autocast():
                loss = self.step_fn(x, num_trajectories=num, kl_weight=weight, **known) / num
            # Summed over the processes (every one sees the same), before any can stop.
            batch_loss = distributed.sum_over_processes(dp, float(loss.detach()) * len(idx))
            if not math.isfinite(batch_loss):
                raise FloatingPointError(
                    f"the loss became {batch_loss} at epoch {epoch + 1}; lower train.lr or set "
                    "train.grad_clip"
                )
            if dp is not None:  # DDP averages the gradients: weight by the share of the batch
                loss = loss * (dp.world_size * len(idx) / len(positions))
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if c.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(self.loss_fn.parameters(), c.grad_clip)
            self.optimizer.step()
            total += batch_loss
            bar.set_postfix(loss=f"{batch_loss / len(positions):.4g}")
        self.scheduler.step()
        seen = sum(b.stop - b.start for b in batches)
        return total / seen

    def fit(self, resume: bool = False) -> list[dict[str, Any]]:
        """Train to ``config.epochs``; with ``resume`` continue from the run's last checkpoint."""
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
                    self._truncate_metrics()
                self.log(f"resuming {self.run_dir} after epoch {self.epoch}")
            if self.writes:
                self._write_run_files()
        larger_better = SELECT_METRICS[c.select_metric]
        while self.epoch < c.epochs:
            epoch = self.epoch
            start = time.perf_counter()
            train_loss = self.train_epoch(epoch)
            record: dict[str, Any] = {
                "epoch": epoch + 1,
                "train_loss": train_loss,
                "lr": self.optimizer.param_groups[0]["lr"],
                "kl_weight": self.kl_weight(epoch),
            }
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
            if c.progress:
                self.log(_format_record(record))
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
        assert self.run_dir is not None
        last = self.run_dir / "checkpoint_last.pt"
        if resume:
            if not last.exists():
                raise FileNotFoundError(f"nothing to resume: {last} does not exist")
            return load_checkpoint(last)
        if last.exists():
            raise FileExistsError(
                f"{self.run_dir} already holds a run; pass --resume to continue it or "
                "choose another --out"
            )
        return None

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
        print(
            f"rank {dp.rank} of {dp.world_size}: {self.epoch} epochs done, replicas agree "
            f"(parameters {mine})",
            flush=True,
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


def _format_record(record: dict[str, Any]) -> str:
    parts = [f"epoch {record['epoch']}", f"loss {record['train_loss']:.4g}"]
    for key, label in (("valid_edge_accuracy", "acc"), ("valid_nll", "nll"), ("valid_mse", "mse")):
        if key in record:
            parts.append(f"{label} {record[key]:.4g}")
    parts.append(f"{record['seconds']:.1f}s")
    return "  ".join(parts)
