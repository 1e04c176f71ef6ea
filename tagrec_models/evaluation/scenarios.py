"""Evaluation scenarios and metrics by name (paper 1, section 4; DESIGN.md, "Evaluation
protocol").

* Two test scenarios, as in paper 1's Figures 3 and 4: ``"all"`` test posts, and
  ``"new_images"``, the test posts whose image occurs in no training post (the factorisation
  models know nothing about such an image). On Flickr-style data every image belongs to one
  post, so every test image is new and the two scenarios coincide.
* ``parse_metric`` / ``metric_value``: a metric named ``NAME@K`` (``"f1@5"``) read off the
  ``metrics.metrics_at_k`` result.

Nothing here knows about recommenders: ``tagrec_models.studies.selection`` scores models and
uses these.
"""

from __future__ import annotations

import numpy as np

from tagrec_models.data import Posts
from tagrec_models.evaluation.metrics import AtK

SCENARIOS = ("all", "new_images")
METRICS = ("precision", "recall", "f1", "mean_post_f1", "ndcg", "map")
_ALIASES = {"p": "precision", "prec": "precision", "r": "recall", "f": "f1", "f1": "f1"}


# -- scenarios --------------------------------------------------------------------------------
def new_image_mask(test: Posts, train: Posts) -> np.ndarray:
    """Bool per test post: its image occurs in no training post (Figure 4's "new images")."""
    seen = np.zeros(max(test.n_images, train.n_images, 1), dtype=bool)
    seen[train.image] = True
    return ~seen[test.image]


def scenario_mask(test: Posts, train: Posts, scenario: str) -> np.ndarray:
    """Bool per test post: does it belong to ``scenario`` (``"all"`` or ``"new_images"``)."""
    if scenario == "all":
        return np.ones(test.n_posts, dtype=bool)
    if scenario == "new_images":
        return new_image_mask(test, train)
    raise ValueError(f"unknown scenario {scenario!r}; choose one of {SCENARIOS}")


def scenario_posts(test: Posts, train: Posts, scenario: str) -> Posts:
    """The test posts of ``scenario`` (``"all"`` returns ``test`` itself)."""
    mask = scenario_mask(test, train, scenario)
    return test if mask.all() and scenario == "all" else test.subset(np.flatnonzero(mask))


# -- metrics by name --------------------------------------------------------------------------
def parse_metric(metric: str) -> tuple[str, int]:
    """``"f1@5"`` -> ``("f1", 5)``; names: precision (p), recall (r), f1, mean_post_f1, ndcg,
    map."""
    name, sep, k = metric.strip().lower().partition("@")
    name = _ALIASES.get(name, name)
    if not sep or name not in METRICS or not k.isdigit() or int(k) < 1:
        raise ValueError(
            f"metric {metric!r} is not of the form NAME@K with NAME in {METRICS} and K >= 1"
        )
    return name, int(k)


def metric_value(result: AtK, metric: str) -> float:
    name, k = parse_metric(metric)
    values = getattr(result, name)
    if k > len(values):
        raise ValueError(f"metric {metric!r}: only {len(values)} cutoffs were computed")
    return float(values[k - 1])
