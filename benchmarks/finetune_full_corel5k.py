"""Does fine-tuning EfficientNet-Lite2 on augmented Corel5k images beat the frozen embedding?
(issue 13, per-label F1 goal 0.48). Measured on *validation*, on the CPU.

``finetune_corel5k.py`` fine-tuned only the last block on cached maps and tied the frozen probe;
the README named what was left: fine-tuning the network on augmented images. This script does
that, as far as two CPU cores allow: the stem and the first ``--frozen-stages`` stages (3 by
default: the high-resolution layers, where a backward pass costs most and ImageNet's edges and
textures transfer unchanged) stay frozen; stages 4 to 7, the head convolution and a new linear
classifier are trained end to end on a fresh random crop and flip of every image at every step.

* Input: the pipeline's own CNN input (``ExtractionConfig`` for Lite2: squashed to 260 x 260),
  decoded once into memory; the training itself is ``tagrec_models.features.finetune`` (random
  resized crops at ``--train-size`` 224, the FixRes recipe, mirrored half the time; binary
  cross-entropy, AdamW, one-cycle schedule, ImageNet's batch-norm statistics kept) on the 4,044
  fit images of the pipeline's split rule: validation and test labels are never seen. The
  embedding: the whole 260 x 260 image, pooled + stage5/6 means, as the features asset does.

Rows (each chosen on validation per metric family, as ``benchmarks/asl_probe_corel5k.py
--blend`` does; ``--test`` adds the refit on train + validation scored on test):

* ``frozen``: ``probe_knn_blend_stages`` on the frozen Lite2 + stage5/6 means (Corel5k's default);
* ``fine-tuned classifier alone``: its logits, the logit adjustment ``rare_power`` chosen;
* ``blend on the fine-tuned embedding``: ``probe_knn_blend_stages`` on the fine-tuned network's
  Lite2 + stage5/6 means (a new probe and 2PKNN on it);
* ``fine-tuned logits + frozen 2PKNN``: the blend's formula with the fine-tuned logits in place
  of the probe's.

    python benchmarks/representations_corel5k.py extract --backbone efficientnet_lite2  # the frozen row
    nice -n 10 python benchmarks/finetune_full_corel5k.py --epochs 8 --test

The fine-tuned embeddings are cached (``--out``) so a second run with the same settings only
re-evaluates.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from scipy import sparse

from finetune_corel5k import compare, print_table
from representations_corel5k import STAGES, default_cache, default_root, read, splits, vocabulary_rows
from tagrec_models.features.finetune import FineTuneConfig, embed, fine_tune
from tagrec_models.features.finetuned import decode as decode_images

BACKBONE = "efficientnet_lite2"


def decode(root: Path) -> tuple[np.ndarray, torch.Tensor]:
    """(photo ids, uint8 [N, 3, 260, 260]): every image as the features asset feeds Lite2."""
    split, images, _ = read(root)
    paths = images.drop_duplicates("photo_id").set_index("photo_id").loc[split["photo_id"], "path"].tolist()
    pixels, broken = decode_images(paths, BACKBONE, max_side=320)
    if broken.any():
        raise ValueError(f"{int(broken.sum())} Corel5k image(s) did not decode, e.g. {paths[int(np.argmax(broken))]}")
    return np.array(split["photo_id"], dtype=str), pixels


# The FineTuneConfig fields this script exposes as flags; they also name the cache file.
TUNED = ("epochs", "lr", "backbone_lr", "weight_decay", "batch_size", "dropout", "frozen_stages",
         "train_size", "crop_scale", "seed")


def fine_tune_config(args) -> FineTuneConfig:
    return FineTuneConfig(backbone=BACKBONE, embedding_stages=STAGES,
                          **{k: tuple(getattr(args, k)) if k == "crop_scale" else getattr(args, k) for k in TUNED})


def settings(config: FineTuneConfig) -> dict:
    return {k: getattr(config, k) for k in TUNED}


def cache_name(config: FineTuneConfig) -> str:
    """The cache file's name for these settings."""
    return "lite2_" + "_".join(f"{k}{v}" for k, v in settings(config).items()).replace(" ", "").replace(",", "-")


def tuned_embeddings(config: FineTuneConfig, args, vocab, fit) -> dict[str, np.ndarray]:
    """Fine-tune on ``fit`` (or read the cached result of the same settings)."""
    path = args.out / f"{cache_name(config)}.npz"
    if path.exists():
        print(f"reading {path}")
        return dict(np.load(path))
    started = time.perf_counter()
    ids, pixels = decode(args.corel5k)
    in_vocab = vocabulary_rows(ids, vocab, args.corel5k)  # decoded row of each vocabulary image
    print(f"decoded {len(ids)} images in {time.perf_counter() - started:.0f} s", flush=True)
    labels = sparse.csr_matrix(fit.tags).toarray()
    model, history = fine_tune(pixels[in_vocab[fit.image]], labels, config, log=lambda m: print(m, flush=True))
    trained = time.perf_counter() - started
    embedding, logits = embed(model, pixels)
    out = {"embedding": embedding[in_vocab], "logits": logits[in_vocab]}  # vocabulary order
    args.out.mkdir(parents=True, exist_ok=True)
    np.savez(path, seconds=trained, settings=json.dumps(settings(config)), history=np.array(history), **out)
    print(f"fine-tuned and embedded in {time.perf_counter() - started:.0f} s; wrote {path}", flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    defaults = FineTuneConfig()  # the flags' defaults are the library's
    parser.add_argument("--epochs", type=int, default=defaults.epochs)
    parser.add_argument("--lr", type=float, default=defaults.lr, help="the classifier's peak learning rate")
    parser.add_argument("--backbone-lr", type=float, default=defaults.backbone_lr,
                        help="the pretrained layers' peak learning rate")
    parser.add_argument("--weight-decay", type=float, default=defaults.weight_decay)
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--dropout", type=float, default=defaults.dropout)
    parser.add_argument("--frozen-stages", type=int, default=defaults.frozen_stages,
                        help="stages (of 7) kept at ImageNet's weights")
    parser.add_argument("--train-size", type=int, default=defaults.train_size)
    parser.add_argument("--crop-scale", type=float, nargs=2, default=defaults.crop_scale)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--test", action="store_true", help="also refit the blends on train + validation, score test")
    parser.add_argument("--corel5k", type=Path, default=default_root())
    parser.add_argument("--cache", type=Path, default=default_cache(), help="the representations cache")
    parser.add_argument("--out", type=Path, default=default_cache().parent / "finetune_full")
    parser.add_argument("--skip-frozen", action="store_true", help="leave out the frozen default's row")
    parser.add_argument("--json", type=Path, help="also write the settings and rows here")
    args = parser.parse_args()

    vocab, fit, val, train_val, test = splits(args.corel5k)
    config = fine_tune_config(args)
    tuned = tuned_embeddings(config, args, vocab, fit)
    rows = compare(tuned["embedding"], tuned["logits"], args.cache, vocab, fit, val, train_val, test, args.test,
                   frozen_row=not args.skip_frozen)
    print_table(rows, f"Corel5k validation ({val.n_posts} images), {json.dumps(settings(config))}:")
    if args.json:
        args.json.write_text(json.dumps({"settings": settings(config), "rows": dict(rows)}, indent=1, default=float))


if __name__ == "__main__":
    main()
