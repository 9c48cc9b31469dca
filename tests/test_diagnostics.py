"""ArviZ diagnostics: PSIS k-hat, posterior draws as ArviZ data, global latents, loo/compare."""

import math
import warnings

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from common import tiny
from scipy import stats

from nri_pyro import NRI, simulate
from nri_pyro import diagnostics as diag
from nri_pyro.nn import adjacency_to_edges

TINY = tiny(16, "train.batch_size=32")


@pytest.fixture(scope="module")
def fits():
    """Two tiny runs (a 2-epoch and a 1-epoch one) and held-out data, trained once."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: extra threads only contend on a shared CPU
    train = simulate("springs", 64, num_objects=4, num_frames=12, seed=0)
    valid = simulate("springs", 16, num_objects=4, num_frames=12, seed=0, split="valid")
    a = NRI(overrides=TINY, epochs=2, progress=False).fit(train, valid)
    b = NRI(overrides=[*TINY, "train.seed=1"], epochs=1, progress=False).fit(train)
    yield {"a": a, "b": b, "train": train, "valid": valid}
    torch.set_num_threads(threads)


# --- pareto_khat ---------------------------------------------------------------------------
def _normal_draws(seed=0, shape=(20, 4000)):
    return np.random.default_rng(seed).normal(size=shape)


def test_khat_is_small_when_the_proposal_matches_the_target():
    x = _normal_draws()  # draws of q = N(0, 1)
    same = stats.norm.logpdf(x) - stats.norm.logpdf(x)  # p = q: every weight equal
    assert np.all(diag.pareto_khat(same) < 0.5)
    assert np.all(diag.pareto_khat(same) == -math.inf)
    close = stats.norm.logpdf(x, loc=0.1) - stats.norm.logpdf(x)  # p = N(0.1, 1)
    khat = diag.pareto_khat(close)
    assert khat.shape == (20,)
    assert np.all(khat < 0.5), khat


def test_khat_is_large_for_heavy_tailed_weights():
    x = _normal_draws()  # q = N(0, 1) much narrower than p = N(0, 10^2): k = 0.99 in theory
    khat = diag.pareto_khat(stats.norm.logpdf(x, scale=10) - stats.norm.logpdf(x))
    # k-hat is an estimate: nearly every row, and the median clearly, above 0.7
    assert np.median(khat) > 0.8, khat
    assert np.mean(khat > 0.7) >= 0.75, khat


def test_khat_takes_torch_tensors():
    x = _normal_draws(1, (3, 100))
    lw = stats.norm.logpdf(x, loc=0.1) - stats.norm.logpdf(x)
    np.testing.assert_allclose(diag.pareto_khat(torch.from_numpy(lw)), diag.pareto_khat(lw))


@pytest.mark.parametrize(
    ("log_weights", "message"),
    [
        (np.zeros(100), r"\[n_obs, n_samples\]"),
        (np.zeros((2, 3, 100)), r"\[n_obs, n_samples\]"),
        (np.zeros((2, 10)), "at least 25 samples"),
        (np.r_[np.zeros(99), np.nan][None], "NaN or infinite"),
        (np.r_[np.zeros(99), -np.inf][None], "NaN or infinite"),
    ],
)
def test_khat_refuses_bad_log_weights(log_weights, message):
    with pytest.raises(ValueError, match=message):
        diag.pareto_khat(log_weights)


# --- posterior draws as ArviZ data ------------------------------------------------------------
def test_posterior_edges_have_named_dims_and_follow_the_encoder(fits):
    nri, valid = fits["a"], fits["valid"]
    data = diag.posterior_to_arviz(nri, valid, num_samples=200)
    edges = data.posterior["edges"]
    assert edges.dims == ("chain", "draw", "trajectory", "receiver", "sender", "edge_type")
    assert dict(edges.sizes) == {
        "chain": 1, "draw": 200, "trajectory": 16, "receiver": 4, "sender": 4, "edge_type": 2,
    }  # fmt: skip
    assert list(edges["edge_type"].values) == [0, 1]
    values = edges.values[0]  # [S, B, N, N, K]
    off = ~np.eye(4, dtype=bool)
    assert np.isnan(values[:, :, ~off]).all()  # no self-edges
    np.testing.assert_array_equal(values[:, :, off].sum(-1), 1.0)  # hard draws: one-hot
    # The draws are exact categorical draws: their frequencies follow the encoder's probs.
    probs = nri.infer_edges(valid, as_adjacency=True).numpy()[:, off]
    frequencies = values[:, :, off].mean(0)
    assert np.abs(frequencies - probs).mean() < 0.05
    assert data.posterior.attrs["edge_draws"] == "hard"
    assert data.posterior.attrs["global_latents"] == ""


def test_relaxed_draws_are_the_guides_soft_samples(fits):
    data = diag.posterior_to_arviz(fits["a"], fits["valid"], 5, kind="relaxed")
    values = data.posterior["edges"].values[0][:, :, ~np.eye(4, dtype=bool)]
    np.testing.assert_allclose(values.sum(-1), 1.0, rtol=1e-5)
    assert ((values > 0.01) & (values < 0.99)).any()  # not one-hot


def test_log_likelihood_is_the_models_density_of_each_held_out_trajectory(fits):
    nri, valid = fits["a"], fits["valid"]
    data = diag.posterior_to_arviz(nri, valid, num_samples=6)
    ll = data.log_likelihood["x"]
    assert ll.dims == ("chain", "draw", "trajectory")
    assert ll.shape == (1, 6, 16)
    # Recompute draw 3 by hand: the model's Gaussian likelihood given the drawn edges, in
    # normalised units, plus the log-Jacobian of the normalisation (so: data units).
    x = valid.normalized(nri.normalizer).trajectories.float()
    z = adjacency_to_edges(torch.from_numpy(data.posterior["edges"].values[0, 3]), dim=-3)
    with torch.no_grad():
        loc = nri.model.eval().predict(x, z)
        expected = dist.Normal(loc, nri.model.sigma).log_prob(x[:, :, 1:]).sum((1, 2, 3))
    spans = [h - lo for lo, h in zip(nri.normalizer.low, nri.normalizer.high, strict=True)]
    jacobian = sum(math.log(2 / s) for s in spans) * 4 * 11  # objects x scored frames
    np.testing.assert_allclose(ll.values[0, 3], expected.double().numpy() + jacobian, rtol=1e-5)


def test_a_model_and_guide_pair_gives_the_same_draws_in_normalised_units(fits):
    nri, valid = fits["a"], fits["valid"]
    x = valid.normalized(nri.normalizer).trajectories.float()
    pair = diag.sample_posterior((nri.model, nri.guide), x, 4, seed=3)
    facade = diag.sample_posterior(nri, valid, 4, seed=3)
    np.testing.assert_array_equal(pair.edges, facade.edges)
    shift = facade.log_likelihood - pair.log_likelihood  # the Jacobian: one constant
    np.testing.assert_allclose(shift, shift[0, 0], rtol=1e-6)


class _WithGlobal:
    """A model or guide with an extra global latent "freqs" ~ Dirichlet over the K types."""

    def __init__(self, program, concentration):
        self.program, self.concentration = program, concentration

    def __call__(self, x, *args, **kwargs):
        pyro.sample("freqs", dist.Dirichlet(self.concentration))
        return self.program(x, *args, **kwargs)


def test_global_latents_are_found_by_tracing_and_summarised(fits):
    nri, valid = fits["a"], fits["valid"]
    x = valid.normalized(nri.normalizer).trajectories.float()
    model = _WithGlobal(nri.model, torch.ones(2))
    guide = _WithGlobal(nri.guide, torch.tensor([40.0, 10.0]))  # q(freqs): mean (0.8, 0.2)
    assert diag.global_latent_names(nri.guide, x) == []
    assert diag.global_latent_names(guide, x) == ["freqs"]
    data = diag.to_arviz(diag.sample_posterior((model, guide), x, 300, batch_size=5))
    freqs = data.posterior["freqs"]
    assert freqs.dims == ("chain", "draw", "edge_type")
    assert freqs.shape == (1, 300, 2)
    assert data.posterior["edges"].shape == (1, 300, 16, 4, 4, 2)
    summary = diag.summarize_globals(data)
    assert list(summary.index) == ["freqs[0]", "freqs[1]"]
    np.testing.assert_allclose(summary["mean"], [0.8, 0.2], atol=0.02)
    hdi = diag.hdi_globals(data, prob=0.9)
    assert dict(hdi["freqs"].sizes) == {"edge_type": 2, "bound": 2}
    lower, upper = hdi["freqs"].sel(bound="lower"), hdi["freqs"].sel(bound="upper")
    assert bool((lower < upper).all())
    assert float(lower.sel(edge_type=0)) < 0.8 < float(upper.sel(edge_type=0))


def test_a_prior_with_global_latents_and_a_symmetric_graph(fits):
    train, valid = fits["train"], fits["valid"]
    overrides = [*TINY, "prior.name=dirichlet", "graph.symmetric=true"]
    nri = NRI(overrides=overrides, epochs=1, progress=False).fit(train)
    x = valid.normalized(nri.normalizer).trajectories.float()
    names = diag.global_latent_names(nri.guide, x)
    assert names  # the prior's global latents, whatever their site names
    data = diag.posterior_to_arviz(nri, valid, 40, batch_size=5)
    assert data.posterior.attrs["global_latents"].split(",") == names
    for name in names:
        assert data.posterior[name].dims[:2] == ("chain", "draw")
    assert list(diag.summarize_globals(data).columns[:2]) == ["mean", "sd"]
    edges = np.nan_to_num(data.posterior["edges"].values)
    np.testing.assert_array_equal(edges, edges.swapaxes(3, 4))  # (i, j) and (j, i) agree


def test_loo_and_compare_run_on_two_fits_scored_on_the_same_trajectories(fits):
    valid = fits["valid"]
    data = {name: diag.posterior_to_arviz(fits[name], valid, 30) for name in ("a", "b")}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # large k-hat: see the module docstring
        elpd = diag.loo(data["a"])
        table = diag.compare(data)
    assert np.asarray(elpd.pareto_k).shape == (16,)  # one k-hat per held-out trajectory
    assert set(table.index) == {"a", "b"}
    assert sorted(table["rank"]) == [0, 1]
    np.testing.assert_allclose(table["weight"].sum(), 1.0)  # finite weights
    assert table["elpd_diff"].iloc[0] == 0


def test_clear_errors_without_posterior_samples(fits):
    nri, valid = fits["a"], fits["valid"]
    with pytest.raises(ValueError, match="at least 1 posterior draw"):
        diag.posterior_to_arviz(nri, valid, num_samples=0)
    with pytest.raises(ValueError, match="no guide"):
        diag.posterior_to_arviz(NRI(), valid)
    with pytest.raises(ValueError, match="no guide was given"):
        diag.sample_posterior((nri.model, None), valid.trajectories.float())
    empty = diag.PosteriorSamples(np.zeros((0, 16, 12, 2)), {}, {}, None, 4, "hard")
    with pytest.raises(ValueError, match="no posterior samples"):
        diag.to_arviz(empty)
    data = diag.posterior_to_arviz(nri, valid, 3, log_likelihood=False)
    with pytest.raises(ValueError, match="no global latents"):
        diag.summarize_globals(data)
    with pytest.raises(ValueError, match="no log_likelihood group"):
        diag.loo(data)
    with pytest.raises(ValueError, match="at least 25 posterior draws"):
        diag.loo(diag.posterior_to_arviz(nri, valid, 3))


def test_compare_refuses_fits_scored_on_different_trajectories(fits):
    valid = fits["valid"]
    a = diag.posterior_to_arviz(fits["a"], valid, 25)
    b = diag.posterior_to_arviz(fits["b"], valid.subset(slice(0, 8)), 25)
    with pytest.raises(ValueError, match="same held-out trajectories"):
        diag.compare({"a": a, "b": b})
    with pytest.raises(ValueError, match="at least two fits"):
        diag.compare({"a": a})


def test_data_with_other_objects_than_the_run_are_refused(fits):
    other = simulate("springs", 4, num_objects=3, num_frames=12, seed=0, split="valid")
    with pytest.raises(ValueError, match="trained on 4 objects"):
        diag.posterior_to_arviz(fits["a"], other, 2)
