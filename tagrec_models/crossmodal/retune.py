"""Changing scoring-only knobs of a fitted recommender without refitting it.

Hyper-parameters are chosen on validation (DESIGN.md, "Evaluation protocol"); many of them
(neighbour counts, temperatures, a prior correction) only affect ``score``, so refitting a model
per grid point would waste the training. ``Retunable.retune(**fields)`` returns a shallow copy
that shares the fitted state and carries a config with the new values; only the fields a model
lists in ``scoring_fields`` may change (anything else would need a refit, and says so).
"""

from __future__ import annotations

import copy
from dataclasses import replace
from typing import Any, Callable, ClassVar, Self, TypeVar

import numpy as np

T = TypeVar("T")

MEMO_ENTRIES = 8
"""Query chunks a model remembers between re-scorings (bounds memory: tuning re-scores one
validation set, in at most a few chunks)."""


class Retunable:
    scoring_fields: ClassVar[frozenset[str]] = frozenset()

    def retune(self, **fields: Any) -> Self:
        bad = set(fields) - self.scoring_fields
        if bad:
            raise ValueError(
                f"retune only changes {sorted(self.scoring_fields)} without a refit; got {sorted(bad)}"
            )
        self._scoring_memo()  # created before the copy, so the copy shares it
        clone = copy.copy(self)
        clone.config = replace(self.config, **fields)
        return clone

    def _scoring_memo(self) -> dict:
        return self.__dict__.setdefault("_scoring_memo_entries", {})

    def remembered(self, what: str, side: object, images: np.ndarray, compute: Callable[[], T]) -> T:
        """``compute()`` for these query images of ``side``, computed once for this fit and
        every ``retune`` copy of it: what scoring derives from the fitted state alone (query
        distances, projections, probabilities before the scoring-only knobs) is not computed
        again when tuning re-scores the same validation posts at other scoring-field values.
        Never saved with the model; a refit starts empty (``forget_scoring``)."""
        memo = self._scoring_memo()
        key = (what, id(side), np.ascontiguousarray(images).tobytes())
        # The entry holds ``side`` itself, so its id cannot be reused by another object meanwhile.
        if key not in memo or memo[key][0] is not side:
            if len(memo) >= MEMO_ENTRIES:
                memo.clear()
            memo[key] = (side, compute())
        return memo[key][1]

    def forget_scoring(self) -> None:
        """Drop what ``remembered`` holds (a new fit changes what it was computed from)."""
        self._scoring_memo().clear()


def prior_correction(scores: np.ndarray, counts: np.ndarray, power: float, smoothing: float) -> np.ndarray:
    """``scores / (count + smoothing) ** power``: with power > 0 rare tags move up each ranking.

    The per-label Corel5k metrics (P/R/N+ averaged over labels) reward recommending rare labels,
    the per-image ones (AP/AR/AF) reward frequent ones; a model chosen for one table uses the
    power chosen on validation for that table (0 = no correction)."""
    if power == 0:
        return scores
    return scores / np.power(_smoothed(counts, smoothing), power)


def logit_adjustment(logits: np.ndarray, counts: np.ndarray, power: float, smoothing: float) -> np.ndarray:
    """Menon et al. 2021, eq. 10: ``z_w - power * log(count_w + smoothing)``, the log-space form
    of ``prior_correction`` for models that score with logits; rare tags move up."""
    if power == 0:
        return logits
    return logits - power * np.log(_smoothed(counts, smoothing))


def _smoothed(counts: np.ndarray, smoothing: float) -> np.ndarray:
    counts = np.asarray(counts, dtype=np.float64)
    if smoothing < 0 or (smoothing == 0 and (counts <= 0).any()):
        raise ValueError(f"rare_smoothing must be > 0 when a tag can have count 0, got {smoothing}")
    return counts + smoothing
