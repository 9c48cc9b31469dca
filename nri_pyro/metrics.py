"""Evaluation metrics: edge accuracy and AUROC up to relabelling, rollout MSE, calibration.

Edges come in the flattened layout [S, E], E = N(N-1) (receiver-major, diagonal skipped),
with integer edge types 0..K-1 and edge-type probabilities [S, E, K]. Graphs that change over
time come per frame: truth [S, T, E] and probabilities [S, T, E, K]; their metrics count every
(trajectory, frame, edge) once, and detect switch times (:func:`switch_detection`).

Every metric here is accumulated over minibatches as sums and counts, so its value never
depends on the batch size: each edge (or each prediction) counts once, and an incomplete last
batch is not given the weight of a full one (the reference metric's mistake).

An unsupervised encoder may name the edge types in any order, so edge accuracy takes the best
relabelling of the predicted types over the whole evaluation set (never per sample or per
batch). Skip-first decoders fix type 0 as "no edge"; pass ``anchor_first=True`` to keep it fixed.
"""

from __future__ import annotations

import itertools
import math

import torch
from torch import Tensor

# The best relabelling is found by trying every permutation of the free labels; 6! = 720.
MAX_PERMUTED_TYPES = 6


def _check_edges(probs: Tensor, true_types: Tensor) -> None:
    """Validates probs [B, E, K] against true_types [B, E], or per frame [B, T, E, K], [B, T, E]."""
    if probs.dim() not in (3, 4):
        raise ValueError(
            f"probs: expected shape [B, E, K] (samples, edges, edge types) or, per frame, "
            f"[B, T, E, K] (samples, frames, edges, edge types), got {tuple(probs.shape)}"
        )
    if not probs.is_floating_point():
        raise ValueError(f"probs: expected a floating-point tensor, got dtype {probs.dtype}")
    if true_types.shape != probs.shape[:-1]:
        raise ValueError(
            f"true_types: expected shape {tuple(probs.shape[:-1])} to match probs "
            f"{tuple(probs.shape)}, got {tuple(true_types.shape)}"
        )
    _check_types(true_types, probs.shape[-1])
    if probs.numel() and not ((probs >= 0) & (probs <= 1)).all():
        raise ValueError(
            f"probs: expected probabilities in [0, 1], got values in "
            f"[{float(probs.min()):.4g}, {float(probs.max()):.4g}] (or NaN); "
            f"if these are logits, apply softmax over the last dimension first"
        )


def _check_types(true_types: Tensor, num_types: int) -> None:
    if true_types.is_floating_point() or true_types.is_complex() or true_types.dtype == torch.bool:
        raise ValueError(f"true_types: expected an integer tensor, got dtype {true_types.dtype}")
    if true_types.numel() and (true_types.min() < 0 or true_types.max() >= num_types):
        raise ValueError(
            f"true_types: expected edge types in 0..{num_types - 1} (K = {num_types} from "
            f"probs), got values in {int(true_types.min())}..{int(true_types.max())}"
        )


def _mann_whitney_auroc(scores: Tensor, positive: Tensor) -> float:
    """Exact AUROC of scores [M] for the labels positive [M] (bool), ties counted as 1/2.

    Mann-Whitney U with average ranks; nan when only one class is present.
    """
    num_pos = int(positive.sum())
    num_neg = positive.numel() - num_pos
    if num_pos == 0 or num_neg == 0:
        return float("nan")
    _, inverse, counts = torch.unique(scores, return_inverse=True, return_counts=True)
    # Ranks are 1-based; a group of tied scores shares the mean of the ranks it spans.
    last_rank = torch.cumsum(counts, 0).double()
    average_rank = last_rank - (counts.double() - 1.0) / 2.0
    rank_sum = average_rank[inverse][positive].sum()
    u_statistic = rank_sum - num_pos * (num_pos + 1) / 2.0
    return float(u_statistic / (num_pos * num_neg))


class EdgeAccumulator:
    """Edge metrics over a whole evaluation set, fed one minibatch at a time.

    Keeps the K x K confusion matrix and, for AUROC, every edge's probabilities and whether
    its true type is non-zero, all on the CPU (10,000 samples x 90 edges x K floats is small).
    Updates are all static, [B, E, K], or all per frame, [B, T, E, K]: then every (sample,
    frame, edge) counts as one edge, and the relabelling is taken over all frames together.

    The best relabelling maximises the number of correct edges over everything accumulated;
    it tries all permutations of the free labels, so at most ``MAX_PERMUTED_TYPES`` labels
    may be free (K <= 6, or K <= 7 with ``anchor_first=True``); beyond that the relabelling
    methods raise ValueError rather than return a greedy, possibly suboptimal, answer.
    Among equally good relabellings the identity-closest (lexicographically first) one wins.
    """

    def __init__(self) -> None:
        self._confusion: Tensor | None = None
        self._layout: tuple[int, ...] | None = None  # the layout of the first update
        self._probs: list[Tensor] = []
        self._present: list[Tensor] = []

    @property
    def num_types(self) -> int | None:
        """K, once the first batch has been seen."""
        return None if self._confusion is None else self._confusion.shape[0]

    @property
    def count(self) -> int:
        """Number of edges seen (samples x [frames x] edges per sample, summed over batches)."""
        return 0 if self._confusion is None else int(self._confusion.sum())

    def update(self, probs: Tensor, true_types: Tensor) -> None:
        """Adds one minibatch: probs [B, E, K] (edge-type probabilities), true_types [B, E].

        Per frame: probs [B, T, E, K], true_types [B, T, E], in every update alike.
        """
        _check_edges(probs, true_types)
        num_types = probs.shape[-1]
        layout = tuple(probs.shape[1:-1])
        if self._confusion is None:
            self._confusion = torch.zeros(num_types, num_types, dtype=torch.long, device="cpu")
            self._layout = layout
        elif num_types != self._confusion.shape[0]:
            raise ValueError(
                f"probs: expected K = {self._confusion.shape[0]} edge types as in earlier "
                f"updates, got K = {num_types}; use a new EdgeAccumulator per model"
            )
        elif len(layout) != len(self._layout):
            names = {1: "static [B, E, K]", 2: "per-frame [B, T, E, K]"}
            raise ValueError(
                f"probs: expected {names[len(self._layout)]} edge probabilities as in earlier "
                f"updates, got {names[len(layout)]} {tuple(probs.shape)}; use one "
                f"EdgeAccumulator per layout"
            )
        probs = probs.detach().cpu().reshape(-1, num_types)
        true_types = true_types.detach().cpu().reshape(-1).long()
        predicted = probs.argmax(-1)
        cells = torch.bincount(true_types * num_types + predicted, minlength=num_types**2)
        self._confusion += cells.view(num_types, num_types)
        self._probs.append(probs)
        self._present.append(true_types != 0)

    def confusion(self) -> Tensor:
        """Counts [K, K]: rows the true type, columns the predicted (argmax) type."""
        return self._require_data().clone()

    def permutation(self, anchor_first: bool = False) -> tuple[int, ...]:
        """The relabelling ``mapping[predicted] = true`` that maximises correct edges.

        With anchor_first, type 0 ("no edge" in skip-first decoders) maps to itself.
        """
        confusion = self._require_data()
        num_types = confusion.shape[0]
        first_free = 1 if anchor_first else 0
        if num_types - first_free > MAX_PERMUTED_TYPES:
            raise ValueError(
                f"best relabelling: tries all permutations of the free edge types, expected "
                f"at most {MAX_PERMUTED_TYPES} free types, got {num_types - first_free} "
                f"(K = {num_types}, anchor_first={anchor_first}); use confusion() to score "
                f"a model with this many edge types"
            )
        fixed = tuple(range(first_free))
        mappings = torch.tensor(
            [fixed + p for p in itertools.permutations(range(first_free, num_types))],
            device=confusion.device,
        )
        # correct[m] = sum over predicted c of confusion[true = mapping[c], predicted = c]
        correct = confusion[mappings, torch.arange(num_types, device=confusion.device)].sum(-1)
        return tuple(int(t) for t in mappings[int(correct.argmax())])

    def accuracy(self, anchor_first: bool = False) -> float:
        """Fraction of all edges whose relabelled argmax type equals the true type."""
        confusion = self._require_data()
        mapping = self.permutation(anchor_first)
        correct = sum(int(confusion[true, pred]) for pred, true in enumerate(mapping))
        return correct / self.count

    def density(self, anchor_first: bool = False) -> float:
        """Inferred edge density: fraction of edges predicted as a type that maps to true != 0."""
        no_edge = self.no_edge_label(anchor_first)
        predicted_no_edge = int(self._require_data()[:, no_edge].sum())
        return 1.0 - predicted_no_edge / self.count

    def auroc(self, anchor_first: bool = False) -> float:
        """AUROC of "edge present" (true type != 0), exact with ties; nan if one class only.

        The score is 1 - p(label that the chosen relabelling maps to "no edge"); it is ranked
        as -p, which orders edges identically without the rounding of 1 - p.
        """
        no_edge = self.no_edge_label(anchor_first)
        self._probs = [torch.cat(self._probs)]
        self._present = [torch.cat(self._present)]
        scores = -self._probs[0][:, no_edge].double()
        return _mann_whitney_auroc(scores, self._present[0])

    def no_edge_label(self, anchor_first: bool = False) -> int:
        """The predicted type that the best relabelling maps to "no edge" (true type 0)."""
        return self.permutation(anchor_first).index(0)

    def _require_data(self) -> Tensor:
        if self._confusion is None or self.count == 0:
            raise ValueError("EdgeAccumulator: no edges accumulated yet; call update() first")
        return self._confusion


def edge_accuracy(probs: Tensor, true_types: Tensor, anchor_first: bool = False) -> float:
    """Edge accuracy up to relabelling of probs [S, E, K] against true_types [S, E]."""
    accumulator = EdgeAccumulator()
    accumulator.update(probs, true_types)
    return accumulator.accuracy(anchor_first)


def edge_auroc(probs: Tensor, true_types: Tensor, anchor_first: bool = False) -> float:
    """AUROC of "edge present" for probs [S, E, K] against true_types [S, E]."""
    accumulator = EdgeAccumulator()
    accumulator.update(probs, true_types)
    return accumulator.auroc(anchor_first)


# --- graphs that change over time -------------------------------------------------------
def _check_frame_edges(probs: Tensor, true_types: Tensor) -> None:
    """Validates per-frame probs [S, T, E, K] against per-frame true_types [S, T, E]."""
    if probs.dim() != 4:
        hint = (
            "; for a static model's [S, E, K], repeat them over the T frames: "
            "probs.unsqueeze(1).expand(-1, T, -1, -1)"
            if probs.dim() == 3
            else ""
        )
        raise ValueError(
            f"probs: expected per-frame edge-type probabilities [S, T, E, K] (trajectories, "
            f"frames, edges, edge types), got shape {tuple(probs.shape)}{hint}"
        )
    if true_types.shape != probs.shape[:-1]:
        hint = (
            "; that is one graph per trajectory: per-frame metrics need per-frame truth, "
            "use edge_accuracy / edge_auroc for static graphs"
            if true_types.shape == probs.shape[:1] + probs.shape[2:3]
            else ""
        )
        raise ValueError(
            f"true_types: expected per-frame edge types [S, T, E] = {tuple(probs.shape[:-1])} "
            f"to match probs {tuple(probs.shape)}, got shape {tuple(true_types.shape)}{hint}"
        )
    _check_edges(probs, true_types)


def _frame_accumulator(probs: Tensor, true_types: Tensor) -> EdgeAccumulator:
    _check_frame_edges(probs, true_types)
    accumulator = EdgeAccumulator()
    accumulator.update(probs, true_types)
    return accumulator


def frame_edge_accuracy(probs: Tensor, true_types: Tensor, anchor_first: bool = False) -> float:
    """Per-frame edge accuracy up to relabelling: probs [S, T, E, K], true_types [S, T, E].

    The fraction of all (trajectory, frame, edge) triples whose relabelled argmax type equals
    the true type; one relabelling for the whole set, as :func:`edge_accuracy` takes it.
    """
    return _frame_accumulator(probs, true_types).accuracy(anchor_first)


def frame_edge_auroc(probs: Tensor, true_types: Tensor, anchor_first: bool = False) -> float:
    """AUROC of "edge present" over all (trajectory, frame, edge) triples; nan if one class.

    probs [S, T, E, K], true_types [S, T, E]; the score and relabelling of :func:`edge_auroc`.
    """
    return _frame_accumulator(probs, true_types).auroc(anchor_first)


def edge_accuracy_by_frame(probs: Tensor, true_types: Tensor, anchor_first: bool = False) -> Tensor:
    """Edge accuracy at each frame: [T] (float64, on probs' device).

    probs [S, T, E, K], true_types [S, T, E]. Entry t is the fraction of the S x E edges at
    frame t whose relabelled argmax type is right, with the one relabelling taken over the
    whole set (all frames), so the mean over frames is :func:`frame_edge_accuracy`.
    """
    mapping = _frame_accumulator(probs, true_types).permutation(anchor_first)
    mapping = torch.tensor(mapping, device=probs.device)  # mapping[predicted] = true
    predicted = mapping[probs.detach().argmax(-1)]
    correct = predicted == true_types.detach().to(probs.device)
    return correct.double().mean(dim=(0, 2))


def _switches(types: Tensor) -> Tensor:
    """[S, T, E] types -> [S * E, T - 1] bool: entry t - 1 is True where frame t != frame t - 1."""
    samples, gaps, edges = types[:, 1:].shape
    changed = types[:, 1:] != types[:, :-1]  # [S, T - 1, E]
    return changed.transpose(1, 2).reshape(samples * edges, gaps)


def switch_detection(probs: Tensor, true_types: Tensor, tolerance: int) -> dict[str, float]:
    """Precision and recall of detected switch times within +-``tolerance`` frames.

    probs [S, T, E, K] per-frame edge-type probabilities, true_types [S, T, E].

    - A true switch is a (trajectory, edge, frame t >= 1) whose true type differs from frame
      t - 1's; a detected switch one whose argmax type differs from frame t - 1's. The best
      relabelling of :func:`frame_edge_accuracy` is a one-to-one renaming of the types, so it
      moves no detected switch: none is applied (and any K works).
    - Matching is one-to-one within each (trajectory, edge): going through the detected
      switches in time order, each takes the earliest still-unmatched true switch t with
      |t - detected| <= tolerance, if any. As every window has the same width, this greedy
      matching is a maximum one.
    - precision = matched / detected switches, NaN when nothing is detected; recall =
      matched / true switches, NaN when the truth has no switch.

    Returns {"precision", "recall", "true_switches", "detected_switches", "matched"} (the
    three counts as ints). A model with windows of W frames can only switch at window
    starts; ``tolerance = W`` asks for a switch found in the right window or a neighbour.
    """
    if isinstance(tolerance, bool) or not isinstance(tolerance, int) or tolerance < 0:
        raise ValueError(f"tolerance: expected a whole number of frames >= 0, got {tolerance!r}")
    _check_frame_edges(probs, true_types)
    true = _switches(true_types.detach().to(probs.device))
    detected = _switches(probs.detach().argmax(-1))
    num_true, num_detected = int(true.sum()), int(detected.sum())
    # Only (trajectory, edge) rows with both kinds of switch can match.
    rows = true.any(-1) & detected.any(-1)
    unmatched, detected = true[rows].clone(), detected[rows]
    num_gaps = true.shape[1]
    matched = 0
    for t in range(num_gaps):
        hits = detected[:, t]
        if not hits.any():
            continue
        low, high = max(0, t - tolerance), min(num_gaps, t + tolerance + 1)
        candidates = unmatched[:, low:high] & hits[:, None]
        found = candidates.any(-1).nonzero().squeeze(-1)
        first = low + candidates[found].to(torch.uint8).argmax(-1)  # the earliest True
        unmatched[found, first] = False
        matched += found.numel()
    return {
        "precision": matched / num_detected if num_detected else math.nan,
        "recall": matched / num_true if num_true else math.nan,
        "true_switches": num_true,
        "detected_switches": num_detected,
        "matched": matched,
    }


def _check_rollout(predictions: Tensor, target: Tensor) -> None:
    if predictions.dim() != 4:
        raise ValueError(
            f"predictions: expected shape [B, N, S, D] (samples, objects, steps, features), "
            f"got {tuple(predictions.shape)}"
        )
    if target.shape != predictions.shape:
        raise ValueError(
            f"target: expected shape {tuple(predictions.shape)} like predictions, "
            f"got {tuple(target.shape)}"
        )


def rollout_mse(predictions: Tensor, target: Tensor) -> Tensor:
    """Mean squared error per prediction step: [S], mean over samples, objects and features.

    predictions, target: [B, N, S, D].
    """
    _check_rollout(predictions, target)
    return (predictions - target).pow(2).mean(dim=(0, 1, 3))


class MSEAccumulator:
    """Rollout MSE per step over a whole evaluation set, fed one minibatch at a time.

    Keeps the sum of squared errors and the count per step (float64, CPU), so every sample
    weighs the same whatever the batch sizes.
    """

    def __init__(self) -> None:
        self._squared_error: Tensor | None = None
        self._count = 0

    def update(self, predictions: Tensor, target: Tensor) -> None:
        """Adds one minibatch: predictions, target [B, N, S, D]."""
        _check_rollout(predictions, target)
        num_steps = predictions.shape[2]
        if self._squared_error is None:
            self._squared_error = torch.zeros(num_steps, dtype=torch.float64, device="cpu")
        elif num_steps != self._squared_error.shape[0]:
            raise ValueError(
                f"predictions: expected S = {self._squared_error.shape[0]} steps as in earlier "
                f"updates, got S = {num_steps}"
            )
        error = (predictions.detach() - target.detach()).double().pow(2)
        self._squared_error += error.sum(dim=(0, 1, 3)).cpu()
        batch, objects, _, features = predictions.shape
        self._count += batch * objects * features

    def result(self) -> Tensor:
        """MSE per step: [S] (float64)."""
        if self._squared_error is None or self._count == 0:
            raise ValueError("MSEAccumulator: nothing accumulated yet; call update() first")
        return self._squared_error / self._count


def expected_calibration_error(probs: Tensor, true_types: Tensor, num_bins: int = 10) -> float:
    """Top-label expected calibration error with equal-width confidence bins.

    probs: [..., K] (e.g. [M, K] or [S, E, K]); true_types: [...] integer labels 0..K-1.
    Bin b holds confidences in (b / num_bins, (b + 1) / num_bins] (bin 0 also takes 0);
    ECE = sum_b (n_b / M) |accuracy_b - mean confidence_b|. Labels are taken as given: for an
    unsupervised model, relabel with EdgeAccumulator.permutation first.
    """
    if probs.dim() < 2 or true_types.shape != probs.shape[:-1]:
        raise ValueError(
            f"expected probs [..., K] and true_types [...] with matching leading dimensions, "
            f"got probs {tuple(probs.shape)} and true_types {tuple(true_types.shape)}"
        )
    if num_bins < 1:
        raise ValueError(f"num_bins: expected a positive integer, got {num_bins}")
    _check_types(true_types, probs.shape[-1])
    if true_types.numel() == 0:
        raise ValueError("expected at least one prediction, got none")
    probs = probs.detach().reshape(-1, probs.shape[-1]).double()
    confidence, predicted = probs.max(-1)
    correct = (predicted == true_types.reshape(-1).to(predicted.device)).double()
    bins = (torch.ceil(confidence * num_bins).long() - 1).clamp(0, num_bins - 1)
    confidence_sum = torch.bincount(bins, weights=confidence, minlength=num_bins)
    correct_sum = torch.bincount(bins, weights=correct, minlength=num_bins)
    # |sum correct - sum confidence| / M is the count-weighted gap of each bin.
    return float((correct_sum - confidence_sum).abs().sum() / confidence.numel())
