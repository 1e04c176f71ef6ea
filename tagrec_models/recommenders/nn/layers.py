"""Network pieces of CNN-PerMLP (paper 1, section 3.2 and Table 2) and its neural baselines.

* ``PatchCNN``: the convolutional feature extractor ``z = f_cnn(R_i^q)`` (paper 1, eqs. 3-5) with the
  Table 2 architectures: three conv layers of 10, 30 and 128 kernels, ReLU after each, and a
  max-pool after the first two.
* ``PersonalisedLayer``: ``psi_j = phi(b_j + w_j^per (z)_j + V_j kappa_u)`` (paper 1, eq. 6).
* ``MLPHead``: ``y_j = phi_out(w_j^out . phi(W^hidden psi + b^hidden) + b_j^out)`` (paper 1, eq. 7).
* ``PerMLP``: extractor -> personalised layer -> MLP, scoring every tag for (user, patch).
* ``ImageMLP``: extractor -> MLP without the user (the non-personalised CNN and BP-MLL).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "identity": nn.Identity,
    "relu": nn.ReLU,
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
}


def activation(name: str) -> nn.Module:
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; choose one of {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


@dataclass(frozen=True)
class ConvSpec:
    """One column of paper 1, Table 2: kernel sizes and strides of the three conv layers, and
    the (square, non-overlapping) max-pool blocks after the first two."""

    kernels: tuple[int, int, int]
    strides: tuple[int, int, int]
    pools: tuple[int, int]
    native_patch: int
    channels: tuple[int, int, int] = (10, 30, 128)


ARCHITECTURES: dict[str, ConvSpec] = {
    # 75 x 75 patches: 75 -conv6/3-> 24 -pool2-> 12 -conv6/2-> 4 -pool2-> 2 -conv2/1-> 1
    "nus-wide": ConvSpec(kernels=(6, 6, 2), strides=(3, 2, 1), pools=(2, 2), native_patch=75),
    # 50 x 50 patches: 50 -conv5/2-> 23 -pool2-> 12 -conv5/1-> 8 -pool3-> 3 -conv3/1-> 1
    # (with ceil-mode pooling; floor pooling would leave 2 x 2 before a 3 x 3 kernel).
    "flickr-ptr": ConvSpec(kernels=(5, 5, 3), strides=(2, 1, 1), pools=(2, 3), native_patch=50),
}


def choose_architecture(patch_size: int, name: str = "auto") -> ConvSpec:
    """The Table 2 column for ``patch_size``: ``"auto"`` takes the column whose native patch
    size (75 NUS-WIDE, 50 Flickr-PTR) is nearest; a name picks a column explicitly."""
    if name == "auto":
        return min(ARCHITECTURES.values(), key=lambda spec: abs(spec.native_patch - patch_size))
    if name not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {name!r}; choose 'auto' or one of {sorted(ARCHITECTURES)}")
    return ARCHITECTURES[name]


class PatchCNN(nn.Module):
    """``f_cnn``: RGB patch ``[B, 3, d, d]`` -> flattened feature vector ``[B, m]`` (paper 1, eqs. 3-5).

    ``m`` is derived from the patch size by a dry run, so any patch size the kernels fit works.
    Table 2 gives no padding and its Flickr-PTR column only fits 50 px patches when pooling
    rounds up (as Caffe, the common framework of 2015, does); ``ceil_mode`` is therefore True by
    default and is a config field of the models.
    """

    def __init__(self, spec: ConvSpec, patch_size: int, ceil_mode: bool = True) -> None:
        super().__init__()
        c1, c2, c3 = spec.channels
        k1, k2, k3 = spec.kernels
        s1, s2, s3 = spec.strides
        p1, p2 = spec.pools
        self.features = nn.Sequential(
            nn.Conv2d(3, c1, k1, stride=s1),
            nn.ReLU(),
            nn.MaxPool2d(p1, ceil_mode=ceil_mode),
            nn.Conv2d(c1, c2, k2, stride=s2),
            nn.ReLU(),
            nn.MaxPool2d(p2, ceil_mode=ceil_mode),
            nn.Conv2d(c2, c3, k3, stride=s3),
            nn.ReLU(),
            nn.Flatten(),
        )
        try:
            with torch.no_grad():
                self.output_dim = int(self.features(torch.zeros(1, 3, patch_size, patch_size)).shape[1])
        except RuntimeError as error:
            raise ValueError(
                f"patch size {patch_size} is too small for the convolutional architecture {spec}"
            ) from error

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        return self.features(patches)


class PersonalisedLayer(nn.Module):
    """Paper 1, eq. 6: ``psi_j(u, z) = phi(b_j + w_j^per z_j + V_j kappa_u)``.

    ``w^per`` weighs each visual feature on its own (an element-wise product, not a full
    matrix) and ``V kappa_u`` is column ``u`` of ``V``, i.e. a user embedding of size ``m``.
    A cold-start user (index ``UNKNOWN_USER`` = -1) has ``kappa_u = 0``: its term is zero and
    ``psi`` depends on the image alone.
    """

    def __init__(self, feature_dim: int, n_users: int, activation_name: str = "relu") -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(feature_dim))
        self.bias = nn.Parameter(torch.zeros(feature_dim))
        self.users = nn.Embedding(max(n_users, 1), feature_dim)
        nn.init.zeros_(self.users.weight)
        self.activation = activation(activation_name)

    def forward(self, z: torch.Tensor, users: torch.Tensor) -> torch.Tensor:
        known = (users >= 0).unsqueeze(1).to(z.dtype)
        user_term = self.users(users.clamp(min=0)) * known
        return self.activation(self.bias + self.weight * z + user_term)


class MLPHead(nn.Module):
    """Paper 1, eq. 7: one hidden layer, then one output per tag.

    The paper applies the rectifier ``phi`` to the output too. A rectified output gives every
    tag with a negative pre-activation the same score 0: those tags tie (the ranking among
    them is lost) and BPR pairs between them have zero gradient. ``output_activation`` is
    therefore a config field of the models ("relu" reproduces paper 1, eq. 7 literally).
    """

    def __init__(
        self,
        in_dim: int,
        hidden: int,
        n_tags: int,
        hidden_activation: str = "relu",
        output_activation: str = "identity",
    ) -> None:
        super().__init__()
        if hidden < 1:
            raise ValueError(f"the hidden layer needs at least one unit, got {hidden}")
        self.hidden = nn.Linear(in_dim, hidden)
        self.hidden_activation = activation(hidden_activation)
        self.out = nn.Linear(hidden, n_tags)
        self.output_activation = activation(output_activation)

    def forward(self, psi: torch.Tensor) -> torch.Tensor:
        return self.output_activation(self.out(self.hidden_activation(self.hidden(psi))))


class PerMLP(nn.Module):
    """CNN-PerMLP (Figure 2) and its fixed-feature variants: ``extractor`` (a ``PatchCNN``, or
    ``nn.Identity`` for precomputed features) -> ``PersonalisedLayer`` -> ``MLPHead``."""

    def __init__(
        self,
        extractor: nn.Module,
        feature_dim: int,
        n_users: int,
        n_tags: int,
        hidden: int = 128,
        output_activation: str = "identity",
    ) -> None:
        super().__init__()
        self.extractor = extractor
        self.personal = PersonalisedLayer(feature_dim, n_users)
        self.head = MLPHead(feature_dim, hidden, n_tags, "relu", output_activation)

    def forward(self, inputs: torch.Tensor, users: torch.Tensor) -> torch.Tensor:
        return self.head(self.personal(self.extractor(inputs), users))


class ImageMLP(nn.Module):
    """A non-personalised annotator: ``extractor`` -> ``MLPHead`` (the paper's CNN baseline on
    patches; BP-MLL on precomputed features). ``users`` is accepted and ignored so every
    network has the same call signature."""

    def __init__(
        self,
        extractor: nn.Module,
        feature_dim: int,
        n_tags: int,
        hidden: int,
        hidden_activation: str = "relu",
        output_activation: str = "identity",
    ) -> None:
        super().__init__()
        self.extractor = extractor
        self.head = MLPHead(feature_dim, hidden, n_tags, hidden_activation, output_activation)

    def forward(self, inputs: torch.Tensor, users: torch.Tensor | None = None) -> torch.Tensor:
        return self.head(self.extractor(inputs))


def init_normal_(module: nn.Module, std: float | None) -> nn.Module:
    """Paper 1, Algorithm 1, line 3: every parameter ``~ N(0, std)`` (the paper: 0.1).

    ``std=None`` keeps PyTorch's default initialisation (fan-in scaled uniform for conv and
    linear layers; the personalised layer starts as the identity with zero user embeddings).
    """
    if std is None:
        return module
    if std < 0:
        raise ValueError(f"init_std must be >= 0, got {std}")
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.normal_(0.0, std)
    return module
