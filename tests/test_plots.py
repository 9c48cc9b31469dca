"""Figures, posterior predictive rollouts and the `nri-pyro plot` command."""

import json
import math

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from common import tiny
from matplotlib.collections import PolyCollection
from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch

from nri_pyro import NRI, plots, save_dataset, simulate
from nri_pyro.cli import main
from nri_pyro.metrics import expected_calibration_error
from nri_pyro.predictive import posterior_predictive

TINY = tiny(16, "train.batch_size=32")
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny run folder (2 epochs) and a small test set on disk, made once."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: extra threads only contend on a shared CPU
    root = tmp_path_factory.mktemp("plots")
    train = simulate("springs", 64, num_objects=4, num_frames=12, seed=0)
    valid = simulate("springs", 16, num_objects=4, num_frames=12, seed=0, split="valid")
    test = simulate("springs", 6, num_objects=4, num_frames=20, seed=0, split="test")
    nri = NRI(overrides=TINY, epochs=2, progress=False)
    nri.fit(train, valid, out=root / "run")
    save_dataset(root / "data", {"test": test})
    yield {"nri": nri, "dir": root / "run", "data": root / "data", "test": test, "root": root}
    torch.set_num_threads(threads)


def _close(fig):
    assert isinstance(fig, Figure)
    plt.close(fig)


# --- posterior predictive ------------------------------------------------------------------
def test_posterior_predictive_samples_future_frames_in_the_datas_units(run):
    nri, test = run["nri"], run["test"]
    prefix = test.trajectories[:, :, :13]
    samples = posterior_predictive(nri, prefix, steps=7, num_samples=9)
    assert samples.shape == (9, 6, 4, 7, 4)  # [S, B, N, steps, D]
    assert samples.dtype == torch.float64
    # The same draws from the bare model and guide on normalised data, inverted by hand.
    x = nri.normalizer.apply(prefix.double()).float()
    bare = posterior_predictive((nri.model, nri.guide), x, steps=7, num_samples=9)
    torch.testing.assert_close(samples, nri.normalizer.invert(bare.double()))
    # Edge uncertainty: the draws differ; a seed fixes them.
    assert samples.std(0).max() > 0
    torch.testing.assert_close(samples, posterior_predictive(nri, prefix, 7, 9))


def test_observation_noise_adds_the_models_sigma(run):
    nri, test = run["nri"], run["test"]
    x = nri.normalizer.apply(test.trajectories[:, :, :13].double()).float()
    pair = (nri.model, nri.guide)
    mean = posterior_predictive(pair, x, steps=3, num_samples=200, seed=1)
    noisy = posterior_predictive(pair, x, steps=3, num_samples=200, seed=1, noise=True)
    residual = (noisy - mean).std()
    assert abs(float(residual) / float(nri.model.sigma) - 1) < 0.05


def test_posterior_predictive_refuses_bad_input(run):
    nri, test = run["nri"], run["test"]
    with pytest.raises(ValueError, match="trained on 4 objects"):
        posterior_predictive(nri, simulate("springs", 2, num_objects=3, num_frames=13), 2, 2)
    with pytest.raises(ValueError, match="at least 1 posterior draw"):
        posterior_predictive(nri, test, 2, num_samples=0)
    with pytest.raises(ValueError, match="no guide"):
        posterior_predictive(NRI(), test, 2, 2)


# --- figures -----------------------------------------------------------------------------
def test_trajectory_figure_draws_truth_rollout_and_a_band_per_object(run):
    nri, test = run["nri"], run["test"]
    prefix = test.trajectories[:2, :, :13]
    samples = posterior_predictive(nri, prefix, steps=7, num_samples=10)
    rollout = nri.predict(prefix, 7)
    fig = plots.plot_trajectories(test.trajectories[0], rollout[0], samples[:, 0], start=13)
    assert len(fig.axes) == 3  # x-y plane, x(t), y(t)
    xy, x_axis, _ = fig.axes
    bands = [c for c in x_axis.collections if isinstance(c, PolyCollection)]
    assert len(bands) == 4  # one predictive band per object
    # per object: truth, first-frame marker, 10 sample paths, rollout
    assert len(xy.lines) == 4 * (1 + 1 + 10 + 1)
    rollout_line = x_axis.lines[1]
    np.testing.assert_array_equal(rollout_line.get_xdata(), np.arange(13, 20))
    _close(fig)
    _close(plots.plot_trajectories(test.trajectories[0]))  # the truth alone
    with pytest.raises(ValueError, match=r"samples: expected \[S, N, steps, D\]"):
        plots.plot_trajectories(test.trajectories[0], samples=samples[:, 0, :3])
    with pytest.raises(ValueError, match="start"):
        plots.plot_trajectories(test.trajectories[0], rollout[0], start=30)


def test_graph_figure_puts_the_inferred_graph_beside_the_true_one(run):
    nri, test = run["nri"], run["test"]
    probs = nri.infer_edges(test, as_adjacency=True)[0]  # [N, N, K]
    positions = test.trajectories[0, :, 0, :2]
    fig = plots.plot_graph(probs, test.adjacency[0], positions, min_prob=0.3)
    assert len(fig.axes) == 4  # inferred, true, node-link, colorbar
    inferred, true, graph = fig.axes[:3]
    present = 1 - probs[..., 0].numpy()
    np.testing.assert_allclose(inferred.images[0].get_array()[~np.eye(4, dtype=bool)],
                               present[~np.eye(4, dtype=bool)])  # fmt: skip
    np.testing.assert_array_equal(
        true.images[0].get_array()[~np.eye(4, dtype=bool)],
        (test.adjacency[0] != 0).numpy()[~np.eye(4, dtype=bool)],
    )
    arrows = [p for p in graph.patches if isinstance(p, FancyArrowPatch)]
    off = ~np.eye(4, dtype=bool)
    assert len(arrows) == int((present[off] >= 0.3).sum())
    _close(fig)
    fig = plots.plot_graph(nri.infer_edges(test)[0])  # [E, K], no truth, no positions
    assert len(fig.axes) == 2  # inferred + colorbar
    _close(fig)
    with pytest.raises(ValueError, match=r"positions: expected \[N, 2\]"):
        plots.plot_graph(probs, positions=torch.zeros(3, 2))
    with pytest.raises(ValueError, match="truth"):
        plots.plot_graph(probs, truth=torch.zeros(3, 3, dtype=torch.long))


def test_edge_probability_matrix_has_a_row_per_trajectory_and_a_column_per_edge(run):
    nri, test = run["nri"], run["test"]
    probs = nri.infer_edges(test)  # [B, E, K]
    fig = plots.plot_edge_probs(probs, test.edges)
    assert len(fig.axes) == 3  # inferred, true, colorbar
    assert fig.axes[0].images[0].get_array().shape == (6, 12)
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()][:3] == ["1>0", "2>0", "3>0"]
    _close(fig)
    with pytest.raises(ValueError, match="truth"):
        plots.plot_edge_probs(probs, test.edges[:2])


def test_training_curves_come_from_the_run_folder(run):
    fig = plots.plot_training_curves(run["dir"])
    assert [ax.get_title() for ax in fig.axes] == [
        "loss (per trajectory)", "validation NLL", "validation MSE", "validation edges",
    ]  # fmt: skip
    loss = fig.axes[0]
    assert [line.get_label() for line in loss.lines] == ["train_loss", "elbo_loss"]
    np.testing.assert_array_equal(loss.lines[0].get_xdata(), [1, 2])
    assert len(fig.axes[3].lines) == 3  # accuracy, AUROC, density
    _close(fig)


def test_training_curves_name_a_missing_or_broken_metrics_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"metrics\.jsonl"):
        plots.plot_training_curves(tmp_path)
    (tmp_path / "metrics.jsonl").write_text('{"epoch": 1, "train_loss": 2.0}\nnot json\n')
    with pytest.raises(ValueError, match=r"metrics.jsonl, line 2"):
        plots.plot_training_curves(tmp_path)


def test_calibration_diagram_relabels_and_reports_the_ece():
    generator = torch.Generator().manual_seed(0)
    true = torch.randint(0, 2, (50, 12), generator=generator)
    confidence = 0.6 + 0.4 * torch.rand(50, 12, generator=generator)
    # An encoder that names the types the other way round: p(type 1 - truth) = confidence.
    p_one = torch.where(true == 0, confidence, 1 - confidence)
    probs = torch.stack([1 - p_one, p_one], -1)
    fig = plots.plot_calibration(probs, true, num_bins=5)
    relabelled = probs.flip(-1)
    ece = expected_calibration_error(relabelled, true, num_bins=5)
    assert f"ECE = {ece:.4f}" in fig.axes[0].get_title()
    assert len(fig.axes) == 2  # reliability, counts
    heights = [bar.get_height() for bar in fig.axes[0].patches]
    assert heights[-1] == 1.0  # relabelled, the most confident edges are all right
    assert sum(bar.get_height() for bar in fig.axes[1].patches) == 600
    _close(fig)
    fig = plots.plot_calibration(probs, true, num_bins=5, relabel_types=False)
    assert f"ECE = {expected_calibration_error(probs, true, 5):.4f}" in fig.axes[0].get_title()
    _close(fig)
    with pytest.raises(ValueError, match="matching leading dimensions"):
        plots.plot_calibration(probs, true[:3])


ROWS = [
    {"variant": "uniform", "edge_accuracy_mean": 0.9, "edge_accuracy_std": 0.02, "runs": 3,
     "failed": 0, "settings": {"prior.no_edge": 0.5}, "edge_density_mean": 0.5,
     "edge_density_std": 0.01},
    {"variant": "sparse-0.95", "edge_accuracy_mean": 0.8, "edge_accuracy_std": 0.05, "runs": 3,
     "failed": 1, "settings": {"prior.no_edge": 0.95}, "edge_density_mean": 0.3,
     "edge_density_std": 0.02},
    {"variant": "sparse-0.8", "edge_accuracy_mean": math.nan, "edge_accuracy_std": math.nan,
     "runs": 0, "failed": 3, "settings": {"prior.no_edge": 0.8}, "edge_density_mean": math.nan,
     "edge_density_std": math.nan},
]  # fmt: skip


def test_metric_by_variant_marks_failed_variants():
    fig = plots.plot_metric_by_variant(ROWS, "edge_accuracy")
    (ax,) = fig.axes
    bars = ax.patches
    assert len(bars) == 3
    assert [round(b.get_height(), 6) for b in bars[:2]] == [0.9, 0.8]
    assert bars[2].get_hatch() == "xx"  # all runs failed
    texts = [t.get_text() for t in ax.texts]
    assert texts == ["1 failed", "all failed"]
    assert ax.get_xticklabels()[0].get_text() == "uniform\n(n=3)"
    _close(fig)
    with pytest.raises(ValueError, match=r"row 0 \('uniform'\): missing 'mse_mean'"):
        plots.plot_metric_by_variant(ROWS, "mse")


def test_metrics_against_a_setting_draw_one_line_per_metric_in_setting_order():
    fig = plots.plot_against_setting(ROWS, "prior.no_edge")
    (ax,) = fig.axes
    assert len(ax.containers) == 2  # one errorbar line per metric
    line = ax.containers[0].lines[0]
    np.testing.assert_array_equal(line.get_xdata(), [0.5, 0.95])  # 0.8: all runs failed
    np.testing.assert_array_equal(line.get_ydata(), [0.9, 0.8])
    assert [t.get_text() for t in ax.texts] == ["3 failed", "1 failed"]
    assert ax.get_xlabel() == "prior.no_edge"
    _close(fig)
    with pytest.raises(ValueError, match=r"settings have no 'prior\.name'"):
        plots.plot_against_setting(ROWS, "prior.name")
    bad = [{**ROWS[0], "settings": {"prior.name": "uniform"}}]
    with pytest.raises(ValueError, match="is not a number"):
        plots.plot_against_setting(bad, "prior.name")
    with pytest.raises(ValueError, match="one row per value"):
        plots.plot_against_setting([ROWS[0], ROWS[0]], "prior.no_edge")


def _data_row(prior: str, train: int, mean: float, std: float, noise: float = 0.0) -> dict:
    return {"variant": f"data.train={train}, prior.name={prior}", "spec_variant": prior,
            "data.train": train, "data.params.noise": noise, "edge_accuracy_mean": mean,
            "edge_accuracy_std": std, "runs": 2, "failed": 0}  # fmt: skip


def test_a_metric_against_a_data_setting_draws_one_line_per_prior_with_error_bars():
    rows = [
        _data_row(prior, train, 0.5 + train / 1e4 + (prior == "sparse") / 10, 0.01 * i)
        for prior in ("uniform", "sparse")
        for i, train in enumerate((5000, 50, 500))
    ]
    rows[1]["edge_accuracy_mean"] = float("nan")  # uniform at 50: every run failed
    fig = plots.plot_against_data(rows, "data.train", "edge_accuracy")
    (ax,) = fig.axes
    assert [c.get_label() for c in ax.containers] == ["uniform", "sparse"]  # one line each
    uniform, sparse = (c.lines[0] for c in ax.containers)
    np.testing.assert_array_equal(sparse.get_xdata(), [50, 500, 5000])  # in order of x
    np.testing.assert_allclose(sparse.get_ydata(), [0.605, 0.65, 1.1])
    np.testing.assert_array_equal(uniform.get_xdata(), [500, 5000])  # the failed point left out
    bars = ax.containers[1].lines[2][0].get_segments()  # error bars: mean -+ std
    np.testing.assert_allclose([b[:, 1] for b in bars],
                               [[0.595, 0.615], [0.63, 0.67], [1.1, 1.1]])  # fmt: skip
    assert ax.get_xscale() == "log" and ax.get_xlabel() == "data.train"
    _close(fig)
    fig = plots.plot_against_data(rows[3:], "data.params.noise", line_by=("data.train",))
    assert fig.axes[0].get_xscale() == "linear"
    _close(fig)
    with pytest.raises(ValueError, match=r"line 'sparse' has two rows at data.train"):
        plots.plot_against_data([*rows, _data_row("sparse", 50, 0.7, 0, noise=0.1)], "data.train")
    by_noise = plots.plot_against_data(
        [*rows, _data_row("sparse", 50, 0.7, 0, noise=0.1)], "data.train",
        line_by=("spec_variant", "data.params.noise"),
    )  # fmt: skip
    assert [c.get_label() for c in by_noise.axes[0].containers][-1] == (
        "sparse, data.params.noise=0.1"
    )
    _close(by_noise)
    with pytest.raises(ValueError, match="is not a number"):
        plots.plot_against_data([{**rows[0], "data.train": "many"}], "data.train")
    with pytest.raises(ValueError, match=r"missing 'data\.objects'"):
        plots.plot_against_data(rows, "data.objects")


# --- the command -------------------------------------------------------------------------
def test_plot_command_writes_the_standard_figures(run, tmp_path, capsys):
    out = tmp_path / "figures"
    argv = ["plot", str(run["dir"]), "--data", str(run["data"]), "--out", str(out)]
    assert main([*argv, "--trajectories", "2", "--samples", "8"]) == 0
    expected = {
        "training_curves", "calibration", "edge_probs",
        "graph_0", "graph_1", "trajectories_0", "trajectories_1",
    }  # fmt: skip
    assert {p.stem for p in out.iterdir()} == expected
    for path in out.iterdir():
        assert path.read_bytes()[:8] == PNG
    assert "wrote 7 figures" in capsys.readouterr().out


def test_plot_command_without_data_draws_the_training_curves(run, tmp_path):
    out = tmp_path / "figures"
    assert main(["plot", str(run["dir"]), "--out", str(out)]) == 0
    assert [p.name for p in out.iterdir()] == ["training_curves.png"]


def test_plot_command_names_what_is_wrong(run, tmp_path, capsys):
    empty = tmp_path / "empty-run"
    empty.mkdir()
    assert main(["plot", str(empty), "--out", str(tmp_path / "a")]) == 2
    assert "metrics.jsonl does not exist" in capsys.readouterr().err
    # a run folder without its checkpoint, asked for the data figures
    (empty / "metrics.jsonl").write_text(json.dumps({"epoch": 1, "train_loss": 1.0}) + "\n")
    code = main(["plot", str(empty), "--data", str(run["data"]), "--out", str(tmp_path / "b")])
    assert code == 2
    assert "checkpoint_best.pt does not exist" in capsys.readouterr().err
    # data whose number of objects differs from the run's
    other = tmp_path / "three-objects"
    save_dataset(other, {"test": simulate("springs", 2, num_objects=3, num_frames=20)})
    argv = ["plot", str(run["dir"]), "--data", str(other), "--out", str(tmp_path / "c")]
    assert main(argv) == 2
    assert "trained on 4 objects, the data have 3" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()  # nothing half-written
