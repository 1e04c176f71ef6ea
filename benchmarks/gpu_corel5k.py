"""Issue 13, item 5: the GPU path measured on Corel5k in one run. Prints figures; asserts nothing.

``run`` (on a CUDA machine; every step logs as it goes):

1. **Feature extraction, EfficientNet-Lite0 at 224 px** (the issue's goal: above 5,000 images/s
   on an H100): ``features_benchmark.py --device cuda --batch-size 256`` on every Corel5k image,
   the bare forward (bf16 autocast, channels_last, batches in host memory) and the extraction
   end to end (decoding in workers, writing the arrays), medians of ``--rounds``.
2. **Lite2 + stage5/6 extraction** (``representations_corel5k.py extract``, bf16 on CUDA): the
   frozen embedding the probe's timing reads, with its own images/s.
3. **The probe's training**: ``asl_probe`` at its registered defaults (900 full-batch passes)
   on that embedding, the 4,044 fit images; seconds per pass (one pass = one epoch).
4. **Fine-tuning Lite2** (``tagrec_models.features.finetune``, the settings of
   ``finetune_full_corel5k.py``) for each ``--seeds``: images/s and seconds per epoch in the log;
   each tuned embedding is written to ``--out`` compactly (the embedding as float16, the logits
   as float32 with the settings, one compressed file each, small enough to copy off the machine).

``unpack`` (anywhere) turns those files back into ``finetune_full_corel5k.py``'s cache format,
so its evaluation (``--out`` that folder, ``--test``) scores them on the CPU like any other run.
The float16 copy is the one approximation; ``precision`` measures what it moves on the frozen
embedding (README, "Fine-tuning on a GPU").

    python benchmarks/gpu_corel5k.py run --out /tmp/gpu --seeds 0 1 2     # on the GPU machine
    python benchmarks/gpu_corel5k.py run --steps fine-tune --frozen-stages 0 --train-size 260 --out /tmp/gpu
    python benchmarks/gpu_corel5k.py unpack --src /tmp/gpu --out data/bench/finetune_gpu
    python benchmarks/finetune_full_corel5k.py --seed 1 --test --out data/bench/finetune_gpu
    python benchmarks/gpu_corel5k.py summarise     # mean and spread over seeds of the --json files
    python benchmarks/gpu_corel5k.py summarise --thresholds --src data/bench/thresholds
    python benchmarks/gpu_corel5k.py precision --test

``--smoke`` shrinks step 4 to 64 images and one epoch and steps 1-2 to 64 images: a check that
the script runs end to end on the CPU, whose figures mean nothing.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent

from finetune_full_corel5k import BACKBONE, cache_name, settings as tuned_settings, tuned_embeddings  # noqa: E402
from representations_corel5k import STAGES, default_cache, default_root, splits, variants  # noqa: E402
from tagrec_models.data import SideInfo, TrainingData  # noqa: E402
from tagrec_models.features.finetune import FineTuneConfig  # noqa: E402
from tagrec_models.recommenders import get_recommender  # noqa: E402


def say(message: str) -> None:
    print(message, flush=True)


def script(name: str, *args: str) -> None:
    """Run a sibling benchmark script, its output streamed into ours."""
    command = [sys.executable, str(HERE / name), *args]
    say(f"$ {' '.join(command[1:])}")
    subprocess.run(command, check=True)


def probe_timing(cache: Path, vocab, fit) -> None:
    """Step 3: the registered ``asl_probe`` on the frozen Lite2 + stage5/6 embedding."""
    ids, embedding = variants(cache)["lite2+stage5+stage6"]
    row = {str(p): r for r, p in enumerate(ids)}
    side = SideInfo(features={"cnn_stages": embedding[[row[p] for p in vocab.images]].astype(np.float32)})
    model = get_recommender("asl_probe")(feature="cnn_stages")
    model.set_log(lambda m: say(m) if "passes" in m else None)
    model.fit(TrainingData(train=fit, side=side))


def fine_tunes(args, vocab, fit) -> None:
    """Step 4: one fine-tune per seed, each written compactly to ``args.out``."""
    for seed in args.seeds:
        config = FineTuneConfig(backbone=BACKBONE, embedding_stages=STAGES, seed=seed,
                                epochs=1 if args.smoke else args.epochs, frozen_stages=args.frozen_stages,
                                train_size=args.train_size)
        started = time.perf_counter()
        work = argparse.Namespace(out=args.work, corel5k=args.corel5k)
        train = fit.subset(np.arange(64)) if args.smoke else fit
        tuned = tuned_embeddings(config, work, vocab, train)
        say(f"seed {seed}: decoded, fine-tuned and embedded in {time.perf_counter() - started:.0f} s")
        # the settings in the name, so runs of other settings in one --out do not overwrite each other
        stem = f"epochs{config.epochs}_frozen{config.frozen_stages}_size{config.train_size}_seed{seed}"
        np.savez_compressed(args.out / f"{stem}_embedding.npz", embedding=tuned["embedding"].astype(np.float16))
        np.savez_compressed(args.out / f"{stem}_logits.npz", logits=tuned["logits"].astype(np.float32),
                            settings=json.dumps(tuned_settings(config)))


def run(args) -> None:
    args.out.mkdir(parents=True, exist_ok=True)
    say(f"torch {torch.__version__}, CUDA {torch.cuda.is_available()}"
        + (f", {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ""))
    vocab, fit, _, _, _ = splits(args.corel5k)
    if "measure" in args.steps:
        measure(args, vocab, fit)
    if "fine-tune" in args.steps:
        fine_tunes(args, vocab, fit)


def measure(args, vocab, fit) -> None:
    """Steps 1-3."""
    n = "64" if args.smoke else "4999"
    device = "cuda" if torch.cuda.is_available() else "cpu"
    script("features_benchmark.py", "--corel", str(args.corel5k), "--device", device, "--n", n,
           "--rounds", "1" if args.smoke else str(args.rounds), "--naive-n", "32" if args.smoke else "256",
           *(["--batch-size", "256"] if device == "cuda" else []))
    cache = args.work / "representations"
    script("representations_corel5k.py", "extract", "--backbone", BACKBONE, "--corel5k", str(args.corel5k),
           "--cache", str(cache))
    probe_timing(cache, vocab, fit)


def unpack(args) -> None:
    """The compact files back into ``finetune_full_corel5k.py``'s cache (embedding as float32)."""
    args.out.mkdir(parents=True, exist_ok=True)
    for logits_path in sorted(args.src.glob("*seed*_logits.npz")):
        stem = logits_path.name.removesuffix("_logits.npz")
        with np.load(logits_path) as saved:
            logits, settings = saved["logits"], json.loads(str(saved["settings"]))
        settings["crop_scale"] = tuple(settings["crop_scale"])  # JSON wrote the tuple as a list
        name = cache_name(FineTuneConfig(backbone=BACKBONE, embedding_stages=STAGES, **settings))
        with np.load(args.src / f"{stem}_embedding.npz") as saved:
            embedding = saved["embedding"].astype(np.float32)
        np.savez(args.out / f"{name}.npz", settings=json.dumps(settings), embedding=embedding, logits=logits)
        say(f"{stem}: {embedding.shape[0]} images -> {args.out / name}.npz")


def precision(args) -> None:
    """What the float16 copy moves: the frozen blend (``probe_knn_blend_stages``) on the cached
    Lite2 + stage5/6 embedding as float32 and rounded through float16, validation (and test)."""
    from asl_probe_corel5k import blend_row

    vocab, fit, val, train_val, test = splits(args.corel5k)
    ids, embedding = variants(args.cache)["lite2+stage5+stage6"]
    row = {str(p): r for r, p in enumerate(ids)}
    exact = embedding[[row[p] for p in vocab.images]].astype(np.float32)
    for name, values in (("float32", exact), ("through float16", exact.astype(np.float16).astype(np.float32))):
        result = blend_row(SideInfo(features={"cnn_stages": values}), fit, val, train_val, test, args.test,
                           "probe_knn_blend_stages")
        say(f"{name}: " + json.dumps({k: v for k, v in result.items() if k.startswith(("val_", "test_"))},
                                     default=float))


def summarise(args) -> None:
    """Mean and standard deviation over seeds of each fine-tune setting's rows, from the
    ``--json`` files of ``finetune_full_corel5k.py`` (or, with ``--thresholds``, of
    ``thresholds_corel5k.py`` or ``threshold_rules_corel5k.py``: one row per threshold rule)."""
    import pandas as pd

    records = []
    for path in sorted(args.src.glob("*.json")):
        saved = json.loads(path.read_text())
        rows = ({row["threshold_rule"]: row for row in saved["rows"]} if args.thresholds else saved["rows"])
        for variant, row in rows.items():
            records.append({"epochs": saved["settings"].get("epochs", "frozen"), "seed": saved["settings"].get("seed"),
                            "variant": variant, **{k: v for k, v in row.items()
                                                   if k.startswith(("val_", "test_", "thr_"))}})
    frame = pd.DataFrame(records)
    metrics = [c for c in ("val_label_f1", "val_n_plus", "val_af", "test_label_f1", "test_n_plus", "test_af",
                           "val_thr_label_f1", "thr_label_precision", "thr_label_recall", "thr_label_f1",
                           "thr_n_plus", "thr_labels_per_image") if c in frame]
    table = frame.groupby(["variant", "epochs"])[metrics].agg(["mean", "std", "count"])
    with pd.option_context("display.width", 250, "display.max_columns", 40):
        print(table.round(4))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    go = sub.add_parser("run")
    go.add_argument("--out", type=Path, required=True, help="where the compact fine-tuned embeddings go")
    go.add_argument("--work", type=Path, default=default_cache().parent / "gpu_work")
    go.add_argument("--corel5k", type=Path, default=default_root())
    go.add_argument("--seeds", type=int, nargs="+", default=[0])
    go.add_argument("--epochs", type=int, default=FineTuneConfig().epochs, help="of each fine-tune")
    go.add_argument("--frozen-stages", type=int, default=FineTuneConfig().frozen_stages,
                    help="stages that keep ImageNet's weights (0: fine-tune every stage)")
    go.add_argument("--train-size", type=int, default=FineTuneConfig().train_size, help="training crop size, px")
    go.add_argument("--steps", nargs="+", choices=("measure", "fine-tune"), default=["measure", "fine-tune"],
                    help="measure: steps 1-3; fine-tune: step 4")
    go.add_argument("--rounds", type=int, default=3, help="rounds of the extraction benchmark")
    go.add_argument("--smoke", action="store_true", help="tiny sizes: does the script run? (figures mean nothing)")
    back = sub.add_parser("unpack")
    back.add_argument("--src", type=Path, required=True)
    back.add_argument("--out", type=Path, default=default_cache().parent / "finetune_gpu")
    check = sub.add_parser("precision", help="what rounding the embedding through float16 moves")
    check.add_argument("--corel5k", type=Path, default=default_root())
    check.add_argument("--cache", type=Path, default=default_cache(), help="the representations cache")
    check.add_argument("--test", action="store_true")
    table = sub.add_parser("summarise", help="mean and spread over seeds of finetune_full_corel5k.py --json files")
    table.add_argument("--src", type=Path, default=default_cache().parent / "finetune_gpu")
    table.add_argument("--thresholds", action="store_true",
                       help="the --src files are thresholds_corel5k.py / threshold_rules_corel5k.py --json rows")
    args = parser.parse_args()
    {"run": run, "unpack": unpack, "precision": precision, "summarise": summarise}[args.command](args)


if __name__ == "__main__":
    main()
