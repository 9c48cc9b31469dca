"""The held-out log evidence log p(x) of a static graph: exact, or estimated with diagnostics.

log p(x) = log sum_z p(z) p(x | z) sums over every graph the latent slots allow: K ** U
graphs, U = N(N-1) slots (N(N-1)/2 with ``graph.symmetric``), known edges fixed and not
counted. What p(z) is:

- a prior without global latents (uniform, categorical, sparse): the product of its
  edge-type probabilities over the latent slots;
- a Dirichlet prior over the type frequencies pi: pi is integrated out in closed form
  over the guide's posterior q(pi) (its evaluation state: the training set's; the prior
  before training), p(z) = E_q(pi)[prod_u pi_{z_u}], a Dirichlet-multinomial (Polya)
  probability of the slots' types. This is the posterior predictive density of a new
  trajectory, the quantity :func:`nri_pyro.evaluation.importance_log_weights` estimates by
  drawing pi; here pi is never drawn (Rao-Blackwellised);
- a shared graph (``graph.shared``): the guide's posterior of the one graph, q(z),
  likewise the posterior predictive density;
- a node-level prior (``charges``, :mod:`nri_pyro.priors.nodes`): the G graphs of its
  sign assignments (2 ** (N-1) for one labelling, 2 ** N for either), each of
  probability 1 / G, always summed exactly.

Methods (:data:`METHODS`, chosen by ``benchmarks/evidence.py``; its docstring has the
figures):

- ``"exact"``: enumerate every graph (at most :data:`MAX_EXACT_GRAPHS`, else an error);
- ``"guide"``: importance sampling from the guide q(z | x) (the estimator the studies used
  before: unbiased in p(x), but a sharp guide is a poor proposal, Pareto k often > 0.7);
- ``"mixture"``: a defensive mixture q_mix = (1 - a) q + a p(z) over whole graphs, which
  bounds every weight by p(x | z) / a (unbiased);
- ``"stratified"``: the guide's most probable graph and every graph one slot away from it
  (1 + U(K-1) graphs) are summed exactly; the rest of the graphs are importance-sampled
  from the guide conditioned on lying outside that set (per slot floored at
  ``floor / K`` so that every graph can be drawn). Unbiased in p(x): the exact part is
  exact and the remainder's estimate is unbiased for the remainder's sum;
- ``"local"`` (the studies' estimator): ``"stratified"`` around a local mode of p(x, z)
  instead of the guide's mode (from the guide's mode and from 3 of its draws, move to the
  best one-slot neighbour while one is better, at most :data:`MAX_CLIMB` moves, and keep
  the highest of the modes reached), with the remainder drawn from
  half the guide's q and half each slot's conditional p(z_u | x, the mode's other slots),
  which the neighbourhood's densities give for free. It costs (1 + U(K-1)) graphs per move
  plus ``num_samples``; unbiased in p(x) like ``"stratified"`` (the centre and proposal are
  chosen before the remainder is drawn);
- ``"annealed"``: annealed importance sampling (Neal 2001) with ``num_samples`` chains:
  each starts from ``"local"``'s proposal (drawn over every graph, not conditioned) and
  moves through ``anneal_steps`` (:data:`ANNEAL_STEPS`, 16) tempered targets
  r0(z) ** (1 - b) p(x, z) ** b, b = (t / steps) ** 2, with one block-Gibbs sweep at each:
  the edges into one object, which share that object's likelihood terms and so are what
  the posterior couples, are drawn jointly (every assignment of a block decoded, at most
  :data:`MAX_BLOCK_GRAPHS`). It costs num_samples x anneal_steps x N 2 ** (N - 1) graphs
  for two types (about 11 s a trajectory of 5 objects and 49 frames at hidden 32, 32
  chains, on one core: some 20 times ``"local"``); in exchange its weights have a light
  tail where the likelihood is as broad as real noise, so that its k-hat mostly trusts it
  (benchmarks/evidence.py: 4% of trajectories flagged with 32 chains, against 79% for
  ``"local"``, every error under 0.5 nats). With the paper's sharp variance (5e-5)
  chains that all start in the wrong mode stay there with a light tail: there a small k
  is no proof;
- ``"auto"``: ``"exact"`` where that decodes no more graphs than ``"local"`` would at least
  (K ** U <= num_samples + 1 + U(K-1)), else ``"local"``.

Every method is unbiased in p(x), not in log p(x): the log of an unbiased estimate is
biased low by Jensen's inequality, the less the lighter the weights' tail. The Pareto k
(:func:`nri_pyro.diagnostics.pareto_khat`) of the importance weights says when an estimate
cannot be trusted (k > 0.7); for ``"stratified"`` and ``"local"`` it is the k of the
remainder's weights (-inf where the remainder is empty). It is no guarantee: draws that
all missed the posterior's mass can have a light tail and still be hundreds of nats low
(benchmarks/evidence.py), and discounting a heavy tail because the remainder's estimate
is small would be dishonest for the same reason. For ``"exact"`` k is -inf.

Graphs that change over time (``graph.dynamic``) have (K ** U) ** W graphs: only
``"guide"`` (``"auto"`` picks it) serves them, through
:func:`nri_pyro.evaluation.importance_log_weights`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pyro.distributions as dist
import torch
from torch import Tensor

from nri_pyro.evaluation import EVAL_SEED, importance_log_weights, memory_safe_batch
from nri_pyro.guide import NRIGuide
from nri_pyro.model import NRIModel
from nri_pyro.nn.modes import eval_mode
from nri_pyro.priors import DirichletPosterior
from nri_pyro.refine import assignment_log_likelihoods

# The most graphs "exact" enumerates per trajectory: 2 ** 16 = 65,536 (4 objects directed
# with 2 edge types: 4,096; 5 objects directed: 2 ** 20, too many; 5 symmetric: 1,024).
MAX_EXACT_GRAPHS = 2**16
METHODS = ("auto", "exact", "guide", "mixture", "stratified", "local", "annealed")
MIXTURE_WEIGHT = 0.1  # a: the prior's share of the defensive mixture
STRATIFIED_FLOOR = 1e-3  # the remainder's proposal: (1 - floor) q + floor / K per slot
MAX_CLIMB = 16  # "local": the most moves from a start towards a mode of p(x, z)
CLIMB_STARTS = 4  # "local": climbs from the guide's mode and from 3 draws of the guide
ANNEAL_STEPS = 16  # "annealed": temperatures from the start proposal to p(x, z)
# "annealed": the most joint types of one Gibbs block (K ** slots; K: one slot at a time)
MAX_BLOCK_GRAPHS = 64
ANNEAL_POWER = 2  # "annealed": the schedule b_t = (t / steps) ** ANNEAL_POWER


@dataclass
class Evidence:
    """Held-out log evidence per trajectory, with its diagnostic.

    log_evidence: [S] estimates of log p(x_s); pareto_k: [S] the k-hat of each
    trajectory's importance weights (-inf where the estimate is exact); method: the method
    that made them (one of :data:`METHODS` but "auto").
    """

    log_evidence: Tensor
    pareto_k: Tensor
    method: str

    def summary(self) -> dict[str, float | str]:
        """The mean log evidence per trajectory, the median k-hat (it resists inf) and
        the fraction of trajectories with k-hat > 0.7 (whose estimates cannot be trusted),
        and the method: what a study records."""
        k = self.pareto_k
        return {
            "log_evidence": float(self.log_evidence.mean()),
            "pareto_k": float(k.nanmedian()) if k.numel() else math.nan,
            "pareto_k_over_0.7": float((k > 0.7).double().mean()) if k.numel() else math.nan,
            "evidence_method": self.method,
        }


def count_graphs(model: NRIModel, num_objects: int) -> int:
    """The graphs a static model's latent slots allow on ``num_objects`` objects: K ** U,
    U the latent slots (ordered pairs, or unordered with ``graph.symmetric``) less the
    known ones (``graph.known.adjacency``)."""
    if model.prior.node_level:  # the graphs its per-object signs make (2 ** (N - 1) a labelling)
        return model.prior.num_graphs(num_objects)
    return model.num_edge_types ** _latent_slots(model, num_objects)


@torch.no_grad()
def held_out_log_evidence(
    model: NRIModel,
    guide: NRIGuide,
    x: Tensor,
    *,
    method: str = "auto",
    num_samples: int = 64,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
    max_graphs: int = MAX_EXACT_GRAPHS,
    anneal_steps: int = ANNEAL_STEPS,
) -> Evidence:
    """log p(x_s) of held-out trajectories x: [S, N, T, D] (normalised, as the model reads
    them; the decoder reads the guide's ``num_frames`` frames), by ``method`` (see the
    module docstring), with ``num_samples`` importance samples per trajectory (not used by
    "exact"; the Pareto k needs at least 32; "annealed": chains, each of ``anneal_steps``
    temperatures). Runs in eval mode with a fixed seed,
    without touching the global RNG state. ``batch_size``: decoder rows per pass at most
    (fewer where memory requires, :func:`nri_pyro.evaluation.memory_safe_batch`)."""
    from nri_pyro.diagnostics import pareto_khat
    from nri_pyro.evaluation import log_evidence

    if method not in METHODS:
        raise ValueError(f"unknown evidence method {method!r}; valid methods: {', '.join(METHODS)}")
    if not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"num_samples must be a positive integer, got {num_samples!r}")
    if not isinstance(anneal_steps, int) or anneal_steps < 1:
        raise ValueError(f"anneal_steps must be a positive integer, got {anneal_steps!r}")
    if model.dynamic:
        if method not in ("auto", "guide"):
            raise ValueError(
                f"evidence method {method!r} serves static graphs; a dynamic graph "
                f"(graph.dynamic) has (K ** U) ** W graphs: use method='guide' (or 'auto')"
            )
        weights = importance_log_weights(
            model, guide, x, num_samples=num_samples, batch_size=batch_size, device=device
        )
        return Evidence(log_evidence(weights), _khat(weights, pareto_khat), "guide")
    n = x.shape[1]
    graphs = count_graphs(model, n)
    if model.prior.node_level:
        if method not in ("auto", "exact"):
            raise ValueError(
                f"prior.name={model.prior.name} allows only the {graphs:,} graphs of its "
                f"per-object signs: its evidence is summed exactly, method 'exact' (or "
                f"'auto'), not {method!r}"
            )
        method = "exact"
    if method == "auto":
        neighbourhood = 1 + _latent_slots(model, n) * (model.num_edge_types - 1)
        method = "exact" if graphs <= num_samples + neighbourhood else "local"
    if method == "exact" and graphs > max_graphs:
        raise ValueError(
            f"exact evidence enumerates every graph: {model.num_edge_types} edge types on "
            f"{_latent_slots(model, n)} latent slots of {n} objects make {graphs:,} graphs, "
            f"more than the limit of {max_graphs:,}; use method='stratified' (importance "
            f"sampling) or raise max_graphs"
        )
    device = torch.device(device)
    rows = memory_safe_batch(batch_size, model, guide, x, device)
    estimates, khats = [], []
    devices = [device] if device.type == "cuda" else []
    with eval_mode(model, guide), torch.random.fork_rng(devices=devices):
        torch.manual_seed(EVAL_SEED)
        for first in range(0, x.shape[0], rows):
            xt = x[first : first + rows, :, : guide.num_frames].to(device)
            terms = _Terms(model, guide, xt, rows)
            if method == "exact" and model.prior.node_level:
                estimate, weights = terms.exact_nodes(), None
            elif method == "exact":
                estimate, weights = terms.exact(), None
            elif method == "annealed":
                estimate, weights = terms.annealed(num_samples, anneal_steps)
            elif method in ("stratified", "local"):
                estimate, weights = terms.stratified(num_samples, local=method == "local")
            else:
                weights = terms.importance(num_samples, method)
                estimate = log_evidence(weights)
            estimates.append(estimate.cpu())
            khats.append(_khat(weights, pareto_khat, len(estimate)))
    return Evidence(torch.cat(estimates), torch.cat(khats), method)


def exact_log_evidence(
    model: NRIModel, guide: NRIGuide, x: Tensor, *, max_graphs: int = MAX_EXACT_GRAPHS, **kwargs
) -> Tensor:
    """log p(x_s) of every trajectory of x: [S, N, T, D] summed over every graph: [S].
    Refuses (ValueError) more than ``max_graphs`` graphs; other keywords as
    :func:`held_out_log_evidence`."""
    return held_out_log_evidence(
        model, guide, x, method="exact", max_graphs=max_graphs, **kwargs
    ).log_evidence


def _latent_slots(model: NRIModel, num_objects: int) -> int:
    """U less the known slots."""
    layout = model.structure.layout(num_objects, "cpu")
    known = model.structure.known_slots(None, None, layout, 1)
    return layout.num_slots - (int(known[1].sum()) if known is not None else 0)


def _khat(weights: Tensor | None, pareto_khat, count: int = 0) -> Tensor:
    """k-hat per row of log-weights [B, S] (-inf rows: none; too few samples: NaN)."""
    if weights is None:
        return torch.full((count,), -math.inf, dtype=torch.float64)
    if weights.shape[1] < 32 or not bool(weights.isfinite().all()):
        return torch.full((weights.shape[0],), math.nan, dtype=torch.float64)
    return torch.as_tensor(pareto_khat(weights), dtype=torch.float64)


class _Terms:
    """The densities of one batch xt: [B, N, T, D]: the guide's slot probabilities q
    [B', U, K] (B' = 1 for a shared graph), the prior's log p of slot types, and the
    likelihood of graphs, decoded ``rows`` trajectory-graph pairs per pass."""

    def __init__(self, model: NRIModel, guide: NRIGuide, xt: Tensor, rows: int) -> None:
        self.model, self.xt, self.rows = model, xt, rows
        self.k = model.num_edge_types
        self.layout = model.structure.layout(xt.shape[1], xt.device)
        self.q = guide.slot_probs(xt).double()  # [B', U, K], known slots one-hot
        known = model.structure.known_slots(None, None, self.layout, 1)
        self.latent = torch.ones(self.layout.num_slots, dtype=torch.bool, device=xt.device)
        self.known_values = None
        if known is not None:
            self.latent, self.known_values = ~known[1][0], known[0][0]
        self.shared = model.structure.shared
        prior_guide = guide.prior_guide
        self.alpha = self.pi = None
        if self.shared:
            pass  # p(z) is the guide's posterior of the one graph, q(z)
        elif prior_guide is None:
            self.pi = model.prior.probs(self.q)
        elif isinstance(prior_guide, DirichletPosterior) and prior_guide.event_dims == 0:
            self.alpha = prior_guide.posterior().concentration.to(self.q)  # [K]
        else:
            raise ValueError(
                f"the evidence of prior {model.prior.name!r} (global latents sampled by "
                f"{type(prior_guide).__name__}) has no closed form here; use "
                f"nri_pyro.evaluation.importance_log_weights"
            )

    # --- densities of slot types [..., B', U] (or [..., 1, U]) -----------------------
    def log_q(self, types: Tensor, q: Tensor | None = None) -> Tensor:
        """log q(z) over the latent slots: [...]."""
        q = self.q if q is None else q
        chosen = q.expand(*types.shape, self.k).gather(-1, types.unsqueeze(-1)).squeeze(-1)
        return torch.where(self.latent, chosen.log(), 0.0).sum(-1)

    def log_prior(self, types: Tensor) -> Tensor:
        """log p(z) over the latent slots: [...] (see the module docstring)."""
        if self.shared:
            return self.log_q(types)
        if self.pi is not None:
            return (self.pi.log()[types] * self.latent).sum(-1)
        one_hot = torch.nn.functional.one_hot(types, self.k).to(self.alpha)
        counts = (one_hot * self.latent.unsqueeze(-1)).sum(-2)  # [..., K]
        alpha = self.alpha
        return (
            torch.lgamma(alpha.sum()) - torch.lgamma(alpha.sum() + counts.sum(-1))
            + (torch.lgamma(alpha + counts) - torch.lgamma(alpha)).sum(-1)
        )  # fmt: skip

    def sample_prior(self, shape: tuple[int, ...]) -> Tensor:
        """Slot types drawn from p(z): [*shape, U]."""
        u = self.layout.num_slots
        if self.shared:
            return dist.Categorical(probs=self.q[0]).sample((*shape,))
        if self.pi is not None:
            return dist.Categorical(probs=self.pi).sample((*shape, u))
        pi = dist.Dirichlet(self.alpha).sample(shape)  # [*shape, K]
        return dist.Categorical(probs=pi.unsqueeze(-2).expand(*shape, u, self.k)).sample()

    def log_likelihood(self, types: Tensor) -> Tensor:
        """log p(x_b | z) of slot types [G, B', U] (known slots replaced by their values):
        [G, B], decoded ``rows`` rows per pass."""
        if self.known_values is not None:
            types = torch.where(self.latent, types, self.known_values)
        b = self.xt.shape[0]
        z = torch.nn.functional.one_hot(types, self.k).to(self.xt.dtype)
        z = self.layout.to_edges(z).expand(types.shape[0], b, -1, -1).flatten(0, 1)
        out = []
        for first in range(0, z.shape[0], self.rows):
            zs = z[first : first + self.rows]
            # rows of z run graph-major: row r is trajectory r mod B
            index = torch.arange(first, first + zs.shape[0], device=zs.device) % b
            xs = self.xt.index_select(0, index)
            loc = self.model.predict(xs, zs)
            normal = dist.Normal(loc, self.model.sigma.to(loc.dtype))
            out.append(normal.log_prob(xs[:, :, 1:]).sum((1, 2, 3)).double())
        return torch.cat(out).view(types.shape[0], b)

    # --- the methods -----------------------------------------------------------------
    def exact(self) -> Tensor:
        """log p(x_b) summed over every graph of the latent slots: [B]."""
        u, b = self.layout.num_slots, self.xt.shape[0]
        count = self.k ** int(self.latent.sum())
        types = torch.zeros(count, u, dtype=torch.long, device=self.xt.device)
        types[:, self.latent] = _configs(self.k, int(self.latent.sum()), self.xt.device)
        total = torch.full((b,), -math.inf, dtype=torch.float64, device=self.xt.device)
        per_pass = max(1, self.rows // b)
        for first in range(0, count, per_pass):
            chunk = types[first : first + per_pass, None]  # [G, 1, U]
            joint = self.log_likelihood(chunk) + self._prior_of(chunk)
            total = torch.logaddexp(total, torch.logsumexp(joint, 0))
        return total

    def exact_nodes(self) -> Tensor:
        """log p(x_b) of a node-level prior (:mod:`nri_pyro.priors.nodes`), summed over
        every assignment of the N-1 free signs (and the labelling, with ``same: null``),
        each of prior probability 1 / G: [B]."""
        log_lik = assignment_log_likelihoods(self.model, self.xt, rows=self.rows)  # [B, G]
        return torch.logsumexp(log_lik, 1) - math.log(log_lik.shape[1])

    def _prior_of(self, types: Tensor) -> Tensor:
        """log p(z) of slot types [G, B', U] broadcast to [G, B]: the prior does not depend
        on the trajectory, except a shared graph's, which is the guide's."""
        return self.log_prior(types).expand(types.shape[0], self.xt.shape[0])

    def importance(self, num_samples: int, method: str) -> Tensor:
        """Importance log-weights [B, num_samples] of proposal "guide" or "mixture"."""
        b, u = self.xt.shape[0], self.layout.num_slots
        bq = self.q.shape[0]
        weights = []
        per_pass = max(1, self.rows // b)
        for first in range(0, num_samples, per_pass):
            s = min(per_pass, num_samples - first)
            types = dist.Categorical(probs=self.q).sample((s,))  # [s, B', U]
            log_proposal = self.log_q(types)
            if method == "mixture":
                types = types.expand(s, b, u) if bq == 1 else types
                from_prior = torch.rand(s, b, 1, device=types.device) < MIXTURE_WEIGHT
                types = torch.where(from_prior, self.sample_prior((s, b)), types)
                log_proposal = torch.logaddexp(
                    self.log_q(types) + math.log1p(-MIXTURE_WEIGHT),
                    self.log_prior(types) + math.log(MIXTURE_WEIGHT),
                )
            joint = self.log_likelihood(types) + self.log_prior(types).expand(s, b)
            weights.append(joint - log_proposal.expand(s, b))
        return torch.cat(weights).T

    def neighbourhood(self, centre: Tensor) -> tuple[Tensor, Tensor]:
        """The graphs at most one latent slot away from ``centre`` [B, U], the centre first:
        [1 + U(K-1), B, U], and their log p(x, z): [1 + U(K-1), B]."""
        k = self.k
        near = [centre]
        for slot in self.latent.nonzero().squeeze(-1).tolist():
            for shift in range(1, k):
                types = centre.clone()
                types[:, slot] = (centre[:, slot] + shift) % k
                near.append(types)
        near = torch.stack(near)
        return near, self._joint(near)

    def _climb(self, centre: Tensor, climb: bool) -> tuple[Tensor, Tensor]:
        """The neighbourhood of ``centre`` [B, U] (:meth:`neighbourhood`), after moving it
        to its best neighbour while one is better (with ``climb``; MAX_CLIMB moves at
        most): a local mode of p(x, z) per trajectory."""
        near, joint = self.neighbourhood(centre)
        for _ in range(MAX_CLIMB if climb else 0):
            best = joint.argmax(0)  # [B]
            if bool((best == 0).all()):
                break
            near, joint = self.neighbourhood(near[best, torch.arange(centre.shape[0])])
        return near, joint

    def _local_proposal(self, q: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """The ``"local"`` proposal [B, U, K]: per slot half the guide's q [B, U, K] and half
        the slot's conditional p(z_u | x, the centre's other slots), the centre the highest
        of the local modes of p(x, z) that climbs from the guide's mode and from
        CLIMB_STARTS - 1 of its draws reach; with the centre's neighbourhood [1 + U(K-1),
        B, U] and its log p(x, z) (the conditionals are read off them for free)."""
        b, u, k = q.shape
        near, joint = self._climb(q.argmax(-1), True)
        for start in dist.Categorical(probs=q).sample((CLIMB_STARTS - 1,)):
            other_near, other_joint = self._climb(start, True)
            better = other_joint[0] > joint[0]  # [B]
            near = torch.where(better[:, None], other_near, near)
            joint = torch.where(better, other_joint, joint)
        centre = near[0]
        # slot u's type t is neighbour 1 + u(K-1) + ...; known slots keep the centre's
        conditional = joint[0].expand(u, k, b).clone()  # [U, K, B]
        for place, slot in enumerate(self.latent.nonzero().squeeze(-1).tolist()):
            for shift in range(1, k):
                t = (centre[:, slot] + shift) % k
                conditional[slot, t, torch.arange(b)] = joint[1 + place * (k - 1) + shift - 1]
        conditional = torch.softmax(conditional.permute(2, 0, 1), -1)  # [B, U, K]
        return 0.5 * q + 0.5 * conditional, near, joint

    def stratified(self, num_samples: int, local: bool = False) -> tuple[Tensor, Tensor | None]:
        """log p(x_b) [B] as the exact sum over a centre graph and its one-slot neighbours
        plus an importance estimate of the remaining graphs, and the remainder's log-weights
        [B, num_samples] (None when nothing remains).

        The centre is the guide's most probable graph; with ``local`` the highest of the
        local modes of p(x, z) that climbs from it and from draws of the guide reach,
        and the remainder's proposal per slot is half the guide's q and half the slot's
        conditional p(z_u | x, the centre's other slots), read off the neighbourhood's
        densities for free. Either proposal is floored (``floor / K`` per type) and drawn
        conditioned on lying at least two slots from the centre."""
        b, u, k = self.xt.shape[0], self.layout.num_slots, self.k
        q = self.q.expand(b, u, k)
        if local:
            proposal, near, joint = self._local_proposal(q)
        else:
            proposal, (near, joint) = q, self._climb(q.argmax(-1), False)
        exact = torch.logsumexp(joint, 0)  # [B]
        if int(self.latent.sum()) < 2:  # nothing lies two slots away: all graphs are near
            return exact, None
        centre = near[0]
        floored = (1 - STRATIFIED_FLOOR) * proposal + STRATIFIED_FLOOR / k
        floored = torch.where(self.latent.unsqueeze(-1), floored, q)
        weights = []
        per_pass = max(1, self.rows // b)
        for first in range(0, num_samples, per_pass):
            s = min(per_pass, num_samples - first)
            types, log_proposal = _sample_two_away(floored, centre, self.latent, s)
            joint = self.log_likelihood(types) + self.log_prior(types)
            weights.append(joint - log_proposal)
        weights = torch.cat(weights).T  # [B, num_samples]
        rest = torch.logsumexp(weights, -1) - math.log(num_samples)
        return torch.logaddexp(exact, rest), weights

    def annealed(self, num_chains: int, steps: int) -> tuple[Tensor, Tensor]:
        """Annealed importance sampling (Neal 2001) over graphs: log p(x_b) [B] and the
        chains' log-weights [B, num_chains].

        The start r0 is the ``"local"`` remainder's proposal without its conditioning
        (a product over slots of half the guide's q and half the slot's conditional at a
        local mode of p(x, z), floored), drawn exactly. The chains then move through
        f_t(z) = r0(z) ** (1 - b_t) p(x, z) ** b_t, b_t = (t / steps) ** 2, with one
        systematic block-Gibbs sweep at each t over :meth:`blocks` (the edges into one
        object drawn jointly: every assignment of a block decoded, N 2 ** (N - 1) graphs
        per chain and sweep for 2 types), and gather the weight
        sum_t (b_t - b_{t-1}) [log p(x, z_{t-1}) - log r0(z_{t-1})]. Unbiased in p(x)."""
        b, u, k = self.xt.shape[0], self.layout.num_slots, self.k
        q = self.q.expand(b, u, k)
        proposal, _, _ = self._local_proposal(q)
        floored = (1 - STRATIFIED_FLOOR) * proposal + STRATIFIED_FLOOR / k
        start = torch.where(self.latent.unsqueeze(-1), floored, q)  # [B, U, K]
        types = dist.Categorical(probs=start).sample((num_chains,))  # [C, B, U]
        joint = self._joint(types)
        log_w = torch.zeros(num_chains, b, dtype=torch.float64, device=self.xt.device)
        betas = [(t / steps) ** ANNEAL_POWER for t in range(steps + 1)]
        for t in range(1, steps + 1):
            beta = betas[t]
            log_w += (beta - betas[t - 1]) * (joint - self.log_q(types, start))
            if t == steps:
                break  # a sweep at p(x, z) itself would not change the weights
            for block in self.blocks():
                configs = _configs(k, len(block), types.device)  # [G, m]
                options = types.expand(len(configs), *types.shape).clone()  # [G, C, B, U]
                options[..., block] = configs[:, None, None, :]
                joints = self._joint(options.flatten(0, 1)).view(len(configs), *joint.shape)
                target = (1 - beta) * self.log_q(options, start) + beta * joints
                pick = dist.Categorical(logits=target.permute(1, 2, 0)).sample()  # [C, B]
                types = options.gather(0, pick[None, ..., None].expand(1, *types.shape))[0]
                joint = joints.gather(0, pick[None])[0]
        weights = log_w.T  # [B, C]
        return torch.logsumexp(weights, -1) - math.log(num_chains), weights

    def blocks(self) -> list[list[int]]:
        """The latent slots in the blocks that annealing's Gibbs sweep draws jointly: the
        edges into one object (whose likelihood terms they share: the posterior couples
        them, and hardly any others), at most K ** m <= MAX_BLOCK_GRAPHS types a block
        (larger groups split); with ``graph.symmetric``, a pair's slot by its first object."""
        n = self.layout.num_objects
        latent = self.latent.nonzero().squeeze(-1).tolist()
        first = self.layout.slot_edges[:, 0] // (n - 1)  # receiver-major ordered edges
        size = max(1, int(math.log(MAX_BLOCK_GRAPHS, self.k) + 1e-9))
        blocks = []
        for obj in range(n):
            group = [slot for slot in latent if int(first[slot]) == obj]
            blocks += [group[i : i + size] for i in range(0, len(group), size)]
        return blocks

    def _joint(self, types: Tensor) -> Tensor:
        """log p(x_b, z) of slot types [G, B, U]: [G, B], ``rows`` decoder rows per pass."""
        per_pass = max(1, self.rows // self.xt.shape[0])
        chunks = [types[i : i + per_pass] for i in range(0, types.shape[0], per_pass)]
        return torch.cat([self.log_likelihood(c) + self.log_prior(c) for c in chunks])


def _configs(k: int, m: int, device: torch.device) -> Tensor:
    """Every assignment of K types to m slots: [K ** m, m]."""
    codes = torch.arange(k**m, device=device)
    return torch.stack([(codes // k**place) % k for place in range(m)], -1)


def _sample_two_away(q: Tensor, mode: Tensor, latent: Tensor, num: int) -> tuple[Tensor, Tensor]:
    """Draws from the product of categoricals q: [B, U, K] conditioned on at least two
    latent slots differing from ``mode`` [B, U]: types [num, B, U] and their log density
    under the conditioned proposal, [num, B]. Slots are drawn in order, each with its
    probability of differing given how many differences the slots after it must still
    make (a recursion over the slots of P(at least m of the remaining differ), m <= 2)."""
    b, u, k = q.shape
    stay = q.gather(-1, mode.unsqueeze(-1)).squeeze(-1)  # [B, U]
    move = (q.sum(-1) - stay).clamp(min=0) * latent  # P(slot differs), 0 on known slots
    stay = torch.where(latent, stay, torch.ones_like(stay))
    # tail[:, i, m] = P(at least m of slots i.. differ), m = 0, 1, 2
    tail = torch.zeros(b, u + 1, 3, dtype=q.dtype, device=q.device)
    tail[:, u, 0] = 1
    for i in range(u - 1, -1, -1):
        after = tail[:, i + 1]
        tail[:, i, 0] = 1
        tail[:, i, 1] = move[:, i] * after[:, 0] + stay[:, i] * after[:, 1]
        tail[:, i, 2] = move[:, i] * after[:, 1] + stay[:, i] * after[:, 2]
    need = torch.full((num, b), 2, dtype=torch.long, device=q.device)
    types = mode.expand(num, b, u).clone()
    log_density = torch.zeros(num, b, dtype=q.dtype, device=q.device)
    rows = torch.arange(b, device=q.device)
    for i in range(u):
        after = tail[:, i + 1]  # [B, 3]
        fewer = after[rows, (need - 1).clamp(min=0)]  # [num, B]
        p_move = move[:, i] * fewer / tail[rows, i, need].clamp(min=1e-300)
        moved = torch.rand(num, b, dtype=q.dtype, device=q.device) < p_move
        others = q[:, i].clamp(min=1e-300).scatter(-1, mode[:, i, None], 0.0)  # [B, K]
        other = dist.Categorical(probs=others.expand(num, b, k)).sample() if k > 2 else None
        if other is None:
            other = 1 - mode[:, i].expand(num, b)
        types[:, :, i] = torch.where(moved, other, types[:, :, i])
        chosen_q = q[:, i].expand(num, b, k).gather(-1, types[:, :, i, None]).squeeze(-1)
        log_density += torch.where(latent[i], chosen_q.log(), torch.zeros_like(chosen_q))
        need = torch.where(moved, (need - 1).clamp(min=0), need)
    # q(z | two away) = q(z) / P(two away)
    return types, log_density - tail[:, 0, 2].log()
