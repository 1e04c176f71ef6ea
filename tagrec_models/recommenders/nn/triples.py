"""BPR over (user, image, tag+, tag-) quadruples for the factorisation models (PITF, FM).

Rendle & Schmidt-Thieme 2010 (PITF), section 4.2, "LearnBPR": draw a training triple
``(u, i, t+)`` and a tag ``t-`` that ``u`` did not give ``i``, and take a gradient step on
``ln sigmoid(y(u, i, t+) - y(u, i, t-))`` minus L2. Here an epoch visits every training
triple once in a random order (the paper draws with replacement; a permutation has the same
expectation and lower variance), and a mini-batch draws its negatives uniformly by
vectorised rejection sampling.
"""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tagrec_models.data import Posts, SideInfo, TrainingData
from tagrec_models.recommenders.nn.torch_model import NeuralConfig, TorchRecommender, batched


class TripleSampler:
    """The training triples of ``posts`` and a uniform sampler of irrelevant tags.

    Posts whose tag set holds every tag have no irrelevant tag and give no quadruple; they are
    left out (the only guard BPR needs).
    """

    def __init__(self, posts: Posts) -> None:
        tags = posts.tags.tocsr(copy=True)
        tags.sum_duplicates()
        tags.sort_indices()
        counts = np.diff(tags.indptr)
        post_of = np.repeat(np.arange(posts.n_posts, dtype=np.int64), counts)
        tag_of = tags.indices.astype(np.int64)
        usable = counts[post_of] < posts.n_tags
        self.n_tags = posts.n_tags
        self.post = torch.from_numpy(post_of[usable])
        self.tag = torch.from_numpy(tag_of[usable])
        self.user = torch.from_numpy(posts.user.astype(np.int64))
        self.image = torch.from_numpy(posts.image.astype(np.int64))
        # Sorted keys post * n_tags + tag of every (post, relevant tag): membership by binary search.
        self.keys = torch.from_numpy(post_of * posts.n_tags + tag_of)

    @property
    def n_triples(self) -> int:
        return int(self.post.numel())

    def is_relevant(self, post: torch.Tensor, tag: torch.Tensor) -> torch.Tensor:
        key = post * self.n_tags + tag
        where = torch.searchsorted(self.keys, key).clamp(max=max(len(self.keys) - 1, 0))
        return self.keys[where] == key

    def negatives(self, post: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """One uniformly drawn irrelevant tag per entry of ``post`` (rejection sampling)."""
        neg = torch.randint(self.n_tags, post.shape, generator=generator)
        redo = self.is_relevant(post, neg)
        while bool(redo.any()):
            neg[redo] = torch.randint(self.n_tags, (int(redo.sum()),), generator=generator)
            redo = self.is_relevant(post, neg)
        return neg

    def batch(
        self, items: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(user, image, tag+, tag-)`` for the triples ``items``."""
        post = self.post[items]
        return self.user[post], self.image[post], self.tag[items], self.negatives(post, generator)


def seen_mask(indices: np.ndarray, size: int) -> torch.Tensor:
    """Bool ``[size]``: which users / images occur in the training posts."""
    mask = np.zeros(size, dtype=bool)
    valid = indices[indices >= 0]
    mask[valid] = True
    return torch.from_numpy(mask)


@dataclass(frozen=True)
class FactorisationConfig(NeuralConfig):
    """Settings shared by PITF and FM (defaults: Rendle & Schmidt-Thieme 2010, section 5).

    * ``dim``: factor dimension (PITF's paper reports 8..128 and uses 64 for its comparisons).
    * ``learning_rate``: plain SGD step size, per quadruple (0.05 in PITF's paper).
    * ``reg``: L2 regularisation of the factors touched by a quadruple (5e-5).
    * ``init_std``: factors are drawn from ``N(0, init_std)`` (0.01).
    * ``batch_size``: quadruples per vectorised update (losses summed, see ``NeuralConfig``).
    * ``image_factors``: learn a factor (and, for FM, a bias) per training image (the papers'
      model). False leaves every image factor at zero during training as well as for new images,
      so the user x tag factors must explain the tags alone: the model a new image is scored
      with is then the model that was trained. The tuning search tries both (issue 16: on
      openclipart every test image is new, and the image factors may soak up what the
      user x tag factors should learn).
    """

    dim: int = 64
    learning_rate: float = 0.05
    reg: float = 5e-5
    init_std: float = 0.01
    max_epochs: int = 100
    batch_size: int = 128
    patience: int = 10
    image_factors: bool = True


# The search both factorisation models get (Rendle & Schmidt-Thieme 2010, section 5: factor
# sizes 8..128, learning rate 0.05 and regularisation 5e-5 at its centre; ``image_factors``
# tests the new-image hypothesis of issue 16; the epoch count is chosen by early stopping).
FACTORISATION_SPACE = {
    "dim": [16, 32, 64, 128],
    "learning_rate": [0.01, 0.02, 0.05, 0.1],
    "reg": [0.0, 5e-5, 5e-4, 5e-3],
    "image_factors": [True, False],
}


class FactorisationRecommender(TorchRecommender):
    """A BPR-trained factorisation model over user, image and tag indices.

    The network keeps bool buffers of the users and images seen in training: a factor of an
    unseen index was never updated (it is its random initial value), so it is treated as
    absent, i.e. zero. A cold-start user (index -1) or an image never seen in training is
    therefore scored from what is known about the other side alone.
    """

    Config = FactorisationConfig

    @abstractmethod
    def _network(self, n_users: int, n_images: int, n_tags: int) -> nn.Module: ...

    @abstractmethod
    def _pair_terms(
        self,
        network: nn.Module,
        user: torch.Tensor,
        image: torch.Tensor,
        pos: torch.Tensor,
        neg: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``y(u, i, t+) - y(u, i, t-)`` per quadruple, and the batch's weighted L2 penalty."""

    def _prepare(self, data: TrainingData) -> int:
        self._sampler = TripleSampler(data.train)
        return self._sampler.n_triples

    def _build(self, data: TrainingData) -> tuple[nn.Module, dict[str, Any]]:
        args = {"n_users": data.n_users, "n_images": data.n_images, "n_tags": data.n_tags}
        network = self._network(**args)
        network.seen_user.copy_(seen_mask(data.train.user, data.n_users))
        if self.config.image_factors:
            network.seen_image.copy_(seen_mask(data.train.image, data.n_images))
        # else: no image is "seen", so every image factor reads as zero and never moves.
        return network, args

    def _network_from_args(self, build_args: dict[str, Any]) -> nn.Module:
        return self._network(**build_args)

    def _after_training(self, data: TrainingData) -> None:
        self._sampler = None  # training triples are not part of the fitted model

    def _optimizer(self, network: nn.Module) -> torch.optim.Optimizer:
        # Plain SGD as in LearnBPR; sparse embedding gradients touch only the rows in the batch.
        return torch.optim.SGD(network.parameters(), lr=self.config.learning_rate)

    def _batch_loss(
        self, network: nn.Module, items: torch.Tensor, generator: torch.Generator
    ) -> torch.Tensor:
        user, image, pos, neg = (t.to(self.device) for t in self._sampler.batch(items, generator))
        diff, penalty = self._pair_terms(network, user, image, pos, neg)
        return -F.logsigmoid(diff).sum() + penalty

    def _predict(self, network: nn.Module, posts: Posts, side: SideInfo) -> torch.Tensor:
        user = torch.from_numpy(posts.user.astype(np.int64)).to(self.device)
        image = torch.from_numpy(posts.image.astype(np.int64)).to(self.device)
        if posts.n_posts and int(image.max()) >= network.seen_image.numel():
            raise IndexError(
                f"{self.name} knows {network.seen_image.numel()} images but a post uses image "
                f"{int(image.max())}"
            )
        chunks = [
            network.score_all(user[rows], image[rows])
            for rows in batched(posts.n_posts, self.config.eval_batch_size)
        ]
        if not chunks:
            return torch.zeros(0, self.n_tags)
        return torch.cat(chunks)


def lookup(embedding: nn.Embedding, index: torch.Tensor, seen: torch.Tensor) -> torch.Tensor:
    """Rows of ``embedding``, zero for index -1 or an index never seen in training."""
    safe = index.clamp(min=0)
    known = (index >= 0) & seen[safe]
    return embedding(safe) * known.unsqueeze(1).to(embedding.weight.dtype)
