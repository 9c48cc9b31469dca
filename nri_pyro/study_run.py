"""One run of a study, in its own process: train (or resume) it, score it on held-out data
and write its result (``result.json``) or its error (``error.json``) into its folder.

:class:`nri_pyro.ablate.Study` starts ``python -c CHILD RUN_DIR`` for each run, with the
run's settings in ``RUN_DIR/run.json``; :func:`child_main` is that process's entry point.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import yaml

from nri_pyro.files import atomic_write_text
from nri_pyro.logs import log_to
from nri_pyro.nn.modes import eval_mode

RESULT_FILE = "result.json"
# A run's process: a fresh interpreter that imports this module (not ``-m``, which would
# run it a second time beside the package's import of it).
CHILD = "import sys; from nri_pyro.study_run import child_main; sys.exit(child_main(sys.argv[1]))"
ERROR_FILE = "error.json"


def run_child(run_dir: Path) -> None:
    """Train (or resume) one run of a study and write its held-out metrics atomically."""
    import importlib

    from nri_pyro.api import NRI
    from nri_pyro.data.dataset import prepare
    from nri_pyro.data.io import load_dataset
    from nri_pyro.evidence import held_out_log_evidence

    config = json.loads((run_dir / "run.json").read_text())
    torch.set_num_threads(config["threads"])
    fraction = config.get("memory_fraction")  # a share of a GPU that other runs share too
    if fraction is not None and torch.device(config["device"]).type == "cuda":
        torch.cuda.set_per_process_memory_fraction(fraction, torch.device(config["device"]))
    for module in config.get("imports", []):
        importlib.import_module(module)
    splits = load_dataset(config["data"])
    if "train" not in splits:
        raise ValueError(f"{config['data']} has no training split")
    held_out = "test" if "test" in splits else "valid" if "valid" in splits else None
    if held_out is None:
        raise ValueError(f"{config['data']} has no test or validation split to evaluate on")
    nri = NRI(
        config["model_spec"], config["guide_spec"], device=config["device"],
        features=config.get("features"), **{**config["train"], "progress": False},
    )  # fmt: skip
    train_dir = run_dir / "train"
    resume = (train_dir / "checkpoint_last.pt").exists()
    nri.fit(splits["train"], splits.get("valid"), out=train_dir, resume=resume,
            held_out={held_out: splits[held_out]})  # fmt: skip
    metrics = nri.evaluate(splits[held_out])
    x, _ = prepare(splits[held_out], nri.normalizer)
    # log_evidence (mean per trajectory), pareto_k (the median k-hat), pareto_k_over_0.7 and
    # evidence_method: by default exact where the graphs are few, else "local".
    evidence = held_out_log_evidence(
        nri.model, nri.guide, x[: config.get("evidence_trajectories")],
        method=config.get("evidence_method", "auto"), num_samples=config["evidence_samples"],
        device=nri.device,
    )  # fmt: skip
    metrics.update(evidence.summary())
    metrics["evidence_trajectories"] = int(evidence.log_evidence.numel())
    posterior = getattr(nri.guide.prior_guide, "posterior", None)
    if posterior is not None:  # Dirichlet prior: the learned frequency of "any edge": of
        # every type but the one the accuracy's relabelling reads as "no edge" (else a run
        # whose learned types came out swapped would report one minus its density)
        with eval_mode(nri.guide):
            no_edge = int(metrics.get("no_edge_type", 0))
            metrics["learned_edge_freq"] = float(1 - posterior().mean[no_edge])
    result = {"metrics": metrics, "held_out": held_out, "settings": config["settings"]}
    atomic_write_text(run_dir / RESULT_FILE, json.dumps(result, indent=1) + "\n")
    (run_dir / "specs.yaml").write_text(
        yaml.safe_dump({"model": nri.model_spec, "guide": nri.guide_spec}, sort_keys=False)
    )


def child_main(run_dir: str | Path) -> int:
    """Run one study run (see :func:`run_child`); write its error and return 1 on failure."""
    run_dir = Path(run_dir)
    log_to()  # per-epoch lines into the run's log.txt
    try:
        run_child(run_dir)
    except Exception as err:
        import traceback

        traceback.print_exc()
        message = f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err) else ''}"
        atomic_write_text(run_dir / ERROR_FILE, json.dumps({"error": message}) + "\n")
        return 1
    return 0
