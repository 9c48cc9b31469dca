"""A facade for notebooks and scripts: fit, infer edges, predict, evaluate, save, load.

The model and guide stay plain Pyro programs (``nri.model``, ``nri.guide``); this class
only wires data, normalisation and training together::

    splits = simulate_preset("springs5-quick")
    nri = NRI(preset="springs5-quick").fit(splits["train"], splits["valid"])
    probs = nri.infer_edges(splits["test"])      # [S, E, K]
    print(nri.evaluate(splits["test"]))
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from nri_pyro.checkpoints import build_from_checkpoint, load_checkpoint, model_state
from nri_pyro.data.dataset import Normalizer, TrajectoryDataset, normalizer_for, prepare
from nri_pyro.data.features import feature_names, select_named_features
from nri_pyro.data.systems import get_system
from nri_pyro.devices import resolve_device
from nri_pyro.distributed import DataParallel
from nri_pyro.evaluation import evaluate, memory_safe_batch
from nri_pyro.files import atomic_save
from nri_pyro.folders import folder_lock
from nri_pyro.guide import NRIGuide
from nri_pyro.model import NRIModel
from nri_pyro.nn import edges_to_adjacency
from nri_pyro.nn.modes import eval_mode
from nri_pyro.presets import Preset, load_preset
from nri_pyro.refine import check_refine, refined
from nri_pyro.specs import (
    apply_overrides,
    load_spec,
    resolve_guide_spec,
    resolve_model_spec,
    resolve_train_config,
)
from nri_pyro.train_config import TrainConfig
from nri_pyro.training import Trainer

SpecLike = str | Path | Mapping[str, Any] | None
# Trajectories [S, N, T, D]: a dataset, or a tensor or NumPy array of them.
DataLike = TrajectoryDataset | Tensor | np.ndarray


def resolve_specs(
    model_spec: SpecLike = None,
    guide_spec: SpecLike = None,
    overrides: Iterable[str] = (),
    train: Mapping[str, Any] | None = None,
) -> tuple[dict[str, Any], dict[str, Any], TrainConfig]:
    """Model spec, guide spec and training settings, with ``key=value`` overrides applied.

    A spec is a mapping, a path, or the name of a shipped spec (``nri_sparse``, ``cnn``)."""
    model = load_spec("model", model_spec)
    guide = load_spec("guide", guide_spec)
    train_settings = dict(train or {})
    apply_overrides(model, guide, train_settings, overrides)
    return (
        resolve_model_spec(model),
        resolve_guide_spec(guide),
        resolve_train_config(train_settings),
    )


def build(
    model_spec: SpecLike, guide_spec: SpecLike, data: TrajectoryDataset | Tensor,
    overrides: Iterable[str] = (),
) -> tuple[NRIModel, NRIGuide]:  # fmt: skip
    """A model and guide sized for ``data`` ([S, N, T, D]), for your own SVI loop."""
    model_s, guide_s, _ = resolve_specs(model_spec, guide_spec, overrides)
    x = data.trajectories if isinstance(data, TrajectoryDataset) else data
    model = NRIModel(model_s, x.shape[-1])
    model.structure.check_objects(x.shape[1])
    guide = NRIGuide.for_model(guide_s, model, x.shape[2], x.shape[1])
    return model, guide


class NRI:
    """Neural relational inference: a model, a guide, and the statistics of their data."""

    def __init__(
        self,
        model_spec: SpecLike = None,
        guide_spec: SpecLike = None,
        *,
        preset: str | Path | Preset | None = None,
        overrides: Iterable[str] = (),
        device: str | torch.device = "cpu",
        features: Sequence[str] | None = None,
        **train_settings: Any,
    ) -> None:
        """Args:
        model_spec: a model spec (a shipped name such as ``"nri_sparse"``, a path, or a
            mapping); replaces the preset's. Default: the preset's, else ``"nri"``.
        guide_spec: a guide spec, likewise (default the preset's, else ``"mlp"``).
        preset: a name such as ``"charged5"``, a path, or a :class:`Preset`: the specs and
            training settings to start from. None or ``"none"`` (as ``--preset none``):
            the spec files and the paper's recipe.
        overrides: ``key=value`` changes (``"decoder.hidden=64"``, ``"train.lr=1e-3"``).
        device: where the model lives and trains (``"cpu"``, ``"cuda"``, ``"cuda:1"``).
        features: the features the model reads (default: the preset's
            ``data.features``, else all of its system's), e.g. the paper's three Kuramoto
            features ``["dphi_dt", "sin_phi", "omega"]``. Features are picked by name, in
            fit and afterwards: data whose metadata name their features
            (``feature_names``; a system's data without names have that system's) are cut
            and ordered to these, and data without some of them are refused; data without
            names must hold exactly these.
        **train_settings: training settings (:class:`~nri_pyro.train_config.TrainConfig`
            keys, e.g. ``epochs=20``), over the preset's.
        """
        if preset == "none":
            preset = None
        self.preset = None if preset is None else _as_preset(preset)
        if features is None and self.preset is not None:
            features = self.preset.data.get("features")
        self.features = None if features is None else list(features)
        if self.preset is not None:
            model_spec = self.preset.model if model_spec is None else model_spec
            guide_spec = self.preset.guide if guide_spec is None else guide_spec
            train_settings = {**self.preset.train, **train_settings}
        self.model_spec, self.guide_spec, self.config = resolve_specs(
            model_spec, guide_spec, overrides, train_settings
        )
        self.device = resolve_device(device)
        self.model: NRIModel | None = None
        self.guide: NRIGuide | None = None
        self.normalizer: Normalizer | None = None
        self.data_info: dict[str, Any] = {}
        self.history: list[dict[str, Any]] = []

    # --- training ----------------------------------------------------------------------
    def fit(
        self,
        train: TrajectoryDataset,
        valid: TrajectoryDataset | None = None,
        *,
        epochs: int | None = None,
        out: str | Path | None = None,
        resume: bool = False,
        data_parallel: DataParallel | None = None,
        held_out: Mapping[str, TrajectoryDataset | None] | None = None,
    ) -> NRI:
        """Train on raw (unnormalised) splits; ``out`` makes it a run folder with checkpoints.

        Returns ``self`` holding the model of the epoch that ``train.select_metric`` chose (on
        ``valid``, else the training loss), with or without ``out``. Per-epoch lines go to
        the ``nri_pyro`` logger (``nri_pyro.log_to()`` shows them). ``resume`` continues the
        run in ``out`` as recorded: other specs, settings or data are refused; more epochs
        are allowed and recorded in its resumes.jsonl.

        ``data_parallel``: this process's place in a torchrun launch
        (:func:`nri_pyro.distributed.from_environment`); every process calls ``fit`` with the
        same arguments and rank 0 writes ``out``.

        ``held_out``: splits read after training (``{"test": test}``), whose frames are
        checked against what the encoder reads before the first epoch, as ``valid``'s are.

        Without ``valid`` the best epoch is the one with the lowest training loss, the mean
        over its minibatches, each measured before that minibatch's update: the saved
        weights are those at the end of that epoch, after its updates. Weights whose outputs
        are not finite are never kept: training stops with
        :class:`~nri_pyro.training.TrainingDiverged` naming the epoch.
        """
        if epochs is not None:
            self.config = resolve_train_config({**vars(self.config), "epochs": epochs})
        if self.preset is not None:
            self.preset.check_data(train, "the training data")
        features = self._features_to_read(train)
        if features is not None:
            train = _select_features(train, features, "the training data")
            if valid is not None:
                valid = _select_features(
                    valid, features, "the validation data", train.metadata.get("system")
                )
        self.normalizer = normalizer_for(train)
        train_xy = prepare(train, self.normalizer)
        valid_xy = None if valid is None else prepare(valid, self.normalizer)
        if valid is not None:
            _check_compatible(train, valid)
        x = train_xy[0]
        torch.manual_seed(self.config.seed)
        self.model = NRIModel(self.model_spec, x.shape[3]).to(self.device)
        self.model.structure.check_objects(x.shape[1])
        guide = NRIGuide.for_model(self.guide_spec, self.model, x.shape[2], x.shape[1])
        # Before training, not after its last epoch: every split that will be read, and
        # how the held-out ones will be scored.
        _check_frames(guide, {"validation": valid, **(held_out or {})})
        try:
            check_refine(self.config.eval_refine, self.model, guide, x.shape[1])
        except ValueError as err:
            raise ValueError(f"train.eval_refine={self.config.eval_refine!r}: {err}") from None
        self.guide = guide.to(self.device)
        self.data_info = {"system": train.metadata.get("system", "custom")}
        if self.preset is not None:
            self.data_info["preset"] = self.preset.name
        if features is not None:
            self.data_info["features"] = features
        trainer = Trainer(
            self.model, self.guide, train_xy, valid_xy, self.config,
            normalizer=self.normalizer, run_dir=out, device=self.device,
            data_info=self.data_info, data_parallel=data_parallel,
        )  # fmt: skip
        writes = out is not None and (data_parallel is None or data_parallel.is_main)
        with folder_lock(out) if writes else nullcontext():  # one writer of a run folder
            self.history = trainer.fit(resume=resume)
        self.data_info = trainer.data_info
        # The model select_metric chose (train.select_metric), with or without a run folder.
        if out is not None and (data_parallel is None or data_parallel.is_main):
            best = Path(out) / "checkpoint_best.pt"
            if best.exists():
                self._load_state(load_checkpoint(best))
        elif trainer.best_weights is not None:
            self.model.load_state_dict(trainer.best_weights["model_state"])
            self.guide.load_state_dict(trainer.best_weights["guide_state"])
        return self

    # --- using a trained model ---------------------------------------------------------
    @property
    def window(self) -> int | None:
        """Frames per window of a dynamic graph (``graph.dynamic.window``); None when the
        graph is static."""
        window = (self.model_spec.get("graph") or {}).get("dynamic")
        return None if window is None else window["window"]

    def window_of_frames(self, num_frames: int) -> Tensor:
        """The window of each frame of a trajectory of ``num_frames`` frames, [T] (the last
        window takes the frames left over: :mod:`nri_pyro.structure`'s one window rule)."""
        model, _, _ = self._require_fitted()
        return model.structure.window_of_frames(num_frames, "cpu")

    def _require_fitted(self) -> tuple[NRIModel, NRIGuide, Normalizer]:
        if self.model is None or self.guide is None or self.normalizer is None:
            raise RuntimeError("this NRI has not been fitted or loaded yet")
        return self.model, self.guide, self.normalizer

    def _features_to_read(self, train: TrajectoryDataset) -> list[str] | None:
        """The features a model fitted on ``train`` reads: those given (or the preset's
        ``data.features``), else all of the preset's system's, else the training data's own
        (None where they have no names)."""
        if self.features is not None:
            return list(self.features)
        if self.preset is not None:
            return list(get_system(self.preset.system).feature_names)
        return feature_names(train)

    def select_model_features(self, data: DataLike, where: str = "the data") -> TrajectoryDataset:
        """``data`` as a dataset holding the features the model reads, in its order, picked
        by name where the data name theirs (see ``features`` in :class:`NRI`); a tensor or
        NumPy array [S, N, T, D] holds the model's features, or all of its system's.
        ``where`` names the data in errors."""
        self._require_fitted()
        data = _as_dataset(data)
        features = self.data_info.get("features")
        if features is None:
            return data
        return _select_features(data, features, where, self.data_info.get("system"))

    def _inputs(self, data: DataLike) -> tuple[Tensor, Tensor | None]:
        normalizer = self._require_fitted()[2]
        data = self.select_model_features(data)
        if len(data) == 0:
            raise ValueError(
                "the data hold no trajectories (S = 0 in [S, N, T, D]): give at least one"
            )
        n, d = self.data_info.get("num_objects"), self.data_info.get("num_features")
        if n is not None and data.num_objects != n:
            raise ValueError(
                f"the model was trained on {n} objects, the data have {data.num_objects}"
            )
        if d is not None and data.num_features != d:
            raise ValueError(
                f"the model was trained on {d} features, the data have {data.num_features}"
            )
        if data.num_frames < 2:
            raise ValueError("the data need at least 2 frames")
        return prepare(data, normalizer)

    @torch.no_grad()
    def infer_edges(
        self,
        data: DataLike,
        *,
        batch_size: int = 256,
        as_adjacency: bool = False,
        per_frame: bool = False,
        refine: int | str = 0,
    ) -> Tensor:
        """Posterior edge-type probabilities: [S, E, K], or [S, N, N, K] with ``as_adjacency``.

        ``data``: a :class:`TrajectoryDataset`, or trajectories [S, N, T, D] as a tensor or
        a NumPy array (S >= 1), in the data's own units (see ``features`` in :class:`NRI`).

        A dynamic graph (``graph.dynamic``) has them per window, [S, W, E, K]. With
        ``per_frame``, every frame gets its window's (a static graph's: its one graph):
        [S, T, E, K] (or [S, T, N, N, K]).

        ``refine`` = K > 0: the probabilities after K steps of semi-amortized refinement of
        each trajectory's logits on its own ELBO (:mod:`nri_pyro.refine`; the weights do not
        change; one relaxed sample per step from the global RNG); ``refine="exact"``: a
        node-level prior's exact posterior over its graphs."""
        model, guide, _ = self._require_fitted()
        x, _ = self._inputs(data)
        check_refine(refine, model, guide, x.shape[1])
        batch_size = memory_safe_batch(batch_size, model, guide, x, self.device)
        probs_of = guide.frame_edge_probs if per_frame else guide.edge_probs
        out = []
        with eval_mode(model, guide):
            for i in range(0, x.shape[0], batch_size):
                xb = x[i : i + batch_size].to(self.device)
                fixed = refined(model, guide, xb[:, :, : guide.num_frames], refine)
                with fixed, torch.no_grad():
                    out.append(probs_of(xb).cpu())
        probs = torch.cat(out)
        if as_adjacency:
            return edges_to_adjacency(probs, x.shape[1], dim=-2)
        return probs

    @torch.no_grad()
    def predict(self, data: DataLike, steps: int = 20) -> Tensor:
        """Roll out ``steps`` frames after each trajectory, in the data's own units.

        The encoder reads the first frames it was trained on; the decoder starts from the
        last given frame (an RNN decoder burns in on all of them). Edges are the posterior's
        most likely types (a dynamic graph's: its last window's after the data end).
        Returns [S, N, steps, D].
        """
        model, guide, normalizer = self._require_fitted()
        x, _ = self._inputs(data)
        out = []
        size = memory_safe_batch(256, model, guide, x, self.device)
        with eval_mode(model, guide):
            for i in range(0, x.shape[0], size):
                xb = x[i : i + size].to(self.device)
                probs = guide.edge_probs(xb)
                z = torch.nn.functional.one_hot(probs.argmax(-1), probs.shape[-1]).to(xb.dtype)
                out.append(model.rollout(xb, z, steps).cpu())
        return normalizer.invert(torch.cat(out).double())

    def evaluate(
        self, data: TrajectoryDataset, *, batch_size: int = 256, refine: int | str | None = None
    ) -> dict[str, float]:
        """Held-out metrics (see :func:`nri_pyro.evaluation.evaluate`; ``refine`` = K: after
        K steps of semi-amortized refinement, with the amortization gap; "exact": a
        node-level prior's exact posterior; None: the run's ``train.eval_refine``, whose
        default is 0). The record's ``refine_steps`` says which was used."""
        model, guide, _ = self._require_fitted()
        if refine is None:
            refine = self.config.eval_refine
        x, edges = self._inputs(data)  # evaluate checks refine before any work
        return evaluate(
            model, guide, x, edges, objective_name=self.config.objective,
            batch_size=batch_size, device=self.device, refine=refine,
        )  # fmt: skip

    # --- files -------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write a self-contained checkpoint (specs, weights, normalisation statistics)."""
        model, guide, normalizer = self._require_fitted()
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_save(model_state(model, guide, self.config, normalizer, self.data_info), path)
        return path

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "cpu") -> NRI:
        """From a checkpoint file, or a run folder (its best checkpoint)."""
        path = Path(path)
        if path.is_dir():
            path = path / "checkpoint_best.pt"
        state = load_checkpoint(path)
        nri = cls.__new__(cls)
        nri.device = resolve_device(device)
        nri.history = []
        nri.preset = None
        nri._load_state(state)
        return nri

    def _load_state(self, state: dict[str, Any]) -> None:
        self.model_spec, self.guide_spec = state["model_spec"], state["guide_spec"]
        self.config = TrainConfig(**state["train_config"])
        self.normalizer = Normalizer.from_dict(state["normalization"])
        self.data_info = dict(state["data"])
        self.features = self.data_info.get("features")
        self.model, self.guide = build_from_checkpoint(state, self.device)


def _as_preset(preset: str | Path | Preset) -> Preset:
    return preset if isinstance(preset, Preset) else load_preset(preset)


def _select_features(
    data: TrajectoryDataset, names: Sequence[str], where: str, system: str | None = None
) -> TrajectoryDataset:
    """``data`` cut to the named features, found by name (``system`` names the features of
    data that name no system), with a clear error naming both lists where they lack some."""
    return select_named_features(data, names, where, system)


def _as_dataset(data: DataLike) -> TrajectoryDataset:
    """A dataset of trajectories [S, N, T, D] given as a dataset, a tensor or an array."""
    if isinstance(data, TrajectoryDataset):
        return data
    if isinstance(data, (Tensor, np.ndarray)):
        return TrajectoryDataset(torch.as_tensor(data))
    raise TypeError(
        "data must be a TrajectoryDataset, or trajectories [S, N, T, D] as a torch tensor or "
        f"a NumPy array, got {type(data).__name__}"
    )


def _check_frames(guide: NRIGuide, splits: Mapping[str, TrajectoryDataset | None]) -> None:
    """A clear error, before any training, for a split too short for the encoder (see
    :meth:`NRIGuide.check_frames`) or the decoder (2 frames: one to predict from, one to
    predict), naming the split, its frames and the need."""
    for name, data in splits.items():
        if data is None:
            continue
        where = f"the {name} trajectories"
        if data.num_frames < 2:
            raise ValueError(
                f"the decoder needs at least 2 frames (one to predict from, one to predict), "
                f"but {where} have {data.num_frames}: give the {name} split more frames"
            )
        try:
            guide.check_frames(data.num_frames, where)
        except ValueError as err:
            raise ValueError(f"{err}: give the {name} split at least that many frames") from None


def _check_compatible(train: TrajectoryDataset, other: TrajectoryDataset) -> None:
    if other.num_objects != train.num_objects or other.num_features != train.num_features:
        raise ValueError(
            f"validation data have {other.num_objects} objects and {other.num_features} "
            f"features; training data {train.num_objects} and {train.num_features}"
        )
