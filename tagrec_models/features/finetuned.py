"""A dataset's fine-tuned embedding (issue 13): every image of the splits decoded as the features
asset feeds the CNN (``ExtractionConfig``: the backbone's input side, squashed, longer side
bounded by ``max_side`` first), the backbone fine-tuned on the *training* images' tags only
(``finetune.fine_tune``), then every image embedded with the tuned network.

Written under ``out_dir``: ``cnn_finetuned.npy`` (float32, one row per image, in the order of
``paths``; a broken image's row is zeros, as in the features asset, and it never trains) and
``cnn_finetuned.pt`` (``finetune.save_network``: what ``tagrec suggest`` embeds a new photo
with). ``trained_rows`` says which images' labels the network saw, so the caller can check that
no validation or test image is among them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from scipy import sparse

from tagrec_models.features.device import DeviceConfig, resolve_runtime
from tagrec_models.features.extraction import ExtractionConfig, make_loader
from tagrec_models.features.finetune import FineTuneConfig, embed, fine_tune, save_network
from tagrec_models.features.images import STATUS_BROKEN, LoadConfig
from tagrec_models.storage.atomic import write_npy

Log = Callable[[str], None]
EMBEDDING_FILE = "cnn_finetuned.npy"
NETWORK_FILE = "cnn_finetuned.pt"


@dataclass(frozen=True)
class FineTunedEmbedding:
    embedding_path: Path
    network_path: Path
    trained_rows: np.ndarray
    """Rows (of ``paths``) whose labels trained the network."""
    broken_rows: np.ndarray
    history: list[float]
    """Mean training loss of each epoch."""
    seconds: float
    shape: tuple[int, ...]


def decode(paths: Sequence[str], backbone: str, max_side: int, device: str = "auto",
           log: Log | None = None) -> tuple[torch.Tensor, np.ndarray]:
    """(uint8 pixels [n, 3, side, side] as the features asset feeds ``backbone``, broken mask)."""
    config = ExtractionConfig(backbone=backbone, lowlevel=False, patch_sizes=(), load=LoadConfig(max_side=max_side),
                              device=DeviceConfig(device=device))
    pixels = torch.zeros((len(paths), 3, config.input_size, config.input_size), dtype=torch.uint8)
    broken = np.zeros(len(paths), dtype=bool)
    done = 0
    for batch in make_loader(list(paths), config, resolve_runtime(config.device)):
        rows = torch.from_numpy(batch["index"])
        pixels[rows] = batch["pixels"]
        broken[batch["index"]] = [s == STATUS_BROKEN for s in batch["status"]]
        done += len(rows)
        if log is not None and (done == len(paths) or done % 1024 < len(rows)):
            log(f"decoded {done}/{len(paths)} images")
    return pixels, broken


def fine_tuned_embedding(paths: Sequence[str], image_labels: sparse.spmatrix, train_rows: np.ndarray,
                         config: FineTuneConfig, out_dir: str | Path, max_side: int = 320,
                         log: Log | None = None) -> FineTunedEmbedding:
    """Fine-tune on the images ``train_rows`` with their rows of ``image_labels`` [n_images,
    n_tags] (only those rows are read), embed every image, write both files under ``out_dir``."""
    started = time.perf_counter()
    say = log or (lambda _: None)
    train_rows = np.unique(np.asarray(train_rows, dtype=np.int64))
    if image_labels.shape[0] != len(paths):
        raise ValueError(f"fine_tuned_embedding: {len(paths)} images but {image_labels.shape[0]} label rows")
    pixels, broken = decode(paths, config.backbone, max_side, config.device, log)
    trained = train_rows[~broken[train_rows]]
    labels = sparse.csr_matrix(image_labels)[trained].toarray()
    keep = labels.any(axis=1)  # an image with no tag teaches nothing but "absent everywhere"
    trained = trained[keep]
    if len(trained) == 0:
        raise ValueError("fine_tuned_embedding: no training image with a tag decodes")
    say(f"fine-tuning {config.backbone} on {len(trained)} training images ({int(broken.sum())} broken skipped)")
    model, history = fine_tune(pixels[torch.from_numpy(trained)], labels[keep], config, log=say)
    embedding, _ = embed(model, pixels, device=config.device)
    embedding[broken] = 0.0
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    embedding_path = write_npy(embedding.astype(np.float32), out / EMBEDDING_FILE)
    network_path = save_network(model, config, out / NETWORK_FILE, max_side=max_side)
    return FineTunedEmbedding(embedding_path=embedding_path, network_path=network_path, trained_rows=trained,
                              broken_rows=np.flatnonzero(broken), history=history,
                              seconds=time.perf_counter() - started, shape=tuple(embedding.shape))
