"""Post-level torch recommenders: one training item per post (paper 1, Algorithm 1), the image
seen through a ``FeatureInput`` or a ``PatchInput``.

With patches, training shows one random patch of the post's image per step (Algorithm 1,
line 5) and scoring averages the network's scores over all patches of the image (paper 1, eq. 2).
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from tagrec_models.data import Posts, SideInfo, TrainingData
from tagrec_models.recommenders.nn.inputs import FeatureInput, PatchInput
from tagrec_models.recommenders.nn.torch_model import TorchRecommender, batched, tag_rows


class PostRecommender(TorchRecommender):
    """Subclasses set ``input_kind`` (``"patches"`` or a feature name) and define the network
    (``_build``/``_network_from_args``), the optimiser and ``_post_loss``."""

    input_kind: ClassVar[str]

    def _make_input(self) -> FeatureInput | PatchInput:
        if self.input_kind == "patches":
            return PatchInput()
        return FeatureInput(self.input_kind, standardise=getattr(self.config, "standardise", True))

    def _prepare(self, data: TrainingData) -> int:
        train = data.train
        if train.n_posts and train.user.min() < 0 and self.personalised:
            raise ValueError(f"{self.name}: training posts must all have a known user (index >= 0)")
        self._train, self._side = train, data.side
        self.input = self._make_input().fit(data.side, train.image)
        return train.n_posts

    @property
    def input_dim(self) -> int:
        assert isinstance(self.input, FeatureInput)
        return self.input.dim

    @abstractmethod
    def _post_loss(
        self, scores: torch.Tensor, positives: torch.Tensor, generator: torch.Generator
    ) -> torch.Tensor:
        """The loss of each post of the batch, ``[batch]``."""

    def _batch_loss(
        self, network: nn.Module, items: torch.Tensor, generator: torch.Generator
    ) -> torch.Tensor:
        rows = items.numpy()
        images = self._train.image[rows]
        if isinstance(self.input, PatchInput):
            x = self.input.random_patch(self._side, images, generator, self.device)
        else:
            x = self.input.batch(self._side, images, self.device)
        users = torch.from_numpy(self._train.user[rows]).to(self.device)
        scores = network(x, users)
        positives = tag_rows(self._train, rows, self.device)
        return self._post_loss(scores, positives, generator).sum()

    def _predict(self, network: nn.Module, posts: Posts, side: SideInfo) -> torch.Tensor:
        out = []
        for rows in batched(posts.n_posts, self.config.eval_batch_size):
            images = posts.image[rows]
            users = torch.from_numpy(posts.user[rows].astype(np.int64)).to(self.device)
            if isinstance(self.input, PatchInput):
                q = self.input.n_patches
                x = self.input.all_patches(side, images, self.device)
                scores = network(x, users.repeat_interleave(q))
                out.append(scores.view(len(images), q, -1).mean(dim=1))  # paper 1, eq. 2
            else:
                out.append(network(self.input.batch(side, images, self.device), users))
        if not out:
            return torch.zeros(0, self.n_tags)
        return torch.cat(out)

    def _extras(self) -> dict[str, Any]:
        return {"input": self.input}

    def _after_training(self, data: TrainingData) -> None:
        # The training posts and side information are not part of the fitted model.
        self._train = self._side = None


def sgd(
    groups: list[tuple[list[nn.Parameter], float]], momentum: float, l2: float, batch_size: int
) -> torch.optim.SGD:
    """SGD with momentum over ``(parameters, learning rate)`` groups (paper 1, section 4.2:
    separate rates for the conv and the fully-connected layers, momentum 0.9, L2 ``lambda``).

    The losses of a mini-batch are summed (see ``NeuralConfig``), so a per-post L2 step of
    ``lambda * theta`` becomes ``batch_size * lambda * theta`` per update.
    """
    return torch.optim.SGD(
        [{"params": params, "lr": lr} for params, lr in groups if params],
        lr=groups[0][1],
        momentum=momentum,
        weight_decay=l2 * batch_size,
    )
