"""Shared torch pieces of the paper-1 models: ranking losses, the personalised layer (paper 1, eq. 6),
the MLP predictor (paper 1, eq. 7), the Table 2 patch CNNs, and a training loop with early stopping.

Nothing here is registered as a recommender; the registered models live one family per module
in ``tagrec_models/recommenders/``.
"""

from tagrec_models.recommenders.nn.layers import (
    ARCHITECTURES,
    ConvSpec,
    MLPHead,
    PatchCNN,
    PersonalisedLayer,
    PerMLP,
    choose_architecture,
)
from tagrec_models.recommenders.nn.losses import (
    bpmll_loss,
    pairwise_hinge_loss,
    post_bpr_loss,
    sample_negatives,
)
from tagrec_models.recommenders.nn.torch_model import NeuralConfig, TorchRecommender, pick_device

__all__ = [
    "ARCHITECTURES",
    "ConvSpec",
    "MLPHead",
    "NeuralConfig",
    "PatchCNN",
    "PerMLP",
    "PersonalisedLayer",
    "TorchRecommender",
    "bpmll_loss",
    "choose_architecture",
    "pairwise_hinge_loss",
    "pick_device",
    "post_bpr_loss",
    "sample_negatives",
]
