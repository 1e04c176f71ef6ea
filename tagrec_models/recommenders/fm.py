"""FM: a factorisation machine (Rendle 2010) over user, image and tag indicators, trained with
a BPR pairwise loss; a history-only baseline of paper 1 (section 4.2).

The input of a (user, image, tag) triple is the concatenation of three one-hot blocks, and
the model is Rendle 2010, eq. 1:
``y(x) = w_0 + sum_j w_j x_j + sum_{j < l} <v_j, v_l> x_j x_l``, computed with the
O(k n) identity of Rendle 2010, eq. 5 on the active indicators. Ranking the tags of one post needs only
the terms that depend on the tag, but ``score_all`` evaluates the full equation (the
post-constant terms ``w_0 + w_u + w_i + <v_u, v_i>`` included) so that the scores are the FM's
own predictions.

Training is BPR over quadruples ``(u, i, t+, t-)`` as for PITF (see ``nn.triples``): in the
difference ``y(u, i, t+) - y(u, i, t-)`` the post-constant terms cancel, so only the tag
biases and the factors receive gradients; ``w_0, w_u, w_i`` stay at their initial 0.

Unseen indicators: a cold-start user (index -1) or an image never seen in training has no
learned bias or factor. It is treated as a missing indicator (``x_j = 0``), the usual FM
reading of an unknown categorical value, which is exactly a zero bias and zero factor: the
user's or the image's side alone then ranks the tags (for a new image: the user's preferences).

Tuning (``search_space`` = ``nn.triples.FACTORISATION_SPACE``, searched on validation by
``studies.tuning``): factor size 16..128, learning rate 0.01..0.1 and L2 0..5e-3 around
Rendle & Schmidt-Thieme 2010's (64, 0.05, 5e-5), the epoch count by early stopping, and
``image_factors`` on / off: every openclipart test image is new, so the switch tests whether
the per-image factors soak up what the user x tag factors should learn (issue 16).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from tagrec_models.recommenders.nn.triples import (
    FactorisationConfig,
    FACTORISATION_SPACE,
    FactorisationRecommender,
    lookup,
)
from tagrec_models.recommenders.registry import register


@dataclass(frozen=True)
class FmConfig(FactorisationConfig):
    """FM hyper-parameters: ``dim`` (factor size), ``learning_rate``, ``reg`` (L2 on the
    factors a quadruple touches), ``init_std`` of the factors (biases start at 0) as in
    ``FactorisationConfig``, plus:

    * ``reg_bias``: L2 on the tag biases ``w_t`` a quadruple touches (libFM keeps a separate
      regulariser for the linear terms; 0 leaves them free).
    """

    reg_bias: float = 0.0


class FmNetwork(nn.Module):
    """Biases ``w`` and factors ``V`` of the ``n_users + n_images + n_tags`` indicators."""

    def __init__(self, n_users: int, n_images: int, n_tags: int, dim: int, init_std: float) -> None:
        super().__init__()
        self.n_users, self.n_images, self.n_tags = max(n_users, 1), max(n_images, 1), n_tags
        n_features = self.n_users + self.n_images + n_tags
        self.global_bias = nn.Parameter(torch.zeros(()))
        self.bias = nn.Embedding(n_features, 1, sparse=True)
        self.factors = nn.Embedding(n_features, dim, sparse=True)
        nn.init.zeros_(self.bias.weight)
        nn.init.normal_(self.factors.weight, 0.0, init_std)
        self.register_buffer("seen_user", torch.zeros(self.n_users, dtype=torch.bool))
        self.register_buffer("seen_image", torch.zeros(self.n_images, dtype=torch.bool))

    # Feature ids of each block in the indicator vector.
    def _image_ids(self, image: torch.Tensor) -> torch.Tensor:
        return torch.where(image >= 0, image + self.n_users, image)

    def _tag_ids(self, tag: torch.Tensor) -> torch.Tensor:
        return tag + self.n_users + self.n_images

    def _active(self, user: torch.Tensor, image: torch.Tensor):
        """Bias and factor of the user and image indicators (zero when absent/unseen)."""
        full_seen = torch.cat(
            [self.seen_user, self.seen_image, torch.ones(self.n_tags, dtype=torch.bool, device=user.device)]
        )
        user_ids = user  # user indicators come first, so a user index is its feature id
        image_ids = torch.where(image >= 0, self._image_ids(image), -1)
        return (
            lookup(self.bias, user_ids, full_seen).squeeze(1),
            lookup(self.factors, user_ids, full_seen),
            lookup(self.bias, image_ids, full_seen).squeeze(1),
            lookup(self.factors, image_ids, full_seen),
        )

    def predict(self, user: torch.Tensor, image: torch.Tensor, tag: torch.Tensor) -> torch.Tensor:
        """Rendle 2010, eqs. 1 and 5, for one (user, image, tag) indicator vector per row."""
        w_u, v_u, w_i, v_i = self._active(user, image)
        tag_ids = self._tag_ids(tag)
        w_t, v_t = self.bias(tag_ids).squeeze(1), self.factors(tag_ids)
        stacked = torch.stack([v_u, v_i, v_t], dim=1)  # [B, 3, k]; absent rows are zero
        pairwise = 0.5 * (stacked.sum(1).pow(2) - stacked.pow(2).sum(1)).sum(1)
        return self.global_bias + w_u + w_i + w_t + pairwise

    def pairwise(self, user, image, pos, neg):
        """``y(t+) - y(t-)``, and squared norms of the factors and of the tag biases used."""
        _, v_u, _, v_i = self._active(user, image)
        pos_ids, neg_ids = self._tag_ids(pos), self._tag_ids(neg)
        v_pos, v_neg = self.factors(pos_ids), self.factors(neg_ids)
        w_pos, w_neg = self.bias(pos_ids).squeeze(1), self.bias(neg_ids).squeeze(1)
        # The expansion of Rendle 2010, eq. 1 in which every tag-independent term cancels.
        diff = (w_pos - w_neg) + ((v_u + v_i) * (v_pos - v_neg)).sum(1)
        factor_sq = sum(x.pow(2).sum() for x in (v_u, v_i, v_pos, v_neg))
        bias_sq = w_pos.pow(2).sum() + w_neg.pow(2).sum()
        return diff, factor_sq, bias_sq

    def score_all(self, user: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        """``y(u, i, t)`` for every tag: Rendle 2010, eq. 1 with three active indicators expands to
        ``w_0 + w_u + w_i + w_t + <v_u, v_i> + <v_u + v_i, v_t>``."""
        w_u, v_u, w_i, v_i = self._active(user, image)
        tag_ids = self._tag_ids(torch.arange(self.n_tags, device=user.device))
        w_t, v_t = self.bias.weight[tag_ids, 0], self.factors.weight[tag_ids]
        constant = self.global_bias + w_u + w_i + (v_u * v_i).sum(1)
        return constant.unsqueeze(1) + w_t.unsqueeze(0) + (v_u + v_i) @ v_t.T


@register
class FactorisationMachine(FactorisationRecommender):
    name = "fm"
    papers = {"paper1": "baseline"}
    Config = FmConfig
    personalised = True
    search_space = FACTORISATION_SPACE
    # Trial 1 is the defaults without image factors: the new-image hypothesis, on every run.
    search_probes = ({"image_factors": False},)
    contract_overrides = {"dim": 8, "max_epochs": 3, "patience": 0, "torch_threads": 1}

    def _network(self, n_users: int, n_images: int, n_tags: int) -> nn.Module:
        return FmNetwork(n_users, n_images, n_tags, self.config.dim, self.config.init_std)

    def _pair_terms(self, network, user, image, pos, neg):
        diff, factor_sq, bias_sq = network.pairwise(user, image, pos, neg)
        return diff, 0.5 * (self.config.reg * factor_sq + self.config.reg_bias * bias_sq)
