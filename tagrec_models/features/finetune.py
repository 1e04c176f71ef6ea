"""Fine-tuning a pretrained backbone on a dataset's training labels (issue 13: "better image
representations"), then embedding every image with the tuned network.

The frozen ImageNet embedding is what every Corel5k model read until now; the last-block
fine-tune on cached maps (``benchmarks/finetune_corel5k.py``) tied it. This module trains more of
the network, on a fresh augmentation of every image at every step:

* the stem and the first ``frozen_stages`` stages keep ImageNet's weights and run without
  gradients (the high-resolution layers: the most expensive backward pass, and edges and
  textures transfer unchanged); the later stages, the head convolution and a new linear
  classifier train end to end;
* each training image is a random resized crop (``crop_scale`` of the area, aspect 3/4 to 4/3;
  Szegedy et al. 2015) resized to ``train_size`` and mirrored half the time; embedding uses
  the whole image at the backbone's own input size. Training below the test resolution is the
  FixRes recipe (Touvron et al. 2019, "Fixing the train-test resolution discrepancy") and
  halves the cost;
* loss: binary cross-entropy over the tags (the ASL probe's default loss), AdamW with a
  one-cycle schedule (the classifier at ``lr``, the pretrained layers at ``backbone_lr``);
  batch-norm statistics stay ImageNet's (batches of 32 are too small to re-estimate them),
  their affine weights train; the classifier starts at zero weights and the tags' prior
  log-odds.

The embedding the tuned network returns has the features asset's form (``compose_embedding``:
the pooled embedding followed by the means of ``embedding_stages``), so any cosine model reads
it where it read ``cnn_stages``. Only the labels passed in are seen: the caller passes the
training posts, never validation or test (``benchmarks/finetune_full_corel5k.py``).
"""

from __future__ import annotations

import dataclasses
import io
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.transforms.v2 import functional as TF

from tagrec_models.features.backbone import get_backbone_spec, load_backbone
from tagrec_models.features.device import DeviceConfig, resolve_runtime
from tagrec_models.storage.atomic import write_bytes

Log = Callable[[str], None]


def _quiet(_: str) -> None:
    """The default progress log: say nothing."""


@dataclass(frozen=True)
class FineTuneConfig:
    backbone: str = "efficientnet_lite2"
    embedding_stages: tuple[str, ...] = ("stage5", "stage6")
    """Stages whose global means follow the pooled embedding (``compose_embedding``)."""
    epochs: int = 16
    """Chosen on Corel5k validation, mean of 3 seeds: 16 over 8, 12, 20 and 24 (per-label F1
    0.513 against 0.499 / 0.500 / 0.508 / 0.507; README, "Fine-tuning on a GPU")."""
    lr: float = 1e-3
    """Peak learning rate of the new classifier."""
    backbone_lr: float = 2e-4
    """Peak learning rate of the trained pretrained layers."""
    weight_decay: float = 1e-4
    batch_size: int = 32
    dropout: float = 0.2
    """Dropout before the classifier."""
    frozen_stages: int = 3
    """Stages (from the input) that keep ImageNet's weights."""
    train_size: int = 224
    """Side of the training crops (the embedding uses the backbone's own input size)."""
    crop_scale: tuple[float, float] = (0.35, 1.0)
    """Area fraction of the random resized crops."""
    seed: int = 0
    device: str = "auto"
    """'auto' (CUDA when present), 'cpu' or 'cuda[:N]'."""
    log_every: int = 25
    """Progress line every this many steps."""

    def __post_init__(self) -> None:
        spec = get_backbone_spec(self.backbone)  # raises for an unknown backbone
        for stage in self.embedding_stages:
            spec.channels(stage)
        checks = {
            "epochs": self.epochs >= 1, "batch_size": self.batch_size >= 1,
            "lr": self.lr > 0, "backbone_lr": self.backbone_lr >= 0, "weight_decay": self.weight_decay >= 0,
            "dropout": 0 <= self.dropout < 1, "frozen_stages": 0 <= self.frozen_stages <= len(spec.stages),
            "train_size": self.train_size >= 32,
            "crop_scale": len(self.crop_scale) == 2 and 0 < self.crop_scale[0] <= self.crop_scale[1] <= 1,
            "log_every": self.log_every >= 1,
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise ValueError(f"FineTuneConfig: invalid {', '.join(f'{n}={getattr(self, n)!r}' for n in bad)}")


class FineTunedBackbone(nn.Module):
    """A registered backbone with a new linear classifier over its pooled embedding; the stem
    and the first ``frozen_stages`` stages run without gradients, batch norms stay in eval."""

    def __init__(self, config: FineTuneConfig, prior: torch.Tensor) -> None:
        super().__init__()
        self.backbone = load_backbone(config.backbone, embedding_stages=config.embedding_stages)
        self.frozen_stages = config.frozen_stages
        net = self.backbone.model
        for module in list(net.blocks[config.frozen_stages:]) + [net.conv_head, net.bn2]:
            for parameter in module.parameters():
                parameter.requires_grad_(True)
        self.drop = nn.Dropout(config.dropout)
        self.classifier = nn.Linear(self.backbone.spec.embedding_dim, len(prior))
        nn.init.zeros_(self.classifier.weight)
        prior = prior.clamp(1e-4, 1 - 1e-4)
        self.classifier.bias.data = torch.log(prior / (1 - prior))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """Logits of uint8 pixels ``[B, 3, H, W]``."""
        net = self.backbone.model
        with torch.no_grad():
            h = net.bn1(net.conv_stem(self.backbone.normalise(pixels)))
            for block in net.blocks[: self.frozen_stages]:
                h = block(h)
        for block in net.blocks[self.frozen_stages:]:
            h = block(h)
        return self.classifier(self.drop(net.bn2(net.conv_head(h)).mean(dim=(2, 3))))

    def train(self, mode: bool = True) -> "FineTunedBackbone":
        super().train(mode)
        for module in self.modules():  # batch-norm statistics stay ImageNet's
            if isinstance(module, nn.BatchNorm2d):
                module.eval()
        return self

    def trainable(self) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
        """(pretrained parameters that train, the classifier's parameters)."""
        pretrained = [p for name, p in self.named_parameters()
                      if p.requires_grad and not name.startswith("classifier.")]
        return pretrained, list(self.classifier.parameters())


def random_resized_crops(pixels: torch.Tensor, size: int, scale: tuple[float, float],
                         generator: torch.Generator) -> torch.Tensor:
    """A random resized crop of each uint8 image ``[B, 3, H, W]`` (area fraction in ``scale``,
    aspect ratio log-uniform in 3/4..4/3), resized to ``size`` x ``size``, mirrored with
    probability 1/2."""
    height, width = pixels.shape[-2:]
    out = []
    for image in pixels:
        u = torch.rand(3, generator=generator).tolist()
        area = height * width * (scale[0] + (scale[1] - scale[0]) * u[0])
        aspect = float(np.exp(np.log(3 / 4) + np.log(16 / 9) * u[1]))
        w = max(1, min(width, round((area * aspect) ** 0.5)))
        h = max(1, min(height, round((area / aspect) ** 0.5)))
        top = int(torch.randint(0, height - h + 1, (1,), generator=generator))
        left = int(torch.randint(0, width - w + 1, (1,), generator=generator))
        crop = TF.resized_crop(image, top, left, h, w, [size, size], antialias=True)
        out.append(TF.horizontal_flip(crop) if u[2] < 0.5 else crop)
    return torch.stack(out)


def fine_tune(pixels: torch.Tensor, labels: np.ndarray, config: FineTuneConfig = FineTuneConfig(),
              log: Log = _quiet) -> tuple[FineTunedBackbone, list[float]]:
    """Train on uint8 images ``pixels [n, 3, H, W]`` and their binary ``labels [n, tags]``;
    returns the network (eval mode, on the CPU) and the mean training loss of each epoch."""
    if pixels.dtype != torch.uint8 or pixels.ndim != 4 or pixels.shape[1] != 3:
        raise ValueError(f"fine_tune: pixels must be uint8 [n, 3, H, W], got {pixels.dtype} {list(pixels.shape)}")
    if len(labels) != len(pixels):
        raise ValueError(f"fine_tune: {len(pixels)} images but {len(labels)} label rows")
    y = torch.as_tensor(np.asarray(labels, dtype=np.float32) > 0, dtype=torch.float32)
    if len(y) == 0 or not y.any():
        raise ValueError("fine_tune: no training image carries a tag")
    runtime = resolve_runtime(DeviceConfig(device=config.device, channels_last=False))
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    model = FineTunedBackbone(config, y.mean(dim=0)).to(runtime.device).train()
    pretrained, head = model.trainable()
    optimiser = torch.optim.AdamW([{"params": pretrained, "lr": config.backbone_lr},
                                   {"params": head, "lr": config.lr}], weight_decay=config.weight_decay)
    steps = int(np.ceil(len(pixels) / config.batch_size))
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=[config.backbone_lr, config.lr],
                                                   total_steps=steps * config.epochs, pct_start=0.1)
    # On CUDA the images move to the device once and are cropped there: one CPU thread cropping
    # 32 images a step would starve the GPU. The random draws stay on the CPU generator, so a
    # seed crops the same windows on either device.
    source = pixels.to(runtime.device) if runtime.is_cuda else pixels
    history: list[float] = []
    for epoch in range(config.epochs):
        order, total = torch.randperm(len(pixels), generator=generator), 0.0
        started = time.perf_counter()
        for step in range(steps):
            batch = order[step * config.batch_size:(step + 1) * config.batch_size]
            inputs = random_resized_crops(source[batch.to(source.device)], config.train_size, config.crop_scale,
                                          generator)
            with runtime.autocast():
                logits = model(runtime.to_device(inputs))
            target = y[batch].to(runtime.device)
            loss = F.binary_cross_entropy_with_logits(logits.float(), target, reduction="sum") / len(batch)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
            total += loss.item() * len(batch)
            if (step + 1) % config.log_every == 0:
                log(f"fine-tune epoch {epoch + 1}/{config.epochs}, step {step + 1}/{steps}: loss {loss.item():.3f}")
        history.append(total / len(pixels))
        seconds = time.perf_counter() - started  # loss.item() waits for the device every step
        log(f"fine-tune epoch {epoch + 1}/{config.epochs}: mean loss {history[-1]:.3f}, {seconds:.1f} s, "
            f"{len(pixels) / seconds:.0f} images/s ({runtime.device}, {runtime.precision})")
    return model.cpu().eval(), history


@torch.no_grad()
def embed(model: FineTunedBackbone, pixels: torch.Tensor, batch_size: int = 64,
          device: str = "auto") -> tuple[np.ndarray, np.ndarray]:
    """(embedding, logits) of every uint8 image, whole, at the size given: the embedding in the
    features asset's form (pooled, then the ``embedding_stages`` means), float32."""
    runtime = resolve_runtime(DeviceConfig(device=device, channels_last=False))
    model = model.to(runtime.device).eval()
    embeddings, logits = [], []
    for start in range(0, len(pixels), batch_size):
        out = model.backbone(runtime.to_device(pixels[start:start + batch_size]))
        embeddings.append(out.embedding.float().cpu().numpy())
        logits.append(model.classifier(out.pooled.float()).cpu().numpy())
    model.cpu()
    return np.concatenate(embeddings), np.concatenate(logits)


def save_network(model: FineTunedBackbone, config: FineTuneConfig, path: str | Path, max_side: int = 0) -> Path:
    """The tuned network (its settings and weights) in one torch file, written atomically;
    ``max_side``: the bound on the longer side its images were decoded with (0: none)."""
    buffer = io.BytesIO()
    torch.save({"config": dataclasses.asdict(config), "max_side": int(max_side),
                "n_tags": model.classifier.out_features,
                "state": {k: v.cpu() for k, v in model.state_dict().items()}}, buffer)
    return write_bytes(path, buffer.getvalue())


def load_network(path: str | Path) -> tuple[FineTunedBackbone, FineTuneConfig, int]:
    """A network ``save_network`` wrote, in eval mode on the CPU, its settings and ``max_side``."""
    saved = torch.load(path, map_location="cpu", weights_only=True)
    values = dict(saved["config"])
    values["embedding_stages"] = tuple(values["embedding_stages"])
    values["crop_scale"] = tuple(values["crop_scale"])
    config = FineTuneConfig(**values)
    model = FineTunedBackbone(config, torch.full((int(saved["n_tags"]),), 0.5))
    model.load_state_dict(saved["state"])
    return model.eval(), config, int(saved["max_side"])
