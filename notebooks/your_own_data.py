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
# # Your own data: from a NumPy array to an inferred graph
#
# NRI needs nothing but trajectories: one array of shape **`[S, N, T, D]`**,
#
# * `S` systems (or recordings, or windows cut from one long recording),
# * `N` objects per system, the same in every system,
# * `T` frames, equally spaced in time,
# * `D` features per object and frame (positions, velocities, phases, ...),
#
# in floating point, without NaN. True graphs are optional: an integer array `[S, N, N]`
# with `adjacency[s, i, j]` = the type of **j's influence on i** (receiver *i* in rows,
# sender *j* in columns); they are never used for training, only to score the result.
#
# This notebook walks through what a user does with such an array, with **Kuramoto
# oscillators** as the example: five oscillators whose phases pull on each other along
# **directed** couplings (j may drive i without i driving j). We simulate them with
# `nri_pyro` and then forget where the array came from: from there on it is treated as
# any user's data. A second, home-made directed system at the end shows the whole path
# from your own simulator (or measurement) to directed graphs recovered in a few minutes.

# %%
# %matplotlib inline
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from nri_pyro import NRI, Normalizer, TrajectoryDataset, plots, simulate

# Small networks run fastest on one thread, and much faster when the machine is shared.
torch.set_num_threads(1)
# NRI_PYRO_SMOKE=1 (the test suite) runs the same code on tiny data in about a minute.
SMOKE = os.environ.get("NRI_PYRO_SMOKE") == "1"
WORK = Path(tempfile.mkdtemp(prefix="nri-own-data-"))
SPECS = Path("..")  # the repository root, where models/ and guides/ are (run from notebooks/)
print("smoke mode" if SMOKE else "full size", "| files in", WORK)

# %% [markdown]
# ## 1. The array
#
# Kuramoto oscillators as in the paper (the generator of Amortized Causal Discovery):
# $\dot\phi_i = \omega_i + \sum_j k_{ij} \sin(\phi_j - \phi_i)$ with $k_{ij} \in \{0, 1\}$
# drawn independently for every ordered pair, so the coupling is directed. Four features per
# oscillator and frame: $d\phi/dt$ (scaled), $\sin\phi$, the unwrapped phase (scaled) and
# $\omega$ (scaled). We take the simulation out as plain NumPy arrays.

# %%
SIZES = (
    {"train": 48, "valid": 16, "test": 16} if SMOKE else {"train": 1000, "valid": 100, "test": 200}
)
arrays = {}
for split, size in SIZES.items():
    frames = 99 if split == "test" else 49
    sim = simulate("kuramoto", size, num_objects=5, num_frames=frames, seed=0, split=split)
    arrays[split] = (sim.trajectories.numpy(), sim.adjacency.numpy())
del sim  # from here on, only the arrays
x_train, adjacency_train = arrays["train"]
print("trajectories:", x_train.shape, x_train.dtype, "= [S, N, T, D]")
print("adjacency:   ", adjacency_train.shape, adjacency_train.dtype, "= [S, N, N]")
print("system 0, adjacency[i, j] = 1 when j drives i:\n", adjacency_train[0])
one_way = adjacency_train != adjacency_train.transpose(0, 2, 1)
print(f"pairs coupled in one direction only: {one_way.mean():.0%} of ordered pairs")

# %% [markdown]
# **Shapes.** If your array is time-major, `[S, T, N, D]`, move the axes:
# `np.transpose(x, (0, 2, 1, 3))`. One long recording of `N` objects can be cut into
# windows of `T` frames to make `S` systems (the graph is then the same in every window;
# see `graph.shared` in the README). The trajectories of the test split may be longer than
# the training ones (here 99 frames against 49): the encoder reads the first frames and the
# rest can test predictions.
#
# ## 2. Wrap it: `TrajectoryDataset.from_arrays`
#
# It checks the shapes and values and carries optional metadata. Labels are optional.

# %%
splits = {
    split: TrajectoryDataset.from_arrays(x, adjacency, source="my oscillators")
    for split, (x, adjacency) in arrays.items()
}
unlabelled = TrajectoryDataset.from_arrays(x_train)  # fine for training; no scores then
print(splits["train"], "|", unlabelled)

broken = x_train[:4].copy()
broken[0, 1, 2, 3] = np.nan
try:
    TrajectoryDataset.from_arrays(broken)
except ValueError as err:
    print("caught:", err)

# %% [markdown]
# ## 3. Normalisation
#
# NRI is trained on data scaled to [-1, 1]. `NRI.fit` computes the scaling on the training
# split, one minimum and maximum per **group of features** over all systems, objects and
# frames, stores it in the checkpoint, applies it to every split it is given later, and
# maps predictions back to your units. By default every feature is its own group. Features
# that share a unit and a meaning should share a group, so that their relative sizes
# survive: positions x and y together, velocities together (the paper's choice for
# particles). Pass a `Normalizer` in the metadata to choose the groups. For the four
# Kuramoto features, which have different meanings, one group each is right, which is
# what `Normalizer.fit` with these groups gives and what `fit` would also do by default.

# %%
normalizer = Normalizer.fit(splits["train"].trajectories, groups=[(0,), (1,), (2,), (3,)])
print(normalizer)
splits["train"] = TrajectoryDataset.from_arrays(
    x_train, adjacency_train, normalization=normalizer.to_dict()
)

# %% [markdown]
# ## 4. Which edge type means "no edge"?
#
# With the default **skip-first** decoder, edge type 0 sends no message at all: it *is*
# "no interaction", and types 1..K-1 are kinds of interaction that the model names itself.
# So label "no interaction" as 0 in your adjacency (the scores keep type 0 fixed and find
# the best naming of the others). Here 0 = uncoupled, 1 = coupled. If every pair of your
# system interacts in one of several ways (the paper's charged particles: attract or repel),
# no type should be silent: set `decoder.skip_first=false`, and the scores take the best
# relabelling of all types. More kinds of interaction: `edge_types=3` (or more).
#
# ## 5. Train: the CNN encoder
#
# `guides/cnn.yaml` is the paper's encoder for Kuramoto: 1-D convolutions with attention
# pooling over time, so it reads trajectories of any length (at least 14 frames), while
# the MLP encoder (`guides/mlp.yaml`) is tied to the training length. The paper's size is
# hidden 256, 500 epochs of 50,000 trajectories; here hidden 64, four epochs of 1,000.

# %%
HIDDEN = 16 if SMOKE else 64
SIZE = [f"decoder.{k}={HIDDEN}" for k in ("msg_hidden", "msg_out", "hidden")]
SIZE.append(f"guide.encoder.hidden={HIDDEN}")
print(
    yaml.safe_dump(yaml.safe_load((SPECS / "guides" / "cnn.yaml").read_text()))
)  # hidden: see SIZE
oscillators = NRI(
    SPECS / "models" / "nri.yaml",
    SPECS / "guides" / "cnn.yaml",
    overrides=SIZE,
    lr=2e-3,
    batch_size=16,
    lr_decay_every=100,
    progress=False,
)
start = time.perf_counter()
oscillators.fit(splits["train"], splits["valid"], epochs=1 if SMOKE else 4, out=WORK / "kuramoto")
print(f"trained in {time.perf_counter() - start:.0f} s")
print("normalisation used:", oscillators.normalizer == normalizer)


# %%
def direction_accuracy(probs: torch.Tensor, adjacency: torch.Tensor) -> float:
    """Among pairs coupled one way only: how often p(j -> i) > p(i -> j) picks that way.

    probs: [S, N, N, K] posterior edge-type probabilities; adjacency: [S, N, N] true types.
    """
    present = 1 - probs[..., 0]
    truth = adjacency != 0
    one_way = truth != truth.transpose(1, 2)
    right = (present > present.transpose(1, 2)) == truth
    return float(right[one_way].float().mean())


def report(nri: NRI, test: TrajectoryDataset) -> torch.Tensor:
    metrics = nri.evaluate(test)
    probs = nri.infer_edges(test, as_adjacency=True)  # [S, N, N, K]
    for key in ("edge_accuracy", "edge_auroc", "edge_density"):
        print(f"{key:>18}: {metrics[key]:.4f}")
    print(f"{'true density':>18}: {float(test.edges.float().mean()):.4f}")
    print(f"{'direction accuracy':>18}: {direction_accuracy(probs, test.adjacency):.4f}")
    return probs


probs = report(oscillators, splits["test"])

# %% [markdown]
# The graph of one test system, with the inferred p(j drives i) as a matrix and as arrows
# (the oscillators drawn on a circle; true couplings dotted underneath), and the
# posteriors of the first 20 test systems against the truth:

# %%
circle = np.stack([np.cos(np.arange(5) * 2 * np.pi / 5), np.sin(np.arange(5) * 2 * np.pi / 5)], 1)
plots.plot_graph(probs[0], splits["test"].adjacency[0], circle, title="Kuramoto, test system 0")

# %%
plots.plot_edge_probs(
    oscillators.infer_edges(splits["test"])[:20],
    splits["test"].edges[:20],
    title="Kuramoto: first 20 test systems",
)

# %% [markdown]
# **Kuramoto is not learned at this budget.** After four epochs of 1,000 systems (about half
# a minute), the inferred couplings are no better than chance: accuracy 0.50, AUROC 0.52,
# direction accuracy 0.50, and an inferred density of 0.85 against a true 0.51. The
# encoder has not found the graphs; it answers by position in the matrix (whole rows and
# columns on or off, as in the figures). This is the data path working and the training
# budget falling short, as far as we can tell: Kuramoto is the slowest of the paper's
# systems to learn (96% after 500 epochs of 50,000 systems with hidden size 256). A
# likely reason is that the decoder predicts each frame from the previous one, and the
# features carry sin(phi) but not cos(phi), so the next frame is hard to predict with
# or without the graph and the edges help the likelihood only a little. In our own tries
# on this CPU, neither the MLP encoder, an RNN decoder, three times the coupling, three
# oscillators, narrower frequencies, a delay embedding of the previous frame, nor
# revealing half of the true edges in training (`graph.known.fraction=0.5`) lifted the
# validation accuracy above 0.55 within a few minutes. On a GPU:
# `nri-pyro simulate kuramoto --out data/kuramoto5`, then
# `nri-pyro train --model models/nri.yaml --guide guides/cnn.yaml --data data/kuramoto5
# --device cuda`.
#
# ## 6. A directed system of your own, learned in minutes
#
# The same path with an array from your own code: particles that each **follow** some of
# the others (particle *i* is pulled towards *j* when $A_{ij} = 1$, and *j* need not
# follow *i*): a directed, non-reciprocal version of the springs system, written in
# NumPy in a few lines. Its output is time-major, `[S, T, N, D]`, as many recordings
# are; positions and velocities get one normalisation group each.


# %%
def simulate_followers(num_systems, num_objects=5, num_frames=49, seed=0, strength=0.3):
    """Particles in a box [-5, 5]^2 pulled towards the ones they follow (semi-implicit
    Euler, dt 0.01, a frame every 10 steps). Returns x [S, T, N, 4] = (x, y, vx, vy) and
    follows [S, N, N] (follows[s, i, j] = 1: i is pulled towards j)."""
    rng = np.random.default_rng(seed)
    n, dt = num_objects, 0.01
    follows = (rng.random((num_systems, n, n)) < 0.5) & ~np.eye(n, dtype=bool)
    pos = rng.normal(0.0, 0.5, (num_systems, n, 2))
    angle = rng.uniform(0, 2 * np.pi, (num_systems, n))
    vel = 0.5 * np.stack([np.cos(angle), np.sin(angle)], -1)
    frames = []
    for step in range(10 * num_frames):
        pull = (follows[..., None] * (pos[:, None] - pos[:, :, None])).sum(2)
        vel = vel + dt * strength * pull
        pos = pos + dt * vel
        out = np.abs(pos) > 5  # elastic walls
        pos = np.where(out, np.sign(pos) * 10 - pos, pos)
        vel = np.where(out, -vel, vel)
        if step % 10 == 9:
            frames.append(np.concatenate([pos, vel], -1))
    return np.stack(frames, axis=1), follows.astype(np.int64)


FSIZES = (
    {"train": 48, "valid": 16, "test": 16} if SMOKE else {"train": 2000, "valid": 100, "test": 300}
)
groups = [(0, 1), (2, 3)]  # positions share one scale, velocities another
followers = {}
for seed, (split, size) in enumerate(FSIZES.items()):
    x, follows = simulate_followers(size, seed=seed)
    x = np.transpose(x, (0, 2, 1, 3))  # [S, T, N, D] -> [S, N, T, D]
    followers[split] = TrajectoryDataset.from_arrays(x, follows)
norm = Normalizer.fit(followers["train"].trajectories, groups)
followers["train"] = TrajectoryDataset.from_arrays(
    followers["train"].trajectories, followers["train"].adjacency, normalization=norm.to_dict()
)
print(followers["train"], norm, sep="\n")

# %%
plots.plot_trajectories(followers["test"].trajectories[0], title="followers, test system 0")

# %% [markdown]
# The MLP encoder this time (all trajectories have 49 frames), a higher learning rate and
# batches of 16, ten epochs of 2,000 systems:

# %%
follow_nri = NRI(
    SPECS / "models" / "nri.yaml",
    SPECS / "guides" / "mlp.yaml",
    overrides=SIZE,
    lr=4e-3,
    batch_size=16,
    lr_decay_every=100,
    progress=False,
)
start = time.perf_counter()
follow_nri.fit(
    followers["train"], followers["valid"], epochs=1 if SMOKE else 10, out=WORK / "follow"
)
print(f"trained in {time.perf_counter() - start:.0f} s")
print([round(r["valid_edge_accuracy"], 3) for r in follow_nri.history], "validation accuracy")
follow_probs = report(follow_nri, followers["test"])

# %%
test0 = followers["test"]
plots.plot_graph(
    follow_probs[0],
    test0.adjacency[0],
    test0.trajectories[0, :, 0, :2],
    title="followers, test system 0: inferred vs true (arrows: j -> i)",
)

# %%
plots.plot_edge_probs(
    follow_nri.infer_edges(test0)[:20], test0.edges[:20], title="followers: first 20 test systems"
)

# %% [markdown]
# ## 7. New arrays, after training
#
# A fitted model reads raw arrays (a tensor `[S, N, T, D]` in your units, normalised with
# the training statistics on the way in) and returns posterior edge-type probabilities,
# flattened `[S, N(N-1), K]` or as matrices `[S, N, N, K]`:

# %%
new, new_truth = simulate_followers(3, seed=99)
new = torch.as_tensor(np.transpose(new, (0, 2, 1, 3)))
p_edge = 1 - follow_nri.infer_edges(new, as_adjacency=True)[..., 0].numpy()  # [3, N, N]
np.fill_diagonal(p_edge[0], np.nan)
print("p(j drives i) for new system 0 (rows i, columns j):")
print(np.round(p_edge[0], 2))
print("its true graph:")
print(new_truth[0])

# %% [markdown]
# ## What this shows
#
# * **From your array to NRI** takes `TrajectoryDataset.from_arrays(x, adjacency)`
#   (labels optional), a `Normalizer` in the metadata where features should share a scale,
#   0 for "no interaction" in your labels, and `NRI(...).fit(train, valid)`; the trained
#   model then reads new raw arrays.
# * **Kuramoto** (directed, the paper's features) is not learned in a minute of CPU:
#   accuracy 0.50, AUROC 0.52, direction 0.50, chance level (see above).
# * **The followers** (directed, your own simulator): after ten epochs of 2,000 systems
#   (about a minute and a half), held-out accuracy 0.794, AUROC 0.879, inferred density
#   0.571 against a true 0.503. Of the pairs coupled one way only, the model points the
#   arrow the right way 86% of the time (chance: 50%): it tells who follows whom, not just
#   who interacts. The validation accuracy was still rising (0.805 at epoch 10).
