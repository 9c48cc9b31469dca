"""ArviZ diagnostics of a fitted NRI: posterior draws, global latents, held-out predictive fit.

This is the one module of nri-pyro that imports ArviZ. It works with ArviZ 0.x
(``InferenceData``, ``az.psislw``, ``az.loo``, ``az.compare``) and with ArviZ 1.x, where the
library is split into arviz_base / arviz_stats / arviz_plots and ``InferenceData`` is an
``xarray.DataTree``; the two differ only in the small ``_az_*`` shims below.

What is here
- :func:`pareto_khat`: the PSIS k-hat diagnostic of importance log-weights [n_obs, n_samples].
- :func:`sample_posterior` / :func:`to_arviz` / :func:`posterior_to_arviz`: S draws of the
  guide on data as an ArviZ dataset. Each draw traces the guide and then the model given
  the draw. The ``posterior`` group holds ``edges``, the edge types each trajectory's
  decoder used (the model program's return value: a symmetric or shared graph's slots
  mapped to ordered pairs, known edges filled in) as one-hot draws with dims (chain, draw,
  trajectory, receiver, sender, edge_type) (NaN on the diagonal, chain = 1), and the guide's
  other latents: local ones (inside the "trajectories" plate) with a trajectory dim, global
  ones (outside it, found by tracing the guide) named after their site, a K-vector with the
  dim edge_type. With ``kind="hard"`` (default) an edge draw is the one-hot argmax of the
  guide's relaxed (Gumbel-softmax) sample, which is an exact draw from the categorical
  posterior softmax(logits); with ``kind="relaxed"`` it is the guide's sample itself (the
  Concrete relaxation at the guide's temperature, or straight-through one-hot for a hard
  guide). The encoder's probabilities are not draws; use ``NRI.infer_edges`` for them.
- :func:`summarize_globals` / :func:`hdi_globals`: ``az.summary`` and ``az.hdi`` of the
  global latents.
- The ``log_likelihood`` group (variable ``x``, dims chain, draw, trajectory): for draw s
  of (edges, global latents) from the guide given held-out trajectory b, log p(x_b | draw),
  the model's likelihood of the whole trajectory, its site ``x`` (Gaussian, with its
  constant; the likelihood of known edge labels is not part of it). With a
  fitted NRI it is the density of the data in their own units (the Jacobian of the run's
  normalisation is added), so runs with different normalisation statistics compare fairly.
  :func:`loo` and :func:`compare` run ``az.loo`` / ``az.compare`` on it (relative
  efficiency 1: the draws are independent).

What ``loo`` / ``compare`` mean here, and what they do not
- Everything is computed on held-out trajectories with the trained networks as they are.
  Nothing is refitted and no training trajectory is left out: this is not PSIS-LOO over the
  training set, and it says nothing about uncertainty in the network weights (point
  estimates, not latents).
- The edges of a held-out trajectory are local latents, re-inferred by the run's encoder
  from that same trajectory. So log p(x_b | z_b) with z_b ~ q(z_b | x_b) uses x_b twice (to
  infer the edges and to score them): their average over draws, the lppd (= elpd_loo +
  p_loo), is an in-sample fit as far as the edges are concerned.
- PSIS-LOO reweights trajectory b's draws by 1 / p(x_b | draw) to take x_b's own influence
  out of them. For a local latent nothing else informs it, so this aims at the prior: if q
  were the exact posterior, elpd_loo_b would estimate the trajectory's marginal likelihood
  log p(x_b) = log E_p(z)[p(x_b | z)] (a Pareto-smoothed harmonic-mean estimate); since q is
  an approximation it estimates -log E_q[1 / p(x_b | z)], which can differ from log p(x_b)
  by an unknown amount. (Global latents were fitted without x_b, so for them the reweighting
  is a small pessimistic bias, not a correction.) p_loo is the gap between the two fits, not
  an effective number of parameters.
- ``compare`` therefore ranks runs (say, the priors of an ablation) by this held-out
  predictive fit of the whole amortized procedure (prior, encoder and decoder together) on
  the same trajectories, with the standard error of the paired pointwise differences (dSE).
  It does not measure edge accuracy, and a difference that is small against its dSE is no
  difference. Runs must be scored on the same trajectories, in the same order, with the
  same likelihood; :func:`compare` checks the trajectories.
- k-hat (``pareto_k``, one per trajectory) diagnoses that reweighting of the S draws: above
  about 0.7 (ArviZ: min(0.7, 1 - 1 / log10 S)) the draws cannot stand for the distribution
  without the trajectory and its elpd_loo is unreliable; more draws help little. With a
  sharp Gaussian likelihood, p(x_b | z) spans many orders of magnitude across sampled
  graphs, so large k-hat is common: it flags the estimator, not a bad model or a failed
  training, and the lppd does not depend on it. For an estimate of log p(x_b) that does
  not rest on q being exact, importance-weight by p(z) / q(z | x_b) instead (held-out log
  evidence, an IWAE bound).
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import math
import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
import xarray as xr
from pyro import poutine
from pyro.distributions import RelaxedOneHotCategorical
from pyro.poutine.util import prune_subsample_sites
from torch import Tensor, nn

from nri_pyro.api import NRI
from nri_pyro.data.dataset import Normalizer, TrajectoryDataset
from nri_pyro.nn import edges_to_adjacency
from nri_pyro.nn.modes import eval_mode
from nri_pyro.predictive import RETURN_SITE, decoded_edges, fitted_inputs, seeded
from nri_pyro.signatures import forwarding

with warnings.catch_warnings():  # ArviZ 0.2x announces its 1.0 refactor on import
    warnings.filterwarnings("ignore", message=".*ArviZ is undergoing", category=FutureWarning)
    import arviz as az

ARVIZ_1 = int(re.match(r"\d+", importlib.metadata.version("arviz")).group()) >= 1
if ARVIZ_1:  # pragma: no cover - ArviZ 1.x needs Python >= 3.12; not the installed version
    import arviz_stats
    from arviz_stats.base import array_stats

LOCAL_PLATE = "trajectories"  # the model's and guide's plate over trajectories
MIN_PSIS_SAMPLES = 25  # PSIS fits a tail of at least 5 draws, a fifth of them
EDGE_SITE = "edges"  # the model's and guide's edge-type site (slots of a symmetric graph)
LIKELIHOOD_SITE = "x"  # the model's observed trajectories (frames 1..T-1)
SAMPLE_DIMS = ("chain", "draw")
EDGE_DIMS = ("trajectory", "receiver", "sender", "edge_type")


# --- the ArviZ version shims -----------------------------------------------------------
def _az_khat(log_weights: np.ndarray) -> np.ndarray:
    """k-hat of each row of log-weights [n_obs, n_samples]."""
    if not ARVIZ_1:
        _, khat = az.psislw(log_weights, reff=1.0)
        return np.asarray(khat, dtype=float)
    return _arviz_stats_khat(log_weights)  # pragma: no cover - ArviZ 1.x


def _arviz_stats_khat(log_weights: np.ndarray) -> np.ndarray:  # pragma: no cover - ArviZ 1.x
    """arviz-stats' psislw takes log-likelihood values and uses their negatives as the
    log-weights (PSIS-LOO's), so the log-weights go in negated. Where the tail fit fails
    (tied weights) it gives NaN or raises; ArviZ 0.x reports k = inf there, and so do we."""
    try:
        khat = np.asarray(array_stats.psislw(-log_weights, r_eff=1.0, axis=-1)[1], dtype=float)
    except ValueError:
        khat = np.full(log_weights.shape[0], math.nan)
        for i, row in enumerate(log_weights):
            with contextlib.suppress(ValueError):
                khat[i] = float(array_stats.psislw(-row, r_eff=1.0, axis=-1)[1])
    return np.where(np.isnan(khat), math.inf, khat)


def _az_data(groups: Mapping[str, xr.Dataset]) -> Any:
    """An InferenceData (0.x) or DataTree (1.x) of the given groups."""
    if not ARVIZ_1:
        return az.InferenceData(**groups)
    return xr.DataTree.from_dict(dict(groups))  # pragma: no cover - ArviZ 1.x


def _az_group(data: Any, name: str) -> xr.Dataset | None:
    """Group ``name`` of a DataTree (1.x) or InferenceData (0.x) as a Dataset, or None."""
    if isinstance(data, getattr(xr, "DataTree", ())):  # xarray < 2024.10 has no DataTree
        return data[name].to_dataset() if name in data.children else None
    groups = getattr(data, "groups", None)
    if callable(groups) and name in groups():  # InferenceData
        return data[name]
    return None


def _az_loo(data: Any) -> Any:
    if not ARVIZ_1:
        return az.loo(data, pointwise=True, reff=1.0)
    return arviz_stats.loo(data, pointwise=True, reff=1.0)  # pragma: no cover - ArviZ 1.x


def _az_compare(elpds: Mapping[str, Any], method: str) -> Any:
    if not ARVIZ_1:
        return az.compare(dict(elpds), ic="loo", method=method)
    return arviz_stats.compare(dict(elpds), method=method)  # pragma: no cover - ArviZ 1.x


def _az_summary(data: Any, var_names: list[str], prob: float) -> Any:
    """Mean, sd and HDI only: the draws are independent, so MCMC diagnostics say nothing."""
    if not ARVIZ_1:
        return az.summary(data, var_names=var_names, hdi_prob=prob, kind="stats")
    return arviz_stats.summary(  # pragma: no cover - ArviZ 1.x
        data, var_names=var_names, ci_prob=prob, ci_kind="hdi", kind="stats"
    )


def _az_hdi(posterior: xr.Dataset, prob: float) -> xr.Dataset:
    """HDI with the bounds along a dim "bound" = ["lower", "upper"]."""
    if not ARVIZ_1:
        hdi = az.hdi(posterior, hdi_prob=prob).rename({"hdi": "bound"})
    else:  # pragma: no cover - ArviZ 1.x
        hdi = arviz_stats.hdi(posterior, prob=prob).rename({"ci_bound": "bound"})
    return hdi.assign_coords(bound=["lower", "upper"])


# --- PSIS k-hat --------------------------------------------------------------------------
def pareto_khat(log_weights: Any) -> np.ndarray:
    """Pareto-smoothed importance sampling k-hat of each observation: [n_obs].

    log_weights: [n_obs, n_samples] importance log-weights log p(theta_s) - log q(theta_s)
    (numpy or torch; unnormalised is fine), the draws independent (relative efficiency 1).
    k-hat < 0.5: the importance sampling estimate is reliable; 0.5..0.7: usable with care;
    > 0.7: the weights' tail is too heavy to trust it. A row of equal weights (a proposal
    equal to the target) has no tail at all and gets -inf; a row whose largest weights tie
    so that fewer than 5 distinct ones are left for the tail fit gets inf (ArviZ's
    convention). Uses ArviZ's psislw (0.x) or arviz-stats' (1.x).
    """
    if isinstance(log_weights, Tensor):
        log_weights = log_weights.detach().cpu().double().numpy()
    lw = np.array(log_weights, dtype=float)
    if lw.ndim != 2:
        raise ValueError(
            f"log_weights: expected shape [n_obs, n_samples] (one row of importance "
            f"log-weights per observation), got shape {lw.shape}"
        )
    if lw.shape[1] < MIN_PSIS_SAMPLES:
        raise ValueError(
            f"log_weights: PSIS needs at least {MIN_PSIS_SAMPLES} samples per observation "
            f"(it fits a generalized Pareto tail of at least 5 draws, a fifth of them), got "
            f"{lw.shape[1]}"
        )
    bad = ~np.isfinite(lw)
    if bad.any():
        raise ValueError(
            f"log_weights: expected finite values, got {int(bad.sum())} NaN or infinite "
            f"(first at index {tuple(int(i) for i in np.argwhere(bad)[0])})"
        )
    khat = np.full(lw.shape[0], -math.inf)
    varying = lw.max(axis=1) > lw.min(axis=1)
    if varying.any():
        khat[varying] = _az_khat(lw[varying])
    return khat


# --- posterior draws ---------------------------------------------------------------------
@dataclass
class PosteriorSamples:
    """S draws of a guide on B trajectories of N objects (numpy, CPU).

    edges: [S, B, E, K] the edge types each trajectory's decoder used (what the model returns:
    a symmetric or shared graph's slots mapped to ordered pairs, known edges filled in);
    local_latents: the guide's other sites inside the "trajectories" plate, site -> [S, B,
    ...]; global_latents: its sites outside it, site -> [S, ...] (the edge site itself is in
    ``edges``); log_likelihood: [S, B], log p(x_b | draw s), or None; kind: "hard" or
    "relaxed".
    """

    edges: np.ndarray
    local_latents: dict[str, np.ndarray]
    global_latents: dict[str, np.ndarray]
    log_likelihood: np.ndarray | None
    num_objects: int
    kind: str

    @property
    def num_draws(self) -> int:
        return self.edges.shape[0]


def _in_local_plate(site: dict[str, Any]) -> bool:
    return any(frame.name == LOCAL_PLATE for frame in site["cond_indep_stack"])


def _latents(trace: poutine.Trace) -> dict[str, dict[str, Any]]:
    """The latent sample sites of a trace (not observed, not a plate's subsample indices)."""
    return {
        name: site
        for name, site in prune_subsample_sites(trace).nodes.items()
        if site["type"] == "sample" and not site["is_observed"]
    }


def global_latent_names(guide: Any, x: Tensor) -> list[str]:
    """Names of the guide's global latents: sample sites outside the "trajectories" plate.

    x: [B, N, T, D] as the guide reads it (normalised). Found by tracing the guide once.
    """
    with torch.no_grad(), eval_mode(guide):
        trace = poutine.trace(guide).get_trace(x)
    return [name for name, site in _latents(trace).items() if not _in_local_plate(site)]


def _is_relaxed_one_hot(site: dict[str, Any]) -> bool:
    fn = site["fn"]
    while not isinstance(fn, RelaxedOneHotCategorical):
        if not hasattr(fn, "base_dist"):  # unwraps Independent, masked, expanded
            return False
        fn = fn.base_dist
    return True


def sample_posterior(
    fitted: NRI | tuple[Any, Any],
    data: TrajectoryDataset | Tensor,
    num_samples: int = 100,
    *,
    kind: Literal["hard", "relaxed"] = "hard",
    log_likelihood: bool = True,
    batch_size: int = 256,
    seed: int | None = 0,
) -> PosteriorSamples:
    """``num_samples`` draws of the guide's latents on ``data``, with log p(x_b | draw).

    ``fitted``: a fitted NRI (``data`` in the data's own units) or a ``(model, guide)`` pair
    (``data`` normalised as the model was trained). Each draw traces the guide once over
    the data (in chunks of ``batch_size`` trajectories that share the draw's global latents)
    and, with ``log_likelihood``, scores every trajectory under the model given the drawn
    latents (plus the normalisation's log-Jacobian for an NRI: data units). ``kind``: see
    the module docstring. ``seed`` fixes the draws without touching the global random state.
    """
    if kind not in ("hard", "relaxed"):
        raise ValueError(f"kind: expected 'hard' or 'relaxed', got {kind!r}")
    if num_samples < 1:
        raise ValueError(
            f"num_samples: expected at least 1 posterior draw, got {num_samples}; ArviZ "
            "summaries and loo need posterior samples"
        )
    if batch_size < 1:
        raise ValueError(f"batch_size: expected a positive integer, got {batch_size}")
    model, guide, x, _, normalizer, device = fitted_inputs(fitted, data)
    if getattr(model, "dynamic", False):
        raise ValueError(
            "posterior draws for ArviZ are not supported for a dynamic graph (graph.dynamic) "
            "yet: use NRI.infer_edges(data, per_frame=True) for its edge probabilities, and "
            "nri_pyro.evaluation.importance_log_weights for its log evidence"
        )
    draws: list[dict[str, Any]] = []
    with torch.no_grad(), eval_mode(model, guide), seeded(seed, device):
        for _ in range(num_samples):
            draws.append(_one_draw(model, guide, x, kind, batch_size, device))
    ll = None
    if log_likelihood:
        ll = np.stack([d["log_likelihood"] for d in draws])
        if normalizer is not None:
            ll = ll + _log_jacobian(normalizer, x.shape)
    return PosteriorSamples(
        edges=np.stack([d["edges"] for d in draws]),
        local_latents={n: np.stack([d["local"][n] for d in draws]) for n in draws[0]["local"]},
        global_latents={n: np.stack([d["global"][n] for d in draws]) for n in draws[0]["global"]},
        log_likelihood=ll,
        num_objects=x.shape[1],
        kind=kind,
    )


def _one_draw(
    model: Any, guide: Any, x: Tensor, kind: str, batch_size: int, device: torch.device
) -> dict[str, Any]:
    """One draw of every latent over all trajectories, chunk by chunk; the chunks share the
    draw's global latents. Each chunk: trace the guide, then the model given its draw."""
    fixed: dict[str, Tensor] | None = None  # the draw's global latents, from the first chunk
    edges: list[np.ndarray] = []
    local: dict[str, list[np.ndarray]] = {}
    ll: list[np.ndarray] = []
    for start in range(0, x.shape[0], batch_size):
        xb = x[start : start + batch_size].to(device)
        guide_fn = guide if fixed is None else poutine.condition(guide, data=fixed)
        values, is_local = {}, {}
        for name, site in _latents(poutine.trace(guide_fn).get_trace(xb)).items():
            value = site["value"]
            if kind == "hard" and _is_relaxed_one_hot(site):
                value = nn.functional.one_hot(value.argmax(-1), value.shape[-1]).to(value.dtype)
            values[name], is_local[name] = value, _in_local_plate(site)
            if is_local[name] and name != EDGE_SITE:
                local.setdefault(name, []).append(value.float().cpu().numpy())
        if fixed is None:
            fixed = {n: v for n, v in values.items() if not is_local[n]}
        trace = poutine.trace(poutine.condition(model, data={**values, **fixed})).get_trace(xb)
        edges.append(decoded_edges(trace.nodes[RETURN_SITE]["value"], xb).float().cpu().numpy())
        ll.append(_log_likelihood(trace, xb))
    return {
        "edges": np.concatenate(edges),
        "local": {n: np.concatenate(v) for n, v in local.items()},
        "global": {n: v.double().cpu().numpy() for n, v in fixed.items() if n != EDGE_SITE},
        "log_likelihood": np.concatenate(ll),
    }


def _log_likelihood(trace: poutine.Trace, x: Tensor) -> np.ndarray:
    """log p(x_b | draw) per trajectory from a model trace: its site ``x``, [B]."""
    site = trace.nodes.get(LIKELIHOOD_SITE)
    if site is None or not site["is_observed"] or not _in_local_plate(site):
        raise ValueError(
            f"the model has no observed site {LIKELIHOOD_SITE!r} inside the {LOCAL_PLATE!r} "
            "plate: there is no log-likelihood per trajectory to record"
        )
    lp = site["fn"].log_prob(site["value"]).double()
    return lp.reshape(x.shape[0], -1).sum(-1).cpu().numpy()


def _log_jacobian(normalizer: Normalizer, shape: Sequence[int]) -> float:
    """log |d normalised / d raw| of the frames the likelihood scores (1..T-1) of one trajectory.

    The normaliser maps each feature of a group affinely with slope 2 / (high - low).
    """
    _, num_objects, num_frames, _ = shape
    per_value = 0.0
    for group, low, high in zip(normalizer.groups, normalizer.low, normalizer.high, strict=True):
        span = high - low if high > low else 1.0
        per_value += len(group) * math.log(2.0 / span)
    return per_value * num_objects * (num_frames - 1)


# --- ArviZ datasets ------------------------------------------------------------------------
def to_arviz(samples: PosteriorSamples, trajectory_coords: Sequence[Any] | None = None) -> Any:
    """An ArviZ dataset (InferenceData in 0.x, DataTree in 1.x) of posterior draws.

    Groups: ``posterior`` (``edges`` [chain, draw, trajectory, receiver, sender, edge_type],
    the guide's other local and its global latents) and, when the samples have it,
    ``log_likelihood`` (variable ``x``: [chain, draw, trajectory]).
    """
    if samples.num_draws == 0:
        raise ValueError(
            "no posterior samples: ArviZ output needs at least one draw (num_samples >= 1) "
            "of a run with a guide"
        )
    num_draws, num_traj, _, num_edge_types = samples.edges.shape
    n = samples.num_objects
    coords: dict[str, Any] = {
        "chain": [0],
        "draw": np.arange(num_draws),
        "trajectory": np.arange(num_traj) if trajectory_coords is None else trajectory_coords,
        "receiver": np.arange(n),
        "sender": np.arange(n),
        "edge_type": np.arange(num_edge_types),
    }
    adjacency = edges_to_adjacency(torch.from_numpy(samples.edges), n, math.nan, dim=-2)
    variables = {"edges": ((*SAMPLE_DIMS, *EDGE_DIMS), adjacency.numpy()[None])}
    for name, values in samples.local_latents.items():
        dims = tuple(f"{name}_dim_{i}" for i in range(values.ndim - 2))
        variables[name] = ((*SAMPLE_DIMS, "trajectory", *dims), values[None])
    for name, values in samples.global_latents.items():
        if values.ndim == 2 and values.shape[1] == num_edge_types:
            dims = ("edge_type",)
        else:
            dims = tuple(f"{name}_dim_{i}" for i in range(values.ndim - 1))
        variables[name] = ((*SAMPLE_DIMS, *dims), values[None])
    attrs = {
        "created_by": "nri_pyro.diagnostics",
        "edge_draws": samples.kind,
        "global_latents": ",".join(samples.global_latents),
    }
    groups = {"posterior": xr.Dataset(variables, coords=coords, attrs=attrs)}
    if samples.log_likelihood is not None:
        groups["log_likelihood"] = xr.Dataset(
            {LIKELIHOOD_SITE: (("chain", "draw", "trajectory"), samples.log_likelihood[None])},
            coords={k: coords[k] for k in ("chain", "draw", "trajectory")},
        )
    return _az_data(groups)


@forwarding(sample_posterior)
def posterior_to_arviz(*args: Any, **kwargs: Any) -> Any:
    """:func:`sample_posterior` then :func:`to_arviz`: the guide's posterior on ``data``
    (the arguments are :func:`sample_posterior`'s)."""
    return to_arviz(sample_posterior(*args, **kwargs))


# --- summaries and comparison ------------------------------------------------------------
def _posterior(data: Any) -> xr.Dataset:
    posterior = _az_group(data, "posterior")
    if posterior is None:
        raise ValueError("the ArviZ data have no posterior group: no posterior samples")
    return posterior


def _global_names(posterior: xr.Dataset) -> list[str]:
    names = [n for n in posterior.attrs.get("global_latents", "").split(",") if n]
    if not names:
        raise ValueError(
            "the posterior has no global latents (sample sites outside the "
            f"{LOCAL_PLATE!r} plate): its prior has none to summarise"
        )
    return names


def summarize_globals(data: Any, prob: float = 0.94) -> Any:
    """``az.summary`` (a pandas DataFrame: mean, sd, ``prob`` HDI) of the global latents."""
    return _az_summary(data, _global_names(_posterior(data)), prob)


def hdi_globals(data: Any, prob: float = 0.94) -> xr.Dataset:
    """Highest-density intervals of the global latents: dims (..., bound = lower, upper)."""
    posterior = _posterior(data)
    return _az_hdi(posterior[_global_names(posterior)], prob)


def _log_likelihood_group(data: Any, name: str) -> xr.Dataset:
    group = _az_group(data, "log_likelihood")
    if group is None or LIKELIHOOD_SITE not in group:
        raise ValueError(
            f"{name}: no log_likelihood group: make it with posterior_to_arviz(..., "
            "log_likelihood=True)"
        )
    return group


def loo(data: Any) -> Any:
    """``az.loo`` (ELPDData, pointwise) of held-out log-likelihoods; see the module docstring."""
    ll = _log_likelihood_group(data, "loo")[LIKELIHOOD_SITE]
    if ll.sizes["chain"] * ll.sizes["draw"] < MIN_PSIS_SAMPLES:
        raise ValueError(
            f"loo: PSIS needs at least {MIN_PSIS_SAMPLES} posterior draws, got "
            f"{ll.sizes['draw']}; use num_samples >= {MIN_PSIS_SAMPLES}"
        )
    return _az_loo(data)


def compare(fits: Mapping[str, Any], method: str = "BB-pseudo-BMA") -> Any:
    """``az.compare`` (a pandas DataFrame, best first) of runs scored on the same trajectories.

    fits: name -> ArviZ data from :func:`posterior_to_arviz` on the same held-out data.
    See the module docstring for what the ranking means. ``method`` sets the model weights;
    the default is Bayesian-bootstrap pseudo-BMA because ArviZ's "stacking" exponentiates
    the pointwise elpd unshifted, which overflows or underflows (NaN or zero weights) for
    whole-trajectory log densities, typically thousands in magnitude here.
    """
    if len(fits) < 2:
        raise ValueError(f"compare: expected at least two fits, got {len(fits)}")
    reference = None
    for name, data in fits.items():
        trajectories = _log_likelihood_group(data, name)["trajectory"].values
        if reference is None:
            reference = (name, trajectories)
        elif len(trajectories) != len(reference[1]) or (trajectories != reference[1]).any():
            raise ValueError(
                f"compare: {name!r} was scored on {len(trajectories)} trajectories and "
                f"{reference[0]!r} on {len(reference[1])} (or other ones); score every run "
                "on the same held-out trajectories"
            )
    return _az_compare({name: loo(data) for name, data in fits.items()}, method)
