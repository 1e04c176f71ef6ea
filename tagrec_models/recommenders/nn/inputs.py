"""What the post-level networks see of an image: a precomputed feature vector, or patches.

Both inputs are standardised with statistics of the *training* images only (no information
from validation or test images leaks into the model), and both objects are plain dataclasses
of NumPy arrays so that they are saved with the model and re-applied at scoring time.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from tagrec_models.data import SideInfo


def _check_rows(array: np.ndarray, images: np.ndarray, what: str) -> None:
    if len(images) and (images.min() < 0 or images.max() >= array.shape[0]):
        raise IndexError(
            f"{what} has {array.shape[0]} image rows but posts use image indices "
            f"{int(images.min())}..{int(images.max())}"
        )


@dataclass
class FeatureInput:
    """A precomputed feature ``side.features[name]`` ``[n_images, dim]``, optionally
    standardised per dimension (zero mean, unit variance over the training images).

    Standardising is our choice: colour histograms and moments live on very different scales
    per dimension, and BP-MLL (Mulan) expects inputs of comparable range.
    """

    name: str
    standardise: bool = True
    mean: np.ndarray | None = None
    std: np.ndarray | None = None

    def fit(self, side: SideInfo, train_images: np.ndarray) -> "FeatureInput":
        features = side.feature(self.name)
        if features.ndim != 2:
            raise ValueError(f"feature {self.name!r} must be [n_images, dim], got {features.shape}")
        _check_rows(features, train_images, f"feature {self.name!r}")
        rows = features[np.unique(train_images)].astype(np.float64)
        dim = features.shape[1]
        if self.standardise:
            self.mean = rows.mean(axis=0).astype(np.float32)
            # A dimension that is constant over the training images carries nothing: scale 1.
            std = rows.std(axis=0)
            self.std = np.where(std > 1e-8, std, 1.0).astype(np.float32)
        else:
            self.mean, self.std = np.zeros(dim, np.float32), np.ones(dim, np.float32)
        return self

    @property
    def dim(self) -> int:
        assert self.mean is not None
        return len(self.mean)

    def batch(self, side: SideInfo, images: np.ndarray, device: torch.device) -> torch.Tensor:
        features = side.feature(self.name)
        _check_rows(features, images, f"feature {self.name!r}")
        if features.shape[1] != self.dim:
            raise ValueError(
                f"feature {self.name!r} has {features.shape[1]} dimensions, the model was "
                f"trained on {self.dim}"
            )
        x = (features[images].astype(np.float32) - self.mean) / self.std
        return torch.from_numpy(x).to(device)


@dataclass
class PatchInput:
    """``side.patches`` ``[n_images, Q, d, d, 3]`` uint8 (paper 1, section 4.1: Q = 3 patches,
    top-left, centre, bottom-right), scaled to [0, 1] and standardised per colour channel
    with the training images' mean and standard deviation."""

    mean: np.ndarray | None = None
    std: np.ndarray | None = None
    patch_size: int = 0
    n_patches: int = 0

    def fit(self, side: SideInfo, train_images: np.ndarray, chunk: int = 256) -> "PatchInput":
        patches = side.require_patches()
        if patches.ndim != 5 or patches.shape[-1] != 3 or patches.shape[2] != patches.shape[3]:
            raise ValueError(f"patches must be [n_images, Q, d, d, 3], got {patches.shape}")
        _check_rows(patches, train_images, "patches")
        images = np.unique(train_images)
        total = np.zeros(3)
        squares = np.zeros(3)
        count = 0
        for start in range(0, len(images), chunk):
            block = patches[images[start : start + chunk]].reshape(-1, 3).astype(np.float64) / 255.0
            total += block.sum(axis=0)
            squares += (block**2).sum(axis=0)
            count += len(block)
        mean = total / max(count, 1)
        std = np.sqrt(np.maximum(squares / max(count, 1) - mean**2, 0.0))
        self.mean = mean.astype(np.float32)
        self.std = np.where(std > 1e-6, std, 1.0).astype(np.float32)
        self.n_patches, self.patch_size = int(patches.shape[1]), int(patches.shape[2])
        return self

    def _to_tensor(self, block: np.ndarray, device: torch.device) -> torch.Tensor:
        # [B, d, d, 3] uint8 -> [B, 3, d, d] standardised float32
        x = torch.from_numpy(np.ascontiguousarray(block)).to(device)
        x = x.permute(0, 3, 1, 2).float().div_(255.0)
        mean = torch.from_numpy(self.mean).to(device).view(1, 3, 1, 1)
        std = torch.from_numpy(self.std).to(device).view(1, 3, 1, 1)
        return (x - mean) / std

    def _patches(self, side: SideInfo, images: np.ndarray) -> np.ndarray:
        patches = side.require_patches()
        _check_rows(patches, images, "patches")
        if patches.shape[2] != self.patch_size:
            raise ValueError(
                f"patches are {patches.shape[2]} px, the model was trained on {self.patch_size} px"
            )
        return patches

    def random_patch(
        self, side: SideInfo, images: np.ndarray, generator: torch.Generator, device: torch.device
    ) -> torch.Tensor:
        """One patch per post drawn uniformly (paper 1, Algorithm 1, line 5): ``[B, 3, d, d]``."""
        patches = self._patches(side, images)
        which = torch.randint(patches.shape[1], (len(images),), generator=generator).numpy()
        return self._to_tensor(patches[images, which], device)

    def all_patches(self, side: SideInfo, images: np.ndarray, device: torch.device) -> torch.Tensor:
        """Every patch of every image, image-major: ``[B * Q, 3, d, d]`` (for paper 1, eq. 2)."""
        patches = self._patches(side, images)
        block = patches[images]
        return self._to_tensor(block.reshape(-1, *block.shape[2:]), device)
