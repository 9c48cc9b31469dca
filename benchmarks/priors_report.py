"""The prior study's report (docs/priors.md) from its regimes' runs: tables, paired
differences from the uniform prior, evidence diagnostics, figures and the statements they
support, computed, never written by hand.

    python benchmarks/priors_study.py --report        # what priors_study.py runs

Every finished run's row is also kept beside the report (``priors_runs.csv``), so that the
report can be rebuilt where the run folders are gone: a regime is read from its study
folder where that has runs, else from the saved rows. A regime with neither keeps its
section of the previous report, marked as carried (its numbers come from an earlier
sitting whose rows were not saved).
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

SPARSE, HALF = 0.15, 0.5  # the probability of a spring between two objects
RUNS_FILE = "priors_runs.csv"  # beside the report: every finished run's row
CARRIED = "Carried from the previous report"  # the mark of a section kept unchanged
# A run's evidence is not to be compared when more of its scored trajectories than this
# have Pareto k above 0.7.
UNTRUSTED_SHARE = 0.1
SCORED = 200  # test trajectories a run's evidence scored, where its row does not say


def read_runs(out: Path, name: str) -> list[dict[str, str]]:
    """The runs of one regime's study so far, read from its run folders (a study writes
    runs.csv only when all its runs are done): variant, data settings, seed, status and
    metrics. The variant is the one of study.json whose settings the run's are."""
    folder = out / name
    if not (folder / "study.json").exists():
        return []
    plan = json.loads((folder / "study.json").read_text())
    variants = plan.get("variants", [["base", {}]])
    runs = []
    for result in sorted(folder.glob("runs/*/seed*/result.json")):
        record = json.loads(result.read_text())
        settings = record["settings"]
        spec = {k: v for k, v in settings.items() if not k.startswith("data.")}
        label = next((lab for lab, fixed in variants if fixed == spec), None)
        if label is None:
            continue
        row = {"spec_variant": label, "seed": result.parent.name[len("seed") :], "status": "ok"}
        row.update({k: str(v) for k, v in settings.items() if k.startswith("data.")})
        row.update({k: str(v) for k, v in record["metrics"].items()})
        runs.append(row)
    planned = (
        len(variants)
        * math.prod(len(v) for _, v in plan.get("vary", []))
        * len(plan.get("seeds", []))
    )
    runs += [{"status": "not run"}] * max(0, planned - len(runs))
    return runs


def _number(row: dict[str, str], key: str) -> float:
    try:
        return float(row.get(key) or "nan")
    except ValueError:
        return math.nan


def _mean_sd(values: list[float]) -> tuple[float, float]:
    values = [v for v in values if math.isfinite(v)]
    if not values:
        return math.nan, math.nan
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, math.nan
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def _cell(values: list[float], digits: int = 3) -> str:
    mean, sd = _mean_sd(values)
    if math.isnan(mean):
        return "—"
    return f"{mean:.{digits}f}" + ("" if math.isnan(sd) else f" ± {sd:.{digits}f}")


def summarize_regime(runs: list[dict[str, str]]) -> list[dict]:
    """Per (training size, prior): the finished seeds' metrics, and each metric's paired
    difference from the uniform prior on the same data and seed."""
    ok = [r for r in runs if r["status"] == "ok"]
    sizes = sorted({int(float(r["data.train"])) for r in ok})
    priors = list(dict.fromkeys(r["spec_variant"] for r in ok))
    out = []
    for size in sizes:
        here = [r for r in ok if int(float(r["data.train"])) == size]
        uniform = {r["seed"]: r for r in here if r["spec_variant"] == "uniform"}
        for prior in priors:
            mine = [r for r in here if r["spec_variant"] == prior]
            if not mine:
                continue
            row = {"train": size, "prior": prior, "seeds": len(mine)}
            for key in ("edge_accuracy", "edge_auroc", "edge_density", "learned_edge_freq",
                        "log_evidence", "pareto_k_over_0.7", "mse_10", "nll"):  # fmt: skip
                row[key] = [_number(r, key) for r in mine]
                row[f"d_{key}"] = [
                    _number(r, key) - _number(uniform[r["seed"]], key)
                    for r in mine
                    if r["seed"] in uniform
                ]
            out.append(row)
    return out


REGIME_TITLES = {
    "sparse": "Sparse graphs (15% of pairs interact), no observation noise",
    "noisy": "Sparse graphs, observation noise 0.05, learned likelihood variance",
    "calibrated": "Sparse graphs, observation noise 0.05, variance started at the noise's "
    "and learned per feature",
    "calibrated-1000": "The same, with 1,000 training trajectories",
    "calibrated-5000": "The same, with 5,000 training trajectories (20 epochs)",
    "sparse-5000": "Sparse graphs, no observation noise, 5,000 training trajectories (20 epochs)",
    "half": "Half of the pairs interact, no observation noise",
}


TRUE_DENSITY = {name: HALF if name == "half" else SPARSE for name in REGIME_TITLES}


def _finish(fig, ax, path: Path, *, xlabel: str, ylabel: str, title: str) -> None:
    """Label a report figure's one panel and save it."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=7)
    fig.savefig(path, dpi=120, bbox_inches="tight")


def figures(out: Path, folder: Path, finished: dict[str, list[dict[str, str]]]) -> list[str]:
    """The report's figures, in ``folder`` (markdown image lines): accuracy against training
    trajectories (the sparse study's own figure), the Dirichlet prior's learned density
    against the truth, and the held-out evidence against accuracy, run by run
    (``finished``: each regime's finished runs)."""
    import shutil

    from matplotlib.figure import Figure

    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    study_figure = out / "sparse" / "figures" / "edge_accuracy_against_data.train.png"
    if study_figure.exists():
        shutil.copyfile(study_figure, folder / "priors_accuracy_against_train.png")
    if (folder / "priors_accuracy_against_train.png").exists():  # this sitting's or carried
        lines.append("![accuracy against training trajectories, sparse regime]"
                     "(figures/priors_accuracy_against_train.png)")  # fmt: skip
    fig = Figure(figsize=(6, 3.6))
    ax = fig.subplots()
    for i, (name, runs) in enumerate(finished.items()):
        learned = [(int(float(r["data.train"])), _number(r, "learned_edge_freq")) for r in runs
                   if r["spec_variant"] == "dirichlet"]  # fmt: skip
        if learned:
            ax.scatter([x * (1 + 0.06 * i) for x, _ in learned], [y for _, y in learned],
                       label=f"{name} (truth {TRUE_DENSITY[name]:g})", color=f"C{i}")  # fmt: skip
            ax.axhline(TRUE_DENSITY[name], color=f"C{i}", ls="--", lw=1)
    ax.set_xscale("log")
    _finish(
        fig, ax, folder / "priors_learned_density.png", xlabel="training trajectories",
        ylabel="learned edge frequency",
        title="Dirichlet prior: learned density (points) against the truth (dashed)",
    )  # fmt: skip
    lines.append("![learned density against the truth](figures/priors_learned_density.png)")
    fig = Figure(figsize=(6, 3.6))
    ax = fig.subplots()
    for i, (name, runs) in enumerate(finished.items()):
        for trusted, marker in ((True, "o"), (False, "x")):
            pick = [r for r in runs if (_number(r, "pareto_k_over_0.7") <= UNTRUSTED_SHARE)
                    == trusted]  # fmt: skip
            if pick:
                label = name if trusted else f"{name} (k > 0.7)"
                ax.scatter([_number(r, "edge_accuracy") for r in pick],
                           [_number(r, "log_evidence") for r in pick], marker=marker,
                           color=f"C{i}", label=label)  # fmt: skip
    ax.set_yscale("symlog")
    _finish(fig, ax, folder / "priors_evidence_against_accuracy.png",
            xlabel="held-out edge accuracy", ylabel="held-out log evidence per trajectory",
            title="Evidence against accuracy, one point per run")  # fmt: skip
    lines.append("![evidence against accuracy](figures/priors_evidence_against_accuracy.png)")
    return lines


def _load_saved(path: Path) -> dict[str, list[dict[str, str]]]:
    """The finished runs' rows saved beside a report, by regime."""
    saved: dict[str, list[dict[str, str]]] = {}
    if path.exists():
        with path.open(newline="") as f:
            for row in csv.DictReader(f):
                saved.setdefault(row.pop("regime"), []).append(row)
    return saved


def _save(path: Path, finished: dict[str, list[dict[str, str]]]) -> None:
    rows = [{"regime": name, **r} for name, runs in finished.items() for r in runs]
    if not rows:
        return
    keys = list(dict.fromkeys(k for r in rows for k in r))
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, keys, restval="")
        writer.writeheader()
        writer.writerows(rows)


def _sections(text: str) -> dict[str, list[str]]:
    """A markdown report's sections by their '## ' heading (the heading's text)."""
    out: dict[str, list[str]] = {}
    current = None
    for line in text.splitlines():
        if line.startswith("## "):
            current = line[3:]
            out[current] = []
        elif current is not None:
            out[current].append(line)
    return out


def _split(cell: str) -> tuple[float, float]:
    """'0.123 ± 0.045' (or '0.123', or '—'): the mean and standard deviation."""
    parts = [p.strip() for p in cell.split("±")]
    try:
        mean = float(parts[0])
    except ValueError:
        return math.nan, math.nan
    return mean, float(parts[1]) if len(parts) > 1 else math.nan


def _carried_rows(section: list[str]) -> list[dict]:
    """The table rows of a carried section, as (mean, sd) pairs per column."""
    rows = []
    for line in section:
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 11 or not cells[0].isdigit():
            continue
        row = {"train": int(cells[0]), "prior": cells[1], "seeds": int(cells[2])}
        for key, cell in zip(TABLE_KEYS, cells[3:], strict=True):
            row[key] = _split(cell)
        rows.append(row)
    return rows


# The table's columns after train, prior and seeds: (key of a summary row, digits)
TABLE = (
    ("edge_accuracy", 3), ("d_edge_accuracy", 3), ("edge_auroc", 3), ("d_edge_auroc", 3),
    ("edge_density", 3), ("learned_edge_freq", 3), ("log_evidence", 1),
    ("pareto_k_over_0.7", 2),
)  # fmt: skip
TABLE_KEYS = [key for key, _ in TABLE]


def report(out: Path, path: Path, header: str = "") -> str:
    """docs/priors.md (``path``) from the studies' runs under ``out`` (and the rows saved
    beside ``path``); ``header``: the paragraphs after the title that say what was run."""
    lines = [
        "# When do priors matter? A measured answer",
        "",
        "Made by `python benchmarks/priors_study.py --report` from the runs of",
        "`python benchmarks/priors_study.py` (see its docstring for every setting). Each "
        "cell: mean ± standard deviation over training seeds; Δ: the paired difference from "
        "the uniform prior on the same data and seed. Accuracy counts every ordered pair with "
        "the best relabelling of types; AUROC does not depend on where the prior puts the "
        "decision threshold; the Dirichlet prior's learned frequency is of the types that "
        "relabelling reads as edges. Evidence: held-out log p(x) per trajectory "
        "(`nri_pyro.evidence`; each regime says its method), with the share of test "
        "trajectories whose Pareto k exceeds 0.7 (above 10%: not to be compared).",
        "",
        *([header, ""] if header else []),
    ]
    previous = _sections(path.read_text()) if path.exists() else {}
    saved = _load_saved(path.parent / RUNS_FILE)
    every = {name: read_runs(out, name) for name in REGIME_TITLES}  # each folder read once
    for name, runs in every.items():
        if not any(r["status"] == "ok" for r in runs) and saved.get(name):
            every[name] = [{**r, "status": "ok"} for r in saved[name]]
    finished = {name: [r for r in runs if r["status"] == "ok"] for name, runs in every.items()}
    carried = {
        name: [line for line in previous[title] if not line.startswith(CARRIED)]
        for name, title in REGIME_TITLES.items()
        if not finished[name] and _carried_rows(previous.get(title, []))
    }
    summaries: dict[str, list[dict]] = {}
    for name, title in REGIME_TITLES.items():
        lines += [f"## {title}", ""]
        if name in carried:
            rerun = f"`python benchmarks/priors_study.py {name}`"
            lines += [f"{CARRIED} (its runs are not on this machine; rerun {rerun} to "
                      "regenerate it).", ""]  # fmt: skip
            for line in carried[name]:
                if line.strip() or lines[-1].strip():
                    lines.append(line)
            lines += [""] if lines[-1].strip() else []
            summaries[name] = _carried_rows(carried[name])
            continue
        runs = every[name]
        done = len(finished[name])
        lines += [f"{done} of {len(runs)} runs finished.", ""]
        if not done:
            continue
        scored = {(r.get("evidence_method", "?"), r.get("evidence_trajectories", str(SCORED)))
                  for r in finished[name]}  # fmt: skip
        lines += ["Evidence: " + "; ".join(f"method `{m}` on {n} test trajectories"
                                           for m, n in sorted(scored)) + ".", ""]  # fmt: skip
        lines += [
            "| train | prior | seeds | accuracy | Δ accuracy | AUROC | Δ AUROC | density | "
            "learned freq | log evidence | k > 0.7 |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        rows = summarize_regime(runs)
        for row in rows:
            cells = [_cell(row[key], digits) for key, digits in TABLE]
            lines.append(f"| {row['train']} | {row['prior']} | {row['seeds']} | "
                         + " | ".join(cells) + " |")  # fmt: skip
        summaries[name] = [
            {**{k: row[k] for k in ("train", "prior", "seeds")},
             **{key: _mean_sd(row[key]) for key in TABLE_KEYS}}
            for row in rows
        ]  # fmt: skip
        lines.append("")
    effects = [
        (name, row) for name, rows in summaries.items() for row in rows
        if row["prior"] != "uniform" and math.isfinite(row["d_edge_accuracy"][0])
    ]  # fmt: skip
    lines += ["## Figures", "", *figures(out, path.parent / "figures", finished), ""]
    if carried:
        lines += ["The figures draw the runs on this machine or saved beside the report "
                  f"(not the carried regimes: {', '.join(carried)}).", ""]  # fmt: skip
    lines += _terms(finished, previous, carried)
    lines += _statements(effects, summaries)
    lines += _ranking(finished, previous, carried)
    lines += _diagnostics(finished)
    lines += _plain_words(effects, previous, carried)
    text = "\n".join(lines) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    _save(path.parent / RUNS_FILE, {n: r for n, r in finished.items() if n not in carried})
    return text


def _kept(previous: dict[str, list[str]], heading: str, prefix: str) -> list[str]:
    """The previous report's bullets under ``heading`` that begin with ``prefix``."""
    return [line for line in previous.get(heading, []) if line.startswith(prefix)]


TERMS = "The two terms' sizes"
OLD_TERMS = "Why the prior moves so little: the two terms' sizes"  # its heading until 2026-12-07
NUMBERS = "What the numbers say"
PLAIN = "In plain words"


def _terms(finished, previous, carried) -> list[str]:
    # The most the prior can change the ELBO of one trajectory: every ordered pair's KL
    # against sparse(0.85) instead of uniform differs by at most max |log(p / 0.5)|.
    swing = 20 * max(abs(math.log(0.85 / 0.5)), abs(math.log(0.15 / 0.5)))
    lines = [
        f"## {TERMS}",
        "",
        f"Between the uniform and the sparse (0.85) prior, the KL term of one trajectory (20 "
        f"ordered pairs) can differ by at most {swing:.0f} nats. The likelihood term it is "
        "weighed against, the held-out NLL per trajectory (frames x objects x features; "
        "`nll` is per object, times 5), and the share of the ELBO the prior can move:",
        "",
    ]
    for name in REGIME_TITLES:
        if name in carried:
            lines += _kept(previous, TERMS, f"- {name}:") or _kept(previous, OLD_TERMS,
                                                                    f"- {name}:")  # fmt: skip
            continue
        mean, _ = _mean_sd([5 * _number(r, "nll") for r in finished[name]])
        if math.isfinite(mean):
            lines.append(
                f"- {name}: likelihood term {mean:,.0f} nats per trajectory; the prior's "
                f"{swing:.0f} nats are {100 * swing / max(abs(mean), 1e-9):.2f}% of it."
            )
    return lines


def _statements(effects, summaries) -> list[str]:
    lines = ["", f"## {NUMBERS}", ""]
    if effects:
        best = max(effects, key=lambda e: e[1]["d_edge_accuracy"][0])
        worst = min(effects, key=lambda e: e[1]["d_edge_accuracy"][0])
        (gain, gain_sd), auroc = best[1]["d_edge_accuracy"], best[1]["d_edge_auroc"]
        loss, loss_sd = worst[1]["d_edge_accuracy"]
        lines.append(
            f"- Largest gain over uniform in edge accuracy: {best[1]['prior']} in the "
            f"{best[0]} regime with {best[1]['train']} training trajectories, "
            f"{100 * gain:+.1f} points (± {100 * gain_sd:.1f} over seeds); its AUROC changed "
            f"by {auroc[0]:+.3f} (± {auroc[1]:.3f})."
        )
        lines.append(
            f"- Largest loss: {worst[1]['prior']} in the {worst[0]} regime with "
            f"{worst[1]['train']} training trajectories, {100 * loss:+.1f} points "
            f"(± {100 * loss_sd:.1f})."
        )
        big = [(n, r) for n, r in effects if r["d_edge_accuracy"][0] >= 0.05
               and r["prior"] in ("sparse-matched", "dirichlet")]  # fmt: skip
        lines.append(
            "- A well-specified prior (sparse-matched or dirichlet) beat uniform by at least 5 "
            "points in: "
            + (", ".join(f"{n}/{r['train']} ({r['prior']}, {100 * r['d_edge_accuracy'][0]:+.1f}"
                         f" ± {100 * r['d_edge_accuracy'][1]:.1f} over {r['seeds']} seeds)"
                         for n, r in big) or "none")
            + "."
        )  # fmt: skip
    learned = [(n, r) for n, rows in summaries.items() for r in rows
               if r["prior"] == "dirichlet" and r["train"] >= 200
               and math.isfinite(r["learned_edge_freq"][0])]  # fmt: skip
    if learned:
        lines.append(
            "- The Dirichlet prior's learned density against the truth, with 200 or more "
            "training trajectories: "
            + ", ".join(f"{n}/{r['train']}: {r['learned_edge_freq'][0]:.3f} ± "
                        f"{r['learned_edge_freq'][1]:.3f} (truth {TRUE_DENSITY[n]:g}, off by "
                        f"{abs(r['learned_edge_freq'][0] - TRUE_DENSITY[n]):.3f})"
                        for n, r in learned)
            + "."
        )  # fmt: skip
    return lines


def _ranking(finished, previous, carried) -> list[str]:
    lines = ["", "Evidence ranking of the matched against the mismatched sparse prior "
             "(seeds where the matched prior's held-out evidence is higher):", ""]  # fmt: skip
    for name in REGIME_TITLES:
        if name in carried:
            lines += _kept(previous, NUMBERS, f"- {name}, ")
            continue
        ok = finished[name]
        for size in sorted({int(float(r["data.train"])) for r in ok}):
            pick = {p: {r["seed"]: r for r in ok if r["spec_variant"] == p
                        and int(float(r["data.train"])) == size}
                    for p in ("sparse-matched", "sparse-mismatched")}  # fmt: skip
            seeds = sorted(set(pick["sparse-matched"]) & set(pick["sparse-mismatched"]))
            if not seeds:
                continue
            ev = sum(
                _number(pick["sparse-matched"][s], "log_evidence")
                > _number(pick["sparse-mismatched"][s], "log_evidence")
                for s in seeds
            )
            acc = sum(
                _number(pick["sparse-matched"][s], "edge_accuracy")
                > _number(pick["sparse-mismatched"][s], "edge_accuracy")
                for s in seeds
            )
            trusted = max(_number(pick[p][s], "pareto_k_over_0.7") for p in pick for s in seeds)
            lines.append(
                f"- {name}, {size} trajectories: evidence prefers the matched prior in {ev} of "
                f"{len(seeds)} seeds, accuracy in {acc} of {len(seeds)}; worst share of "
                f"trajectories with k > 0.7: {trusted:.2f}."
            )  # fmt: skip
    return lines


def _diagnostics(finished) -> list[str]:
    """Per regime with runs here: how many of the trajectories its evidence scored, pooled
    over its runs, have Pareto k at most 0.7, and how many runs flag more than 10%."""
    lines = []
    for name, runs in finished.items():
        scored = [(_number(r, "pareto_k_over_0.7"), _number(r, "evidence_trajectories"))
                  for r in runs]  # fmt: skip
        scored = [(k, SCORED if math.isnan(n) else n) for k, n in scored if math.isfinite(k)]
        if not scored:
            continue
        total = sum(n for _, n in scored)
        good = sum((1 - k) * n for k, n in scored)
        flagged = sum(k > UNTRUSTED_SHARE for k, _ in scored)
        lines.append(
            f"- {name}: pooled over its {len(scored)} runs, {100 * good / total:.0f}% of the "
            f"{total:.0f} scored test trajectories have Pareto k at most 0.7; {flagged} of the "
            f"runs flag more than 10%."
        )
    if not lines:
        return []
    return ["", "The evidence's diagnostics, pooled over each regime's runs (those on this "
            "machine, or saved beside the report):", "", *lines]  # fmt: skip


def _plain_words(effects, previous, carried) -> list[str]:
    lines = ["", f"## {PLAIN}", ""]
    for name, title in REGIME_TITLES.items():
        if name in carried:
            lines += _kept(previous, PLAIN, f"- {title}:")
            continue
        mine = [r for n, r in effects if n == name]
        parts = []
        for group, members in (("the sparse priors (matched and mismatched)",
                                ("sparse-matched", "sparse-mismatched")),
                               ("the structural priors (symmetric, dirichlet, known 10%)",
                                ("symmetric", "dirichlet", "known-10%"))):  # fmt: skip
            chosen = [r for r in mine if r["prior"] in members]
            if chosen:
                r = max(chosen, key=lambda r: abs(r["d_edge_accuracy"][0]))
                mean, sd = r["d_edge_accuracy"]
                parts.append(
                    f"{group} changed edge accuracy by at most {100 * abs(mean):.1f} points "
                    f"({r['prior']}, {r['train']} trajectories: {100 * mean:+.1f} ± "
                    f"{100 * sd:.1f})"
                )
        if parts:
            lines.append(f"- {title}: " + "; ".join(parts) + ".")
    return lines
