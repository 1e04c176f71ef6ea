"""Scale-out benchmarks (issue 14). Prints figures; asserts nothing.

``features``: image-feature extraction on a generated set of ``--n`` images (20,000 by
default), made from the openclipart corpus by crops and flips (each variant a new PNG file, so
every image is decoded from disk like a real one), split into shards by
``tagrec_models.features.shards`` (two shards), then extracted, in the same run:

1. by **one worker process** doing both shards one after the other (torch on all ``--cores``);
2. by **two worker processes** side by side, one shard each (torch on ``--cores / 2`` threads
   each, so both runs use the same cores).

Each worker is a fresh Python process running ``extract_shard`` (what a Celery worker or a
Kubernetes pod runs for one ``feature_shards`` partition); the figure is the wall time from
starting the workers to the last one finishing (imports and model load included, as a
worker pays them), images/s, and the ratio two / one. The corpus is read from
``$TAGREC_HOME/sources/openclipart`` (``make demo`` fetches it) or ``--source``; the generated
set is cached in ``--data-dir``.

``preprocess``: paper 1's preprocessing (DuckDB SQL: WordNet-free recipe ``full10``, the 50%
rule and a 10/10-core to a fixed point; and ``nuswide``: top 100 tags, 1,000 users, 10-core)
on a generated folksonomy of ``--assignments`` (100M by default: 100k users, 20k tags,
Zipf-like; ``benchmarks/preprocess_benchmark.py`` generates and times it, each run in a fresh
process), the result written to Parquet by DuckDB as the pipeline's ``filtered_assignments``
asset stores it (``--dataframe``: returned as a pandas DataFrame instead), printing wall time
and peak resident memory against the issue's goals (under 10 minutes and 16 GB).

    .venv/bin/python benchmarks/scale_benchmark.py features --n 20000
    .venv/bin/python benchmarks/scale_benchmark.py preprocess --assignments 100000000
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
GOAL_SECONDS, GOAL_BYTES = 600.0, 16 * 1024**3


def corpus_pngs(source: Path | None) -> list[Path]:
    candidates = [source] if source else []
    home = Path(os.environ.get("TAGREC_HOME", REPO / "data"))
    candidates += [home / "sources" / "openclipart" / "usr" / "share" / "openclipart" / "png",
                   REPO / "tests" / "fixtures" / "openclipart" / "png"]
    for folder in candidates:
        if folder is not None and folder.is_dir():
            # The corpus holds a few huge drawings (PIL refuses them as decompression bombs);
            # the set is made from the ordinary ones.
            found = sorted(p for p in folder.rglob("*.png") if p.is_file() and p.stat().st_size < 3_000_000)
            if found:
                return found
    raise FileNotFoundError("no openclipart PNGs found (make demo fetches the corpus, or --source)")


def generate_images(pngs: list[Path], n: int, out: Path, seed: int) -> list[Path]:
    """``n`` PNG files: a random crop (60-100% of each side) of a corpus image, mirrored half of
    the time, at most 320 px on the longer side (the extraction's ``max_side``)."""
    import numpy as np
    from PIL import Image, ImageOps

    warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # refused below, not decoded

    out.mkdir(parents=True, exist_ok=True)
    done = out / f"done_{n}"
    paths = [out / f"img{i:06d}.png" for i in range(n)]
    if done.exists():
        return paths
    rng = np.random.default_rng(seed)
    sources: dict[int, Image.Image] = {}
    for path in paths:
        image = None
        while image is None:  # skip the corpus's unusable files (huge, tiny)
            k = int(rng.integers(len(pngs)))
            if k not in sources:
                try:
                    with Image.open(pngs[k]) as im:
                        if im.width * im.height > 40_000_000 or min(im.size) < 32:
                            raise ValueError("too large or too small")
                        im = im.convert("RGBA")
                        background = Image.new("RGBA", im.size, (255, 255, 255, 255))
                        loaded = Image.alpha_composite(background, im).convert("RGB")
                        loaded.thumbnail((480, 480))
                        sources[k] = loaded if min(loaded.size) >= 32 else None
                except (ValueError, OSError, Image.DecompressionBombError):
                    sources[k] = None
            image = sources[k]
            if len(sources) > 512:  # bounded memory: drop the oldest decoded source
                sources.pop(next(iter(sources)))
        w, h = image.size
        cw, ch = int(w * rng.uniform(0.6, 1.0)), int(h * rng.uniform(0.6, 1.0))
        left, top = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        variant = image.crop((left, top, left + cw, top + ch))
        if rng.random() < 0.5:
            variant = ImageOps.mirror(variant)
        variant.thumbnail((320, 320))
        variant.save(path, optimize=False, compress_level=1)
    done.touch()
    return paths


def worker(spec_file: Path) -> None:
    """One feature worker: extract the shards named in ``spec_file``, one after the other."""
    spec = json.loads(spec_file.read_text())
    import torch

    torch.set_num_threads(spec["threads"])
    from tagrec_models.features.device import DeviceConfig
    from tagrec_models.features.extraction import ExtractionConfig
    from tagrec_models.features.shards import extract_shard

    config = ExtractionConfig(stages=tuple(spec["stages"]), patch_sizes=(75,),
                              device=DeviceConfig(device="cpu", num_workers=spec["loader_workers"]))
    for shard in spec["shards"]:
        extract_shard(shard["name"], shard["ids"], shard["paths"], shard["out_dir"], config)


def start_worker(spec: dict, folder: Path, name: str) -> subprocess.Popen:
    spec_file = folder / f"{name}.json"
    spec_file.write_text(json.dumps(spec))
    env = {**os.environ, "OMP_NUM_THREADS": str(spec["threads"])}
    return subprocess.Popen([sys.executable, __file__, "worker", str(spec_file)], cwd=REPO, env=env)


def features(args: argparse.Namespace) -> None:
    from tagrec_models.features.shards import shard_members, shard_names

    pngs = corpus_pngs(args.source)
    started = time.perf_counter()
    paths = generate_images(pngs, args.n, args.data_dir / "images", args.seed)
    print(f"{args.n} images from {len(pngs)} openclipart PNGs (crops/flips) in {args.data_dir / 'images'} "
          f"({time.perf_counter() - started:.0f} s, not timed)")
    ids = [p.stem for p in paths]
    shards = []
    for name in shard_names(2):
        rows = shard_members(ids, 2, name)
        shards.append({"name": name, "ids": [ids[i] for i in rows], "paths": [str(paths[i]) for i in rows]})
    results = {}
    with tempfile.TemporaryDirectory(dir=args.data_dir, prefix="run-") as tmp:
        tmp = Path(tmp)
        for mode, n_proc in (("1 process", 1), ("2 processes", 2)):
            out = tmp / mode.replace(" ", "_")
            plan = [[{**s, "out_dir": str(out / s["name"])} for s in shards]] if n_proc == 1 else \
                [[{**s, "out_dir": str(out / s["name"])}] for s in shards]
            threads = max(1, args.cores // n_proc)
            begin = time.perf_counter()
            procs = [start_worker({"shards": p, "threads": threads, "stages": args.stages,
                                   "loader_workers": args.loader_workers}, tmp, f"{n_proc}_{i}")
                     for i, p in enumerate(plan)]
            codes = [p.wait() for p in procs]
            wall = time.perf_counter() - begin
            if any(codes):
                raise RuntimeError(f"{mode}: a worker failed ({codes})")
            results[mode] = wall
            print(f"{mode:12s}: {args.n} images in {wall:7.1f} s = {args.n / wall:6.1f} images/s "
                  f"(torch threads {threads} per process, {len(shards) // n_proc} shard(s) per process: "
                  f"{', '.join(str(len(s['ids'])) for s in shards)} images)", flush=True)
    ratio = results["1 process"] / results["2 processes"]
    print(f"throughput ratio 2 processes / 1 process: {ratio:.2f} (on {args.cores} cores; a ratio near 1 "
          "means the cores, not the process count, bound the pass)")


def preprocess(args: argparse.Namespace) -> None:
    command = [sys.executable, str(REPO / "benchmarks" / "preprocess_benchmark.py"), "--sizes", str(args.assignments),
               "--recipes", *args.recipes, "--repeat", "1", "--threads", str(args.threads),
               "--data-dir", str(args.data_dir), "--memory-limit", args.memory_limit]
    command += ["--dataframe"] if args.dataframe else []
    started = time.perf_counter()
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    print(done.stdout, end="")
    if done.returncode:
        print(done.stderr[-3000:], file=sys.stderr)
        raise SystemExit(done.returncode)
    for line in done.stdout.splitlines():
        if "assignments: wall" not in line:
            continue
        wall = float(line.split("wall")[1].split("s")[0])
        peak_mib = float(line.split("peak RSS")[1].split("MiB")[0])
        ok = wall < GOAL_SECONDS and peak_mib * 1024**2 < GOAL_BYTES
        print(f"{line.split()[0]}: {wall / 60:.1f} min (goal < {GOAL_SECONDS / 60:.0f}), peak "
              f"{peak_mib / 1024:.1f} GiB (goal < 16): {'goals met' if ok else 'GOALS MISSED'}")
    print(f"(benchmark wall time, generation included: {time.perf_counter() - started:.0f} s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    f = sub.add_parser("features")
    f.add_argument("--n", type=int, default=20_000)
    f.add_argument("--source", type=Path, default=None, help="folder of openclipart PNGs")
    f.add_argument("--cores", type=int, default=os.cpu_count() or 2)
    f.add_argument("--stages", nargs="*", default=["stage5"],
                   help="conv stages whose descriptors are stored (the demo keeps all seven)")
    f.add_argument("--loader-workers", type=int, default=1, help="decode processes per worker")
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--data-dir", type=Path, default=Path(tempfile.gettempdir()) / "tagrec_scale_benchmark")
    p = sub.add_parser("preprocess")
    p.add_argument("--assignments", type=int, default=100_000_000)
    p.add_argument("--recipes", nargs="+", default=["full10", "nuswide"], choices=["full10", "nuswide"])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--data-dir", type=Path, default=Path(tempfile.gettempdir()) / "tagrec_preprocess_benchmark")
    p.add_argument("--dataframe", action="store_true", help="result as a pandas DataFrame, not Parquet")
    p.add_argument("--memory-limit", default="", help="DuckDB memory_limit; empty: the pipeline's default")
    w = sub.add_parser("worker")
    w.add_argument("spec", type=Path)
    args = parser.parse_args()
    if args.command == "worker":
        worker(args.spec)
    elif args.command == "features":
        args.data_dir.mkdir(parents=True, exist_ok=True)
        features(args)
    else:
        preprocess(args)


if __name__ == "__main__":
    main()
