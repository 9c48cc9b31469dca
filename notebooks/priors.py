# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Priors over graphs: what does a belief about sparsity change?
#
# In NRI the prior $p(z)$ says what we believe about each edge's type before seeing any
# trajectory. The paper uses a **uniform** prior (both types equally likely) and mentions a
# **sparse** one that puts most mass on "no interaction". `nri_pyro` makes the prior the
# swappable part of the model, chosen by name in the spec:
#
# | prior | what it says |
# |---|---|
# | `uniform` | p(no edge) = p(edge) = 1/2 for two edge types (the paper) |
# | `sparse` | p(no edge) = `no_edge` = 0.91, the rest shared by the other types |
# | `dirichlet` | frequencies $\pi \sim$ Dir(1, 1), a **global latent**; edge $\sim$ Cat($\pi$) |
#
# This notebook trains the same network on the same springs data under each prior, with
# two seeds each, using `nri_pyro.ablate`, which runs every (prior, seed) in its own process
# and compares them on held-out data. Then it looks at what the Dirichlet prior learned:
# the posterior of the edge frequency $\pi$, with an interval, through ArviZ.

# %%
# %matplotlib inline
import math
import os
import tempfile
import time
from pathlib import Path
from unittest import mock

import pandas as pd
import torch
from IPython.display import display
from matplotlib.figure import Figure

import nri_pyro
from nri_pyro import NRI, diagnostics, plots, save_dataset, simulate

# Small networks run fastest on one thread, and much faster when the machine is shared.
torch.set_num_threads(1)
# NRI_PYRO_SMOKE=1 (the test suite) runs the same code on tiny data in about a minute.
SMOKE = os.environ.get("NRI_PYRO_SMOKE") == "1"
WORK = Path(tempfile.mkdtemp(prefix="nri-priors-"))  # dataset, study folder
print("smoke mode" if SMOKE else "full size", "| files in", WORK)

# %% [markdown]
# ## 1. The data, saved to disk
#
# Springs with 5 balls, **sparser and stiffer than the quickstart's**: each pair is joined
# with probability 1/4 (not 1/2) by a spring of constant 0.3 (not 0.1). So the priors have
# something to disagree about: the uniform prior expects half of the pairs to interact,
# the sparse one 9%, the truth is 25%, and the Dirichlet prior has to find it out; and the
# stiffer springs make the interactions visible enough for a few CPU minutes of training.
# The ablation runs each training in a separate process, so the splits are written to a
# dataset folder first (`save_dataset`). The study is sized to run in about four minutes on
# one CPU thread: 800 training trajectories, a network of hidden size 64, 6 epochs at a
# higher learning rate than the paper's. That is far less training than the paper's, so
# read the absolute numbers as "a few minutes of CPU", and the comparison between priors
# as the point.

# %%
SIZES = (
    {"train": 48, "valid": 16, "test": 16} if SMOKE else {"train": 800, "valid": 100, "test": 100}
)
PHYSICS = {"edge_prob": 0.25, "interaction_strength": 0.3}
splits = {
    split: simulate(
        "springs",
        size,
        num_objects=5,
        seed=0,
        split=split,
        num_frames=99 if split == "test" else 49,
        **PHYSICS,
    )
    for split, size in SIZES.items()
}
DATA = save_dataset(WORK / "springs5", splits)
true_density = float(splits["test"].edges.float().mean())
print(DATA, {split: len(ds) for split, ds in splits.items()})
print(f"true edge density of the test graphs: {true_density:.3f}")

# %% [markdown]
# ## 2. The ablation
#
# `ablate` varies one spec key (`prior.name`) over the listed values, trains each with each
# seed, and evaluates every run on the held-out split: edge accuracy, AUROC, inferred edge
# density, rollout MSE, the negative ELBO, and the held-out log evidence $\log p(x)$
# estimated by importance sampling from the guide with its Pareto-k diagnostic. Runs that
# finished are skipped when the same call is made again, so an interrupted study resumes.
#
# `ablate` gives each run `os.cpu_count() // jobs` torch threads; we run one process at a
# time on one thread, which is fastest for a network this small on a shared CPU (hence the
# patched CPU count).

# %%
HIDDEN = 16 if SMOKE else 64
OVERRIDES = [
    f"decoder.msg_hidden={HIDDEN}",
    f"decoder.msg_out={HIDDEN}",
    f"decoder.hidden={HIDDEN}",
    f"guide.encoder.hidden={HIDDEN}",
    "train.lr=0.004",
    "train.batch_size=16",
    "train.lr_decay_every=100",
]
PRIORS = "uniform,dirichlet" if SMOKE else "uniform,sparse,dirichlet"
start = time.perf_counter()
with mock.patch("os.cpu_count", return_value=1):  # one torch thread per run
    result = nri_pyro.ablate(
        [f"prior.name={PRIORS}"],
        out=WORK / "study",
        data=DATA,
        seeds=1 if SMOKE else 2,
        epochs=1 if SMOKE else 6,
        overrides=OVERRIDES,
        jobs=1,
        evidence_samples=32,
    )
print(f"study finished in {time.perf_counter() - start:.0f} s")

# %% [markdown]
# The table: mean ± standard deviation over seeds (on the held-out split). It renders as
# markdown in a notebook, and is also written to `results.md` / `results.csv` in the study
# folder, with every run in `runs.csv`.

# %%
display(result)

# %% [markdown]
# Every run, one row each (the seeds are the spread in the table above):

# %%
columns = ["variant", "seed", "edge_accuracy", "edge_auroc", "edge_density", "mse_10"]
columns += ["elbo_loss", "log_evidence", "pareto_k", "learned_edge_freq"]
runs = pd.DataFrame(result.runs)
display(runs[[c for c in columns if c in runs]].round(4))

# %% [markdown]
# ## 3. Figures
#
# Held-out edge accuracy and inferred edge density by prior; error bars are the standard
# deviation over seeds (with two seeds, a rough spread, not a confidence interval). With a
# quarter of the pairs connected, answering "no edge" everywhere already scores about 0.75
# (dashed line), so AUROC and density say more than accuracy here.

# %%
fig = plots.plot_metric_by_variant(result.variants, "edge_accuracy")
fig.axes[0].axhline(1 - true_density, color="k", ls="--", label="always 'no edge'")
fig.axes[0].legend(fontsize=8, loc="lower right")
display(fig)

# %%
fig = plots.plot_metric_by_variant(result.variants, "edge_density")
fig.axes[0].axhline(true_density, color="k", ls="--", label="true density")
fig.axes[0].legend(fontsize=8, loc="lower right")
display(fig)

# %% [markdown]
# For two edge types the uniform prior is exactly the sparse prior with `no_edge` = 0.5, so
# uniform and sparse are two points of one numeric setting, the prior probability of "no
# edge". `plot_against_setting` draws accuracy and inferred density against it: if the
# prior mattered, the inferred density would fall as `no_edge` rises.

# %%
no_edge = {"prior.name=uniform": 0.5, "prior.name=sparse": 0.91}
as_no_edge = [
    {**row, "settings": {"prior.no_edge": no_edge[row["variant"]]}}
    for row in result.variants
    if row["variant"] in no_edge
]
plots.plot_against_setting(as_no_edge, "prior.no_edge")

# %% [markdown]
# Why the uniform and sparse priors differ so little: the paper's likelihood has a fixed
# variance of 5e-5, so one trajectory's log-likelihood is a sum of 48 frames x 5 objects x
# 4 features of squared errors divided by 1e-4, thousands of nats. The prior enters only
# through the KL term, at most a few nats per edge. The KL of a confident posterior, per
# edge:


# %%
def kl(q: list[float], p: list[float]) -> float:
    return sum(qi * math.log(qi / pi) for qi, pi in zip(q, p, strict=True))


for name, prior in (("uniform", [0.5, 0.5]), ("sparse", [0.91, 0.09])):
    print(
        f"{name:>7}: KL(edge present 0.99 || prior) = {kl([0.01, 0.99], prior):.2f} nats, "
        f"KL(no edge 0.99 || prior) = {kl([0.99, 0.01], prior):.2f} nats"
    )
elbo = {row["variant"]: row["elbo_loss_mean"] for row in result.variants}
print("held-out negative ELBO per trajectory:", {k: round(v) for k, v in elbo.items()})

# %% [markdown]
# With 20 ordered pairs, switching from the uniform to the sparse prior moves the
# objective by at most about 20 x 1.7 = 34 nats per trajectory for a graph with every edge
# present, against a likelihood term of thousands: the data decide.
#
# ## 4. What the Dirichlet prior learned
#
# Under the Dirichlet prior the edge-type frequencies $\pi$ are a global latent variable,
# the site `edge_freqs`. Its guide is the conjugate update $q(\pi)$ = Dirichlet(1 +
# expected type counts of the training set under the encoder). We load the Dirichlet run
# of seed 0 from the study folder, draw from the guide with
# `diagnostics.posterior_to_arviz` (an ArviZ `InferenceData`), and summarise the global
# latent with `summarize_globals` (mean, sd, 94% HDI) and `hdi_globals`.

# %%
run_dir = result.out / "runs" / "prior.name-dirichlet" / "seed0" / "train"
dirichlet = NRI.load(run_dir)
few = splits["test"].subset(slice(0, 16))  # the global latent does not depend on them
idata = diagnostics.posterior_to_arviz(
    dirichlet, few, num_samples=200 if SMOKE else 1000, log_likelihood=False
)
diagnostics.summarize_globals(idata)

# %%
hdi = diagnostics.hdi_globals(idata, prob=0.94)["edge_freqs"]
draws = idata.posterior["edge_freqs"].sel(edge_type=1).values.ravel()  # frequency of type 1
low, high = (float(v) for v in hdi.sel(edge_type=1).values)
learned = float(draws.mean())
print(f"learned frequency of 'edge' (type 1): {learned:.4f}, 94% HDI [{low:.4f}, {high:.4f}]")
inferred = runs.loc[runs["variant"] == "prior.name=dirichlet", "edge_density"].mean()
print(f"inferred edge density on the test split (mean over seeds): {inferred:.4f}")
print(f"true density of the training graphs: {float(splits['train'].edges.float().mean()):.4f}")

# %%
fig = Figure(figsize=(6, 3.2), layout="constrained")
ax = fig.subplots()
ax.hist(draws, bins=40, color="tab:blue", alpha=0.7, label="draws of q(pi_edge)")
ax.axvspan(low, high, color="tab:blue", alpha=0.15, label="94% HDI")
train_density = float(splits["train"].edges.float().mean())
ax.axvline(train_density, color="k", ls="--", label=f"true density {train_density:.3f}")
ax.axvline(0.5, color="0.5", ls=":", label="prior mean 0.5")
ax.set(
    xlabel="frequency of 'edge' (type 1)",
    ylabel="draws",
    title="Dirichlet prior: learned edge frequency",
)
ax.legend(fontsize=8)
display(fig)

# %% [markdown]
# **What the interval means.** $q(\pi)$ is a Dirichlet whose concentration adds the
# encoder's expected counts over all 800 x 20 = 16,000 training edges, so its interval is
# very narrow: it is the uncertainty about $\pi$ *given the encoder's edge probabilities*.
# It does not include the encoder's own errors, so a gap between the learned frequency and
# the true density that is wider than the interval is a bias of the encoder (edges it
# misses or invents), not a contradiction.
#
# ## What the numbers show
#
# * **Uniform against sparse: no difference beyond the seeds.** Held-out AUROC 0.850 ±
#   0.001 (uniform) and 0.867 ± 0.007 (sparse), accuracy 0.733 ± 0.031 and 0.741 ±
#   0.028. The sparse prior believes that 9% of the pairs interact, yet the inferred
#   density is 0.47 under both priors (true: 0.25). As the arithmetic above says, a prior
#   worth a few nats per edge cannot move a likelihood worth thousands of nats per
#   trajectory, with the paper's fixed variance of 5e-5. (A larger `likelihood.variance`
#   or `train.kl_weight` > 1 would give the prior more weight; not tried here.)
# * **Every run still over-predicts edges** (density 0.47 against 0.25), and its accuracy
#   is below the 0.75 of always answering "no edge", while the ranking of the edges is
#   better than chance (AUROC 0.85 to 0.87). Six epochs of 800 trajectories are far from
#   convergence; the quickstart's longer run reaches 0.90 accuracy.
# * **The Dirichlet prior did worse here, with both seeds**: accuracy 0.59 ± 0.04, AUROC
#   0.71 ± 0.06, inferred density 0.59, and a worse rollout error and negative ELBO. It
#   learned an edge frequency of 0.550 (94% HDI 0.542 to 0.557, seed 0; 0.612 with seed
#   1), more than twice the true 0.254. Its $q(\pi)$ is built from the encoder's own
#   expected counts, so it learns what the encoder believes, not what is true, and a
#   plausible reading is that early in training, when the encoder over-predicts edges,
#   the learned prior endorses that belief where the fixed priors would pull against it.
#   Two seeds are few, but both lag on every metric: this deserves a closer look (longer
#   training, more seeds) before the Dirichlet prior is recommended for data like these.
# * **The log evidence cannot be trusted here.** Pareto k is infinite or far above 0.7
#   for 84% to 93% of the held-out trajectories: with 32 draws from a confident guide the
#   importance weights are dominated by a single draw, or tie. The table reports the
#   diagnostic so that this shows; the held-out negative ELBO per trajectory (uniform 5353,
#   sparse 5697, Dirichlet 7777; lower is better) needs no such caveat.
