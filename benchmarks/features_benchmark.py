"""Image-feature extraction benchmark (issue 3): end-to-end images/s against the bare model
forward and against a naive loop, in one run, on the Corel5k photos. Prints figures; asserts
nothing.

Measured, in this order, on the first ``--n`` Corel5k images (sorted paths):

1. **bare forward**: the backbone (EfficientNet-Lite0, the configured stages pooled to the
   grid, as in the extraction) on uint8 batches already in memory (decoded and resized
   beforehand), device copy and normalisation included, after two warm-up batches.
2. **end-to-end, CNN pass**: ``extract_features`` with the CNN embedding and the stage
   descriptors: read, decode, sanitise, resize, forward, write the ``.npy`` files and the
   index table. Decoding runs in DataLoader workers while the model computes. The time is the
   extraction's own (after the model is built; loader start-up, writing and checks
   included), after a warm-up pass on one batch.
3. **end-to-end, full pass**: the same plus CH-64, CM-225 and 75 px patches (more CPU work
   per image in the workers).
4. **naive loop**: one image at a time: PIL open, RGB, resize, to_tensor, normalise, float32,
   contiguous memory format (no channels_last), forward, embedding to the host; ``np.save`` at
   the end. On ``--naive-n`` images.

Each round runs 1-4 in turn; with ``--rounds R`` the medians over rounds are reported (the
CPU of a shared machine is loaded differently from minute to minute). The ratio end-to-end /
bare says how well decoding hides behind compute (issue 3 asks for at
least 0.8). On CUDA (``--device cuda --batch-size 256``) the forward runs under bfloat16
autocast with channels_last; the bare figure is the model's throughput (the issue's aim:
above 5,000 images/s for EfficientNet-Lite0 at 224 px on an H100).

    .venv/bin/python benchmarks/features_benchmark.py --n 512              # CPU here
    .venv/bin/python benchmarks/features_benchmark.py --device cuda --batch-size 256 --n 4999
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from a checkout, installed or not
    sys.path.insert(0, str(REPO))

import torch  # noqa: E402
from PIL import Image  # noqa: E402

from tagrec_models.features.backbone import load_backbone  # noqa: E402
from tagrec_models.features.device import DeviceConfig, resolve_runtime  # noqa: E402
from tagrec_models.features.extraction import DEFAULT_STAGES, ExtractionConfig, cnn_input, extract_features  # noqa: E402
from tagrec_models.features.images import load_rgb  # noqa: E402


def corel_paths(root: Path, n: int) -> list[Path]:
    paths = sorted(root.glob("*/*.jpeg"))
    if not paths:
        raise SystemExit(f"no Corel5k images (<cd>/<id>.jpeg) under {root}; pass --corel")
    return paths[:n]


def synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bare_forward(paths: list[Path], device_config: DeviceConfig, stages: tuple[str, ...], size: int) -> dict:
    """Images/s of the backbone alone on uint8 batches already in host memory."""
    runtime = resolve_runtime(device_config)
    batch = runtime.batch_size
    pixels = torch.from_numpy(np.stack([cnn_input(load_rgb(p).image, size) for p in paths]))
    if runtime.is_cuda:
        pixels = pixels.pin_memory()
    model = runtime.prepare(load_backbone(stages=stages).eval())
    batches = [pixels[i : i + batch] for i in range(0, len(pixels), batch)]
    with torch.inference_mode():
        for warm in batches[:2]:
            with runtime.autocast():
                model(runtime.to_device(warm))
        synchronise(runtime.device)
        start = time.perf_counter()
        for chunk in batches:
            with runtime.autocast():
                out = model(runtime.to_device(chunk))
        synchronise(runtime.device)
        seconds = time.perf_counter() - start
    del out
    return {"images": len(pixels), "seconds": seconds, "images_per_second": len(pixels) / seconds, "runtime": runtime.describe()}


def end_to_end(paths: list[Path], config: ExtractionConfig, out_dir: Path) -> dict:
    warm = dataclasses.replace(config, log_every_s=1e9)
    extract_features(paths[: max(1, resolve_runtime(config.device).batch_size)], out_dir / "warm", warm)
    wall = time.perf_counter()
    result = extract_features(paths, out_dir / "run", config)
    wall = time.perf_counter() - wall
    return {
        "images": result.n_images,
        "seconds": result.seconds,
        "images_per_second": result.images_per_second,
        "wall_seconds_with_model_build": wall,
        "status": result.status_counts(),
        "bytes_written": sum(p.stat().st_size for p in result.files.values()),
    }


def naive_loop(paths: list[Path], device: torch.device, size: int, out_dir: Path) -> dict:
    """One image at a time, PIL + torchvision transforms, float32, contiguous memory format."""
    from torchvision.transforms import functional as TF

    model = load_backbone(stages=()).model.to(device).eval()  # plain timm model, no channels_last
    embeddings = []
    with torch.inference_mode():
        warm = TF.normalize(TF.to_tensor(Image.open(paths[0]).convert("RGB").resize((size, size))), [0.5] * 3, [0.5] * 3)
        model.forward_head(model.forward_features(warm[None].to(device)), pre_logits=True)
        synchronise(device)
        start = time.perf_counter()
        for path in paths:
            image = Image.open(path).convert("RGB").resize((size, size), Image.Resampling.BICUBIC)
            x = TF.normalize(TF.to_tensor(image), [0.5] * 3, [0.5] * 3)[None].to(device)
            embeddings.append(model.forward_head(model.forward_features(x), pre_logits=True).cpu().numpy())
        np.save(out_dir / "naive_cnn.npy", np.concatenate(embeddings))
        seconds = time.perf_counter() - start
    return {"images": len(paths), "seconds": seconds, "images_per_second": len(paths) / seconds}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corel", type=Path, default=Path(os.environ.get("TAGREC_COREL5K", REPO.parent / "shared" / "data" / "corel5k")))
    parser.add_argument("--n", type=int, default=512, help="Corel5k images to run on")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--workers", type=int, default=None, help="decoding workers (default: by device)")
    parser.add_argument("--naive-n", type=int, default=None, help="images for the naive loop (default 64 on CPU, 512 on CUDA)")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--skip-full", action="store_true", help="skip the full pass (low-level features and patches)")
    parser.add_argument("--rounds", type=int, default=1, help="interleaved repetitions; medians are reported")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)

    device_config = DeviceConfig(device=args.device, batch_size=args.batch_size, num_workers=args.workers)
    runtime = resolve_runtime(device_config)
    paths = corel_paths(args.corel, args.n)
    naive_n = args.naive_n or (512 if runtime.is_cuda else 64)
    load_before = os.getloadavg()
    print(f"device: {runtime.describe()}; GPU available: {torch.cuda.is_available()}")
    print(f"images: {len(paths)} Corel5k photos from {args.corel}; CNN input {args.image_size} px; torch {torch.__version__}")
    print(f"load average before: {load_before[0]:.2f} (CPU cores: {os.cpu_count()}; other jobs may share them)")

    stages = DEFAULT_STAGES
    cnn_config = ExtractionConfig(image_size=args.image_size, stages=stages, lowlevel=False, patch_sizes=(), device=device_config)
    full_config = ExtractionConfig(image_size=args.image_size, stages=stages, device=device_config)
    rounds: list[dict[str, dict]] = []
    with tempfile.TemporaryDirectory(prefix="features_benchmark_") as tmp:
        tmp_dir = Path(tmp)
        for r in range(args.rounds):
            # Interleaved rounds: on a shared machine the load changes over minutes, and each
            # round measures all variants under about the same load.
            row = {"bare_forward": bare_forward(paths, device_config, stages, args.image_size)}
            row["end_to_end_cnn"] = end_to_end(paths, cnn_config, tmp_dir / f"cnn{r}")
            if not args.skip_full:
                row["end_to_end_full"] = end_to_end(paths, full_config, tmp_dir / f"full{r}")
            row["naive_loop"] = naive_loop(paths[:naive_n], runtime.device, args.image_size, tmp_dir)
            rounds.append(row)
            print(f"round {r + 1}: " + ", ".join(f"{k} {v['images_per_second']:.1f}/s" for k, v in row.items()), flush=True)
    load_after = os.getloadavg()

    def median(name: str, key: str = "images_per_second") -> float:
        return float(np.median([row[name][key] for row in rounds]))

    def ratio(name: str, over: str) -> float:
        return float(np.median([row[name]["images_per_second"] / row[over]["images_per_second"] for row in rounds]))

    print()
    print(f"medians over {len(rounds)} round(s)")
    print(f"{'measurement':<24}{'images':>8}{'seconds':>10}{'images/s':>11}{'vs bare':>9}")
    for name in rounds[0]:
        print(
            f"{name:<24}{rounds[0][name]['images']:>8}{median(name, 'seconds'):>10.2f}"
            f"{median(name):>11.1f}{ratio(name, 'bare_forward'):>9.2f}"
        )
    print()
    print(f"bare forward: {median('bare_forward'):.1f} images/s ({runtime.precision}, batch {runtime.batch_size})")
    print(f"end-to-end CNN pass / bare forward: {ratio('end_to_end_cnn', 'bare_forward'):.2f} (target >= 0.8)")
    if not args.skip_full:
        print(f"end-to-end full pass / bare forward: {ratio('end_to_end_full', 'bare_forward'):.2f}")
    print(f"end-to-end CNN pass / naive loop: {ratio('end_to_end_cnn', 'naive_loop'):.2f}x")
    print(f"written by the CNN pass: {rounds[0]['end_to_end_cnn']['bytes_written'] / 2**20:.1f} MiB; statuses {rounds[0]['end_to_end_cnn']['status']}")
    print(f"load average after: {load_after[0]:.2f}")
    if args.json:
        summary = {"device": runtime.describe(), "load_before": load_before, "load_after": load_after, "rounds": rounds}
        args.json.write_text(json.dumps(summary, indent=2, default=str))


if __name__ == "__main__":
    main()
