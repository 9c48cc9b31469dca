"""Metrics: edge accuracy up to relabelling, AUROC, rollout MSE and calibration.

Graphs that change over time: per-frame edge metrics, switch detection, the figure."""

import itertools
import math

import numpy as np
import pytest
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from nri_pyro import plots
from nri_pyro.metrics import (
    EdgeAccumulator,
    MSEAccumulator,
    edge_accuracy,
    edge_accuracy_by_frame,
    edge_auroc,
    expected_calibration_error,
    frame_edge_accuracy,
    frame_edge_auroc,
    rollout_mse,
    switch_detection,
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
    # The learned type read as "no edge" (a Dirichlet's learned density is of the others)
    assert acc.no_edge_label() == 1 and acc.no_edge_label(anchor_first=True) == 0


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
    assert acc.no_edge_label() == 1 and acc.no_edge_label(anchor_first=True) == 0


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


# --- graphs that change over time --------------------------------------------------------------


def switching_truth(samples: int = 4, frames: int = 12, edges: int = 6, seed: int = 0):
    """Per-frame types [S, T, E] in 0..2, each edge constant over runs of frames."""
    generator = torch.Generator().manual_seed(seed)
    true = torch.randint(3, (samples, 1, edges), generator=generator).repeat(1, frames, 1)
    for s, e in itertools.product(range(samples), range(edges)):
        start = int(torch.randint(1, frames, (1,), generator=generator))
        true[s, start:, e] = (true[s, start - 1, e] + 1) % 3  # one switch per edge
    return true


def one_edge(types: list[int]) -> torch.Tensor:
    """Types [1, T, 1] of one edge of one trajectory."""
    return torch.tensor(types).view(1, -1, 1)


def draw(fig):
    assert isinstance(fig, Figure)
    FigureCanvasAgg(fig).draw()  # renders without errors, no pyplot state touched


# --- per-frame accuracy and AUROC ---------------------------------------------------------
def test_perfect_per_frame_predictions_give_one_everywhere():
    true = switching_truth()
    probs = one_hot_probs(true, 3)
    assert frame_edge_accuracy(probs, true) == 1.0
    assert frame_edge_auroc(probs, true) == 1.0
    torch.testing.assert_close(edge_accuracy_by_frame(probs, true), torch.ones(12).double())
    result = switch_detection(probs, true, tolerance=0)
    assert result == {
        "precision": 1.0,
        "recall": 1.0,
        "true_switches": 24,
        "detected_switches": 24,
        "matched": 24,
    }


def test_types_swapped_everywhere_still_score_one_after_relabelling():
    true = switching_truth()
    swapped = one_hot_probs((true + 1) % 3, 3)  # the encoder names type t as t + 1
    assert frame_edge_accuracy(swapped, true) == 1.0
    assert frame_edge_auroc(swapped, true) == 1.0
    assert edge_accuracy_by_frame(swapped, true).min() == 1.0
    result = switch_detection(swapped, true, tolerance=0)
    assert result["precision"] == result["recall"] == 1.0
    # With type 0 anchored as "no edge", the cyclic renaming cannot be undone.
    assert frame_edge_accuracy(swapped, true, anchor_first=True) < 1.0


def test_per_frame_metrics_are_the_static_ones_with_frames_as_extra_edges():
    generator = torch.Generator().manual_seed(3)
    true = switching_truth(seed=3)
    probs = (torch.randn(*true.shape, 3, generator=generator) + 2 * one_hot_probs(true, 3)).softmax(
        -1
    )
    flat_probs, flat_true = probs.reshape(4, -1, 3), true.reshape(4, -1)
    assert frame_edge_accuracy(probs, true) == edge_accuracy(flat_probs, flat_true)
    assert frame_edge_auroc(probs, true) == edge_auroc(flat_probs, flat_true)
    by_frame = edge_accuracy_by_frame(probs, true)
    assert by_frame.shape == (12,) and by_frame.dtype == torch.float64
    assert float(by_frame.mean()) == pytest.approx(frame_edge_accuracy(probs, true))
    # The accumulator takes per-frame batches; the relabelling is over all of them.
    accumulator = EdgeAccumulator()
    accumulator.update(probs[:3], true[:3])
    accumulator.update(probs[3:], true[3:])
    assert accumulator.count == 4 * 12 * 6
    assert accumulator.accuracy() == frame_edge_accuracy(probs, true)


def test_per_frame_auroc_matches_a_hand_computation():
    # Six (frame, edge) pairs; p(no edge) for the true "no edge" ones and the true edges.
    p_none_negative, p_none_positive = [0.9, 0.8, 0.55], [0.2, 0.55, 0.3]
    p_none = torch.tensor(p_none_negative + p_none_positive).view(1, 3, 2)
    true = torch.tensor([0, 0, 0, 1, 1, 1]).view(1, 3, 2)
    probs = torch.stack([p_none, 1 - p_none], -1)
    # Scores 1 - p: positives 0.8, 0.45, 0.7 against negatives 0.1, 0.2, 0.45. The pairs won:
    # 0.8 -> 3, 0.45 -> 2 and a tie (1/2), 0.7 -> 3; 8.5 of 9.
    assert frame_edge_auroc(probs, true) == pytest.approx(8.5 / 9)
    assert frame_edge_auroc(probs.flip(-1), true) == pytest.approx(8.5 / 9)  # relabelled
    # Argmax: negatives 0, 0, 0 and positives 1, 0, 1, so 5 of 6 right.
    assert frame_edge_accuracy(probs, true) == pytest.approx(5 / 6)


# --- switch detection ---------------------------------------------------------------------
def test_a_switch_detected_two_frames_late_counts_within_tolerance_two_only():
    true = one_edge([0, 0, 0, 0, 1, 1, 1, 1, 1])  # switch at frame 4
    late = one_hot_probs(one_edge([0, 0, 0, 0, 0, 0, 1, 1, 1]), 2)  # detected at frame 6
    within = switch_detection(late, true, tolerance=2)
    assert (within["precision"], within["recall"], within["matched"]) == (1.0, 1.0, 1)
    beyond = switch_detection(late, true, tolerance=1)
    assert (beyond["precision"], beyond["recall"], beyond["matched"]) == (0.0, 0.0, 0)
    assert beyond["true_switches"] == beyond["detected_switches"] == 1
    early = one_hot_probs(one_edge([0, 0, 1, 1, 1, 1, 1, 1, 1]), 2)  # two frames early
    assert switch_detection(early, true, tolerance=2)["matched"] == 1


def test_detections_without_a_true_switch_lower_precision_only():
    true = one_edge([0, 0, 0, 1, 1, 1, 1, 1, 1, 1])
    # The right switch, plus a spurious blip (two more switches) far from it.
    blip = one_hot_probs(one_edge([0, 0, 0, 1, 1, 1, 1, 0, 0, 1]), 2)
    result = switch_detection(blip, true, tolerance=1)
    assert result["detected_switches"] == 3 and result["matched"] == 1
    assert result["precision"] == pytest.approx(1 / 3)
    assert result["recall"] == 1.0


def test_matching_is_one_to_one_per_trajectory_and_edge():
    # Two detections around one true switch: only one of them matches.
    true = one_edge([0, 0, 0, 1, 1, 1])
    twice = one_hot_probs(one_edge([0, 0, 1, 0, 1, 1]), 2)  # switches at frames 2, 3, 4
    result = switch_detection(twice, true, tolerance=1)
    assert (result["matched"], result["detected_switches"]) == (1, 3)
    # True switches at frames 3, 5 and detections at 4, 6 (tolerance 1): the detection at 4
    # takes the earlier true switch, leaving 5 for 6; both match.
    true = one_edge([0, 0, 0, 1, 1, 0, 0, 0])
    shifted = one_hot_probs(one_edge([0, 0, 0, 0, 1, 1, 0, 0]), 2)
    assert switch_detection(shifted, true, tolerance=1)["matched"] == 2
    # A detection on another edge, or another trajectory, never matches.
    true = torch.tensor([[0, 0, 1, 1], [0, 0, 0, 0]]).T.reshape(1, 4, 2)  # edge 0 switches
    other_edge = one_hot_probs(torch.tensor([[0, 0, 0, 0], [0, 0, 1, 1]]).T.reshape(1, 4, 2), 2)
    assert switch_detection(other_edge, true, tolerance=3)["matched"] == 0
    two = torch.stack([true[0], torch.zeros_like(true[0])])  # trajectory 0 switches
    other_trajectory = one_hot_probs(two.flip(0), 2)
    assert switch_detection(other_trajectory, two, tolerance=3)["matched"] == 0


def maximum_matching(true: list[int], detected: list[int], tolerance: int) -> int:
    """Size of a maximum one-to-one matching with |t - d| <= tolerance (augmenting paths)."""
    partner: dict[int, int] = {}  # true index -> detected index

    def augment(d: int, seen: set[int]) -> bool:
        for i, t in enumerate(true):
            if abs(t - detected[d]) <= tolerance and i not in seen:
                seen.add(i)
                if i not in partner or augment(partner[i], seen):
                    partner[i] = d
                    return True
        return False

    return sum(augment(d, set()) for d in range(len(detected)))


def test_the_greedy_matching_is_a_maximum_matching():
    generator = torch.Generator().manual_seed(7)
    true = torch.randint(2, (40, 15, 2), generator=generator)
    predicted = torch.randint(2, (40, 15, 2), generator=generator)
    for tolerance in (0, 1, 2, 4):
        result = switch_detection(one_hot_probs(predicted, 2), true, tolerance)
        expected = 0
        for s, e in itertools.product(range(40), range(2)):
            t_switch = (torch.nonzero(true[s, 1:, e] != true[s, :-1, e]).squeeze(-1) + 1).tolist()
            d_switch = (torch.nonzero(predicted[s, 1:, e] != predicted[s, :-1, e]) + 1).tolist()
            expected += maximum_matching(t_switch, [d for (d,) in d_switch], tolerance)
        assert result["matched"] == expected
        assert result["true_switches"] == int((true[:, 1:] != true[:, :-1]).sum())
        assert result["detected_switches"] == int((predicted[:, 1:] != predicted[:, :-1]).sum())


def test_no_detections_or_no_true_switches_give_nan_not_a_guess():
    true = one_edge([0, 0, 1, 1])
    static = switch_detection(one_hot_probs(one_edge([0, 0, 0, 0]), 2), true, tolerance=1)
    assert math.isnan(static["precision"]) and static["recall"] == 0.0
    constant = one_edge([1, 1, 1, 1])
    spurious = switch_detection(one_hot_probs(one_edge([1, 0, 0, 0]), 2), constant, 1)
    assert spurious["precision"] == 0.0 and math.isnan(spurious["recall"])
    single_frame = switch_detection(one_hot_probs(one_edge([1]), 2), one_edge([1]), 1)
    assert math.isnan(single_frame["precision"]) and math.isnan(single_frame["recall"])


# --- bad input ----------------------------------------------------------------------------
PROBS = one_hot_probs(torch.zeros(2, 5, 6, dtype=torch.long), 3)


@pytest.mark.parametrize(
    "metric",
    [frame_edge_accuracy, frame_edge_auroc, edge_accuracy_by_frame, switch_detection],
)
@pytest.mark.parametrize(
    ("probs", "true", "message"),
    [
        (PROBS[:, 0], torch.zeros(2, 6, dtype=torch.long), r"\[S, T, E, K\].*expand"),
        (PROBS, torch.zeros(2, 6, dtype=torch.long), r"\(2, 5, 6\).*one graph per trajectory"),
        (PROBS, torch.zeros(2, 4, 6, dtype=torch.long), r"\(2, 5, 6\) .* got shape \(2, 4, 6\)"),
        (PROBS, torch.full((2, 5, 6), 3), r"edge types in 0\.\.2"),
        (PROBS * 3, torch.zeros(2, 5, 6, dtype=torch.long), "apply softmax"),
    ],
)
def test_shapes_that_disagree_raise_saying_what_is_expected(metric, probs, true, message):
    with pytest.raises(ValueError, match=message):
        metric(probs, true, **({"tolerance": 1} if metric is switch_detection else {}))


@pytest.mark.parametrize("tolerance", [-1, 1.5, True])
def test_a_tolerance_that_is_not_a_whole_number_of_frames_raises(tolerance):
    true = torch.zeros(2, 5, 6, dtype=torch.long)
    with pytest.raises(ValueError, match="tolerance: expected a whole number"):
        switch_detection(PROBS, true, tolerance)


def test_the_accumulator_refuses_to_mix_static_and_per_frame_batches():
    accumulator = EdgeAccumulator()
    accumulator.update(PROBS, torch.zeros(2, 5, 6, dtype=torch.long))
    with pytest.raises(ValueError, match=r"expected per-frame \[B, T, E, K\] .* got static"):
        accumulator.update(PROBS[:, 0], torch.zeros(2, 6, dtype=torch.long))
    with pytest.raises(ValueError, match=r"or, per frame, \[B, T, E, K\]"):
        EdgeAccumulator().update(PROBS[None], torch.zeros(1, 2, 5, 6, dtype=torch.long))


# --- the figure ---------------------------------------------------------------------------
def test_edges_over_time_draws_a_line_and_a_true_step_per_selected_edge():
    true = switching_truth(samples=1, frames=10, edges=12)[0]  # [T, E], 4 objects
    probs = one_hot_probs(true, 3)
    fig = plots.plot_edges_over_time(probs, true, edges=[0, 5])
    draw(fig)
    assert len(fig.axes) == 2  # one panel per edge
    for ax, e in zip(fig.axes, [0, 5], strict=True):
        inferred, truth = ax.lines
        np.testing.assert_allclose(inferred.get_ydata(), 1 - probs[:, e, 0].numpy())
        np.testing.assert_array_equal(truth.get_ydata(), (true[:, e] != 0).numpy())
        np.testing.assert_array_equal(inferred.get_xdata(), np.arange(10))
    assert [ax.get_ylabel() for ax in fig.axes] == ["1>0", "3>1"]  # edge 5: receiver 1, sender 3
    assert fig.axes[-1].get_xlabel() == "frame"
    # p(edge type 2) instead of p(edge present); the truth follows the same choice.
    fig = plots.plot_edges_over_time(probs, true, edges=[3], edge_type=2)
    inferred, truth = fig.axes[0].lines
    np.testing.assert_allclose(inferred.get_ydata(), probs[:, 3, 2].numpy())
    np.testing.assert_array_equal(truth.get_ydata(), (true[:, 3] == 2).numpy())
    # [T, E] probabilities of an edge, no truth: a single line.
    fig = plots.plot_edges_over_time(1 - probs[..., 0], edges=[1])
    draw(fig)
    assert len(fig.axes) == 1 and len(fig.axes[0].lines) == 1


def test_edges_over_time_as_heatmaps_aligns_inferred_and_true():
    true = switching_truth(samples=1, frames=10, edges=12)[0]
    probs = one_hot_probs(true, 3)
    fig = plots.plot_edges_over_time(probs, true)  # 12 edges: heatmaps by default
    draw(fig)
    assert len(fig.axes) == 3  # inferred, true, colorbar
    inferred, truth = (ax.images[0].get_array() for ax in fig.axes[:2])
    assert inferred.shape == truth.shape == (12, 10)  # edges by frames
    np.testing.assert_allclose(inferred, 1 - probs[..., 0].numpy().T)
    np.testing.assert_array_equal(truth, (true != 0).numpy().T)
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()][:3] == ["1>0", "2>0", "3>0"]
    fig = plots.plot_edges_over_time(probs, edges=[2, 7], kind="heatmap", title="one")
    assert len(fig.axes) == 2  # inferred, colorbar
    assert fig.axes[0].images[0].get_array().shape == (2, 10)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"probs": torch.rand(2, 10, 12, 3)}, r"one trajectory.*pass probs\[s\]"),
        ({"true_types": torch.zeros(9, 12)}, r"true_types: expected .* \[10, 12\]"),
        ({"edges": [0, 12]}, r"edges: expected .* 0\.\.11, got \[12\]"),
        ({"edges": []}, "got none"),
        ({"kind": "bars"}, "kind: expected"),
        ({"probs": torch.rand(10, 7, 3).softmax(-1)}, "E = N\\(N-1\\)"),
        ({"probs": torch.randn(10, 12) * 4}, r"probabilities in \[0, 1\]"),
        ({"edge_type": 3}, r"edge_type: expected an edge type in 0\.\.2"),
    ],
)
def test_edges_over_time_names_what_is_wrong(kwargs, message):
    arguments = {"probs": torch.rand(10, 12, 3).softmax(-1), **kwargs}
    with pytest.raises(ValueError, match=message):
        plots.plot_edges_over_time(**arguments)
