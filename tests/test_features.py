"""Features by name: the names a dataset's features have, and picking them by name."""

import pytest
import torch

from nri_pyro import TrajectoryDataset
from nri_pyro.data.features import feature_mismatch, feature_names, select_named_features

KURAMOTO = ["dphi_dt", "sin_phi", "phase", "omega"]


def _data(names=None, count=4, **metadata):
    x = torch.arange(2 * 2 * 3 * count, dtype=torch.float64).reshape(2, 2, 3, count)
    if names is not None:
        metadata["feature_names"] = names
    return TrajectoryDataset(x, None, {"system": "kuramoto", **metadata})


def test_names_come_from_the_metadata_else_from_the_system_when_it_has_as_many():
    assert feature_names(_data(KURAMOTO[::-1])) == KURAMOTO[::-1]
    assert feature_names(_data()) == KURAMOTO  # a system's data without names
    assert feature_names(_data(count=3)) is None  # three of four: which is unknown
    custom = TrajectoryDataset(torch.zeros(1, 2, 3, 4), None, {"system": "custom"})
    assert feature_names(custom) is None
    assert feature_names(custom, "springs") == ["x", "y", "vx", "vy"]  # the model's system
    # Names an older select_features left whole, with the indices it kept.
    stale = _data(KURAMOTO, count=3, features_kept=[0, 1, 3])
    assert feature_names(stale) == ["dphi_dt", "sin_phi", "omega"]
    with pytest.raises(ValueError, match=r"metadata name 4 features .* trajectories have 3"):
        feature_names(_data(KURAMOTO, count=3))


def test_selecting_by_name_reorders_and_keeps_the_names_with_the_features():
    data = _data(KURAMOTO[::-1])  # omega, phase, sin_phi, dphi_dt
    three = select_named_features(data, ["dphi_dt", "sin_phi", "omega"], "the data")
    assert torch.equal(three.trajectories, data.trajectories[..., [3, 2, 0]])
    assert three.metadata["feature_names"] == ["dphi_dt", "sin_phi", "omega"]
    assert select_named_features(three, ["dphi_dt", "sin_phi", "omega"], "x") is three
    unnamed = _data(count=3)  # exactly as many as asked for: taken as they are
    assert select_named_features(unnamed, ["dphi_dt", "sin_phi", "omega"], "x") is unnamed


def test_data_without_a_feature_asked_for_are_refused_naming_both_lists():
    phase = _data(["dphi_dt", "sin_phi", "phase"], count=3)
    wanted = ["dphi_dt", "sin_phi", "omega"]
    assert feature_mismatch(phase, wanted) == "the features dphi_dt, sin_phi, phase (no omega)"
    with pytest.raises(ValueError, match=r"reads the features dphi_dt, sin_phi, omega, chosen "
                       r"by name, but the test data have the features dphi_dt, sin_phi, phase "
                       r"\(no omega\)"):  # fmt: skip
        select_named_features(phase, wanted, "the test data")
    with pytest.raises(ValueError, match="have 2 features, without names"):
        select_named_features(_data(count=2), wanted, "the data")
