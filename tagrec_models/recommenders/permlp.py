"""CH-PerMLP, CM55-PerMLP and PT-PerMLP: the personalised head of CNN-PerMLP on fixed image
features (paper 1, section 4.2, "the adjusted models ... using low-level features"; PT-PerMLP
is our addition on the pretrained EfficientNet-Lite0 embedding).

Score of tag ``t`` for user ``u`` and image feature ``z``: the personalised fully-connected
layer ``psi_j = relu(b_j + w_j^per z_j + V_j kappa_u)`` (paper 1, eq. 6), then one hidden layer of 128
ReLU units and one output per tag (paper 1, eq. 7). Training maximises the post-wise BPR criterion
(paper 1, eq. 8) over all relevant tags of a post against ``n_negatives`` irrelevant tags drawn
uniformly per post and step (Algorithm 1), with SGD, momentum 0.9 and L2 (section 4.2).

Choices where the paper is silent, all config fields:

* ``output_activation``: paper 1, eq. 7 puts the rectifier on the output as well; a rectified output
  ties every tag whose pre-activation is negative at 0 and stops BPR's gradient between them,
  so the default is ``"identity"`` (``"relu"`` reproduces paper 1, eq. 7 literally).
* ``n_negatives`` (N): not given in the paper; 10 by default.
* ``standardise``: z-score the features with the training images' statistics.
* ``init_std``: Algorithm 1 draws every parameter from N(0, 0.1); we read 0.1 as the standard
  deviation. ``None`` keeps PyTorch's default initialisation.
* Mini-batches of posts with summed losses (see ``NeuralConfig``) instead of one post per step.

Cold start: a user never seen in training (index -1) has ``kappa_u = 0``, so its scores come
from the image features alone (the non-personal part of paper 1, eq. 6).

Tuning (``search_space``, searched on validation by ``studies.tuning``): Paper 1, section 4.2:
the FC learning rate and L2 on validation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from tagrec_models.recommenders.nn.layers import ACTIVATIONS, PerMLP, init_normal_
from tagrec_models.recommenders.nn.losses import post_bpr_loss, sample_negatives
from tagrec_models.recommenders.nn.posts import PostRecommender, sgd
from tagrec_models.recommenders.nn.torch_model import NeuralConfig
from tagrec_models.recommenders.registry import register

FC_LEARNING_RATES = [1e-2, 1e-4, 1e-5]
L2_VALUES = [0.0, 1e-4, 1e-5]
CONV_LEARNING_RATES = [1e-3, 1e-4, 1e-5]


@dataclass(frozen=True)
class PerMlpConfig(NeuralConfig):
    """Hyper-parameters of the personalised head (paper 1, sections 3.2-3.3 and 4.2).

    * ``hidden``: units of the MLP's hidden layer (128).
    * ``output_activation``: activation of paper 1, eq. 7's output (``identity``, ``relu``, ``sigmoid``,
      ``tanh``); see the module docstring.
    * ``n_negatives``: N, irrelevant tags drawn per post and step (Algorithm 1, line 7).
    * ``lr_fc``: SGD learning rate of the fully-connected layers (paper grid 1e-2, 1e-4, 1e-5).
    * ``l2``: L2 regularisation lambda per post (paper grid 0, 1e-4, 1e-5).
    * ``momentum``: SGD momentum (0.9, fixed in the paper).
    * ``init_std``: parameters drawn from N(0, init_std) (Algorithm 1: 0.1); None = PyTorch's.
    * ``standardise``: z-score fixed input features on the training images.
    """

    hidden: int = 128
    output_activation: str = "identity"
    n_negatives: int = 10
    lr_fc: float = 1e-2
    l2: float = 1e-5
    momentum: float = 0.9
    init_std: float | None = 0.1
    standardise: bool = True
    max_epochs: int = 100
    batch_size: int = 32
    patience: int = 10

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.output_activation not in ACTIVATIONS:
            raise ValueError(
                f"{type(self).__name__}.output_activation must be one of {sorted(ACTIVATIONS)}, "
                f"got {self.output_activation!r}"
            )
        if self.n_negatives < 1:
            raise ValueError(f"{type(self).__name__}.n_negatives must be >= 1, got {self.n_negatives}")
        if self.hidden < 1:
            raise ValueError(f"{type(self).__name__}.hidden must be >= 1, got {self.hidden}")


class PostBprMixin:
    """Eq. 8 with N negatives drawn per post (shared by the fixed-feature and the patch model)."""

    def _post_loss(self, scores, positives, generator):
        negatives, valid = sample_negatives(positives, self.config.n_negatives, generator)
        return post_bpr_loss(scores, positives, negatives, valid.to(scores.device))


class _FeaturePerMlp(PostBprMixin, PostRecommender):
    Config = PerMlpConfig
    personalised = True
    # Paper 1, section 4.2: the FC learning rate and L2 on validation.
    search_space = {"lr_fc": FC_LEARNING_RATES, "l2": L2_VALUES}
    contract_overrides = {"max_epochs": 3, "patience": 0, "hidden": 16, "torch_threads": 1}

    def _build(self, data) -> tuple[nn.Module, dict[str, Any]]:
        args = {"in_dim": self.input_dim, "n_users": data.n_users, "n_tags": data.n_tags}
        return self._network_from_args(args), args

    def _network_from_args(self, build_args: dict[str, Any]) -> nn.Module:
        network = PerMLP(
            nn.Identity(),
            build_args["in_dim"],
            build_args["n_users"],
            build_args["n_tags"],
            hidden=self.config.hidden,
            output_activation=self.config.output_activation,
        )
        return init_normal_(network, self.config.init_std)

    def _optimizer(self, network: nn.Module) -> torch.optim.Optimizer:
        config = self.config
        return sgd(
            [(list(network.parameters()), config.lr_fc)],
            momentum=config.momentum,
            l2=config.l2,
            batch_size=config.batch_size,
        )


@register
class ChPerMlp(_FeaturePerMlp):
    """CH-PerMLP: the personalised head on the 64-bin colour histogram (``"ch64"``)."""

    name = "ch_permlp"
    papers = {"paper1": "baseline"}
    input_kind = "ch64"
    needs = ("ch64",)


@register
class Cm55PerMlp(_FeaturePerMlp):
    """CM55-PerMLP: the personalised head on the 225-d block-wise colour moments."""

    name = "cm55_permlp"
    papers = {"paper1": "baseline"}
    input_kind = "cm225"
    needs = ("cm225",)


@register
class PtPerMlp(_FeaturePerMlp):
    """PT-PerMLP (beyond the paper): the personalised head on the pretrained EfficientNet-Lite0
    embedding (``"cnn"``, 1280-d)."""

    name = "pt_permlp"
    papers = {"paper1": "beyond"}
    input_kind = "cnn"
    needs = ("cnn",)
