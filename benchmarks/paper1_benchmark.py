"""Paper 1 speed figures: PITF training throughput (quadruples/s), CNN-PerMLP training
throughput (posts/s) on the CPU and on CUDA when present, and the time to compute P/R/F1@1..10
for all test posts with ``metrics_at_k`` against a one-post-at-a-time Python reference (the
two must agree; the aim is at least 20x).

The data are synthetic at the scale of paper 1's NUS-WIDE subset (Table 1: 1,000 users, 100
tags, about 25,900 training and 2,000 test posts, 75 px patches) so the script runs anywhere
without the pipeline's data; ``--posts`` scales the CNN part down on a slow CPU. Figures are
printed, not asserted.

    .venv/bin/python benchmarks/paper1_benchmark.py            # defaults
    .venv/bin/python benchmarks/paper1_benchmark.py --quick    # a smaller, faster run
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import numpy as np
import torch
from scipy import sparse

from tagrec_models.data import Posts, SideInfo, TrainingData
from tagrec_models.evaluation.metrics import harmonic, metrics_at_k
from tagrec_models.recommenders import get_recommender


def synthetic_posts(n_users: int, n_tags: int, n_posts: int, tags_per_post: int, seed: int) -> Posts:
    """Posts of random users with ``1..2*tags_per_post-1`` tags drawn from a Zipf-like tag
    popularity (as in folksonomies), one image per post."""
    rng = np.random.default_rng(seed)
    popularity = 1.0 / np.arange(1, n_tags + 1)
    popularity /= popularity.sum()
    rows, cols = [], []
    for post in range(n_posts):
        size = int(rng.integers(1, 2 * tags_per_post))
        tags = rng.choice(n_tags, size=min(size, n_tags), replace=False, p=popularity)
        rows.extend([post] * len(tags))
        cols.extend(tags.tolist())
    matrix = sparse.csr_matrix(
        (np.ones(len(rows), np.float32), (rows, cols)), shape=(n_posts, n_tags)
    )
    return Posts(
        user=rng.integers(0, n_users, n_posts),
        image=np.arange(n_posts),
        tags=matrix,
        n_users=n_users,
        n_images=n_posts,
    )


def pitf_throughput(device: str, threads: int, args, log) -> dict:
    train = synthetic_posts(args.users, args.tags, args.pitf_posts, 3, seed=1)
    data = TrainingData(train=train)
    pitf = get_recommender("pitf")
    pitf(max_epochs=1, patience=0, device=device, torch_threads=threads).fit(data)  # warm-up
    model = pitf(max_epochs=args.pitf_epochs, patience=0, device=device, torch_threads=threads)
    started = time.perf_counter()
    model.fit(data)
    seconds = time.perf_counter() - started
    quadruples = int(train.tags.nnz) * args.pitf_epochs
    result = {
        "what": "pitf_train",
        "device": device,
        "threads": threads,
        "triples": int(train.tags.nnz),
        "epochs": args.pitf_epochs,
        "batch_size": model.config.batch_size,
        "seconds": seconds,
        "quadruples_per_s": quadruples / seconds,
    }
    log(result)
    return result


def cnn_permlp_throughput(device: str, threads: int, patch: int, args, log) -> dict:
    rng = np.random.default_rng(2)
    train = synthetic_posts(args.users, args.tags, args.posts, 3, seed=2)
    patches = rng.integers(0, 256, size=(train.n_images, 3, patch, patch, 3), dtype=np.uint8)
    data = TrainingData(train=train, side=SideInfo(patches=patches))
    model_cls = get_recommender("cnn_permlp")
    warm = TrainingData(train=train.subset(np.arange(min(256, train.n_posts))), side=data.side)
    model_cls(max_epochs=1, patience=0, device=device, torch_threads=threads).fit(warm)
    model = model_cls(max_epochs=args.cnn_epochs, patience=0, device=device, torch_threads=threads)
    started = time.perf_counter()
    model.fit(data)
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    started = time.perf_counter()
    model.score(train, data.side)
    score_seconds = time.perf_counter() - started
    result = {
        "what": "cnn_permlp_train",
        "device": device,
        "threads": threads,
        "patch": patch,
        "posts": train.n_posts,
        "epochs": args.cnn_epochs,
        "batch_size": model.config.batch_size,
        "seconds": seconds,
        "posts_per_s": train.n_posts * args.cnn_epochs / seconds,
        "scored_posts_per_s (3 patches each, eq. 2)": train.n_posts / score_seconds,
    }
    log(result)
    return result


def reference_prf_at_k(scores: np.ndarray, truth: sparse.csr_matrix, k_max: int) -> np.ndarray:
    """P/R/F1@1..k_max one post at a time in plain Python (the reference)."""
    p_sum = [0.0] * k_max
    r_sum = [0.0] * k_max
    n = 0
    for row in range(scores.shape[0]):
        true = set(truth.indices[truth.indptr[row] : truth.indptr[row + 1]].tolist())
        if not true:
            continue
        n += 1
        values = scores[row].tolist()
        ranked = sorted(range(len(values)), key=lambda t: (-values[t], t))[:k_max]
        hits = 0
        for k in range(1, k_max + 1):
            hits += ranked[k - 1] in true
            p_sum[k - 1] += hits / k
            r_sum[k - 1] += hits / len(true)
    p = np.array(p_sum) / n
    r = np.array(r_sum) / n
    return np.stack([p, r, harmonic(p, r)])


def evaluation_speed(args, log) -> dict:
    test = synthetic_posts(args.users, args.tags, args.test_posts, 3, seed=3)
    scores = np.random.default_rng(4).random((test.n_posts, args.tags)).astype(np.float32)
    timings = {}
    # Best of several runs (the fast path more often: it is short and noise dominates it).
    for name, fn, repeats in (
        ("metrics_at_k", lambda: metrics_at_k(scores, test.tags, k_max=10), 5 * args.repeats),
        ("reference", lambda: reference_prf_at_k(scores, test.tags, 10), args.repeats),
    ):
        best = float("inf")
        for _ in range(repeats):
            started = time.perf_counter()
            out = fn()
            best = min(best, time.perf_counter() - started)
        timings[name] = (best, out)
    fast, ref = timings["metrics_at_k"][1], timings["reference"][1]
    np.testing.assert_allclose(np.stack([fast.precision, fast.recall, fast.f1]), ref, rtol=1e-9)
    result = {
        "what": "f1@1..10 evaluation",
        "test_posts": test.n_posts,
        "tags": args.tags,
        "metrics_at_k_s": timings["metrics_at_k"][0],
        "reference_s": timings["reference"][0],
        "speedup": timings["reference"][0] / timings["metrics_at_k"][0],
        "agree": True,
    }
    log(result)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--tags", type=int, default=100)
    parser.add_argument("--pitf-posts", type=int, default=25858)
    parser.add_argument("--pitf-epochs", type=int, default=3)
    parser.add_argument("--posts", type=int, default=4000, help="training posts for CNN-PerMLP")
    parser.add_argument("--cnn-epochs", type=int, default=1)
    parser.add_argument("--test-posts", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="CPU thread counts")
    parser.add_argument("--quick", action="store_true", help="a small run (smoke test)")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    if args.quick:
        args.pitf_posts, args.posts, args.pitf_epochs, args.repeats = 3000, 512, 1, 1

    results = []

    def log(result: dict) -> None:
        results.append(result)
        print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in result.items()}), flush=True)

    print(
        f"# torch {torch.__version__}, {platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} default threads, CUDA: {torch.cuda.is_available()}",
        flush=True,
    )
    evaluation_speed(args, log)
    devices = [("cpu", t) for t in args.threads]
    if torch.cuda.is_available():
        devices.append(("cuda", 0))
    for device, threads in devices:
        pitf_throughput(device, threads, args, log)
        for patch in (75, 50):
            cnn_permlp_throughput(device, threads, patch, args, log)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=1)


if __name__ == "__main__":
    main()
