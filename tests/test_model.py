"""The Pyro model and guide: the objectives' values, hard samples, plain-Pyro use, conditioning.

Graphs that change over time: the window priors, the model's chain and its guide."""

from __future__ import annotations

import math

import pyro
import pyro.infer
import pytest
import torch
from common import tiny
from pyro import poutine
from pyro.infer import TraceMeanField_ELBO

from nri_pyro.api import build
from nri_pyro.distributions import EdgeTypes
from nri_pyro.guide import NRIGuide
from nri_pyro.model import NRIModel, window_site
from nri_pyro.nn import full_graph
from nri_pyro.priors import TransitionPosterior, build_prior
from nri_pyro.specs import resolve_guide_spec, resolve_model_spec
from nri_pyro.structure import GraphStructure

TINY = tiny(16)


def _setup(n=4, t=12, b=6, overrides=(), seed=0):
    torch.manual_seed(seed)
    x = torch.randn(b, n, t, 4).cumsum(2) * 0.05
    model, guide = build(None, None, x, overrides=[*TINY, *overrides])
    return x, model, guide


@pytest.mark.parametrize("prior", ["uniform", "sparse"])
def test_nri_objective_equals_the_hand_computed_nri_loss(prior):
    x, model, guide = _setup(overrides=[f"prior.name={prior}"])
    model.eval(), guide.eval()
    pyro.set_rng_seed(0)
    loss = pyro.infer.TraceMeanField_ELBO().differentiable_loss(model, guide, x)
    pyro.set_rng_seed(0)
    z = guide(x)  # the same Gumbel noise: the ELBO runs the guide first
    q = torch.softmax(guide.logits(x), -1)
    p = model.prior.probs(x)
    kl = (q * (q.log() - p.log())).sum()
    variance = 5e-5
    target = x[:, :, 1:]
    squared = (model.predict(x, z) - target).square().sum()
    constant = target.numel() * 0.5 * math.log(2 * math.pi * variance)
    expected = squared / (2 * variance) + constant + kl
    assert torch.allclose(loss, expected, rtol=1e-5)
    # The paper's loss (no Gaussian constant, per trajectory and object) follows from it.
    batch, objects = x.shape[:2]
    paper = (squared / (2 * variance) + kl) / (batch * objects)
    assert torch.allclose((loss - constant) / (batch * objects), paper, rtol=1e-5)


def test_minibatch_scaling_follows_the_dataset_size():
    x, model, guide = _setup()
    model.eval(), guide.eval()
    pyro.set_rng_seed(0)
    small = pyro.infer.TraceMeanField_ELBO().differentiable_loss(model, guide, x)
    pyro.set_rng_seed(0)
    full = pyro.infer.TraceMeanField_ELBO().differentiable_loss(
        model, guide, x, num_trajectories=60
    )
    assert torch.allclose(full, 10 * small, rtol=1e-5)


def test_kl_weight_scales_only_the_edge_term():
    x, model, guide = _setup()
    # float64: the likelihood term is ~1e7, the KL ~1.
    x, model, guide = x.double(), model.double().eval(), guide.double().eval()
    losses = []
    for weight in (0.25, 1.0):
        pyro.set_rng_seed(0)
        losses.append(
            pyro.infer.TraceMeanField_ELBO().differentiable_loss(model, guide, x, kl_weight=weight)
        )
    q = torch.softmax(guide.logits(x), -1)
    kl = (q * (q * 2).log()).sum()  # uniform prior, K = 2
    assert torch.allclose(losses[1] - losses[0], 0.75 * kl, rtol=1e-4)


@pytest.mark.parametrize("elbo", [pyro.infer.TraceMeanField_ELBO, pyro.infer.Trace_ELBO])
@pytest.mark.parametrize("prior", ["uniform", "sparse"])
def test_hard_samples_give_finite_losses_and_gradients(elbo, prior):
    x, model, guide = _setup(overrides=["guide.hard=true", f"prior.name={prior}"])
    # Very confident logits push soft samples to the corners of the simplex.
    with torch.no_grad():
        for p in guide.encoder.parameters():
            p.mul_(30)
    loss_fn = elbo()(model, guide)
    for _ in range(5):
        loss = loss_fn(x)
        assert torch.isfinite(loss)
        loss.backward()
        for p in loss_fn.parameters():
            assert p.grad is None or torch.isfinite(p.grad).all()
    z = guide(x)
    assert set(z.unique().tolist()) <= {0.0, 1.0}


def test_model_and_guide_work_with_plain_svi_and_predictive():
    x, model, guide = _setup()
    pyro.clear_param_store()
    svi = pyro.infer.SVI(model, guide, pyro.optim.Adam({"lr": 0.01}), pyro.infer.Trace_ELBO())
    losses = [svi.step(x) for _ in range(30)]
    assert all(math.isfinite(v) for v in losses)
    assert sum(losses[-5:]) < sum(losses[:5])
    predictive = pyro.infer.Predictive(model, guide=guide, num_samples=3, return_sites=["edges"])
    samples = predictive(x)
    assert samples["edges"].shape == (3, x.shape[0], 12, 2)
    assert torch.allclose(samples["edges"].sum(-1), torch.ones(3, x.shape[0], 12))


def test_known_edges_condition_the_decoder_and_leave_the_rest_latent():
    x, model, guide = _setup()
    edges = torch.randint(0, 2, (x.shape[0], 12))
    mask = torch.zeros_like(edges, dtype=torch.bool)
    mask[:, :6] = True
    guide_trace = poutine.trace(guide).get_trace(x, edges, mask)
    model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(x, edges, mask)
    z = model_trace.nodes["_RETURN"]["value"]
    assert torch.equal(z[:, :6], torch.nn.functional.one_hot(edges[:, :6], 2).float())
    assert torch.equal(z[:, 6:], guide_trace.nodes["edges"]["value"][:, 6:])
    assert model_trace.nodes["known_edges"]["is_observed"]
    # The latent site only counts the unknown edges.
    assert torch.equal(guide_trace.nodes["edges"]["fn"].base_dist._mask, ~mask)
    assert math.isfinite(pyro.infer.TraceMeanField_ELBO().loss(model, guide, x, edges, mask))


def test_relaxed_density_of_a_hard_sample_uses_its_soft_origin():
    d = EdgeTypes(0.5, logits=torch.randn(3, 2), hard=True)
    hard = d.rsample()
    soft_logp = EdgeTypes(0.5, logits=d.logits).log_prob(hard._unquantize)
    assert torch.allclose(d.log_prob(hard), soft_logp)
    corner = torch.tensor([1.0, 0.0]).expand(3, 2)
    assert torch.isfinite(EdgeTypes(0.5, logits=d.logits).log_prob(corner)).all()


@pytest.mark.parametrize(
    "overrides, message",
    [
        (
            ["prior.name=spars"],
            "valid priors: categorical, charges, dirichlet, markov, markov_learned, sparse, "
            "uniform",
        ),
        (["prior.name=categorical", "prior.probs=[0.5, 0.6]"], "must sum to 1"),
        (["prior.name=categorical", "prior.probs=[1.0]"], "has 1 entries but the model has 2"),
        (["prior.name=categorical", "prior.probs=[1.5, -0.5]"], "must all be positive"),
        (["decoder.name=gru"], "valid names: mlp, rnn"),
        (["decoder.hiden=3"], "unknown key(s) decoder.hiden"),
        (["likelihood.varianc=1"], "no key 'varianc'"),
        (["guide.encoder.name=gcn"], "valid names: cnn, mlp"),
        (["train.lr=-1"], "train.lr must be positive"),
        (["train.epoch=3"], "no key 'epoch'"),
    ],
)
def test_bad_specs_are_refused_with_the_valid_choices(overrides, message):
    from nri_pyro.api import resolve_specs

    with pytest.raises(ValueError, match=__import__("re").escape(message)):
        resolve_specs(None, None, overrides)


def test_bad_trajectories_are_refused():
    x, model, guide = _setup()
    bad = x.clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN or infinite"):
        guide(bad)
    with pytest.raises(ValueError, match=r"\[B, N, T, D\]"):
        guide(x[0])
    with pytest.raises(ValueError, match="reads 12 frames"):
        guide(x[:, :, :8])
    with pytest.raises(ValueError, match="edges must have shape"):
        model(x, torch.zeros(x.shape[0], 5, dtype=torch.long))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_model_and_guide_run_on_cuda():
    x, model, guide = _setup()
    device = torch.device("cuda")
    x, model, guide = x.to(device), model.to(device), guide.to(device)
    for elbo in (pyro.infer.TraceMeanField_ELBO(), pyro.infer.Trace_ELBO()):
        loss = elbo.differentiable_loss(model, guide, x)
        assert loss.device.type == "cuda" and torch.isfinite(loss)
        loss.backward()


def test_committed_specs_hold_the_papers_settings():
    from pathlib import Path

    from nri_pyro.api import resolve_specs

    root = Path(__file__).resolve().parents[1]
    model, guide, train = resolve_specs(root / "models/nri.yaml", root / "guides/mlp.yaml")
    assert model["decoder"]["msg_hidden"] == 256 and model["decoder"]["skip_first"]
    assert model["decoder"]["prediction_steps"] == 10
    assert model["likelihood"]["variance"] == 5e-5
    assert guide["encoder"]["hidden"] == 256 and guide["temperature"] == 0.5
    assert (train.lr, train.batch_size, train.epochs, train.lr_decay_every) == (5e-4, 128, 500, 200)
    for spec in ("models/nri_rnn.yaml",):
        resolve_specs(root / spec, root / "guides/cnn.yaml")


def test_a_per_feature_variance_is_learned_for_each_feature_and_evaluated_as_such():
    from nri_pyro.evaluation import evaluate

    over = ["likelihood.learn_variance=true", "likelihood.per_feature=true"]
    x, model, guide = _setup(overrides=over)
    assert model.sigma.shape == (4,) and torch.allclose(model.sigma, torch.full((4,), 5e-5**0.5))
    # The likelihood of each feature has its own scale: the model's log density is the sum of
    # per-feature Normal terms with the per-feature sigma.
    with torch.no_grad():
        model.log_sigma.copy_(torch.tensor([-1.0, -2.0, -3.0, -4.0]))
    trace = poutine.trace(poutine.replay(model, trace=poutine.trace(guide).get_trace(x))).get_trace(
        x
    )
    site = trace.nodes["x"]
    loc = site["fn"].base_dist.loc
    # a learned variance is floored: sigma^2 = min_variance + exp(2 log_sigma)
    sigma = (1e-6 + torch.tensor([-2.0, -4.0, -6.0, -8.0]).exp()).sqrt()
    expected = torch.distributions.Normal(loc, sigma)
    assert torch.allclose(
        site["fn"].log_prob(x[:, :, 1:]), expected.log_prob(x[:, :, 1:]).sum((1, 2, 3))
    )
    loss = pyro.infer.TraceMeanField_ELBO().differentiable_loss(model, guide, x)
    loss.backward()
    assert model.log_sigma.grad.shape == (4,) and (model.log_sigma.grad != 0).all()
    metrics = evaluate(model, guide, x)
    assert math.isfinite(metrics["nll"])
    with pytest.raises(ValueError, match=r"likelihood\.per_feature must be true or false"):
        _setup(overrides=["likelihood.per_feature=3"])


def test_relaxed_samples_stay_on_the_simplex_for_confident_logits():
    """Confident float32 logits (a trained guide's) give large scores at temperature 0.5;
    the samples must still pass the simplex check of log_prob (validation on). A training
    run of springs5-switching once stopped on a sample that failed it (site edges_3):
    samples are now normalised by softmax's division."""
    torch.manual_seed(0)
    logits = torch.cat([40.0 * torch.randn(2048, 10, 2), 200.0 + torch.randn(2048, 10, 2)])
    site = EdgeTypes(0.5, logits=logits, validate_args=True)
    z = site.rsample()
    assert (z.sum(-1) - 1).abs().max() < 1e-6
    assert torch.isfinite(site.log_prob(z)).all()


# --- graphs that change over time --------------------------------------------------------------


SMALL = {"msg_hidden": 8, "msg_out": 8, "hidden": 8}


def build_dynamic(
    prior, window=5, frames=20, objects=3, context=0, encoder="mlp", recurrent=None, **graph
):
    model_spec = resolve_model_spec(
        {"decoder": SMALL, "prior": prior, "graph": {"dynamic": {"window": window}, **graph}}
    )
    guide_spec = resolve_guide_spec(
        {"encoder": {"name": encoder, "hidden": 8}, "window_context": context,
         "recurrent": recurrent}
    )  # fmt: skip
    model = NRIModel(model_spec, 4).double()
    guide = NRIGuide.for_model(guide_spec, model, frames, objects).double()
    return model, guide


def one_hot(types, k=2):
    return torch.nn.functional.one_hot(types, k).double()


def test_markov_chain_density_matches_the_hand_computed_chain():
    """Conditioned on discrete types, each window's site holds p(z_w | z_{w-1}) of the
    sticky chain: their product is the chain's probability, computed here by hand."""
    stay, no_edge = 0.7, 0.8
    base = torch.tensor([no_edge, 1 - no_edge], dtype=torch.float64)
    model, _ = build_dynamic(
        {"name": "markov", "stay": stay, "base": {"name": "sparse", "no_edge": no_edge}}
    )
    x = torch.randn(4, 3, 20, 4, dtype=torch.float64)
    generator = torch.Generator().manual_seed(0)
    types = torch.randint(0, 2, (4, 4, 6), generator=generator)  # [B, W, E]
    data = {window_site(w): one_hot(types[:, w]) for w in range(4)}
    trace = poutine.trace(poutine.condition(model, data=data)).get_trace(x)
    log_p = torch.zeros(4, dtype=torch.float64)
    for w in range(4):
        probs = trace.nodes[window_site(w)]["fn"].base_dist.probs  # [B, E, K]
        log_p += probs.gather(-1, types[:, w, :, None]).squeeze(-1).log().sum(-1)
    expected = base[types[:, 0]].log().sum(-1)
    for w in range(1, 4):
        kept = (types[:, w] == types[:, w - 1]).double()
        expected += (stay * kept + (1 - stay) * base[types[:, w]]).log().sum(-1)
    torch.testing.assert_close(log_p, expected, rtol=1e-6, atol=1e-6)


def test_stay_one_reduces_to_a_static_graph():
    """stay = 1: every window keeps the first window's types (prior samples, and the chain's
    density of a constant sequence is the base's), and the decoder's predictions with
    those windows are the static model's with that one graph."""
    model, _ = build_dynamic({"name": "markov", "stay": 1.0})
    x = torch.randn(50, 3, 20, 4, dtype=torch.float64)
    pyro.set_rng_seed(0)
    trace = poutine.trace(model).get_trace(x)
    types = torch.stack([trace.nodes[window_site(w)]["value"].argmax(-1) for w in range(4)], 1)
    assert (types == types[:, :1]).all()
    constant = {window_site(w): one_hot(types[:, 0]) for w in range(4)}
    conditioned = poutine.trace(poutine.condition(model, data=constant)).get_trace(x)
    for w in range(1, 4):
        probs = conditioned.nodes[window_site(w)]["fn"].base_dist.probs
        kept = probs.gather(-1, types[:, 0, :, None])
        torch.testing.assert_close(kept, torch.ones_like(kept))  # log p = 0: nothing added
    static_spec = resolve_model_spec({"decoder": SMALL})
    static = NRIModel(static_spec, 4).double()
    static.decoder.load_state_dict(model.decoder.state_dict())
    z = one_hot(types[:, 0])
    windows = z[:, None].expand(-1, 4, -1, -1)
    torch.testing.assert_close(model.predict(x, windows), static.predict(x, z), rtol=0, atol=0)


def test_analytic_kl_of_the_chain_matches_monte_carlo():
    """The "nri" objective's edge terms (analytic KL per window given the previous window's
    sample) estimate E_q[log q(z) - log p(z)] of the discrete chain without bias: their
    average over many samples matches the exact expectation, computed by hand from the
    guide's window probabilities."""
    stay, no_edge = 0.6, 0.75
    base = torch.tensor([no_edge, 1 - no_edge], dtype=torch.float64)
    prior = {"name": "markov", "stay": stay, "base": {"name": "sparse", "no_edge": no_edge}}
    model, guide = build_dynamic(prior)
    x = torch.randn(3, 3, 20, 4, dtype=torch.float64)
    guide.eval()
    with torch.no_grad():
        q = guide.edge_probs(x)  # [B, W, E, K]

    def kl(a, b):
        return (a * (a.log() - b.log())).sum(-1)

    exact = kl(q[:, 0], base).sum()
    for w in range(1, q.shape[1]):
        for j in range(2):
            p = stay * one_hot(torch.tensor(j)) + (1 - stay) * base
            exact += (q[:, w - 1, :, j] * kl(q[:, w], p)).sum()
    edges_only = poutine.block(model, hide=["x"])
    elbo = TraceMeanField_ELBO()
    pyro.set_rng_seed(1)
    with torch.no_grad():
        losses = torch.tensor([elbo.loss(edges_only, guide, x) for _ in range(400)])
    error = losses.std() / math.sqrt(len(losses))
    assert abs(losses.mean() - exact) < 4 * error + 1e-9, (float(losses.mean()), float(exact))
    # ... and the same expectation from discrete samples of q, scored under the chain.
    draws = torch.distributions.Categorical(probs=q).sample((4000,))  # [R, B, W, E]
    log_q = q.log().expand(4000, *q.shape).gather(-1, draws[..., None]).squeeze(-1)
    log_p = base[draws[:, :, 0]].log().sum(-1)
    for w in range(1, q.shape[1]):
        kept = (draws[:, :, w] == draws[:, :, w - 1]).double()
        log_p += (stay * kept + (1 - stay) * base[draws[:, :, w]]).log().sum(-1)
    monte_carlo = (log_q.sum((-1, -2)) - log_p).sum(-1)
    error = monte_carlo.std() / math.sqrt(4000)
    assert abs(monte_carlo.mean() - exact) < 4 * error, (float(monte_carlo.mean()), float(exact))


def test_learned_transitions_are_a_global_latent_with_a_conjugate_guide():
    model, guide = build_dynamic({"name": "markov_learned", "concentration": [4.0, 1.0]})
    x = torch.randn(3, 3, 20, 4, dtype=torch.float64)
    model_trace = poutine.trace(model).get_trace(x)
    site = model_trace.nodes["edge_transitions"]
    assert site["value"].shape == (2, 2)
    torch.testing.assert_close(
        site["fn"].base_dist.concentration, torch.tensor([[4.0, 1.0], [1.0, 4.0]]).double()
    )
    guide_trace = poutine.trace(guide).get_trace(x, num_trajectories=30)
    assert "edge_transitions" in guide_trace.nodes
    # The counts of the conjugate update: expected transitions between consecutive windows.
    posterior = TransitionPosterior(torch.ones(2, 2))
    probs = torch.tensor([[[[1.0, 0.0]], [[0.25, 0.75]], [[0.5, 0.5]]]])  # [B=1, W=3, U=1, K]
    expected = torch.tensor([[0.25, 0.75], [0.0, 0.0]]) + torch.tensor(
        [[0.25 * 0.5, 0.25 * 0.5], [0.75 * 0.5, 0.75 * 0.5]]
    )
    torch.testing.assert_close(posterior.statistics(probs), expected)
    q = posterior.posterior(probs, scale=10.0)
    torch.testing.assert_close(q.base_dist.concentration, 1.0 + 10.0 * expected)


@pytest.mark.parametrize("prior", [{"name": "uniform"}, {"name": "dirichlet"}])
def test_a_static_prior_draws_every_window_independently(prior):
    model, _ = build_dynamic(prior)
    x = torch.randn(2, 3, 20, 4, dtype=torch.float64)
    data = {window_site(w): one_hot(torch.randint(0, 2, (2, 6))) for w in range(4)}
    trace = poutine.trace(poutine.condition(model, data=data)).get_trace(x)
    first = trace.nodes[window_site(0)]["fn"].base_dist.probs
    for w in range(1, 4):  # the same distribution, whatever the previous window holds
        torch.testing.assert_close(trace.nodes[window_site(w)]["fn"].base_dist.probs, first)


def test_per_step_edges_pass_messages_along_each_windows_graph():
    model, guide = build_dynamic({"name": "markov", "stay": 0.5}, window=5, frames=20)
    x = torch.randn(2, 3, 20, 4, dtype=torch.float64)
    z = guide.sample_edges(x)  # [B, W, E, K]
    assert z.shape == (2, 4, 6, 2)
    predicted = model.predict(x, z)
    graph = full_graph(3, "cpu")
    state, expected = x[:, :, 0], []
    for t in range(19):  # teacher forced every 10 frames, each step with its window's edges
        if t % 10 == 0:
            state = x[:, :, t]
        state = model.decoder.step(state, z[:, min(t // 5, 3)], graph)
        expected.append(state)
    torch.testing.assert_close(predicted, torch.stack(expected, 2))
    rolled = model.rollout(x[:, :, :12], z, 6)  # steps from frames 11..16: windows 2, 3
    state, expected = x[:, :, 11], []
    for t in range(11, 17):
        state = model.decoder.step(state, z[:, min(t // 5, 3)], graph)
        expected.append(state)
    torch.testing.assert_close(rolled, torch.stack(expected, 2))


@pytest.mark.parametrize(
    ("model_spec", "message"),
    [
        ({"graph": {"dynamic": {"window": 0}}}, "positive integer"),
        ({"graph": {"dynamic": {"window": 2.5}}}, "positive integer"),
        ({"graph": {"dynamic": 5}}, "graph.dynamic must be {window: W}"),
        ({"graph": {"dynamic": {"window": 5}, "shared": True}}, "choose one"),
        (
            {"graph": {"dynamic": {"window": 5}, "known": {"fraction": 0.5}}},
            "not supported with graph.dynamic",
        ),
        ({"prior": {"name": "markov"}}, "needs a dynamic graph"),
        ({"prior": {"name": "markov", "stay": 1.5}}, r"prior.stay must be a number in \[0, 1\]"),
        ({"prior": {"name": "markov", "stay": -0.1}}, r"in \[0, 1\]"),
        ({"prior": {"name": "markov", "base": {"name": "markov"}}}, "must be a static prior"),
        ({"prior": {"name": "markov_learned", "concentration": [1.0]}}, r"\[stay, switch\]"),
    ],
)
def test_bad_dynamic_settings_are_refused(model_spec, message):
    with pytest.raises(ValueError, match=message):
        NRIModel(resolve_model_spec(model_spec), 4)


def test_bad_dynamic_combinations_are_refused():
    rnn = {"decoder": {"name": "rnn", "hidden": 8}, "graph": {"dynamic": {"window": 5}}}
    with pytest.raises(ValueError, match="needs a decoder that takes edges that change per step"):
        NRIModel(resolve_model_spec(rnn), 4)
    with pytest.raises(ValueError, match="needs at least 14 frames"):
        build_dynamic({"name": "uniform"}, window=5, encoder="cnn")
    with pytest.raises(ValueError, match="fewer than the 9 that the encoder reads"):
        build_dynamic({"name": "uniform"}, window=5, frames=8, context=2)
    with pytest.raises(ValueError, match="window_context must be an integer"):
        resolve_guide_spec({"window_context": -1})
    model, guide = build_dynamic({"name": "uniform"})
    x = torch.randn(2, 3, 20, 4, dtype=torch.float64)
    edges = torch.zeros(2, 6, dtype=torch.long)
    with pytest.raises(ValueError, match="takes no known edges"):
        model(x, edges)
    with pytest.raises(ValueError, match="takes no known edges"):
        guide(x, edges)
    with pytest.raises(ValueError, match="reads 5 frames per window"):
        guide.edge_probs(x[:, :, :4])


def test_a_recurrent_guide_reads_the_whole_trajectory_in_every_window():
    """Without `recurrent` (and no context), a window's logits depend on its own frames
    only; with it, the GRU over windows carries the last frames into the first window's
    logits. A fresh GRU adds nothing: its output layer starts at zero."""
    torch.manual_seed(0)
    _, plain = build_dynamic({"name": "markov", "stay": 0.9})
    _, recurrent = build_dynamic({"name": "markov", "stay": 0.9}, recurrent={"hidden": 6})
    recurrent.encoder.load_state_dict(plain.encoder.state_dict())
    plain.eval(), recurrent.eval()
    x = torch.randn(2, 3, 20, 4, dtype=torch.float64)
    assert torch.equal(plain.logits(x), recurrent.logits(x))
    torch.nn.init.normal_(recurrent.window_gru.fc_out.weight)
    changed = x.clone()
    changed[:, :, 15:] += 1.0  # the last window's frames only
    for guide, reaches_first in ((plain, False), (recurrent, True)):
        before, after = guide.logits(x), guide.logits(changed)
        assert before.shape == (2, 4, 6, 2)
        assert torch.allclose(before[:, 0], after[:, 0]) is not reaches_first
        assert not torch.allclose(before[:, -1], after[:, -1])
    # Its parameters are trained: the ELBO's gradient reaches them.
    model, _ = build_dynamic({"name": "markov", "stay": 0.9})
    recurrent.train()
    loss = TraceMeanField_ELBO().differentiable_loss(model, recurrent, x)
    loss.backward()
    assert recurrent.window_gru.gru.weight_ih_l0.grad.abs().sum() > 0


@pytest.mark.parametrize(
    "recurrent, message",
    [
        ({"hidden": 0}, "recurrent.hidden must be an integer >= 1"),
        ({"size": 8}, "recurrent must be null or a mapping"),
        (16, "recurrent must be null or a mapping"),
    ],
)
def test_bad_recurrent_settings_are_refused(recurrent, message):
    with pytest.raises(ValueError, match=message):
        resolve_guide_spec({"recurrent": recurrent})


def test_a_recurrent_guide_needs_a_dynamic_graph():
    model = NRIModel(resolve_model_spec({"decoder": SMALL}), 4)
    spec = resolve_guide_spec({"encoder": {"name": "mlp", "hidden": 8}, "recurrent": {}})
    assert spec["recurrent"] == {"hidden": 64}
    with pytest.raises(ValueError, match="the model's graph is static"):
        NRIGuide.for_model(spec, model, 20, 3)


def test_build_prior_names_the_markov_settings():
    prior = build_prior({"name": "markov", "stay": 0.8, "base": "sparse"}, 2)
    assert prior.settings()["base"]["name"] == "sparse"
    with pytest.raises(ValueError, match="unknown setting"):
        build_prior({"name": "markov", "stickiness": 0.8}, 2)


def test_log_evidence_of_a_chain_matches_exact_enumeration():
    """The importance-sampled log evidence of a dynamic model converges to log p(x) summed
    exactly over every sequence of window types (2 objects: one unordered pair, 3 windows,
    8 sequences)."""
    from nri_pyro.evaluation import importance_log_weights, log_evidence

    model, guide = build_dynamic(
        {"name": "markov", "stay": 0.8, "base": {"name": "sparse", "no_edge": 0.6}},
        window=4, frames=12, objects=2, symmetric=True,
    )  # fmt: skip
    model.log_sigma.fill_(math.log(0.3))  # a broad likelihood: no single sequence dominates
    x = 0.3 * torch.randn(2, 2, 12, 4, dtype=torch.float64)
    weights = importance_log_weights(model, guide, x, num_samples=3000)
    base = torch.tensor([0.6, 0.4], dtype=torch.float64)
    layout = model.structure.layout(2, "cpu")
    terms = []
    with torch.no_grad():
        for code in range(8):
            types = torch.tensor([(code >> w) & 1 for w in range(3)])
            log_prior = base[types[0]].log() + sum(
                (0.8 * (types[w] == types[w - 1]) + 0.2 * base[types[w]]).log() for w in (1, 2)
            )
            z = layout.to_edges(one_hot(types)[None, :, None].expand(2, -1, -1, -1))
            loc = model.predict(x, z)
            log_lik = torch.distributions.Normal(loc, 0.3).log_prob(x[:, :, 1:]).sum((1, 2, 3))
            terms.append(log_lik + log_prior)
    exact = torch.logsumexp(torch.stack(terms), 0)
    torch.testing.assert_close(log_evidence(weights), exact, atol=0.05, rtol=0)


def test_per_frame_truth_scores_a_static_model_at_every_frame(caplog):
    """A static model on data whose graphs change: its one graph per trajectory is scored
    at every frame (with a logged note), and the switch metrics say it finds none."""
    import logging

    from nri_pyro.evaluation import evaluate
    from nri_pyro.metrics import frame_edge_accuracy

    static = NRIModel(resolve_model_spec({"decoder": SMALL}), 4)
    guide = NRIGuide.for_model(
        resolve_guide_spec({"encoder": {"name": "mlp", "hidden": 8}}), static, 12, 3
    )
    x = torch.randn(5, 3, 12, 4)
    truth = torch.randint(0, 2, (5, 12, 6))
    truth[:, 6:, 0] = 1 - truth[:, 6:, 0]  # edge 0 of every trajectory switches at frame 6
    with caplog.at_level(logging.INFO, logger="nri_pyro"):
        metrics = evaluate(static, guide, x, truth, anchor_first=True)
    assert "scored at every frame" in caplog.text
    guide.eval()
    with torch.no_grad():
        probs = guide.edge_probs(x)[:, None].expand(-1, 12, -1, -1)
    assert metrics["edge_accuracy"] == pytest.approx(frame_edge_accuracy(probs, truth, True))
    assert metrics["switches_true"] >= 5 and metrics["switches_detected"] == 0
    assert metrics["switch_recall"] == 0 and math.isnan(metrics["switch_precision"])
    with pytest.raises(ValueError, match=r"per-frame edges must be \[S, T, E\] with T = 12"):
        evaluate(static, guide, x, truth[:, :10])


def test_windows_of_a_trajectory_and_the_frames_the_encoder_reads():
    structure = GraphStructure({"dynamic": {"window": 7}}, 2)
    assert structure.num_windows(49) == 7
    assert structure.num_windows(52) == 7  # the last window takes the 3 frames left over
    assert structure.num_windows(5) == 1
    window = structure.window_of_frames(52, "cpu")
    assert window[:7].eq(0).all() and window[42:].eq(6).all() and window[41] == 5
    _, guide = build_dynamic({"name": "uniform"}, window=7, frames=49, context=2)
    frames = guide.window_frames(52, "cpu")
    assert frames.shape == (7, 11)
    assert frames[0].tolist() == list(range(11))  # shifted into the trajectory
    assert frames[1].tolist() == list(range(5, 16))  # window 7..13 with 2 frames either side
    assert frames[-1].tolist() == list(range(41, 52))  # the long last window 42..51, centred


# --- the likelihood's variance ------------------------------------------------------------


def test_a_learned_variance_of_a_constant_feature_stops_at_its_floor():
    """Feature 3 is constant in time: the decoder learns to predict it exactly, and its
    learned sigma would shrink without end; sigma^2 = min_variance + exp(2 log_sigma)
    stops at the floor, with finite losses."""
    over = ["likelihood.learn_variance=true", "likelihood.per_feature=true",
            "likelihood.variance=1e-1", "likelihood.min_variance=1e-2"]  # fmt: skip
    x, model, guide = _setup(overrides=over)
    x[..., 3] = 0.5
    params = [*model.parameters(), *guide.parameters()]
    optimiser = torch.optim.Adam(params, lr=0.05)
    elbo = TraceMeanField_ELBO()
    for _ in range(150):
        optimiser.zero_grad()
        loss = elbo.differentiable_loss(model, guide, x)
        loss.backward()
        optimiser.step()
    assert math.isfinite(float(loss))
    variance = model.sigma.detach().square()
    assert (variance >= 1e-2).all() and variance[3] < 1.2e-2, variance  # at the floor
    assert (2 * model.log_sigma[3]).exp() < 2e-3  # the raw part went on down, harmlessly


def test_a_learned_variance_approaches_the_noise_variance_of_noisy_springs():
    """Springs observed with noise (params noise > 0): the learned per-feature variance
    approaches the noise's variance in normalised units (model.noise_variance). A Markov
    decoder sees the noise twice, in the frame it reads and in the one it predicts, so an
    identity-like step (positions) leaves about twice it, while a step that smooths
    (velocities) leaves less: the bounds are a factor of 2 below and 3 above."""
    from nri_pyro import simulate
    from nri_pyro.api import NRI
    from nri_pyro.model import noise_variance

    noise = 0.2  # normalised: a variance of 7e-3 (positions) and 3e-2 (velocities)
    train = simulate("springs", 200, 4, 20, seed=0, noise=noise)
    nri = NRI(
        overrides=[*tiny(16), "likelihood.learn_variance=true", "likelihood.per_feature=true",
                   "likelihood.variance=1e-2", "decoder.prediction_steps=1",
                   "train.batch_size=32", "train.lr=5e-3", "train.progress=false"],
    )  # fmt: skip
    nri.fit(train, epochs=15)
    expected = noise_variance(noise, nri.normalizer, 4).float()
    ratio = nri.model.sigma.detach().square() / expected
    assert ((ratio > 0.5) & (ratio < 3)).all(), ratio  # seen: 1.9, 1.8, 0.8, 0.7


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["likelihood.min_variance=0"], r"likelihood\.min_variance .* must be a positive number"),
        (["likelihood.min_variance=abc"], r"likelihood\.min_variance .* got 'abc'"),
        (["likelihood.learn_variance=true", "likelihood.variance=1e-6"],
         r"likelihood\.variance \(1e-06\), where a learned variance starts, must lie above"),
    ],
)  # fmt: skip
def test_a_bad_variance_floor_is_refused_naming_the_key(overrides, message):
    with pytest.raises(ValueError, match=message):
        _setup(overrides=overrides)
