"""The NRI facade: features picked by name, splits checked before training, the data it takes."""

import pytest
import torch
from common import tiny

from nri_pyro import NRI, simulate

TINY = tiny(16, "train.batch_size=16", "train.progress=false")
PAPER_THREE = ["dphi_dt", "sin_phi", "omega"]


@pytest.fixture(scope="module")
def kuramoto():
    train = simulate("kuramoto", 32, num_objects=3, num_frames=12, seed=0)
    test = simulate("kuramoto", 8, num_objects=3, num_frames=12, seed=0, split="test")
    return train, test


def test_features_are_picked_by_name_in_fit_and_afterwards(kuramoto):
    train, test = kuramoto
    reference = NRI(features=PAPER_THREE, overrides=TINY).fit(train, epochs=1)
    # The same four features stored in another order train on the same three.
    reordered = NRI(features=PAPER_THREE, overrides=TINY).fit(
        train.select_features([3, 2, 1, 0]), epochs=1
    )
    expected = reference.infer_edges(test)
    assert torch.allclose(reordered.infer_edges(test), expected)
    assert torch.allclose(reference.infer_edges(test.select_features([3, 0, 1])), expected)
    assert torch.allclose(reference.infer_edges(test.select_features([0, 1, 3])), expected)
    # Three features, but phase where omega should be: refused, naming both lists.
    with pytest.raises(ValueError, match=r"features dphi_dt, sin_phi, omega.*have the "
                       r"features dphi_dt, sin_phi, phase \(no omega\)"):  # fmt: skip
        reference.evaluate(test.select_features([0, 1, 2]))


def test_a_run_without_chosen_features_reads_its_training_datas_by_name(kuramoto):
    train, test = kuramoto
    nri = NRI(overrides=TINY).fit(train, epochs=1)
    assert nri.data_info["features"] == ["dphi_dt", "sin_phi", "phase", "omega"]
    permuted = test.select_features([2, 3, 0, 1])
    assert torch.allclose(nri.infer_edges(permuted), nri.infer_edges(test))


def test_a_split_too_short_for_the_encoder_is_refused_before_the_first_epoch(tmp_path, kuramoto):
    train, test = kuramoto
    short = test.first_frames(5)  # the MLP encoder reads the 12 training frames
    with pytest.raises(ValueError, match=r"reads 12 frames .* the test trajectories have 5: "
                       r"give the test split"):  # fmt: skip
        NRI(overrides=TINY).fit(train, epochs=1, out=tmp_path / "run", held_out={"test": short})
    assert not (tmp_path / "run").exists()
    with pytest.raises(ValueError, match=r"decoder needs at least 2 frames.*test trajectories"):
        NRI(None, "cnn", overrides=TINY).fit(
            train, epochs=1, held_out={"test": test.first_frames(1)}
        )


def test_infer_edges_takes_numpy_arrays_and_refuses_no_trajectories(kuramoto):
    train, test = kuramoto
    nri = NRI(overrides=TINY).fit(train, epochs=1)
    x = test.trajectories
    assert torch.allclose(nri.infer_edges(x.numpy()), nri.infer_edges(x))
    with pytest.raises(ValueError, match=r"no trajectories \(S = 0"):
        nri.infer_edges(x[:0])
    with pytest.raises(TypeError, match="a torch tensor or a NumPy array, got list"):
        nri.infer_edges(x.tolist())


def test_eval_refine_is_the_runs_default_for_evaluate_and_is_checked_before_training(
    tmp_path, kuramoto
):
    train, test = kuramoto
    nri = NRI(overrides=[*TINY, "train.eval_refine=2"]).fit(train, epochs=1)
    assert nri.evaluate(test)["refine_steps"] == 2  # the run's own setting
    plain = nri.evaluate(test, refine=0)
    assert plain["refine_steps"] == 0 and "amortization_gap" not in plain
    # "exact" needs a node-level prior: refused before the first epoch, naming the setting
    with pytest.raises(ValueError, match=r"train.eval_refine='exact': refine='exact' .* needs "
                       r"prior.name=charges"):  # fmt: skip
        NRI(overrides=[*TINY, "train.eval_refine=exact"]).fit(
            train, epochs=1, out=tmp_path / "run"
        )
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("value", ["-1", "1.5", "true", "all"])
def test_a_bad_eval_refine_names_the_setting(value):
    with pytest.raises(ValueError, match=r"train.eval_refine: refine must be a whole number"):
        NRI(overrides=[*TINY, f"train.eval_refine={value}"])
