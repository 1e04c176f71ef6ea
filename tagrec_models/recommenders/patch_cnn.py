"""CNN-PerMLP (paper 1, the proposed model) and CNN (its non-personalised patch baseline), both
trained end to end on image patches.

Network (Figure 2, Table 2): a patch ``R_i^q`` (``d x d x 3``) goes through three conv layers
of 10, 30 and 128 kernels with ReLU and two max-pools (paper 1, eqs. 3-5; kernel sizes and strides from
the Table 2 column chosen by patch size: 75 px -> NUS-WIDE, 50 px -> Flickr-PTR, see
``nn.layers``), giving ``z_i^q`` whose size is derived from the patch size (128 for both native
sizes). Then:

* ``cnn_permlp``: the personalised fully-connected layer (paper 1, eq. 6), one hidden layer of 128 ReLU
  units and one output per tag (paper 1, eq. 7), trained with the post-wise BPR criterion (paper 1, eq. 8) over
  all relevant tags against N sampled irrelevant ones, one random patch per post per step
  (Algorithm 1; we use mini-batches of posts).
* ``cnn``: the same conv trunk and a 128-unit hidden layer without the user, trained with the
  pairwise ranking loss of BP-MLL (Zhang & Zhou 2006), as paper 1 says it reimplemented the
  AUC-style CNN of Gong et al. 2013; ``loss="hinge"`` gives Gong et al.'s pairwise hinge.

Both: SGD with momentum 0.9, one learning rate for the conv layers (paper grid 1e-3, 1e-4,
1e-5) and one for the fully-connected layers (1e-2, 1e-4, 1e-5), L2 (0, 1e-4, 1e-5), chosen on
validation (``search_space``, tuned by ``studies.tuning``). Prediction averages the
scores of the image's patches (paper 1, eq. 2). Patches are standardised per colour channel with the
training images' statistics.

Cold start: ``cnn`` ignores users; ``cnn_permlp`` gives a user never seen in training
(index -1) ``kappa_u = 0``, so its scores come from the patch alone.

Tuning (``search_space``, searched on validation by ``studies.tuning``): Paper 1, section 4.2:
the learning rates of the conv and FC layers and L2, on validation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from tagrec_models.recommenders.nn.layers import (
    ACTIVATIONS,
    ARCHITECTURES,
    ImageMLP,
    PatchCNN,
    PerMLP,
    choose_architecture,
    init_normal_,
)
from tagrec_models.recommenders.nn.losses import bpmll_loss, pairwise_hinge_loss
from tagrec_models.recommenders.nn.posts import PostRecommender, sgd
from tagrec_models.recommenders.nn.torch_model import NeuralConfig
from tagrec_models.recommenders.permlp import (
    CONV_LEARNING_RATES,
    FC_LEARNING_RATES,
    L2_VALUES,
    PerMlpConfig,
    PostBprMixin,
)
from tagrec_models.recommenders.registry import register

CNN_LOSSES = ("bpmll", "hinge")


@dataclass(frozen=True)
class CnnPerMlpConfig(PerMlpConfig):
    """CNN-PerMLP: every field of ``PerMlpConfig`` (hidden, output_activation, n_negatives,
    lr_fc, l2, momentum, init_std, and the loop settings), plus:

    * ``lr_conv``: SGD learning rate of the conv layers (paper grid 1e-3, 1e-4, 1e-5).
    * ``architecture``: Table 2 column, ``"auto"`` (by patch size), ``"nus-wide"`` or
      ``"flickr-ptr"``.
    * ``pool_ceil_mode``: max-pooling rounds the output size up (needed for Table 2's
      Flickr-PTR column on 50 px patches; see ``nn.layers.PatchCNN``).
    """

    lr_conv: float = 1e-3
    architecture: str = "auto"
    pool_ceil_mode: bool = True
    max_epochs: int = 60
    patience: int = 8

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.architecture != "auto" and self.architecture not in ARCHITECTURES:
            raise ValueError(
                f"CnnPerMlpConfig.architecture must be 'auto' or one of {sorted(ARCHITECTURES)}, "
                f"got {self.architecture!r}"
            )


@dataclass(frozen=True)
class CnnConfig(NeuralConfig):
    """The non-personalised patch CNN.

    * ``hidden``: units of the hidden fully-connected layer (128, as CNN-PerMLP).
    * ``loss``: ``"bpmll"`` (Zhang & Zhou's pairwise exponential loss, what paper 1 says it
      used) or ``"hinge"`` (Gong et al. 2013's pairwise ranking hinge, averaged over pairs).
    * ``output_activation``: ``"tanh"`` by default, as BP-MLL: the exponential loss of
      unbounded outputs can overflow.
    * ``lr_conv``, ``lr_fc``, ``l2``, ``momentum``, ``architecture``, ``pool_ceil_mode``: as in
      ``CnnPerMlpConfig``.
    * ``init_std``: ``None`` (PyTorch's fan-in initialisation) by default, unlike CNN-PerMLP:
      with N(0, 0.1) weights the tanh outputs start saturated and the exponential loss barely
      moves (measured on a known-signal fixture: validation F1@5 stuck near a random ranking).
      For the same reason ``lr_fc`` defaults to 1e-3 (1e-2 with summed mini-batch losses
      overshoots the bounded outputs); both are config fields and can be searched.
    """

    hidden: int = 128
    loss: str = "bpmll"
    output_activation: str = "tanh"
    lr_conv: float = 1e-3
    """SGD learning rate of the conv layers (paper 1 grid 1e-3, 1e-4, 1e-5)."""
    lr_fc: float = 1e-3
    """SGD learning rate of the fully-connected layers (1e-3 by default, see above)."""
    l2: float = 1e-5
    """L2 regularisation per post (paper 1 grid 0, 1e-4, 1e-5)."""
    momentum: float = 0.9
    """SGD momentum (0.9, fixed in paper 1)."""
    init_std: float | None = None
    architecture: str = "auto"
    """Table 2 column of paper 1: 'auto' (by patch size), 'nus-wide' or 'flickr-ptr'."""
    pool_ceil_mode: bool = True
    """Max-pooling rounds the output size up (Table 2's Flickr-PTR column on 50 px patches)."""
    max_epochs: int = 60
    batch_size: int = 32
    patience: int = 8

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.loss not in CNN_LOSSES:
            raise ValueError(f"CnnConfig.loss must be one of {CNN_LOSSES}, got {self.loss!r}")
        if self.output_activation not in ACTIVATIONS:
            raise ValueError(
                f"CnnConfig.output_activation must be one of {sorted(ACTIVATIONS)}, "
                f"got {self.output_activation!r}"
            )
        if self.architecture != "auto" and self.architecture not in ARCHITECTURES:
            raise ValueError(
                f"CnnConfig.architecture must be 'auto' or one of {sorted(ARCHITECTURES)}, "
                f"got {self.architecture!r}"
            )


class _PatchModel(PostRecommender):
    input_kind = "patches"
    needs = ("patches",)
    # Paper 1, section 4.2: the learning rates of the conv and FC layers and L2, on validation.
    search_space = {"lr_conv": CONV_LEARNING_RATES, "lr_fc": FC_LEARNING_RATES, "l2": L2_VALUES}
    contract_overrides = {"max_epochs": 2, "patience": 0, "eval_batch_size": 16, "torch_threads": 1}

    def _trunk(self, patch_size: int) -> PatchCNN:
        spec = choose_architecture(patch_size, self.config.architecture)
        return PatchCNN(spec, patch_size, ceil_mode=self.config.pool_ceil_mode)

    def _build(self, data) -> tuple[nn.Module, dict[str, Any]]:
        args = {
            "patch_size": self.input.patch_size,
            "n_users": data.n_users,
            "n_tags": data.n_tags,
        }
        return self._network_from_args(args), args

    def _optimizer(self, network: nn.Module) -> torch.optim.Optimizer:
        config = self.config
        conv = list(network.extractor.parameters())
        conv_ids = {id(p) for p in conv}
        fc = [p for p in network.parameters() if id(p) not in conv_ids]
        return sgd(
            [(conv, config.lr_conv), (fc, config.lr_fc)],
            momentum=config.momentum,
            l2=config.l2,
            batch_size=config.batch_size,
        )


@register
class CnnPerMlp(PostBprMixin, _PatchModel):
    name = "cnn_permlp"
    papers = {"paper1": "proposed"}
    Config = CnnPerMlpConfig
    personalised = True

    def _network_from_args(self, build_args: dict[str, Any]) -> nn.Module:
        trunk = self._trunk(build_args["patch_size"])
        network = PerMLP(
            trunk,
            trunk.output_dim,
            build_args["n_users"],
            build_args["n_tags"],
            hidden=self.config.hidden,
            output_activation=self.config.output_activation,
        )
        return init_normal_(network, self.config.init_std)


@register
class PatchCnn(_PatchModel):
    name = "cnn"
    papers = {"paper1": "baseline"}
    Config = CnnConfig
    personalised = False

    def _network_from_args(self, build_args: dict[str, Any]) -> nn.Module:
        trunk = self._trunk(build_args["patch_size"])
        network = ImageMLP(
            trunk,
            trunk.output_dim,
            build_args["n_tags"],
            self.config.hidden,
            hidden_activation="relu",
            output_activation=self.config.output_activation,
        )
        return init_normal_(network, self.config.init_std)

    def _post_loss(self, scores, positives, generator):
        if self.config.loss == "hinge":
            return pairwise_hinge_loss(scores, positives)
        return bpmll_loss(scores, positives)
