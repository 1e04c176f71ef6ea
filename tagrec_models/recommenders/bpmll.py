"""CH-BPMLL and CM55-BPMLL: BP-MLL (Zhang & Zhou 2006) on low-level colour features, the
non-personalised content baselines of paper 1 (section 4.2; the paper ran Mulan's BP-MLL).

BP-MLL is a one-hidden-layer network with tanh hidden and output units, trained to rank each
image's labels above its other labels with the global error of Zhang & Zhou's eq. 3,
``E_i = 1 / (|Y_i| |Ybar_i|) sum_{k in Y_i, l in Ybar_i} exp(-(c_k - c_l))`` (see
``nn.losses.bpmll_loss``, which also guards posts whose tag set is empty or complete), plus
weight decay. Defaults are Mulan's: hidden layer 20% of the input size, learning rate 0.05,
weight decay 1e-5, 100 epochs, no momentum. Tags are ranked by the output ``c``; BP-MLL's
threshold function is not needed for a ranking.

Input features are standardised on the training images (config ``standardise``; Mulan expects
inputs in a comparable range). Training items are posts (a (user, image) pair with its tags);
the user is ignored, so a cold-start user is no different from any other.

Tuning (``search_space``, searched on validation by ``studies.tuning``): Around Mulan's
defaults (learning rate 0.05, hidden 20% of the input, weight decay 1e-5).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from tagrec_models.recommenders.nn.layers import ImageMLP, init_normal_
from tagrec_models.recommenders.nn.losses import bpmll_loss
from tagrec_models.recommenders.nn.posts import PostRecommender, sgd
from tagrec_models.recommenders.nn.torch_model import NeuralConfig
from tagrec_models.recommenders.registry import register


@dataclass(frozen=True)
class BpMllConfig(NeuralConfig):
    """BP-MLL hyper-parameters (Mulan's defaults) and the loop settings of ``NeuralConfig``.

    * ``hidden_ratio``: hidden units as a fraction of the input dimension (0.2; CH-64 -> 13,
      CM-225 -> 45 units).
    * ``learning_rate``: SGD step per post (0.05).
    * ``weight_decay``: L2 per post (1e-5).
    * ``momentum``: SGD momentum (0: BP-MLL is plain back-propagation).
    * ``standardise``: z-score the input features with the training images' statistics.
    * ``init_std``: ``None`` keeps PyTorch's fan-in initialisation (Zhang & Zhou draw small
      uniform weights; this is the same idea); a number draws every weight from N(0, std).
    """

    hidden_ratio: float = 0.2
    learning_rate: float = 0.05
    weight_decay: float = 1e-5
    momentum: float = 0.0
    standardise: bool = True
    init_std: float | None = None
    max_epochs: int = 100
    batch_size: int = 16
    patience: int = 10

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.hidden_ratio > 0:
            raise ValueError(f"BpMllConfig.hidden_ratio must be > 0, got {self.hidden_ratio}")


class _BpMll(PostRecommender):
    Config = BpMllConfig
    # Around Mulan's defaults (learning rate 0.05, hidden 20% of the input, weight decay 1e-5).
    search_space = {"learning_rate": [0.005, 0.01, 0.05, 0.1], "hidden_ratio": [0.1, 0.2, 0.4],
                    "weight_decay": [0.0, 1e-5, 1e-4]}
    personalised = False
    contract_overrides = {"max_epochs": 3, "patience": 0, "torch_threads": 1}

    def _build(self, data) -> tuple[nn.Module, dict[str, Any]]:
        args = {
            "in_dim": self.input_dim,
            "hidden": max(1, round(self.config.hidden_ratio * self.input_dim)),
            "n_tags": data.n_tags,
        }
        return self._network_from_args(args), args

    def _network_from_args(self, build_args: dict[str, Any]) -> nn.Module:
        network = ImageMLP(
            nn.Identity(),
            build_args["in_dim"],
            build_args["n_tags"],
            build_args["hidden"],
            hidden_activation="tanh",
            output_activation="tanh",
        )
        return init_normal_(network, self.config.init_std)

    def _optimizer(self, network: nn.Module) -> torch.optim.Optimizer:
        config = self.config
        return sgd(
            [(list(network.parameters()), config.learning_rate)],
            momentum=config.momentum,
            l2=config.weight_decay,
            batch_size=config.batch_size,
        )

    def _post_loss(self, scores, positives, generator):
        return bpmll_loss(scores, positives)


@register
class ChBpMll(_BpMll):
    """CH-BPMLL: BP-MLL on the 64-bin colour histogram (``"ch64"``)."""

    name = "ch_bpmll"
    papers = {"paper1": "baseline"}
    input_kind = "ch64"
    needs = ("ch64",)


@register
class Cm55BpMll(_BpMll):
    """CM55-BPMLL: BP-MLL on the 225-d block-wise colour moments (``"cm225"``)."""

    name = "cm55_bpmll"
    papers = {"paper1": "baseline"}
    input_kind = "cm225"
    needs = ("cm225",)
