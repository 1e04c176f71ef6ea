"""Does fine-tuning the backbone's last stage beat the frozen embedding on Corel5k? (issue 13,
per-label F1 goal 0.48). Measured on *validation* only, on the CPU, by fine-tuning
EfficientNet-Lite2's last block (``stage7``), its head convolution and a linear classifier on
cached ``stage6`` maps: the layers below stay frozen, so each image's 9 x 9 x 208 input map is
computed once and an epoch costs about 11 s on 2 cores instead of a full forward pass.

Three ways to use the fine-tuned network, each against the frozen default (the blend
``probe_knn_blend_stages`` on Lite2 + stage5/6 means, every point of its registered scoring grid
searched on validation, as ``benchmarks/asl_probe_corel5k.py --blend`` does):

* ``classifier``: the fine-tuned classifier's logits alone (binary cross-entropy, the ASL
  probe's default loss), with the logit adjustment ``rare_power`` chosen on validation;
* ``blend on fine-tuned embedding``: ``probe_knn_blend_stages`` fitted on the fine-tuned pooled
  embedding (a new probe and 2PKNN on it);
* ``fine-tuned logits + frozen 2PKNN``: the blend's formula with the fine-tuned logits in place
  of the probe's, 2PKNN on the frozen embedding, the same scoring grid.

Training: AdamW, one-cycle schedule, ``--epochs`` passes over the fit images (the 4,044 of the
pipeline's split rule), each image as itself or its mirror at random and a random square crop of
7 to 9 cells of its map; batch-norm statistics frozen (ImageNet's), their affine weights
trained. Scoring averages the two views.

    nice -n 10 python benchmarks/finetune_corel5k.py extract     # ~7 min: 4,999 images x 2 views
    python benchmarks/representations_corel5k.py extract --backbone efficientnet_lite2
    python benchmarks/finetune_corel5k.py evaluate --epochs 20   # ~8 min

Needs the representations cache for the frozen baseline and its stage means (same split rule,
same cache folder).
"""

from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy import sparse
from torch import nn

from asl_probe_corel5k import blend_grid, blend_row, choose
from representations_corel5k import default_cache, default_root, read, splits, variants, vocabulary_rows
from tagrec_models.data import Posts, SideInfo, TrainingData
from tagrec_models.features.backbone import load_backbone
from tagrec_models.features.device import DeviceConfig, resolve_runtime
from tagrec_models.features.extraction import ExtractionConfig, make_loader
from tagrec_models.features.images import LoadConfig
from tagrec_models.recommenders import get_recommender

BACKBONE = "efficientnet_lite2"
INPUT_STAGE = "stage6"
VIEWS = ("", "_flip")
POWERS = (0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0)


def extract(root: Path, cache: Path) -> None:
    """The stage6 map of every image and of its mirror, float16, as .npy under ``cache``."""
    split, images, _ = read(root)
    paths = images.drop_duplicates("photo_id").set_index("photo_id").loc[split["photo_id"], "path"].tolist()
    # grid 32: larger than the map, so the 9 x 9 map is kept whole (FeatureBackbone._pool)
    config = ExtractionConfig(backbone=BACKBONE, stages=(INPUT_STAGE,), grid=32, lowlevel=False, patch_sizes=(),
                              load=LoadConfig(max_side=320), device=DeviceConfig())
    runtime = resolve_runtime(config.device)
    model = runtime.prepare(load_backbone(BACKBONE, stages=(INPUT_STAGE,), grid=32))
    cache.mkdir(parents=True, exist_ok=True)
    maps: dict[str, np.ndarray] = {}
    started, done = time.perf_counter(), 0
    with torch.inference_mode():
        for batch in make_loader(paths, config, runtime):
            x, rows = runtime.to_device(batch["pixels"]), np.asarray(batch["index"])
            for view in VIEWS:
                fmap = model(torch.flip(x, dims=(-1,)) if view else x).stages[INPUT_STAGE].half().cpu().numpy()
                if view not in maps:
                    maps[view] = np.lib.format.open_memmap(cache / f"{INPUT_STAGE}{view}.npy", mode="w+",
                                                           dtype=np.float16, shape=(len(paths),) + fmap.shape[1:])
                maps[view][rows] = fmap
            done += len(rows)
            if done % 640 < runtime.batch_size:
                print(f"{done}/{len(paths)} images, {done / (time.perf_counter() - started):.1f} images/s", flush=True)
    for array in maps.values():
        array.flush()
    np.save(cache / "ids.npy", np.array(split["photo_id"], dtype=str))
    print(f"{len(paths)} images x {len(VIEWS)} views in {time.perf_counter() - started:.0f} s; wrote {cache}")


class LastStage(nn.Module):
    """Lite2's last block, head convolution and batch norm (ImageNet weights, all trainable),
    global average pooling, dropout and a linear classifier started at zero weights and the
    label prior's log-odds as bias."""

    def __init__(self, prior: torch.Tensor, dropout: float) -> None:
        super().__init__()
        base = load_backbone(BACKBONE).model
        self.block, self.conv, self.bn = (copy.deepcopy(m) for m in (base.blocks[6], base.conv_head, base.bn2))
        for parameter in self.parameters():
            parameter.requires_grad_(True)
        self.drop = nn.Dropout(dropout)
        self.fc = nn.Linear(1280, len(prior))
        nn.init.zeros_(self.fc.weight)
        prior = prior.clamp(1e-4, 1 - 1e-4)
        self.fc.bias.data = torch.log(prior / (1 - prior))

    def embed(self, maps: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(self.block(maps))).mean(dim=(2, 3))

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        return self.fc(self.drop(self.embed(maps)))

    def freeze_batch_norm(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.eval()


def fine_tune(maps: list[np.ndarray], rows: np.ndarray, truth: sparse.spmatrix, args) -> LastStage:
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    x = [torch.from_numpy(np.asarray(m[rows], dtype=np.float32)) for m in maps]
    y = torch.from_numpy(np.asarray(sparse.csr_matrix(truth).todense(), dtype=np.float32))
    net = LastStage(y.mean(dim=0), args.dropout).train()
    pretrained = [p for name, p in net.named_parameters() if not name.startswith("fc.")]
    optimiser = torch.optim.AdamW([{"params": pretrained, "lr": args.backbone_lr},
                                   {"params": net.fc.parameters(), "lr": args.lr}], weight_decay=args.weight_decay)
    steps = int(np.ceil(len(rows) / args.batch_size))
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=[args.backbone_lr, args.lr],
                                                   total_steps=steps * args.epochs, pct_start=0.1)
    net.freeze_batch_norm()
    started = time.perf_counter()
    for epoch in range(args.epochs):
        order, total = torch.randperm(len(rows)), 0.0
        for step in range(steps):
            batch = order[step * args.batch_size:(step + 1) * args.batch_size]
            mirrored = torch.randint(0, 2, (len(batch),)).view(-1, 1, 1, 1).bool()
            inputs = torch.where(mirrored, x[1][batch], x[0][batch])
            side = int(rng.integers(7, 10))
            top, left = rng.integers(0, 10 - side, size=2)
            inputs = inputs[:, :, top:top + side, left:left + side]
            loss = F.binary_cross_entropy_with_logits(net(inputs), y[batch], reduction="sum") / len(batch)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
            total += loss.item() * len(batch)
        print(f"epoch {epoch + 1}/{args.epochs}: loss {total / len(rows):.3f}, {time.perf_counter() - started:.0f} s", flush=True)
    return net.eval()


@torch.no_grad()
def embed_all(net: LastStage, maps: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(pooled embedding, logits) of every image, each the mean over the two views."""
    views = []
    for m in maps:
        chunks = [net.embed(torch.from_numpy(np.asarray(m[i:i + 256], dtype=np.float32))) for i in range(0, len(m), 256)]
        views.append(torch.cat(chunks))
    pooled = sum(views) / len(views)
    return pooled.numpy(), net.fc(pooled).numpy()


def blend_scorings(knn, logits: np.ndarray, posts: Posts, side: SideInfo, counts: np.ndarray) -> dict:
    """The blend's score (``probe_knn_blend``) at every point of its registered scoring grid,
    with ``logits`` in place of the probe's."""
    out = {}
    for point in blend_grid("probe_knn_blend_stages"):
        votes = knn.retune(k1=point["k1"], beta=point["beta"], rare_power=0.0).score(posts, side).astype(np.float64)
        votes /= np.maximum(votes.sum(axis=1, keepdims=True), 1e-300)
        w = point["knn_weight"]
        out[str(point)] = ((1 - w) * logits + w * np.log(votes + 1e-4) - point["rare_power"] * np.log(counts + 1.0))
    return out


def compare(embedding: np.ndarray, logits: np.ndarray, cache: Path, vocab, fit, val, train_val, test,
            with_test: bool, frozen_row: bool = True) -> list[tuple[str, dict]]:
    """The frozen default and the three uses of a fine-tuned network (module docstring), each
    chosen on validation per metric family; ``embedding`` and ``logits`` in vocabulary order.
    ``with_test``: the two blends are also refit on train + validation and scored on test.
    ``frozen_row=False`` leaves out the frozen default (the same for every fine-tune)."""
    counts = np.asarray(sparse.csr_matrix(fit.tags).sum(axis=0)).ravel()
    frozen_ids, frozen = variants(cache)["lite2+stage5+stage6"]
    frozen_side = SideInfo(features={"cnn_stages": frozen[vocabulary_rows(frozen_ids, vocab, cache)].astype(np.float32)})
    tuned_side = SideInfo(features={"cnn_stages": embedding.astype(np.float32)})
    val_logits = logits[val.image]
    knn = get_recommender("two_pknn")(features=("cnn_stages",), distances=("cosine",)).fit(
        TrainingData(train=fit, side=frozen_side))
    rows = []
    for name, measure_row in [
        ("frozen: blend on Lite2 + stage5/6 means (the default)",
         lambda: blend_row(frozen_side, fit, val, train_val, test, with_test, "probe_knn_blend_stages")),
        ("fine-tuned classifier alone",
         lambda: choose({f"rare_power={r}": val_logits - r * np.log(counts + 1.0) for r in POWERS}, val.tags)),
        ("blend on the fine-tuned embedding",
         lambda: blend_row(tuned_side, fit, val, train_val, test, with_test, "probe_knn_blend_stages")),
        ("fine-tuned logits + frozen 2PKNN",
         lambda: choose(blend_scorings(knn, val_logits, val, frozen_side, counts), val.tags)),
    ]:
        if name.startswith("frozen") and not frozen_row:
            continue
        rows.append((name, measure_row()))
        print(rows[-1], flush=True)
    return rows


def print_table(rows: list[tuple[str, dict]], title: str) -> None:
    print(f"\n{title}")
    print("| variant | val per-label F1 / N+ | val AF | test per-label F1 / N+ / AF | per-label setting |")
    print("| --- | --- | --- | --- | --- |")
    for name, row in rows:
        on_test = (f"{row['test_label_f1']:.3f} / {row['test_n_plus']} / {row['test_af']:.3f}"
                   if "test_af" in row else "")
        print(f"| {name} | {row['val_label_f1']:.4f} / {row['val_n_plus']} | {row['val_af']:.4f} | {on_test} "
              f"| {row['label_setting']} |")


def evaluate(args) -> None:
    vocab, fit, val, train_val, test = splits(args.corel5k)
    ids = np.load(args.maps / "ids.npy")
    in_vocab = vocabulary_rows(ids, vocab, args.maps / "ids.npy")  # cached row of each vocabulary image
    maps = [np.load(args.maps / f"{INPUT_STAGE}{view}.npy", mmap_mode="r") for view in VIEWS]
    net = fine_tune(maps, in_vocab[fit.image], fit.tags, args)
    pooled, logits = embed_all(net, maps)
    # vocabulary order, as SideInfo wants
    rows = compare(pooled[in_vocab], logits[in_vocab], args.cache, vocab, fit, val, train_val, test, False)
    print_table(rows, f"Corel5k validation ({val.n_posts} images), fine-tuning {args.epochs} epochs:")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    ext = sub.add_parser("extract")
    ev = sub.add_parser("evaluate")
    ev.add_argument("--epochs", type=int, default=20)
    ev.add_argument("--lr", type=float, default=1e-3, help="the classifier's peak learning rate")
    ev.add_argument("--backbone-lr", type=float, default=1e-4, help="the pretrained layers' peak learning rate")
    ev.add_argument("--weight-decay", type=float, default=1e-4)
    ev.add_argument("--batch-size", type=int, default=64)
    ev.add_argument("--dropout", type=float, default=0.2)
    ev.add_argument("--seed", type=int, default=0)
    for p in (ext, ev):
        p.add_argument("--corel5k", type=Path, default=default_root())
        p.add_argument("--cache", type=Path, default=default_cache(), help="the representations cache")
        p.add_argument("--maps", type=Path, default=default_cache().parent / "finetune", help="where the stage6 maps go")
    args = parser.parse_args()
    if args.command == "extract":
        extract(args.corel5k, args.maps)
    else:
        evaluate(args)


if __name__ == "__main__":
    main()
