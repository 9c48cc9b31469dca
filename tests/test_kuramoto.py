"""Kuramoto: coupling graphs, features, and the fixed-step integrator against scipy."""

import numpy as np
import pytest
import torch
from reference.numpy_reference import kuramoto_features

from nri_pyro import simulate
from nri_pyro.data.systems import get_system

CPU = torch.device("cpu")


def _init(num_sims, seed=0, **params):
    sys_ = get_system("kuramoto")
    p = sys_.params(params)
    return sys_, p, sys_.initial(num_sims, 5, p, torch.Generator().manual_seed(seed))


def test_uncoupled_oscillators_turn_at_their_own_frequency():
    sys_, p, init = _init(16, coupling=0.0)
    feats = sys_.run(init, 99, p, device=CPU)
    t = torch.arange(99, dtype=torch.float64) * p.dt * p.sample_freq
    phase = init["phase"][:, :, None] + init["omega"][:, :, None] * t
    assert torch.allclose(feats[..., 1], phase.sin(), atol=1e-9)
    # The unwrapped phase grows linearly: its min-max scaling is a straight line.
    last = (p.window_frames - 1) * p.dt * p.sample_freq  # min-max over the 100-frame window
    assert torch.allclose(feats[..., 2], (2 * t / last - 1).expand_as(phase), atol=1e-6)
    # Nobody drives them, so the d phi/dt feature is 0 by the reference's rule.
    assert (feats[..., 0] == 0).all()


def test_omega_feature_maps_the_frequency_range_to_unit_interval():
    sys_, p, init = _init(64)
    feats = sys_.run(init, 49, p, device=CPU)
    expected = (init["omega"] - 1) / 9 * 2 - 1
    assert torch.allclose(feats[:, :, 0, 3], expected, atol=1e-12)
    assert feats[..., 3].min() >= -1 and feats[..., 3].max() < 1


def test_coupling_is_directed_by_default_and_mirrored_when_undirected():
    directed = simulate("kuramoto", 2000, num_frames=1, seed=0).adjacency
    assert not torch.equal(directed, directed.transpose(1, 2))
    assert (directed.diagonal(dim1=1, dim2=2) == 0).all()
    off = ~torch.eye(5, dtype=torch.bool)
    assert abs(float(directed[:, off].double().mean()) - 0.5) < 0.01
    undirected = simulate("kuramoto", 200, num_frames=1, seed=0, directed=False).adjacency
    assert torch.equal(undirected, undirected.transpose(1, 2))


def test_driven_speed_feature_is_scaled_to_unit_interval():
    sys_, p, init = _init(64, seed=2)
    feats = sys_.run(init, 99, p, device=CPU)
    driven = init["adjacency"].sum(2) > 0
    speed = feats[..., 0]
    assert torch.allclose(speed[driven].amax(-1), torch.ones(()).double(), atol=0.05)
    assert (speed[~driven] == 0).all()


def _scipy_features(init, i, p, num_frames, rtol, atol):
    from scipy.integrate import solve_ivp

    omega = init["omega"][i].numpy()
    k = init["adjacency"][i].numpy().astype(np.float64)
    grid = np.arange((p.window_frames - 1) * p.sample_freq + 2) * p.dt

    def rhs(_t, phi):
        return omega + (k * np.sin(phi[None, :] - phi[:, None])).sum(1)

    sol = solve_ivp(
        rhs,
        (0, grid[-1]),
        init["phase"][i].numpy(),
        method="RK45",
        t_eval=grid,
        rtol=rtol,
        atol=atol,
    )
    return kuramoto_features(sol.y.T, omega, k, num_frames, p)


@pytest.mark.parametrize(
    "rtol, atol, tolerance",
    [
        # A tightly solved reference: the fixed-step RK4 is accurate to ~1e-5.
        (1e-10, 1e-12, 1e-4),
        # Dormand-Prince at scipy's dopri5 defaults (as the reference generator): the
        # difference is then the adaptive solver's own error, not ours.
        (1e-6, 1e-12, 1e-2),
    ],
)
def test_fixed_step_rk4_matches_scipys_adaptive_dormand_prince(rtol, atol, tolerance):
    sys_, p, init = _init(3, seed=4)
    ours = sys_.run(init, 99, p, device=CPU).numpy()
    for i in range(3):
        theirs = _scipy_features(init, i, p, 99, rtol, atol)
        assert np.abs(ours[i] - theirs).max() < tolerance
