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

import torch
from torch import Tensor

from nri_pyro.checkpoints import build_from_checkpoint, load_checkpoint, model_state
from nri_pyro.data.dataset import Normalizer, TrajectoryDataset
from nri_pyro.data.simulate import resolve_device
from nri_pyro.data.systems import SYSTEMS, get_system
from nri_pyro.distributed import DataParallel
from nri_pyro.evaluation import evaluate, memory_safe_batch, normalizer_for, prepare
from nri_pyro.files import atomic_save
from nri_pyro.folders import folder_lock
from nri_pyro.guide import NRIGuide
from nri_pyro.model import NRIModel
from nri_pyro.nn import edges_to_adjacency
from nri_pyro.nn.modes import eval_mode
from nri_pyro.presets import Preset, load_preset
from nri_pyro.specs import (
    TrainConfig,
    apply_overrides,
    load_spec,
    resolve_guide_spec,
    resolve_model_spec,
    resolve_train_config,
)
from nri_pyro.training import Trainer

SpecLike = str | Path | Mapping[str, Any] | None


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
        """``preset`` (a name such as ``"charged5"``, a path, or a :class:`Preset`) gives the
        specs and training settings; ``model_spec`` / ``guide_spec`` replace its specs, and
        ``overrides`` and keyword training settings (``epochs=20``) change its values.
        Without a preset: the spec files (default the paper's) and the paper's recipe.
        ``features`` (default: the preset's ``data.features``) names the features the model
        reads, e.g. the paper's three Kuramoto features ``["dphi_dt", "sin_phi", "omega"]``;
        data with all of their system's features are cut to these, in fit and afterwards."""
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
        """
        if epochs is not None:
            self.config = resolve_train_config({**vars(self.config), "epochs": epochs})
        if self.preset is not None:
            self.preset.check_data(train, "the training data")
        if self.features is not None:
            train = _select_features(train, self.features, "the training data")
            if valid is not None:
                valid = _select_features(valid, self.features, "the validation data")
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
        if valid is not None:  # before training, not after its first epoch
            guide.check_frames(valid.num_frames, "the validation trajectories")
        self.guide = guide.to(self.device)
        self.data_info = {"system": train.metadata.get("system", "custom")}
        if self.preset is not None:
            self.data_info["preset"] = self.preset.name
        if self.features is not None:
            self.data_info["features"] = self.features
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
    def _require_fitted(self) -> tuple[NRIModel, NRIGuide, Normalizer]:
        if self.model is None or self.guide is None or self.normalizer is None:
            raise RuntimeError("this NRI has not been fitted or loaded yet")
        return self.model, self.guide, self.normalizer

    def _inputs(self, data: TrajectoryDataset | Tensor) -> tuple[Tensor, Tensor | None]:
        normalizer = self._require_fitted()[2]
        if isinstance(data, Tensor):
            data = TrajectoryDataset(data)
        n, d = self.data_info.get("num_objects"), self.data_info.get("num_features")
        features = self.data_info.get("features")
        if features is not None and data.num_features != d:  # all the system's features
            data = _select_features(data, features, "the data", self.data_info.get("system"))
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
        data: TrajectoryDataset | Tensor,
        *,
        batch_size: int = 256,
        as_adjacency: bool = False,
        per_frame: bool = False,
    ) -> Tensor:
        """Posterior edge-type probabilities: [S, E, K], or [S, N, N, K] with ``as_adjacency``.

        A dynamic graph (``graph.dynamic``) has them per window, [S, W, E, K]. With
        ``per_frame``, every frame gets its window's (a static graph's: its one graph):
        [S, T, E, K] (or [S, T, N, N, K])."""
        model, guide, _ = self._require_fitted()
        x, _ = self._inputs(data)
        batch_size = memory_safe_batch(batch_size, model, guide, x, self.device)
        probs_of = guide.frame_edge_probs if per_frame else guide.edge_probs
        with eval_mode(guide):
            probs = torch.cat([
                probs_of(x[i : i + batch_size].to(self.device)).cpu()
                for i in range(0, x.shape[0], batch_size)
            ])  # fmt: skip
        if as_adjacency:
            return edges_to_adjacency(probs, x.shape[1], dim=-2)
        return probs

    @torch.no_grad()
    def predict(self, data: TrajectoryDataset | Tensor, steps: int = 20) -> Tensor:
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

    def evaluate(self, data: TrajectoryDataset, *, batch_size: int = 256) -> dict[str, float]:
        """Held-out metrics (see :func:`nri_pyro.evaluation.evaluate`)."""
        model, guide, _ = self._require_fitted()
        x, edges = self._inputs(data)
        return evaluate(
            model, guide, x, edges, objective_name=self.config.objective,
            batch_size=batch_size, device=self.device,
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
    """``data`` cut to the named features of its system (``system`` where the data do not
    say), with a clear error where they are not that system's full set of features."""
    name = data.metadata.get("system") if system is None else system
    if name not in SYSTEMS:
        raise ValueError(
            f"the model reads the features {', '.join(names)}, chosen by name, but {where} are "
            f"of system {name!r}, whose features have no names: give exactly those features"
        )
    known = get_system(name)
    if data.num_features != len(known.feature_names):
        raise ValueError(
            f"{where} have {data.num_features} features; the model reads {', '.join(names)} "
            f"of {name}'s {len(known.feature_names)} ({', '.join(known.feature_names)})"
        )
    return data.select_features(known.feature_indices(names))


def _check_compatible(train: TrajectoryDataset, other: TrajectoryDataset) -> None:
    if other.num_objects != train.num_objects or other.num_features != train.num_features:
        raise ValueError(
            f"validation data have {other.num_objects} objects and {other.num_features} "
            f"features; training data {train.num_objects} and {train.num_features}"
        )
