"""PITF: pairwise interaction tensor factorisation (Rendle & Schmidt-Thieme 2010), a
history-only baseline of paper 1 (section 4.2).

``y(u, i, t) = <u_u, t^U_t> + <i_i, t^I_t>`` (PITF, eq. 7: the user-image interaction cancels
in the ranking of tags for one post and is left out), learned with BPR over quadruples
``(u, i, t+, t-)`` (LearnBPR, see ``nn.triples``), vectorised over mini-batches with sparse
embedding gradients and plain SGD.

Cold start: a user never seen in training (index -1) has a zero user factor, so its ranking
comes from the image term alone; an image never seen in training (every test image on
Flickr-style data) has a zero image factor, so PITF falls back to the user's preferences, the
behaviour paper 1 describes for Figure 4.

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
class PitfConfig(FactorisationConfig):
    """PITF hyper-parameters; see ``FactorisationConfig`` for every field (dim, learning_rate,
    reg, init_std, batch_size) and ``NeuralConfig`` for the loop (max_epochs, patience,
    eval_batch_size, device, seed)."""


class PitfNetwork(nn.Module):
    def __init__(self, n_users: int, n_images: int, n_tags: int, dim: int, init_std: float) -> None:
        super().__init__()
        self.user = nn.Embedding(max(n_users, 1), dim, sparse=True)
        self.image = nn.Embedding(max(n_images, 1), dim, sparse=True)
        self.tag_user = nn.Embedding(n_tags, dim, sparse=True)
        self.tag_image = nn.Embedding(n_tags, dim, sparse=True)
        for table in (self.user, self.image, self.tag_user, self.tag_image):
            nn.init.normal_(table.weight, 0.0, init_std)
        self.register_buffer("seen_user", torch.zeros(max(n_users, 1), dtype=torch.bool))
        self.register_buffer("seen_image", torch.zeros(max(n_images, 1), dtype=torch.bool))

    def pairwise(
        self, user: torch.Tensor, image: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``y(t+) - y(t-)`` per quadruple and the summed squared norm of the factors used."""
        u = lookup(self.user, user, self.seen_user)
        i = lookup(self.image, image, self.seen_image)
        tu_pos, tu_neg = self.tag_user(pos), self.tag_user(neg)
        ti_pos, ti_neg = self.tag_image(pos), self.tag_image(neg)
        diff = (u * (tu_pos - tu_neg)).sum(1) + (i * (ti_pos - ti_neg)).sum(1)
        penalty = sum(x.pow(2).sum() for x in (u, i, tu_pos, tu_neg, ti_pos, ti_neg))
        return diff, penalty

    def score_all(self, user: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        u = lookup(self.user, user, self.seen_user)
        i = lookup(self.image, image, self.seen_image)
        return u @ self.tag_user.weight.T + i @ self.tag_image.weight.T


@register
class Pitf(FactorisationRecommender):
    name = "pitf"
    papers = {"paper1": "baseline"}
    Config = PitfConfig
    personalised = True
    search_space = FACTORISATION_SPACE
    # Trial 1 is the defaults without image factors: the new-image hypothesis, on every run.
    search_probes = ({"image_factors": False},)
    contract_overrides = {"dim": 8, "max_epochs": 3, "patience": 0, "torch_threads": 1}

    def _network(self, n_users: int, n_images: int, n_tags: int) -> nn.Module:
        return PitfNetwork(n_users, n_images, n_tags, self.config.dim, self.config.init_std)

    def _pair_terms(self, network, user, image, pos, neg):
        # LearnBPR's update subtracts reg * theta from every factor it touches: the gradient
        # of reg / 2 * ||theta||^2 summed over the quadruples of the batch.
        diff, squares = network.pairwise(user, image, pos, neg)
        return diff, 0.5 * self.config.reg * squares
