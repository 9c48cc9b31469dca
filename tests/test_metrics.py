"""Metrics: edge accuracy up to relabelling, AUROC, rollout MSE and calibration."""

import itertools
import math

import pytest
import torch

from nri_pyro.metrics import (
    EdgeAccumulator,
    MSEAccumulator,
    edge_accuracy,
    edge_auroc,
    expected_calibration_error,
    rollout_mse,
)


def one_hot_probs(predicted: torch.Tensor, num_types: int, sharpness: float = 0.8) -> torch.Tensor:
    """Probabilities [..., K] whose argmax is ``predicted`` [...]."""
    off = (1.0 - sharpness) / (num_types - 1)
    probs = torch.full((*predicted.shape, num_types), off)
    probs.scatter_(-1, predicted.unsqueeze(-1), sharpness)
    return probs


def from_confusion(confusion: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """One sample [1, E, K] of edges whose confusion matrix (rows true, cols predicted) is given."""
    true, predicted = [], []
    for t, row in enumerate(confusion):
        for p, n in enumerate(row):
            true += [t] * n
            predicted += [p] * n
    predicted = torch.tensor([predicted])
    return one_hot_probs(predicted, len(confusion)), torch.tensor([true])


def random_edges(samples: int, edges: int, num_types: int, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    true = torch.randint(num_types, (samples, edges), generator=generator)
    logits = torch.randn(samples, edges, num_types, generator=generator)
    logits += 1.5 * torch.nn.functional.one_hot(true, num_types)
    # Rounded probabilities, so that AUROC scores have ties.
    probs = (logits.softmax(-1) * 20).round() / 20
    return probs, true


def brute_force_auroc(scores: torch.Tensor, present: torch.Tensor) -> float:
    pos, neg = scores[present].tolist(), scores[~present].tolist()
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def test_perfect_predictions_give_accuracy_one_and_auroc_one():
    true = torch.randint(3, (20, 12), generator=torch.Generator().manual_seed(1))
    probs = one_hot_probs(true, 3)
    acc = EdgeAccumulator()
    acc.update(probs, true)
    assert acc.accuracy() == 1.0
    assert acc.auroc() == 1.0
    assert acc.permutation() == (0, 1, 2)
    assert acc.count == 240
    assert acc.density() == pytest.approx((true != 0).double().mean().item())
    assert torch.equal(acc.confusion().diag().sum(), torch.tensor(240))


def test_swapped_labels_are_forgiven_unless_type_zero_is_anchored():
    true = torch.tensor([[0, 1, 1, 0, 1, 0], [1, 1, 0, 0, 0, 1]])
    probs = one_hot_probs(1 - true, 2)
    assert edge_accuracy(probs, true) == 1.0
    assert edge_auroc(probs, true) == 1.0
    assert edge_accuracy(probs, true, anchor_first=True) == 0.0
    assert edge_auroc(probs, true, anchor_first=True) == 0.0
    acc = EdgeAccumulator()
    acc.update(probs, true)
    assert acc.permutation() == (1, 0)
    assert acc.permutation(anchor_first=True) == (0, 1)


def test_three_types_find_a_cyclic_relabelling():
    # Identity scores 1 + 1 + 2 = 4; mapping predicted (0, 1, 2) -> true (2, 0, 1) scores
    # 3 + 5 + 4 = 12 of 16. With type 0 fixed the best is (0, 2, 1): 1 + 0 + 4 = 5.
    confusion = [[1, 5, 0], [0, 1, 4], [3, 0, 2]]
    probs, true = from_confusion(confusion)
    acc = EdgeAccumulator()
    acc.update(probs, true)
    assert acc.confusion().tolist() == confusion
    assert acc.permutation() == (2, 0, 1)
    assert acc.accuracy() == 12 / 16
    assert acc.permutation(anchor_first=True) == (0, 2, 1)
    assert acc.accuracy(anchor_first=True) == 5 / 16
    # "No edge" is predicted label 1 (column sum 6) unanchored, label 0 (column sum 4) anchored.
    assert acc.density() == 10 / 16
    assert acc.density(anchor_first=True) == 12 / 16


def test_relabelling_is_chosen_over_the_whole_set_not_per_batch():
    true = torch.tensor([[0, 1, 0, 1, 1, 0], [1, 0, 0, 1, 0, 1], [0, 0, 1, 1, 0, 1]])
    right = one_hot_probs(true[:2], 2)  # 12 edges, all right
    swapped = one_hot_probs(1 - true[2:], 2)  # 6 edges, all swapped
    acc = EdgeAccumulator()
    acc.update(right, true[:2])
    acc.update(swapped, true[2:])
    # Per batch (or per sample) each batch would score 1.0; one relabelling for all: 12 / 18.
    assert edge_accuracy(right, true[:2]) == 1.0
    assert edge_accuracy(swapped, true[2:]) == 1.0
    assert acc.accuracy() == 12 / 18
    assert acc.permutation() == (0, 1)


def test_metrics_do_not_depend_on_the_batch_size():
    probs, true = random_edges(250, 20, 3, seed=2)
    # Make the last, incomplete batch of 7 (5 samples) unlike the rest: all wrong.
    probs[-5:] = one_hot_probs((true[-5:] + 1) % 3, 3)
    results = []
    for batch_size in (7, 100, 250):
        acc = EdgeAccumulator()
        for start in range(0, 250, batch_size):
            acc.update(probs[start : start + batch_size], true[start : start + batch_size])
        results.append((acc.accuracy(), acc.auroc(), acc.permutation(), acc.count))
    assert results[0] == results[1] == results[2]
    accuracy, _, mapping, count = results[0]
    assert count == 250 * 20
    relabelled = torch.tensor(mapping)[probs.argmax(-1)]
    hand_mean = (relabelled == true).double().mean().item()
    assert accuracy == pytest.approx(hand_mean, abs=1e-15)
    # The reference's mean of per-batch accuracies would give the last batch too much weight.
    per_batch = [
        (relabelled[s : s + 7] == true[s : s + 7]).double().mean().item() for s in range(0, 250, 7)
    ]
    assert abs(sum(per_batch) / len(per_batch) - hand_mean) > 1e-3


@pytest.mark.parametrize("anchor_first", [False, True])
def test_auroc_equals_brute_force_pairwise_count_with_ties(anchor_first):
    probs, true = random_edges(30, 12, 3, seed=3)
    acc = EdgeAccumulator()
    acc.update(probs[:11], true[:11])
    acc.update(probs[11:], true[11:])
    no_edge = acc.permutation(anchor_first).index(0)
    scores = 1.0 - probs[..., no_edge].double().reshape(-1)
    present = (true != 0).reshape(-1)
    assert len(scores.unique()) < len(scores) / 10  # plenty of ties
    expected = brute_force_auroc(scores, present)
    assert acc.auroc(anchor_first) == pytest.approx(expected, abs=1e-12)
    assert 0.5 < expected < 1.0


def test_auroc_is_nan_with_one_class():
    probs, _ = random_edges(4, 6, 2)
    assert math.isnan(edge_auroc(probs, torch.zeros(4, 6, dtype=torch.long)))
    assert math.isnan(edge_auroc(probs, torch.ones(4, 6, dtype=torch.long), anchor_first=True))


def test_too_many_free_edge_types_raise_instead_of_guessing():
    probs, true = random_edges(2, 20, 7)
    acc = EdgeAccumulator()
    acc.update(probs, true)
    with pytest.raises(ValueError, match="at most 6 free types, got 7"):
        acc.accuracy()
    assert 0.0 <= acc.accuracy(anchor_first=True) <= 1.0  # 6 free types is allowed


def test_rollout_mse_is_the_mean_per_step():
    generator = torch.Generator().manual_seed(4)
    predictions = torch.randn(3, 2, 4, 5, generator=generator)
    target = torch.randn(3, 2, 4, 5, generator=generator)
    expected = torch.zeros(4)
    for b, n, s, d in itertools.product(range(3), range(2), range(4), range(5)):
        expected[s] += (predictions[b, n, s, d] - target[b, n, s, d]) ** 2 / (3 * 2 * 5)
    torch.testing.assert_close(rollout_mse(predictions, target), expected)


def test_mse_accumulator_weights_every_sample_equally():
    generator = torch.Generator().manual_seed(5)
    predictions = torch.randn(10, 3, 6, 4, generator=generator, dtype=torch.float64)
    target = torch.randn(10, 3, 6, 4, generator=generator, dtype=torch.float64)
    target[9] += 10.0  # a very bad last sample, alone in its batch
    mse = MSEAccumulator()
    for start, stop in ((0, 6), (6, 9), (9, 10)):
        mse.update(predictions[start:stop], target[start:stop])
    expected = ((predictions - target) ** 2).mean(dim=(0, 1, 3))
    torch.testing.assert_close(mse.result(), expected)
    torch.testing.assert_close(mse.result(), rollout_mse(predictions, target))
    mean_of_batches = sum(
        rollout_mse(predictions[a:b], target[a:b]) for a, b in ((0, 6), (6, 9), (9, 10))
    )
    assert (mean_of_batches / 3 - expected).abs().min() > 1.0


def test_ece_matches_a_hand_computation():
    probs = torch.tensor([[0.95, 0.05], [0.92, 0.08], [0.35, 0.65]])
    true = torch.tensor([0, 1, 1])
    # Bin (0.9, 1]: confidence 0.935, accuracy 1/2, weight 2/3. Bin (0.6, 0.7]: 0.65, 1, 1/3.
    expected = 2 / 3 * abs(0.5 - 0.935) + 1 / 3 * abs(1.0 - 0.65)
    assert expected_calibration_error(probs, true) == pytest.approx(expected, abs=1e-6)


def test_ece_is_small_when_calibrated_and_large_when_overconfident():
    generator = torch.Generator().manual_seed(6)
    probs = (2.0 * torch.randn(20_000, 3, generator=generator)).softmax(-1)
    true = torch.multinomial(probs, 1, generator=generator).squeeze(-1)
    assert expected_calibration_error(probs, true) < 0.02
    overconfident = (probs.log() * 4).softmax(-1)  # same argmax, sharper probabilities
    assert expected_calibration_error(overconfident, true) > 0.1
    # Works on the edge layout [S, E, K] too.
    ece = expected_calibration_error(probs.reshape(100, 200, 3), true.reshape(100, 200))
    assert ece == pytest.approx(expected_calibration_error(probs, true))


@pytest.mark.parametrize(
    ("probs", "true", "message"),
    [
        (torch.rand(4, 3), torch.zeros(4, dtype=torch.long), r"expected shape \[B, E, K\]"),
        (torch.rand(2, 6, 2), torch.zeros(2, 5, dtype=torch.long), r"expected shape \(2, 6\)"),
        (torch.rand(2, 6, 2), torch.full((2, 6), 2), r"edge types in 0\.\.1"),
        (torch.rand(2, 6, 2), torch.full((2, 6), -1), r"got values in -1\.\.-1"),
        (torch.rand(2, 6, 2), torch.zeros(2, 6), "integer tensor"),
        (torch.randn(2, 6, 2) * 5, torch.zeros(2, 6, dtype=torch.long), "apply softmax"),
    ],
)
def test_bad_edge_inputs_raise_with_expected_and_got(probs, true, message):
    with pytest.raises(ValueError, match=message):
        EdgeAccumulator().update(probs, true)


def test_changing_the_number_of_edge_types_between_updates_raises():
    acc = EdgeAccumulator()
    acc.update(*random_edges(2, 6, 2))
    with pytest.raises(ValueError, match=r"expected K = 2 .* got K = 3"):
        acc.update(*random_edges(2, 6, 3))


def test_empty_accumulators_raise_instead_of_dividing_by_zero():
    with pytest.raises(ValueError, match="call update"):
        EdgeAccumulator().accuracy()
    with pytest.raises(ValueError, match="call update"):
        MSEAccumulator().result()


def test_bad_rollout_and_calibration_inputs_raise():
    with pytest.raises(ValueError, match=r"expected shape \(2, 3, 4, 5\) .* got \(2, 3, 4, 6\)"):
        rollout_mse(torch.zeros(2, 3, 4, 5), torch.zeros(2, 3, 4, 6))
    with pytest.raises(ValueError, match=r"expected shape \[B, N, S, D\]"):
        rollout_mse(torch.zeros(3, 4, 5), torch.zeros(3, 4, 5))
    mse = MSEAccumulator()
    mse.update(torch.zeros(2, 3, 4, 5), torch.zeros(2, 3, 4, 5))
    with pytest.raises(ValueError, match=r"expected S = 4 .* got S = 7"):
        mse.update(torch.zeros(2, 3, 7, 5), torch.zeros(2, 3, 7, 5))
    with pytest.raises(ValueError, match="matching leading dimensions"):
        expected_calibration_error(torch.rand(10, 3), torch.zeros(9, dtype=torch.long))
