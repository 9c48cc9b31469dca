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
# # Graphs that change over time
#
# NRI infers one graph per trajectory. In many systems the relations change while we
# watch: players switch whom they mark, people join and leave a group. Dynamic NRI
# (Graber & Schwing, 2020) infers a graph per time step instead. In `nri_pyro` this is a
# choice in the model spec, like the sparsity priors:
#
# ```yaml
# graph: {dynamic: {window: 4}}      # one edge-type latent per pair per window of 4 frames
# prior: {name: markov, stay: 0.9}   # a sticky chain over the windows
# ```
#
# The generative story per trajectory: the first window's edges come from a base prior
# (uniform here); each later window keeps the previous window's type with probability
# `stay` and otherwise redraws it from the base; the decoder passes messages along the
# window's edges at every step in it. The guide reads each window, and a bidirectional
# GRU over the windows lets every window's edge probabilities draw on the whole
# trajectory. With `stay=0` the windows are
# independent; with `stay=1` the chain is one static graph.
#
# This notebook simulates springs whose springs switch on and off at random times, fits
# static NRI and the Markov prior on the same data, shows where the static model fails and
# the dynamic one does not, and finds a switch time.

# %%
# %matplotlib inline
import os
import time

import torch
from IPython.display import display
from matplotlib.figure import Figure

from nri_pyro import NRI, load_preset, simulate
from nri_pyro.metrics import edge_accuracy_by_frame, switch_detection
from nri_pyro.plots import plot_edges_over_time, relabel

torch.set_num_threads(1)
# NRI_PYRO_SMOKE=1 (the test suite) runs the same code on tiny data in about a minute.
SMOKE = os.environ.get("NRI_PYRO_SMOKE") == "1"
print("smoke mode" if SMOKE else "full size")

# %% [markdown]
# ## 1. Springs that switch
#
# `switch_rate` makes every spring flip (on to off, off to on) at the events of a Poisson
# process: 0.2 flips per time unit, so over a 49-frame trajectory (4.9 time units) each of
# the 10 pairs flips about once. The truth is stored per frame, `adjacency[s, t]` being the
# graph in force at frame t: `[S, T, N, N]`, and `edges` `[S, T, E]`.

# %%
SIZES = {"train": 96, "valid": 32, "test": 32}
if not SMOKE:
    SIZES = {"train": 3000, "valid": 200, "test": 400}
RATE = 0.2
train = simulate("springs", SIZES["train"], seed=3, switch_rate=RATE)
valid = simulate("springs", SIZES["valid"], seed=3, split="valid", switch_rate=RATE)
test = simulate("springs", SIZES["test"], seed=3, split="test", switch_rate=RATE)
switches = test.edges.diff(dim=1).ne(0).sum((1, 2)) / 2  # unordered pairs: both directions flip
print(test)
print(f"truth per frame: edges {list(test.edges.shape)}; switches per test trajectory: "
      f"{float(switches.float().mean()):.1f} (max {int(switches.max())})")

# %% [markdown]
# ## 2. Static NRI and the Markov prior, trained alike
#
# Both start from the `springs5` recipe (the main job: hidden size 64, symmetric graphs).
# The dynamic model is the `springs5-switching` preset: the same network, plus
# `graph.dynamic` and the Markov prior, and a guide whose encoder reads each window of 4
# frames, with a bidirectional GRU over the windows (`recurrent`) that lets every window's
# edge logits read the whole trajectory.

# %%
dynamic_preset = load_preset("springs5-switching")
print("model graph:", dynamic_preset.model["graph"], "| prior:", dynamic_preset.model["prior"])
print("guide window_context:", dynamic_preset.guide["window_context"],
      "| recurrent:", dynamic_preset.guide["recurrent"])

EPOCHS = 1 if SMOKE else 12
fits, seconds = {}, {}
for name, preset in (("static", "springs5"), ("markov", "springs5-switching")):
    nri = NRI(preset=preset, epochs=EPOCHS, lr_decay_every=5, progress=False)
    start = time.perf_counter()
    nri.fit(train, valid)
    seconds[name] = time.perf_counter() - start
    fits[name] = nri
    print(f"{name}: {EPOCHS} epochs in {seconds[name] / 60:.1f} min")

# %% [markdown]
# ## 3. Scored per frame
#
# Every (trajectory, frame, pair) counts once against the graph in force at that frame,
# with the best relabelling of the edge types over the whole test set. A static model's
# one graph is scored at every frame. Switch detection: a change of the most likely type
# between consecutive frames, matched to a true switch of the same pair within
# +-W frames (one window: W = 4 here).

# %%
rows = {}
for name, nri in fits.items():
    metrics = nri.evaluate(test)
    rows[name] = {k: round(metrics[k], 3) for k in
                  ("edge_accuracy", "edge_auroc", "switch_precision", "switch_recall")}
    rows[name]["minutes"] = round(seconds[name] / 60, 1)
display(rows)

# %% [markdown]
# Where the static model fails: its accuracy by frame. One graph per trajectory is right
# where the truth has not changed yet and wrong, for a pair that switched, on one side of
# the switch. The windows follow the switches.

# %%
probs = {name: nri.infer_edges(test, per_frame=True) for name, nri in fits.items()}
fig = Figure(figsize=(7, 3.2))
ax = fig.subplots()
for name, p in probs.items():
    ax.plot(edge_accuracy_by_frame(p, test.edges, anchor_first=True).numpy(), label=name)
ax.set(xlabel="frame", ylabel="edge accuracy (test)", title="accuracy by frame")
ax.legend()
display(fig)

# %% [markdown]
# ## 4. A switch, found
#
# One test trajectory: the pairs whose spring switched, the dynamic model's probability
# of a spring at each frame (its window's), and the truth as a dashed step line.

# %%
markov = torch.from_numpy(relabel(probs["markov"], test.edges, True)).float()
W = dynamic_preset.model["graph"]["dynamic"]["window"]
found = switch_detection(markov, test.edges, tolerance=W)
print({k: round(v, 3) if isinstance(v, float) else v for k, v in found.items()})
true_switch = test.edges.diff(dim=1).ne(0)  # [S, T-1, E]: frame t+1 differs from frame t
seen = markov.argmax(-1).diff(dim=1).ne(0)
# A detected switch within +-W frames of each frame (a max over a sliding window of 2W+1).
near = torch.nn.functional.max_pool1d(seen.transpose(1, 2).float(), 2 * W + 1, 1, W)
hits = (true_switch & near.transpose(1, 2).bool()).sum((1, 2))
s = int(hits.argmax())  # the test trajectory with the most switches found
pairs = true_switch[s].any(0).nonzero().flatten().tolist()
for e in pairs[:6]:
    true_at = (true_switch[s, :, e].nonzero().flatten() + 1).tolist()
    found_at = (seen[s, :, e].nonzero().flatten() + 1).tolist()
    print(f"pair {e}: switched at frame(s) {true_at}; the model's type changed at {found_at}")
plot_edges_over_time(markov[s], test.edges[s], edges=pairs[:6] or None, kind="lines",
                     title=f"test trajectory {s}: p(spring) by frame (markov prior)")

# %% [markdown]
# ## 5. Ablations
#
# The stickiness of the chain is a setting like any other: an ablation over `prior.stay`
# (0 = independent windows) against static NRI, from the command line:
#
# ```bash
# nri-pyro ablate --preset springs5-switching --vary prior.stay=0,0.9,0.99 --seeds 2
# nri-pyro ablate --preset springs5-switching \
#     --variant 'static: graph.dynamic=null guide.recurrent=null prior.name=uniform' \
#     --variant 'markov:'
# ```
#
# `benchmarks/dynamic_graphs.py` compares static NRI and the Markov prior at equal CPU
# time on 8,000 trajectories (the figures are in the README).
