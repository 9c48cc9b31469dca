"""Evaluation and inference helpers: memory-safe batches, the ELBO of a held-out set, and
the checkpoints they read."""

import math

import pytest
import torch

from nri_pyro import simulate
from nri_pyro.api import NRI, build
from nri_pyro.checkpoints import CHECKPOINT_FORMAT, load_checkpoint
from nri_pyro.data.dataset import normalizer_for, prepare
from nri_pyro.evaluation import evaluate, memory_safe_batch
from nri_pyro.nn import decoders

# A decoder too small to matter, so that the encoder decides the batch size.
TINY_DECODER = ["decoder.msg_hidden=4", "decoder.msg_out=4", "decoder.hidden=4"]


def _estimated_bytes(monkeypatch, model, guide, x) -> float:
    """memory_safe_batch's estimate of one trajectory's bytes, read off the batch size it
    allows in a budget of 2**40 bytes (a sixteenth of a device of 2**44)."""
    monkeypatch.setattr(decoders, "_device_memory", lambda device: 2**44)
    budget = 2**44 // 4 // 4
    return budget / memory_safe_batch(budget, model, guide, x, "cpu")


def _widest_encoder_activation(guide, x) -> int:
    """Bytes per trajectory of the largest tensor a module of the encoder puts out,
    counted with forward hooks."""
    sizes = []
    hooks = [
        module.register_forward_hook(lambda m, i, out: sizes.append(out.numel()))
        for module in guide.encoder.modules()
        if not list(module.children())
    ]
    try:
        guide.eval()
        with torch.no_grad():
            guide.edge_probs(x)
    finally:
        for hook in hooks:
            hook.remove()
    return max(sizes) * 4 // x.shape[0]


def test_memory_safe_batch_counts_the_cnn_encoders_time_axis(monkeypatch):
    """The CNN encoder convolves every edge's series over time: its [B*E, H, T-4]
    activations grow with T, and the estimate must cover them (not H floats per edge)."""
    torch.manual_seed(0)
    overrides = [*TINY_DECODER, "guide.encoder.hidden=32"]
    estimates = {}
    for frames in (49, 99):
        x = torch.randn(2, 4, frames, 4)
        model, guide = build(None, "cnn", x, overrides=overrides)
        estimates[frames] = _estimated_bytes(monkeypatch, model, guide, x)
        widest = _widest_encoder_activation(guide, x)
        assert widest == 4 * 12 * 32 * (frames - 4)  # E = 12 edges of [H, T - 4] floats
        # At least the widest tensor (two are alive at once: a layer's input and output),
        # and not wildly more.
        assert widest <= estimates[frames] <= 4 * widest, (frames, estimates[frames], widest)
    assert estimates[99] / estimates[49] == pytest.approx((99 - 4) / (49 - 4), rel=0.05)


def test_memory_safe_batch_reads_the_frames_the_cnn_encoder_reads(monkeypatch):
    """The guide reads its training length of longer trajectories (49 of 99)."""
    x_train, x_test = torch.randn(2, 4, 49, 4), torch.randn(2, 4, 99, 4)
    model, guide = build(None, "cnn", x_train, overrides=[*TINY_DECODER])
    assert _estimated_bytes(monkeypatch, model, guide, x_test) == pytest.approx(
        _estimated_bytes(monkeypatch, model, guide, x_train), rel=1e-3
    )


@pytest.fixture(scope="module")
def small_set():
    data = simulate("springs", 24, num_objects=3, num_frames=8, seed=0)
    return prepare(data, normalizer_for(data))


# Small networks; a wide likelihood, so that the sampled edges barely move the ELBO and
# the global latents' terms (some nats per evaluation) stand out.
SMALL = [
    "decoder.msg_hidden=8",
    "decoder.msg_out=8",
    "decoder.hidden=8",
    "guide.encoder.hidden=8",
    "likelihood.variance=1.0e4",
]


@pytest.mark.parametrize("global_latent", ["prior.name=dirichlet", "graph.shared=true"])
def test_elbo_loss_counts_global_latents_once_whatever_the_batch_size(small_set, global_latent):
    """elbo_loss is the negative ELBO of the whole set per trajectory: the KL of a global
    latent (Dirichlet edge frequencies, a shared graph) enters once, not once per batch."""
    x, edges = small_set
    torch.manual_seed(0)
    model, guide = build(None, None, x, overrides=[*SMALL, global_latent])
    # Evaluation states of the global latents' posteriors, as after training: a sharp
    # q(pi) and a confident shared graph, so that their draws hardly vary.
    if guide.prior_guide is not None:
        guide.prior_guide.counts.fill_(1e6)
        guide.prior_guide.tracked.fill_(True)
    if guide.structure.shared:
        guide.shared_logits.copy_(torch.tensor([5.0, -5.0]).expand_as(guide.shared_logits))
        guide.shared_tracked.fill_(True)
    losses = {b: evaluate(model, guide, x, edges, batch_size=b)["elbo_loss"] for b in (24, 8, 5)}
    # One global KL is several nats, i.e. ~0.17 per trajectory of 24 for every extra batch.
    assert losses[8] == pytest.approx(losses[24], abs=0.02), losses
    assert losses[5] == pytest.approx(losses[24], abs=0.02), losses


def test_a_checkpoint_with_only_the_format_tag_names_the_file_and_what_it_lacks(tmp_path):
    path = tmp_path / "tag_only.pt"
    torch.save({"format": CHECKPOINT_FORMAT}, path)
    with pytest.raises(ValueError, match=r"tag_only\.pt") as info:
        load_checkpoint(path)
    message = str(info.value)
    with pytest.raises(ValueError, match=r"tag_only\.pt lacks model_spec"):
        NRI.load(path)  # where users meet it
    for key in ("model_spec", "guide_spec", "model_state", "guide_state", "normalization"):
        assert key in message, message
    # Data whose shape entries are missing are named too, as are keys a caller needs.
    torch.save({"format": CHECKPOINT_FORMAT, "data": {"num_objects": 5}}, path)
    with pytest.raises(ValueError, match=r"data\.num_frames, data\.num_features"):
        load_checkpoint(path)


def test_keys_a_caller_needs_are_checked_on_loading(tmp_path):
    """A saved model is a checkpoint, but resuming needs the trainer's state too."""
    nri = NRI(overrides=[*SMALL, "train.progress=false"]).fit(
        simulate("springs", 8, num_objects=3, num_frames=8, seed=0), epochs=1
    )
    path = nri.save(tmp_path / "model.pt")
    assert set(load_checkpoint(path)) >= {"model_spec", "model_state", "data"}
    with pytest.raises(ValueError, match=r"model\.pt lacks epoch, optimizer"):
        load_checkpoint(path, require=("epoch", "optimizer"))


def test_nll_with_a_learned_variance_is_lowest_where_the_variance_fits_the_errors(small_set):
    """With a fixed variance nll is the paper's err / 2 sigma^2 (its constant dropped);
    with a learned one it adds the log variance, no longer a constant: a variance that
    fits the errors scores better than a wider one (without the log, wider always scored
    better, and selecting the best epoch by nll kept the epoch before a learned variance
    shrank: a calibrated run that learned its edges kept an epoch before it did)."""
    x, edges = small_set
    torch.manual_seed(0)
    over = [*SMALL[:-1], "likelihood.learn_variance=true", "likelihood.variance=1.0"]
    model, guide = build(None, None, x, overrides=over)
    mse = evaluate(model, guide, x, edges)["mse"]
    scores = {}
    for scale in (10.0, 1.0):  # a variance ten times the errors, and one at their scale
        with torch.no_grad():
            model.log_sigma.fill_(0.5 * math.log(mse * scale - model.min_variance))
        scores[scale] = evaluate(model, guide, x, edges)["nll"]
    assert scores[1.0] < scores[10.0], scores
    fixed, _ = build(None, None, x, overrides=[*SMALL[:-1], f"likelihood.variance={mse}"])
    weights = {k: v for k, v in model.state_dict().items() if k != "log_sigma"}
    fixed.load_state_dict(weights, strict=False)  # the same decoder, the variance its own
    # At the same variance the learned one adds 0.5 log(variance) per element: frames - 1
    # predicted frames times the features, per object.
    gap = evaluate(model, guide, x, edges)["nll"] - evaluate(fixed, guide, x, edges)["nll"]
    elements = (x.shape[2] - 1) * x.shape[3]
    assert gap == pytest.approx(0.5 * math.log(mse) * elements, rel=1e-3)
