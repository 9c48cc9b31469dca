"""The NRI generative model as a Pyro program.

For each trajectory b in a plate over trajectories:

    pi = prior.sample()                              (global latents, e.g. a Dirichlet)
    z_b ~ EdgePrior(pi)                              (relaxed one-hot, [E, K])
    x_b[:, t+1] ~ Normal(decoder(x_b, z_b)[t], sigma)   for t = 0 .. T-2

sigma is fixed (the paper's variance 5e-5) or learned (``likelihood.learn_variance``), one
for all features or, with ``likelihood.per_feature``, one per feature: a feature the
decoder cannot predict well then gets a broad likelihood of its own instead of drowning
the others' gradients. A learned variance is floored smoothly,
sigma^2 = min_variance + exp(2 log_sigma) (``likelihood.min_variance``, 1e-6 by default, in
normalised units), so that the sigma of a feature the decoder predicts exactly (one constant
in time, like Kuramoto's omega) stops at the floor instead of shrinking without end; a
fixed variance is used as given. On noisy data (observation noise of standard deviation
s) the honest fixed variance is the noise's in normalised units
(:func:`noise_variance`: (2 s / (max - min))^2 per feature), and a learned one approaches it.

The decoder passes messages only along the sampled edges and follows NRI's multi-step
scheme (ground truth every ``prediction_steps`` frames, its own predictions in between).
The spec's ``graph:`` section changes the latent's shape (:mod:`nri_pyro.structure`): with
``symmetric`` the site holds one type per unordered pair, [B, U, K], U = N(N-1)/2; with
``shared`` one graph [U or E, K] outside the plate serves every trajectory. Known edges
(from the spec, or passed with a mask) are observed: they replace the latent types in the
decoder, and their own likelihood under the prior is the observed site ``known_edges``.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.nn import PyroModule
from torch import Tensor, nn

from nri_pyro.data.dataset import Normalizer, check_trajectories
from nri_pyro.nn import full_graph
from nri_pyro.nn.registry import build_decoder
from nri_pyro.priors import EdgePrior, build_prior
from nri_pyro.structure import GraphStructure

# Settings of the decoder section that the model reads itself (NRI's multi-step scheme);
# the rest go to the decoder's class.
DECODER_SCHEME_KEYS = frozenset({"prediction_steps", "burn_in_steps"})
NODE_KNOWN_EDGES = (
    "prior.name={prior} makes every edge a function of latents per object: it takes no known "
    "edges"
)
DYNAMIC_KNOWN_EDGES = (
    "a dynamic graph (graph.dynamic) takes no known edges: they would hold for the whole "
    "trajectory"
)


def noise_variance(noise: float, normalizer: Normalizer, num_features: int) -> Tensor:
    """The variance [D] in normalised units of observation noise with standard deviation
    ``noise`` in the data's own units (a simulation's ``params.noise``): each feature is
    min-max scaled to [-1, 1] by ``normalizer`` (one min and max per group), so its noise
    standard deviation becomes 2 noise / (max - min); features in no group keep ``noise``.
    Set ``likelihood.variance`` to it (its mean, or with ``per_feature`` learn from it)."""
    if not noise >= 0:
        raise ValueError(f"noise must be a standard deviation >= 0, got {noise!r}")
    scale = torch.ones(num_features, dtype=torch.float64)
    for group, low, high in zip(normalizer.groups, normalizer.low, normalizer.high, strict=True):
        scale[list(group)] = 2.0 / (high - low)
    return (noise * scale).square()


def check_edges(edges: Tensor | None, edge_mask: Tensor | None, x: Tensor, k: int) -> None:
    b, n = x.shape[:2]
    e = n * (n - 1)
    for name, t in (("edges", edges), ("edge_mask", edge_mask)):
        if t is not None and tuple(t.shape) != (b, e):
            raise ValueError(
                f"{name} must have shape [B, E] = [{b}, {e}] (E = N(N-1) ordered pairs, "
                f"receiver-major), got {tuple(t.shape)}"
            )
    if edge_mask is not None and edges is None:
        raise ValueError("edge_mask needs edges: the values of the known edges")
    if edges is not None and (edges.min() < 0 or edges.max() >= k):
        raise ValueError(f"edge types must lie in 0..{k - 1}")


def trajectories_plate(x: Tensor, num_trajectories: int | None) -> pyro.plate:
    """The plate over the trajectories of a minibatch x of a dataset of ``num_trajectories``."""
    batch = x.shape[0]
    subsample = torch.arange(batch, device=x.device)
    return pyro.plate("trajectories", num_trajectories or batch, subsample=subsample)


def sample_edges(
    site: dist.Distribution,
    plate: pyro.plate,
    known: tuple[Tensor, Tensor] | None,
    *,
    shared: bool,
    kl_weight: float,
    replicated: contextlib.AbstractContextManager | None = None,
    name: str = "edges",
) -> Tensor:
    """The ``edges`` site, as the model and the guide both write it: its density without
    the known slots, scaled by ``kl_weight`` (KL annealing). A shared graph is one sample
    [U, K] outside the plate (under ``replicated``, the guide's data-parallel pause: the
    same in every process); otherwise one [B, U, K] per trajectory under ``plate``, the
    plate over the minibatch's trajectories (:func:`trajectories_plate`). A dynamic graph
    names one site per window (``edges_0``, ``edges_1``, ... : :func:`window_site`)."""
    if known is not None:
        site = site.mask(~(known[1][0] if shared else known[1]))
    if shared:
        with poutine.scale(scale=kl_weight), replicated or contextlib.nullcontext():
            return pyro.sample(name, site.to_event(1))
    with plate, poutine.scale(scale=kl_weight):
        return pyro.sample(name, site.to_event(1))


def sample_nodes(
    site: dist.Distribution, plate: pyro.plate, kl_weight: float, name: str
) -> Tensor:
    """A node-level prior's latent site (model and guide alike): one event per trajectory
    under ``plate``, whatever its shape ([B, G] or [B, N-1, K]), scaled by ``kl_weight``."""
    with plate, poutine.scale(scale=kl_weight):
        return pyro.sample(name, site.to_event(len(site.batch_shape) - 1))


def window_site(window: int) -> str:
    """The name of a dynamic graph's edge site of window ``window``."""
    return f"edges_{window}"


class NRIModel(PyroModule):
    """p(z) p(x | z): the edge prior of the spec and a GNN dynamics likelihood.

    Args:
        spec: a resolved model spec (:func:`nri_pyro.specs.resolve_model_spec`).
        num_features: D, the features per object and frame.
        prior: the spec's prior, when its resolution built it already (else built here).
        structure: the spec's graph structure, likewise.

    Call as ``model(x, edges=None, edge_mask=None, num_trajectories=None, kl_weight=1.0)``
    with x: [B, N, T, D]; edges: [B, E] known edge types and edge_mask: [B, E] which of
    them are known (all when edges are given without a mask). ``num_trajectories`` is the
    size of the dataset a minibatch was drawn from, so that the ELBO is scaled for it;
    ``kl_weight`` scales the edge site (KL annealing), in the guide likewise.

    Returns the edges the decoder used, [B, E, K] over ordered pairs (slots expanded to
    both directions, known edges one-hot): posterior predictive code reads them from here
    (``Predictive(..., return_sites=("_RETURN",))``), whatever the shape of the site.
    """

    def __init__(
        self,
        spec: dict[str, Any],
        num_features: int,
        *,
        prior: EdgePrior | None = None,
        structure: GraphStructure | None = None,
    ) -> None:
        super().__init__()
        self.spec = spec
        self.num_features = num_features
        self.num_edge_types = spec["edge_types"]
        # How the graph of N objects is built (benchmarks swap in the reference's dense
        # one-hot formulation, benchmarks/dense_graph.py, to compare against it).
        self.graph_for = full_graph
        decoder = spec["decoder"]
        self.prediction_steps = decoder.get("prediction_steps", 10)
        self.burn_in_steps = decoder.get("burn_in_steps")
        self.decoder = build_decoder(
            decoder, num_features=num_features, num_edge_types=self.num_edge_types,
            exclude=DECODER_SCHEME_KEYS,
        )  # fmt: skip
        # The spec was checked where it was resolved (resolve_model_spec, which also checks
        # that prior, graph and decoder fit together); here its parts are only built.
        self.prior = prior or build_prior(spec["prior"], self.num_edge_types)
        self.structure = structure or GraphStructure(spec.get("graph"), self.num_edge_types)
        likelihood = spec["likelihood"]
        # The floor of a learned variance (0 for a fixed one, and for specs resolved before
        # the floor existed); resolve_model_spec checked that the variance lies above it.
        learned = likelihood["learn_variance"]
        self.min_variance = float(likelihood.get("min_variance", 0.0)) if learned else 0.0
        log_sigma = torch.tensor(0.5 * math.log(likelihood["variance"] - self.min_variance))
        if likelihood.get("per_feature", False):  # one noise scale per feature: [D]
            log_sigma = log_sigma.expand(num_features).clone()
        if likelihood["learn_variance"]:
            self.log_sigma = nn.Parameter(log_sigma)
        else:
            self.register_buffer("log_sigma", log_sigma)

    @property
    def sigma(self) -> Tensor:
        """The likelihood's standard deviation: a scalar, or [D] with ``per_feature``; a
        learned one sqrt(min_variance + exp(2 log_sigma)), never below its floor."""
        if not self.min_variance:
            return self.log_sigma.exp()
        return (self.min_variance + (2 * self.log_sigma).exp()).sqrt()

    @property
    def learns_variance(self) -> bool:
        """Whether the likelihood's variance is learned (``likelihood.learn_variance``)."""
        return isinstance(self.log_sigma, nn.Parameter)

    @property
    def dynamic(self) -> bool:
        """Whether the graph changes over time (``graph.dynamic``): edges per window."""
        return self.structure.window is not None

    def edges_per_step(self, z: Tensor, first: int, steps: int) -> Tensor:
        """A dynamic graph's window edges z: [B, W, E, K] -> the edges of the steps that
        start at frames first .. first + steps - 1: [B, steps, E, K]. Frame t belongs to
        window min(t // window, W - 1), so z may hold the windows of a longer trajectory
        (the last window takes the frames left over)."""
        frames = torch.arange(first, first + steps, device=z.device)
        return z.index_select(1, self.structure.window_index(frames, z.shape[1]))

    def predict(self, x: Tensor, z: Tensor) -> Tensor:
        """The decoder's multi-step predictions of x[:, :, 1:] given edges z: [B, E, K]
        (a dynamic graph's: [B, W, E, K] per window), in x's dtype (also when the decoder
        ran under autocast)."""
        graph = self.graph_for(x.shape[1], x.device)
        if self.dynamic:
            z = self.edges_per_step(z, 0, x.shape[2] - 1)
        if self.burn_in_steps is not None:
            loc = self.decoder(x, z, graph, self.prediction_steps, burn_in_steps=self.burn_in_steps)
        else:
            loc = self.decoder(x, z, graph, self.prediction_steps)
        return loc.to(x.dtype)

    def rollout(self, x_prefix: Tensor, z: Tensor, steps: int) -> Tensor:
        """Predict ``steps`` frames after the prefix on the decoder's own: [B, N, steps, D]
        (a dynamic graph's z: the windows of a trajectory that goes on after the prefix)."""
        graph = self.graph_for(x_prefix.shape[1], x_prefix.device)
        if self.dynamic:  # the windows' edges of the steps after the prefix
            z = self.edges_per_step(z, x_prefix.shape[2] - 1, steps)
        if self.decoder.markovian:  # its state is the last prefix frame
            return self.decoder.rollout(x_prefix[:, :, -1], z, graph, steps)
        return self.decoder.rollout(x_prefix, z, graph, steps)

    def forward(
        self,
        x: Tensor,
        edges: Tensor | None = None,
        edge_mask: Tensor | None = None,
        *,
        num_trajectories: int | None = None,
        kl_weight: float = 1.0,
    ) -> Tensor:
        check_trajectories(x, self.num_features)
        check_edges(edges, edge_mask, x, self.num_edge_types)
        if self.dynamic:
            return self._forward_dynamic(x, edges, num_trajectories, kl_weight)
        if self.prior.node_level:
            return self._forward_nodes(x, edges, num_trajectories, kl_weight)
        batch, num_objects = x.shape[:2]
        k, shared = self.num_edge_types, self.structure.shared
        layout = self.structure.layout(num_objects, x.device)
        known = self.structure.known_slots(edges, edge_mask, layout, batch)
        plate = trajectories_plate(x, num_trajectories)
        # pi: the prior's global latents (a Dirichlet's frequencies), outside the plate.
        with poutine.scale(scale=kl_weight):
            probs = self.prior.sample(x)
        # z ~ EdgePrior(pi): one type per latent slot (per trajectory, or one shared graph).
        shape = [layout.num_slots] if shared else [batch, layout.num_slots]
        site = self.prior.distribution(probs, shape)
        z = sample_edges(site, plate, known, shared=shared, kl_weight=kl_weight)
        if shared:
            z = z.expand(batch, -1, -1)
            _observe_known(probs, known, z.dtype, k, shared=True)
        with plate:
            if not shared:
                _observe_known(probs, known, z.dtype, k, shared=False)
            z = self.decoder_edges(z, known, layout)
            # x[t+1] ~ Normal(decoder(x, z)[t], sigma), messages only along the edges of z.
            pyro.sample("x", self.likelihood(x, z), obs=x[:, :, 1:])
        return z

    def decoder_edges(self, z: Tensor, known: tuple[Tensor, Tensor] | None, layout: Any) -> Tensor:
        """The edges the decoder reads: the latent slots' types z [B, U, K] with the known
        slots' types (one-hot) in their place, expanded to ordered pairs [B, E, K]."""
        if known is not None:
            one_hot = nn.functional.one_hot(known[0], self.num_edge_types).to(z.dtype)
            z = torch.where(known[1].unsqueeze(-1), one_hot, z)
        return layout.to_edges(z)

    def likelihood(self, x: Tensor, z: Tensor) -> dist.Distribution:
        """p(x[:, :, 1:] | z): the Normal around the decoder's predictions given the edges
        z [B, E, K] (per window [B, W, E, K]), one event per trajectory."""
        loc = self.predict(x, z)
        return dist.Normal(loc, self.sigma.to(loc.dtype)).to_event(3)

    def _forward_dynamic(
        self, x: Tensor, edges: Tensor | None, num_trajectories: int | None, kl_weight: float
    ) -> Tensor:
        """A graph per window (``graph.dynamic``): for each trajectory,

            z_0 ~ prior(. | globals),  z_w ~ prior(. | z_{w-1}, globals)   (pyro.markov)
            x[t+1] ~ Normal(decoder(x, z_window(t))[t], sigma)

        Returns the windows' edges [B, W, E, K]. With the "nri" objective each window's
        KL term is analytic given the previous window's sample (TraceMeanField_ELBO
        reads the model's site, built from that sample, and the guide's)."""
        if edges is not None:
            raise ValueError(DYNAMIC_KNOWN_EDGES)
        batch, num_objects, frames = x.shape[:3]
        layout = self.structure.layout(num_objects, x.device)
        plate = trajectories_plate(x, num_trajectories)
        with poutine.scale(scale=kl_weight):
            state = self.prior.sample(x)
        shape = [batch, layout.num_slots]
        windows, previous = [], None
        for w in pyro.markov(range(self.structure.num_windows(frames))):
            site = self.prior.window_distribution(state, previous, shape)
            previous = sample_edges(
                site, plate, None, shared=False, kl_weight=kl_weight, name=window_site(w)
            )
            windows.append(previous)
        z = layout.to_edges(torch.stack(windows, dim=1))  # [B, W, E, K]
        with plate:
            pyro.sample("x", self.likelihood(x, z), obs=x[:, :, 1:])
        return z


    def _forward_nodes(
        self, x: Tensor, edges: Tensor | None, num_trajectories: int | None, kl_weight: float
    ) -> Tensor:
        """Latents per object (a node-level prior, :mod:`nri_pyro.priors.nodes`): for
        each trajectory

            s ~ prior (site ``prior.site``),  z = prior.edges(s)  [B, E, K]
            x[t+1] ~ Normal(decoder(x, z)[t], sigma)
        """
        if edges is not None:
            raise ValueError(NODE_KNOWN_EDGES.format(prior=self.prior.name))
        batch, num_objects = x.shape[:2]
        plate = trajectories_plate(x, num_trajectories)
        site = self.prior.node_distribution(x, batch, num_objects)
        latent = sample_nodes(site, plate, kl_weight, self.prior.site)
        z = self.prior.edges(latent, num_objects)
        with plate:
            pyro.sample("x", self.likelihood(x, z), obs=x[:, :, 1:])
        return z


def known_edges_likelihood(
    probs: Tensor, known: tuple[Tensor, Tensor], dtype: torch.dtype, k: int, shared: bool
) -> tuple[dist.Distribution, Tensor]:
    """The known edges' distribution under the prior (types ``probs`` [K]) and their
    values: the observed site ``known_edges`` (one event per trajectory, or one for a
    shared graph)."""
    values, mask = (known[0][0], known[1][0]) if shared else known
    expanded = probs.to(dtype).expand(*values.shape, k)
    return dist.Categorical(probs=expanded).mask(mask).to_event(1), values


def _observe_known(
    probs: Tensor, known: tuple[Tensor, Tensor] | None, dtype: torch.dtype, k: int, shared: bool
) -> None:
    """The likelihood of the known edges under the prior: an observed site."""
    if known is None:
        return
    observed, values = known_edges_likelihood(probs, known, dtype, k, shared)
    pyro.sample("known_edges", observed, obs=values)
