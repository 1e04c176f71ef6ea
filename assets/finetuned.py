"""The fine-tuned CNN embedding (issue 13, "better image representations"): the backbone
fine-tuned on the training images' tags, every image embedded with it (``cnn_finetuned``).
Built for datasets without users (Corel5k), where a model reads it
(``probe_knn_blend_finetuned``); the work is ``tagrec_models.features.finetuned``."""

from typing import Optional

import dagster as dg
import numpy as np
import pandas as pd
from pydantic import Field
from scipy import sparse

from assets.common import GPU_STEP_TAGS, key, md_table, progress
from assets.datasets import DatasetSpec
from assets.features import array_checks, split_images
from assets.resources import DataHomeResource
from tagrec_models.artifacts import ArrayFile
from tagrec_models.features.finetune import FineTuneConfig
from tagrec_models.features.finetuned import fine_tuned_embedding

_DEFAULTS = FineTuneConfig()

DESCRIPTION = (
    "The CNN fine-tuned on the training images' tags, then every image embedded with it: the pooled "
    "embedding followed by the embedding_stages means, the cnn_stages form. Stem and the first frozen_stages "
    "stages keep ImageNet's weights; the later stages, the head and a new linear classifier train on a "
    "random resized crop and flip of each image at every step (binary cross-entropy, AdamW, one-cycle; "
    "ImageNet's batch-norm statistics kept). Only the train split's labels are read: validation and test "
    "images are embedded, never trained on (blocking check). Corel5k validation, mean of 3 seeds on a GPU "
    "(benchmarks/gpu_corel5k.py): see README 'Fine-tuning on a GPU'. The network is saved beside the array "
    "(cnn_finetuned.pt) so tagrec suggest embeds a new photo the same way."
)


class FineTuneSettings(dg.Config):
    backbone: str = Field(default=_DEFAULTS.backbone, description="Pretrained backbone to fine-tune, by name.")
    embedding_stages: list[str] = Field(default_factory=lambda: list(_DEFAULTS.embedding_stages), description="Stages whose global means follow the pooled embedding (the cnn_stages form).")
    epochs: int = Field(default=_DEFAULTS.epochs, description="Passes over the training images: 16, chosen on Corel5k validation over 8 and 12 (mean of 3 seeds); the quick profile caps it at 8 for the CPU.")
    lr: float = Field(default=_DEFAULTS.lr, description="Peak learning rate of the new classifier (one-cycle).")
    backbone_lr: float = Field(default=_DEFAULTS.backbone_lr, description="Peak learning rate of the trained pretrained layers.")
    weight_decay: float = Field(default=_DEFAULTS.weight_decay, description="AdamW weight decay.")
    batch_size: int = Field(default=_DEFAULTS.batch_size, description="Training images per step.")
    dropout: float = Field(default=_DEFAULTS.dropout, description="Dropout before the classifier.")
    frozen_stages: int = Field(default=_DEFAULTS.frozen_stages, description="Stages (from the input) that keep ImageNet's weights and get no gradient.")
    train_size: int = Field(default=_DEFAULTS.train_size, description="Side of the training crops; embedding uses the backbone's own input side (FixRes: train below test resolution).")
    crop_scale: list[float] = Field(default_factory=lambda: list(_DEFAULTS.crop_scale), description="Area fraction range [low, high] of the random resized crops.")
    max_side: int = Field(default=320, description="Images are decoded with the longer side at most this, as the features asset does.")
    seed: int = Field(default=_DEFAULTS.seed, description="Seed of the crops, the batch order and the classifier's dropout.")
    device: str = Field(default="auto", description="'auto' (CUDA when present), 'cpu' or 'cuda'.")
    log_every: Optional[int] = Field(default=None, description="Progress line every this many steps; None: the library's default.")

    def fine_tune_config(self) -> FineTuneConfig:
        extra = {} if self.log_every is None else {"log_every": self.log_every}
        return FineTuneConfig(
            backbone=self.backbone, embedding_stages=tuple(self.embedding_stages), epochs=self.epochs, lr=self.lr,
            backbone_lr=self.backbone_lr, weight_decay=self.weight_decay, batch_size=self.batch_size,
            dropout=self.dropout, frozen_stages=self.frozen_stages, train_size=self.train_size,
            crop_scale=tuple(self.crop_scale), seed=self.seed, device=self.device, **extra)


def training_labels(bundle) -> tuple[sparse.csr_matrix, np.ndarray]:
    """(image x tag labels of the training posts only, the training images' rows)."""
    train = bundle.train
    coo = sparse.csr_matrix(train.tags).tocoo()
    labels = sparse.csr_matrix((np.ones(coo.nnz, dtype=np.float32), (train.image[coo.row], coo.col)),
                               shape=(bundle.vocab.n_images, bundle.vocab.n_tags))
    return labels, np.unique(train.image)


def finetuned_asset(spec: DatasetSpec) -> dg.AssetsDefinition:
    asset_key = key(spec, "cnn_finetuned")

    @dg.asset(
        key=asset_key,
        group_name=spec.name,
        ins={**{p: dg.AssetIn(key(spec, p)) for p in ("train", "val", "test")}, "images": dg.AssetIn(key(spec, "images"))},
        description=DESCRIPTION,
        kinds={"pytorch", "numpy"},
        pool="gpu",
        op_tags=GPU_STEP_TAGS,
        check_specs=[
            dg.AssetCheckSpec("finite", asset=asset_key, blocking=True),
            dg.AssetCheckSpec("one_row_per_image", asset=asset_key, blocking=True),
            dg.AssetCheckSpec("labels_from_train_only", asset=asset_key, blocking=True,
                              description="No validation or test image's labels reached the fine-tune."),
        ],
    )
    def cnn_finetuned(context: dg.AssetExecutionContext, config: FineTuneSettings, data_home: DataHomeResource,
                      train: pd.DataFrame, val: pd.DataFrame, test: pd.DataFrame, images: pd.DataFrame):
        bundle, ids, paths = split_images(train, val, test, images)
        labels, train_rows = training_labels(bundle)
        try:
            result = fine_tuned_embedding(paths, labels, train_rows, config.fine_tune_config(),
                                          data_home.home.dataset_dir(spec.name) / "features", config.max_side,
                                          log=progress(context))
        except ValueError as error:
            raise dg.Failure(f"{spec.name}/cnn_finetuned: {error}") from error
        array = np.load(result.embedding_path, mmap_mode="r")
        handle = ArrayFile.describe("cnn_finetuned", result.embedding_path, ids, array)
        epochs = pd.DataFrame({"epoch": np.arange(1, len(result.history) + 1), "mean_loss": result.history})
        yield dg.Output(handle, metadata={
            "shape": list(handle.shape), "path": dg.MetadataValue.path(handle.path),
            "network": dg.MetadataValue.path(str(result.network_path)),
            "trained_images": len(result.trained_rows), "broken_images": len(result.broken_rows),
            "seconds": round(result.seconds, 1), "training_loss": md_table(epochs)})
        yield from array_checks(asset_key, array, len(ids))
        held_out = np.union1d(bundle.val.image, bundle.test.image)
        leaked = np.intersect1d(result.trained_rows, held_out)
        yield dg.AssetCheckResult(asset_key=asset_key, check_name="labels_from_train_only", passed=len(leaked) == 0,
                                  metadata={"trained_images": len(result.trained_rows),
                                            "held_out_images_trained_on": len(leaked)})

    return cnn_finetuned
