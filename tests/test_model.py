"""The Pyro model and guide: the objectives' values, hard samples, plain-Pyro use, conditioning."""

import math

import pyro
import pyro.infer
import pytest
import torch
from pyro import poutine

from nri_pyro.api import build
from nri_pyro.distributions import EdgeTypes

TINY = [
    "decoder.msg_hidden=16",
    "decoder.msg_out=16",
    "decoder.hidden=16",
    "guide.encoder.hidden=16",
]


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
            "valid priors: categorical, dirichlet, markov, markov_learned, sparse, uniform",
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
    expected = torch.distributions.Normal(loc, torch.tensor([-1.0, -2.0, -3.0, -4.0]).exp())
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
