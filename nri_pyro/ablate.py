"""Prior ablation studies: every combination of spec values, several seeds, one table.

A study varies spec keys (``prior.name=uniform,sparse,dirichlet``, ``prior.no_edge=0.5,0.8``,
``graph.symmetric=false,true``, ``train.lr=...``), trains every combination with every seed,
and evaluates each run on held-out data: edge accuracy, AUROC, inferred edge density,
rollout MSE after 1/10/20 steps, the negative ELBO, and the held-out log evidence
(:func:`nri_pyro.evidence.held_out_log_evidence`: exact where the graphs are few, else
estimated) with its Pareto-k diagnostic (the median k-hat over held-out trajectories and
the fraction above 0.7, where the estimate is unreliable; the table marks the evidence †
where that fraction exceeds 10%). On
data whose graphs change over time (per-frame truth) the edge metrics are per frame and the
table adds switch-time precision and recall (:func:`nri_pyro.evaluation.evaluate`).

Settings that must change together, which a product of values cannot express (static NRI
against a Markov prior over windows: ``prior.name=markov`` needs ``graph.dynamic``), are
explicit variants: ``"LABEL: key=value key=value"`` (:func:`parse_variant`), each a set of
overrides on top of the specs. With ``vary`` as well, every explicit variant is combined
with every combination of the varied values (a key may not be in both).

A study may also vary the data the preset simulates (not with ``data``, files it cannot
simulate again): ``data.train`` (training trajectories), ``data.frames`` (observed length),
``data.objects``, ``data.params.noise`` (observation noise), ``data.params.edge_prob`` (true
density), ... (:mod:`nri_pyro.study_data`), in ``vary`` and in explicit variants alike.
Each data setting is simulated once into ``out/data/<setting>/`` and shared by every variant
and seed that uses it; validation and test trajectories do not depend on ``data.train``,
so rows of every training size are scored on one test set (each normalised by its own
training split's statistics). The tables get a column per data key varied, and the figures
each metric against a numeric data key, one line per prior (``data.train`` on a log axis).

Every run is its own process (``jobs`` at once), in its own folder under ``out/runs/``; a
finished run is skipped when the study runs again, an interrupted one resumes from its last
checkpoint, and a failed one is reported in the table with its error, without stopping the
others.

    result = ablate(["prior.name=uniform,sparse,dirichlet"], seeds=2, data="data/s5", out="st")
    result = ablate(["data.train=50,500,5000", "prior.name=uniform,sparse"], out="st2")
    result = ablate(variants=["static: prior.name=uniform",
                              "markov: prior.name=markov graph.dynamic.window=7"], ...)
    result                     # a table in a notebook
    result.variants[0]         # one row: variant, runs, failed, <metric>_mean, <metric>_std

This module plans and runs a study (:class:`Study`, :func:`ablate`); its parts live beside
it: the variants and seeds (:mod:`nri_pyro.study_variants`), the data settings
(:mod:`nri_pyro.study_data`), one run in its own process (:mod:`nri_pyro.study_run`) and
the tables (:mod:`nri_pyro.study_tables`). Their public names are importable from here too.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch

from nri_pyro.checkpoints import differences
from nri_pyro.files import atomic_write, atomic_write_text
from nri_pyro.folders import check_output_folder, folder_lock
from nri_pyro.presets import Preset, load_preset, simulate_preset
from nri_pyro.signatures import forwarding
from nri_pyro.study_data import (
    check_data_key,
    data_shape,
    data_slug,
    data_source,
    data_value,
    data_with,
    is_data_key,
)
from nri_pyro.study_run import CHILD, ERROR_FILE, RESULT_FILE, child_main, run_child
from nri_pyro.study_tables import (
    EXTRA_METRICS,
    OPTIONAL_METRICS,
    TABLE_METRICS,
    UNTRUSTED_K_SHARE,
    AblationResult,
    markdown_table,
    summarize,
    write_csv,
)
from nri_pyro.study_variants import Variant, check_seeds, parse_variant, parse_vary, variants

# The public names of the study's parts, importable from here as before they moved out.
__all__ = [
    "CHILD",
    "ERROR_FILE",
    "EXTRA_METRICS",
    "OPTIONAL_METRICS",
    "RESULT_FILE",
    "TABLE_METRICS",
    "UNTRUSTED_K_SHARE",
    "AblationResult",
    "Study",
    "Variant",
    "ablate",
    "child_main",
    "markdown_table",
    "parse_variant",
    "parse_vary",
    "run_child",
    "summarize",
    "variants",
]

logger = logging.getLogger(__name__)

_combine = variants  # Study.__init__'s own argument is named `variants`


class Study:
    """A planned study: specs, varied values, seeds and data, checked before any run.

    Args:
        vary: ``"KEY=V1,V2"`` settings to vary; every combination is a variant. A key is a
            spec key (``prior.name``) or a data key of the preset (``data.train``, ...).
        out: the study's folder (runs, table, figures); a rerun resumes it.
        variants: explicit variants ``"LABEL: key=value ..."`` (:func:`parse_variant`),
            instead of ``vary`` or combined with every combination of its values.
        preset: the specs, training settings and (without ``data``) the data every run
            starts from; without one, the spec files and the paper's recipe on ``data``.
        model_spec, guide_spec: replace the preset's specs (a name, path or mapping).
        seeds: a count (seeds 0..n-1) or a list of distinct training seeds.
        overrides: ``key=value`` changes that every variant shares.
        data: a dataset folder to train and evaluate on (else the preset's data, simulated
            once into ``out/data``).
        epochs: shorthand for the override ``train.epochs=N``.
        device: where every run trains.
        jobs: runs at once, each in its own process. On one CUDA device, K runs are
            first checked to fit in its free memory (an estimate of a training step's,
            :func:`nri_pyro.evaluation.training_step_bytes`), and each may take 1/K of it.
        evidence_samples: importance samples (or annealed chains) per held-out trajectory
            for the log evidence.
        evidence_method: how the held-out log evidence is computed
            (:data:`nri_pyro.evidence.METHODS`; "auto": exact where the graphs are few,
            else "local"; "annealed": annealed importance sampling, slower, whose Pareto k
            is believable with a likelihood as broad as the data's noise).
        evidence_trajectories: score the evidence on the first N held-out trajectories
            only (default: all of them): the other metrics always use all of them.
        threads: torch threads per run (default: the cores shared among the jobs).
        imports: modules to import first, here and in every run (custom priors, encoders).

    ``vary``, ``variants``, ``overrides`` and ``imports`` are lists; one string is taken as
    a list of that one item.
    """

    def __init__(
        self,
        vary: Sequence[str] = (),
        *,
        out: str | Path,
        variants: Sequence[str | Variant] = (),
        preset: str | Path | Preset | None = None,
        model_spec: str | Path | Mapping[str, Any] | None = None,
        guide_spec: str | Path | Mapping[str, Any] | None = None,
        seeds: int | Sequence[int] = 2,
        overrides: Sequence[str] = (),
        data: str | Path | None = None,
        epochs: int | None = None,
        device: str = "cpu",
        jobs: int = 1,
        evidence_samples: int = 64,
        evidence_method: str = "auto",
        evidence_trajectories: int | None = None,
        threads: int | None = None,
        imports: Sequence[str] = (),
    ) -> None:
        import importlib

        from nri_pyro.api import build, resolve_specs
        from nri_pyro.devices import gpu_share, resolve_device
        from nri_pyro.evaluation import training_step_bytes

        self.out = Path(out)
        self.seeds = check_seeds(seeds)
        # One setting may come as a string: one item, not a sequence of characters.
        vary, variants, overrides, imports = (
            [x] if isinstance(x, str) else x for x in (vary, variants, overrides, imports)
        )
        if epochs is not None:
            overrides = [*overrides, f"train.epochs={epochs}"]
        for item in overrides:
            if is_data_key(item.partition("=")[0].strip()):
                raise ValueError(
                    f"--set {item}: a data key is no spec key; give the data setting of every "
                    f"variant with --vary {item} (one value), or per variant in --variant"
                )
        if not isinstance(jobs, int) or jobs < 1:
            raise ValueError(f"jobs must be a positive integer, got {jobs!r}")
        if not isinstance(evidence_samples, int) or evidence_samples < 32:
            raise ValueError(
                f"evidence_samples must be an integer >= 32 (the Pareto-k fit needs a tail), "
                f"got {evidence_samples!r}"
            )
        from nri_pyro.evidence import METHODS

        if evidence_method not in METHODS:
            raise ValueError(
                f"unknown evidence method {evidence_method!r}; valid methods: {', '.join(METHODS)}"
            )
        if evidence_trajectories is not None and (
            not isinstance(evidence_trajectories, int) or evidence_trajectories < 1
        ):
            raise ValueError(
                f"evidence_trajectories must be a positive integer (or None: all held-out "
                f"trajectories), got {evidence_trajectories!r}"
            )
        self.evidence_method, self.evidence_trajectories = evidence_method, evidence_trajectories
        if threads is not None and (not isinstance(threads, int) or threads < 1):
            raise ValueError(f"threads must be a positive integer, got {threads!r}")
        self.threads = threads
        self.imports = list(imports)
        for module in self.imports:  # custom priors etc.: registered here and in every run
            try:
                importlib.import_module(module)
            except ImportError as err:
                raise ValueError(f"--import {module}: {err}") from None
        self.vary = parse_vary(vary)
        self.explicit = [v if isinstance(v, Variant) else parse_variant(v) for v in variants]
        if not self.vary and not self.explicit:
            raise ValueError(
                "a study needs something to compare: give --vary KEY=V1,V2 or --variant "
                "'LABEL: key=value ...' (or both)"
            )
        self.variants = _combine(self.vary, self.explicit)
        self.jobs, self.device, self.evidence_samples = jobs, device, evidence_samples
        self.data = None if data is None else Path(data)
        if self.data is not None and not self.data.exists():
            raise FileNotFoundError(f"dataset folder {self.data} does not exist")
        if preset is not None and not isinstance(preset, Preset):
            preset = load_preset(preset)
        if preset is None and self.data is None:
            raise ValueError("a study without a preset needs data: give data (--data)")
        self.preset = preset
        # Data settings (data.train=50, ...): every variant's data, checked before any work.
        self.data_keys = list(dict.fromkeys(k for v in self.variants for k in v.data_settings))
        self.data_settings, self.variant_data = self._plan_data()
        train_data = None
        if self.data is not None:
            from nri_pyro.data.io import load_dataset

            train_data = load_dataset(self.data, splits=("train",)).get("train")
        if preset is not None:
            model_spec = preset.model if model_spec is None else model_spec
            guide_spec = preset.guide if guide_spec is None else guide_spec
            if train_data is not None:
                preset.check_data(train_data, f"the data in {self.data}")
        train_settings = {} if preset is None else preset.train
        features = None if preset is None else preset.data.get("features")
        shape = data_shape(preset, train_data, features)
        resolve_device(device)
        # Every combination is resolved now, and its model and guide built for the data's
        # shape: a key or value that does not fit (or settings that do not fit together,
        # prior.name=markov without graph.dynamic) is an error before any run starts.
        self.configs: dict[str, dict[str, Any]] = {}
        run_bytes: list[int] = []  # each variant's estimated training memory
        labels: dict[str, str] = {}
        for variant in self.variants:
            if variant.slug in self.variant_data:  # its own data: its own shape
                assert preset is not None
                data_settings = self.data_settings[self.variant_data[variant.slug]]
                own = dataclasses.replace(preset, data=data_settings)
                shape = data_shape(own, None, features)
            try:
                model, guide, train = resolve_specs(
                    model_spec, guide_spec, [*overrides, *variant.overrides], train_settings
                )
                if shape is not None:
                    built = build(model, guide, torch.zeros(1, *shape))
                    run_bytes.append(training_step_bytes(*built, train.batch_size, *shape[:2]))
            except ValueError as err:
                raise ValueError(f"variant {variant.label}: {err}") from None
            if variant.slug in labels:
                raise ValueError(
                    f"variants {labels[variant.slug]!r} and {variant.label!r} map to the same "
                    f"folder name {variant.slug!r}; use distinct labels or values"
                )
            labels[variant.slug] = variant.label
            self.configs[variant.slug] = {
                "model_spec": model,
                "guide_spec": guide,
                "train": {k: v for k, v in vars(train).items() if k != "progress"},
                "features": features,
            }
        # K runs at once on one GPU: checked to fit now, each held to its share of it.
        self.memory_fraction = None
        if self.jobs > 1 and resolve_device(device).type == "cuda" and run_bytes:
            self.memory_fraction = gpu_share(device, self.jobs, max(run_bytes))

    def _plan_data(self) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
        """The data of every variant when some vary it (``data.*`` keys): {data slug: the
        preset's data section with the variant's settings}, {variant slug: data slug};
        both empty when none does. Variants of one data setting share one slug (and so one
        simulation). Every key and value is checked here, before any run or simulation."""
        if not self.data_keys:
            return {}, {}
        for key in self.data_keys:
            check_data_key(key, self.preset, self.data)
        assert self.preset is not None  # check_data_key refuses a study without one
        settings: dict[str, dict[str, Any]] = {}
        chosen: dict[str, str] = {}
        for variant in self.variants:
            data = data_with(self.preset, variant.data_settings, f"variant {variant.label}")
            slug = data_slug(data, self.data_keys)
            settings.setdefault(slug, data)
            chosen[variant.slug] = slug
        return settings, chosen

    # --- running ----------------------------------------------------------------------
    def run_dir(self, variant: Variant, seed: int) -> Path:
        return self.out / "runs" / variant.slug / f"seed{seed}"

    def run(self) -> AblationResult:
        """Run what is not finished yet (``jobs`` at once), then write the table and figures.
        Progress goes to the ``nri_pyro`` logger, one line per run started and finished."""
        log = logger.info
        # One study process at a time writes the folder (its runs are its own children).
        with folder_lock(self.out):
            self._check_out()
            todo, runs = [], []
            for variant in self.variants:
                for seed in self.seeds:
                    runs.append((variant, seed))
                    if not (self.run_dir(variant, seed) / RESULT_FILE).exists():
                        todo.append((variant, seed))
            done_before = len(runs) - len(todo)
            folders = self._data_folders(todo)
            log(
                f"study {self.out}: {len(self.variants)} variant(s) x {len(self.seeds)} seed(s) = "
                f"{len(runs)} runs; {done_before} finished before, {len(todo)} to run, "
                f"{self.jobs} at a time"
            )
            threads = self.threads or max(1, (os.cpu_count() or 1) // self.jobs)
            counter = iter(range(1, len(todo) + 1))

            def one(item: tuple[Variant, int]) -> None:
                variant, seed = item
                number = next(counter)
                start = time.perf_counter()
                log(f"[{number}/{len(todo)}] {variant.label}, seed {seed}: started")
                message = self._run_one(variant, seed, folders[variant.slug], threads)
                seconds = time.perf_counter() - start
                where = f"[{number}/{len(todo)}] {variant.label}, seed {seed}"
                log(f"{where}: {message} ({seconds:.0f} s)")

            with ThreadPoolExecutor(self.jobs) as pool:
                list(pool.map(one, todo))
            return self.collect()

    def _check_out(self) -> None:
        plan = {
            "vary": [[k, v] for k, v in self.vary],
            **({"variants": [[v.name, v.fixed] for v in self.explicit]} if self.explicit else {}),
            "seeds": self.seeds,
            "data": None if self.data is None else str(self.data),
            "configs": self.configs,
            "evidence_samples": self.evidence_samples,
            **self._evidence_plan(),
        }
        # What the runs were trained on: the settings of the data the study simulates, or a
        # digest of the files of the folder given (simulated again in place: other values).
        plan["data_source"] = data_source(self.preset, self.data)
        if self.data_settings:  # and the settings of each data setting it simulates
            plan["data_source"]["varied"] = self.data_settings
        path = self.out / "study.json"
        check_output_folder(self.out, "an nri-pyro study folder", marks=("study.json",))
        if path.exists():
            before = json.loads(path.read_text())
            if "data_source" not in before:  # a study.json older than the record of its data
                before["data_source"] = plan["data_source"]
                logger.info(f"{path} has no record of its data: recording them now")
                atomic_write_text(path, json.dumps(before, indent=1) + "\n")
            # "variants" and the evidence's method and trajectories only in the plans that
            # have them (so the studies planned before them still resume)
            keys = [*plan, "variants", "evidence_method", "evidence_trajectories"]
            # JSON both sides (tuples as lists), as study.json holds them
            same = json.loads(json.dumps({k: before.get(k) for k in keys}))
            now = json.loads(json.dumps({k: plan.get(k) for k in keys}))
            differ = differences(same, now)
            if differ:
                raise FileExistsError(
                    f"{self.out} holds a different study; its study.json differs in "
                    + _describe_differences(differ)
                    + ". A study continues as it was planned: give the options it was started "
                    "with, or choose another --out"
                )
            return
        self.out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(plan, indent=1) + "\n")

    def _evidence_plan(self) -> dict[str, Any]:
        """The evidence settings a plan records where they are not the defaults."""
        plan: dict[str, Any] = {}
        if self.evidence_method != "auto":
            plan["evidence_method"] = self.evidence_method
        if self.evidence_trajectories is not None:
            plan["evidence_trajectories"] = self.evidence_trajectories
        return plan

    def _data(self) -> Path:
        if self.data is not None:
            return self.data
        assert self.preset is not None
        folder = self.out / "data"
        _simulate_once(self.preset, folder, f"no data given: preset {self.preset.name}")
        return folder

    def _data_folders(self, todo: Sequence[tuple[Variant, int]]) -> dict[str, Path]:
        """{variant slug: its data folder}: the study's one folder (:meth:`_data`), or with
        data settings ``OUT/data/<data slug>``, each simulated once (for the runs still to
        do; a rerun finds it there) and shared by every variant and seed of that setting."""
        if not self.variant_data:
            data = self._data()
            return {variant.slug: data for variant in self.variants}
        assert self.preset is not None
        folders = {slug: self.out / "data" / slug for slug in self.data_settings}
        needed = {self.variant_data[variant.slug] for variant, _ in todo}
        for slug, folder in folders.items():
            if slug in needed:
                own = dataclasses.replace(self.preset, data=self.data_settings[slug])
                _simulate_once(own, folder, f"data setting {slug}")
        return {v.slug: folders[self.variant_data[v.slug]] for v in self.variants}

    def _run_one(self, variant: Variant, seed: int, data: Path, threads: int) -> str:
        run_dir = self.run_dir(variant, seed)
        run_dir.mkdir(parents=True, exist_ok=True)
        config = {
            **self.configs[variant.slug],
            "seed": seed,
            "data": str(data),
            "device": self.device,
            "evidence_samples": self.evidence_samples,
            "evidence_method": self.evidence_method,
            "evidence_trajectories": self.evidence_trajectories,
            "threads": threads,
            "memory_fraction": self.memory_fraction,
            "imports": self.imports,
            "settings": variant.all_settings,
        }
        config["train"] = {**config["train"], "seed": seed}
        atomic_write_text(run_dir / "run.json", json.dumps(config, indent=1) + "\n")
        (run_dir / ERROR_FILE).unlink(missing_ok=True)
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
        with (run_dir / "log.txt").open("a") as logfile:
            proc = subprocess.run(
                [sys.executable, "-c", CHILD, str(run_dir)],
                stdout=logfile, stderr=subprocess.STDOUT, env=env,
            )  # fmt: skip
        result = run_dir / RESULT_FILE
        if proc.returncode == 0 and result.exists():
            metrics = json.loads(result.read_text())["metrics"]
            message = f"done, edge accuracy {metrics.get('edge_accuracy', math.nan):.4f}"
            if "switch_recall" in metrics:
                message += f", switch recall {metrics['switch_recall']:.3f}"
            return message
        if (run_dir / ERROR_FILE).exists():  # the run's own account of what went wrong
            reason = json.loads((run_dir / ERROR_FILE).read_text())["error"]
        else:  # it died without one (killed, out of memory): its last words
            lines = (run_dir / "log.txt").read_text().strip().splitlines()
            reason = lines[-1] if lines else f"exit status {proc.returncode}"
            atomic_write_text(run_dir / ERROR_FILE, json.dumps({"error": reason}) + "\n")
        return f"FAILED: {reason} (see {run_dir / 'log.txt'})"

    # --- the table --------------------------------------------------------------------
    def collect(self) -> AblationResult:
        """Read every run's result (or error) and write results.md, results.csv, runs.csv
        and the figures (the table is also logged)."""
        runs = []
        for variant in self.variants:
            for seed in self.seeds:
                run_dir = self.run_dir(variant, seed)
                row: dict[str, Any] = {"variant": variant.label, **self._data_columns(variant)}
                row["seed"] = seed
                row["settings"] = variant.all_settings
                row["run"] = str(run_dir / "train")  # the run folder (nri-pyro plot RUN)
                if (run_dir / RESULT_FILE).exists():
                    row["status"] = "ok"
                    row.update(json.loads((run_dir / RESULT_FILE).read_text())["metrics"])
                elif (run_dir / ERROR_FILE).exists():
                    row["status"] = (
                        "failed: " + json.loads((run_dir / ERROR_FILE).read_text())["error"]
                    )
                else:
                    row["status"] = "not run"
                runs.append(row)
        rows = summarize(runs, [v.label for v in self.variants])
        rows = [  # the data settings as columns beside the label
            {"variant": row["variant"], **self._data_columns(variant), **row}
            for row, variant in zip(rows, self.variants, strict=True)
        ]
        for row, variant in zip(rows, self.variants, strict=True):
            row["settings"] = variant.all_settings
        atomic_write_text(self.out / "results.md", markdown_table(rows) + "\n")
        write_csv(self.out / "results.csv", rows)
        write_csv(self.out / "runs.csv", runs)
        figures = self._figures(rows)
        logger.info(markdown_table(rows))
        logger.info(f"table: {self.out / 'results.md'} (and results.csv, runs.csv); figures in "
                    f"{self.out / 'figures'}")  # fmt: skip
        return AblationResult(rows, runs, self.out, figures)

    def _data_columns(self, variant: Variant) -> dict[str, Any]:
        """A variant's columns in the tables when the study varies its data: its label
        without the data settings (``spec_variant``), then the value of every data key
        varied (the preset's where this variant leaves it); none otherwise."""
        if not self.variant_data:
            return {}
        data = self.data_settings[self.variant_data[variant.slug]]
        columns: dict[str, Any] = {"spec_variant": variant.spec_label}
        columns.update({key: data_value(data, key) for key in self.data_keys})
        return columns

    def _data_figures(self, rows: list[dict[str, Any]], folder: Path) -> list[Path]:
        """Metrics against each numeric data key that takes several values, one line per
        variant without its data settings (and per value of the other data keys varied)."""
        from nri_pyro import plots

        written = []
        for key in self.data_keys:
            values = {row[key] for row in rows}
            numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
            if not numbers or len(values) < 2:
                continue
            others = [k for k in self.data_keys if k != key and len({r[k] for r in rows}) > 1]
            for metric in ("edge_accuracy", "mse_10", "log_evidence"):
                if not any(math.isfinite(r.get(f"{metric}_mean", math.nan)) for r in rows):
                    continue
                fig = plots.plot_against_data(rows, key, metric, line_by=("spec_variant", *others))
                written.append(_save_figure(fig, folder / f"{metric}_against_{key}.png"))
        return written

    def _figures(self, rows: list[dict[str, Any]]) -> list[Path]:
        from nri_pyro import plots  # figures are drawn without pyplot: no backend needed

        folder = self.out / "figures"
        folder.mkdir(exist_ok=True)
        written = []
        present = [
            metric for metric in ("edge_accuracy", "switch_recall", "log_evidence", "mse_10")
            if any(math.isfinite(r.get(f"{metric}_mean", math.nan)) for r in rows)
        ]  # fmt: skip
        for metric in present:
            fig = plots.plot_metric_by_variant(rows, metric)
            written.append(_save_figure(fig, folder / f"{metric}.png"))
        against = ["edge_accuracy", "edge_density"] + (
            ["switch_recall"] if "switch_recall" in present else []
        )
        for key, values in self.vary:
            numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
            # One row per value: a single numeric key, and no explicit variants beside it.
            if numeric and len(self.vary) == 1 and len(values) > 1 and not self.explicit:
                if is_data_key(key):  # drawn per metric, as every data key is (below)
                    continue
                fig = plots.plot_against_setting(rows, key, against)
                written.append(_save_figure(fig, folder / f"against_{key}.png"))
        return written + self._data_figures(rows, folder)


def _describe_differences(differ: list[tuple[str, Any, Any]]) -> str:
    """The differences of two study plans, what a user changed first (the varied values,
    the seeds, the data) and what follows from it last (the resolved configs); a variant or
    data setting on one side only is named, not printed whole."""
    order = ("vary", "variants", "seeds", "data", "data_source", "evidence_samples")

    def rank(item: tuple[str, Any, Any]) -> int:
        head = item[0].split(".")[0]
        return order.index(head) if head in order else len(order) + (head == "configs")

    parts = []
    for key, was, new in sorted(differ, key=rank):
        if was is None and isinstance(new, Mapping):
            parts.append(f"{key}: not there, new now")
        elif new is None and isinstance(was, Mapping):
            parts.append(f"{key}: there, not now")
        else:
            parts.append(f"{key}: {was!r} there, {new!r} now")
    return "; ".join(parts)


def _save_figure(fig: Any, path: Path) -> Path:
    return atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=120, bbox_inches="tight"))


def _simulate_once(preset: Preset, folder: Path, what: str) -> None:
    """Simulate ``preset``'s data into ``folder`` unless a finished dataset is there (a
    rerun reuses it), saying so in one log line that starts with ``what``."""
    from nri_pyro.data.io import save_dataset

    if (folder / "meta.json").exists():
        return
    d = preset.data
    logger.info(
        f"{what}: simulating {d['system']} with {d['objects']} objects "
        f"({d['train']} / {d['valid']} / {d['test']}) into {folder}"
    )
    save_dataset(folder, simulate_preset(preset), overwrite=True)


@forwarding(Study)
def ablate(*args: Any, **kwargs: Any) -> AblationResult:
    """Run (or resume) a study and return its table: ``Study(*args, **kwargs).run()``; the
    arguments are :class:`Study`'s (see the module docstring)."""
    return Study(*args, **kwargs).run()
