"""Paper 2 benchmark: recommendation latency of the weighted-walk recommender (UG-NW) per
query, neighbour search included, against a brute-force NumPy reference in the same run, and
how it grows with the training set (generated VLAD codes, 5k -> 20k -> 100k images).

Usage::

    python benchmarks/paper2_benchmark.py [--sizes 5000 20000 100000] [--dim 4096]
        [--queries 200] [--single 100]

For each training-set size it prints:

* ``single p50/p95``: wall time of ``model.score`` on one post at a time (what a user
  uploading one photo waits), for our model and for the reference;
* ``batched``: the whole test set scored in one call, divided by the number of queries;
* ``agree``: the share of queries where the reference's top-10 tags equal ours;
* the growth exponent between sizes (1.0 = linear).

The reference is deliberately plain: per query, one matrix-vector product for the distances
to every training image, eq. 3-5 over the whole set, a full sort, then eq. 6 iterated on a
dense transition matrix of the query's graph (the target, its neighbours and
the tags they carry). Codes are L2-normalised, power-normalised
Gaussian clusters (VLAD-like); groups and tags follow the clusters. The machine's CPU may be
shared with other work: compare figures within one run.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
from scipy import sparse

from tagrec_models.data import Posts, SideInfo, TrainingData
from tagrec_models.recommenders import get_recommender

N_TAGS, N_GROUPS, N_TOPICS, N_USERS, K, LAM, D = 1000, 60, 80, 2000, 15, 0.4, 0.85


def generate(n_train: int, n_queries: int, dim: int, seed: int = 0) -> tuple[TrainingData, Posts, SideInfo]:
    rng = np.random.default_rng(seed)
    n = n_train + n_queries
    topic = rng.integers(0, N_TOPICS, n)
    centres = rng.standard_normal((N_TOPICS, dim), dtype=np.float32)
    codes = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, 10_000):  # in chunks: the full float64 noise would not fit
        stop = min(start + 10_000, n)
        block = centres[topic[start:stop]] + 2.0 * rng.standard_normal((stop - start, dim), dtype=np.float32)
        block = np.sign(block) * np.sqrt(np.abs(block))  # VLAD power normalisation
        codes[start:stop] = block / np.linalg.norm(block, axis=1, keepdims=True)
    topic_tags = rng.integers(0, N_TAGS, size=(N_TOPICS, 12))
    n_tags_each = rng.integers(3, 7, n)
    rows = np.repeat(np.arange(n), n_tags_each)
    cols = topic_tags[topic[rows], rng.integers(0, 12, len(rows))]
    tags = sparse.csr_matrix((np.ones(len(rows), dtype=np.float32), (rows, cols)), shape=(n, N_TAGS))
    tags.data[:] = 1.0
    g_rows = np.concatenate([np.arange(n), rng.integers(0, n, n // 2)])
    g_cols = np.concatenate([topic % N_GROUPS, rng.integers(0, N_GROUPS, n // 2)])
    groups = sparse.csr_matrix((np.ones(len(g_rows), dtype=np.float32), (g_rows, g_cols)), shape=(n, N_GROUPS))
    groups.data[:] = 1.0
    users = rng.integers(0, N_USERS, n)
    side = SideInfo(features={"vlad": codes}, image_groups=groups)

    def posts(idx: np.ndarray) -> Posts:
        return Posts(user=users[idx], image=idx, tags=tags[idx], n_users=N_USERS, n_images=n)

    return TrainingData(train=posts(np.arange(n_train)), side=side), posts(np.arange(n_train, n)), side


class Reference:
    """Brute force, one query at a time, plain NumPy (no index, no batching, no sparse walk)."""

    def __init__(self, data: TrainingData) -> None:
        self.x = data.side.feature("vlad")[data.train.image]
        self.sq = np.einsum("ij,ij->i", self.x, self.x).astype(np.float64)
        self.groups = data.side.require_groups()[data.train.image].toarray() > 0
        self.n_groups = self.groups.sum(axis=1)
        self.tags = data.train.tags.toarray() > 0
        self.counts = self.tags.sum(axis=0)

    def recommend(self, code: np.ndarray, groups: np.ndarray) -> np.ndarray:
        d2 = self.sq - 2.0 * (self.x @ code).astype(np.float64) + float(code @ code)
        d = np.sqrt(np.maximum(d2, 0.0))
        s = 1.0 - (d - d.min()) / (d.max() - d.min())
        inter = self.groups[:, groups].sum(axis=1)
        union = self.n_groups + groups.sum() - inter
        y = LAM * s + (1 - LAM) * np.where(union > 0, inter / np.maximum(union, 1), 0.0)
        nb = np.lexsort((np.arange(len(y)), -y))[:K]
        w = y[nb] / y[nb].sum()
        # Dense eq. 6 on [u, n_1..n_K, the tags the neighbours carry].
        carried = np.flatnonzero(self.tags[nb].any(axis=0))
        size = 1 + K + len(carried)
        adj = np.zeros((size, size))
        adj[0, 1 : 1 + K] = adj[1 : 1 + K, 0] = 1.0
        adj[1 : 1 + K, 1 + K :] = self.tags[nb][:, carried]
        adj[1 + K :, 1 : 1 + K] = self.tags[nb][:, carried].T
        weight = np.ones(size)
        weight[1 : 1 + K] = w
        out = adj.sum(axis=0)
        m = adj * np.divide(weight, out, out=np.zeros(size), where=out > 0)[None, :]
        r = np.zeros(size)
        r[0] = 1.0
        p = r.copy()
        for _ in range(1000):
            nxt = (1 - D) * r + D * (m @ p)
            if np.abs(nxt - p).sum() < 1e-10:
                p = nxt
                break
            p = nxt
        score = np.zeros(N_TAGS)
        score[carried] = p[1 + K :] / p.sum()
        prior = self.counts / (self.counts.max() + 1.0)
        return np.where(score > 0, score, prior - 1.0)


def top10(scores: np.ndarray) -> np.ndarray:
    return np.argsort(-scores, axis=-1, kind="stable")[..., :10]


def run(n_train: int, dim: int, n_queries: int, n_single: int) -> dict[str, float]:
    t0 = time.perf_counter()
    data, test, side = generate(n_train, n_queries, dim)
    gen_s = time.perf_counter() - t0
    model = get_recommender("ug_nw")()
    t0 = time.perf_counter()
    model.fit(data)
    fit_s = time.perf_counter() - t0
    backend = model.memory.index.backend
    model.score(test.subset(np.arange(2)), side)  # builds the scikit-learn index once

    t0 = time.perf_counter()
    batched = model.score(test, side)
    batched_ms = 1000 * (time.perf_counter() - t0) / n_queries

    single = []
    for q in range(n_single):
        post = test.subset(np.array([q]))
        t0 = time.perf_counter()
        model.score(post, side)
        single.append(1000 * (time.perf_counter() - t0))

    reference = Reference(data)
    query_codes = side.feature("vlad")[test.image]
    query_groups = side.require_groups()[test.image].toarray() > 0
    ref_ms, agree = [], 0
    for q in range(n_single):
        t0 = time.perf_counter()
        ref_scores = reference.recommend(query_codes[q], query_groups[q])
        ref_ms.append(1000 * (time.perf_counter() - t0))
        agree += int((top10(ref_scores) == top10(batched[q])).all())
    return {
        "n_train": n_train,
        "backend": backend,
        "gen_s": gen_s,
        "fit_s": fit_s,
        "batched_ms": batched_ms,
        "p50": float(np.percentile(single, 50)),
        "p95": float(np.percentile(single, 95)),
        "ref_p50": float(np.percentile(ref_ms, 50)),
        "ref_p95": float(np.percentile(ref_ms, 95)),
        "agree": agree / n_single,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[5000, 20000, 100000])
    parser.add_argument("--dim", type=int, default=4096)
    parser.add_argument("--queries", type=int, default=200, help="test posts per size")
    parser.add_argument("--single", type=int, default=100, help="posts timed one at a time")
    args = parser.parse_args()
    n_single = min(args.single, args.queries)
    print(f"paper 2 benchmark: UG-NW (k={K}, lambda={LAM}, d={D}), dim {args.dim}, {args.queries} test posts, "
          f"{n_single} timed singly; {os.cpu_count()} CPUs (possibly shared)")
    header = (f"{'n_train':>8} {'backend':>7} {'fit s':>6} {'batched ms/q':>12} {'single p50':>10} {'p95':>7} "
              f"{'ref p50':>8} {'ref p95':>8} {'agree':>6}")
    print(header)
    rows = []
    for n in args.sizes:
        r = run(n, args.dim, args.queries, n_single)
        rows.append(r)
        print(f"{r['n_train']:>8} {r['backend']:>7} {r['fit_s']:>6.2f} {r['batched_ms']:>12.2f} {r['p50']:>10.2f} "
              f"{r['p95']:>7.2f} {r['ref_p50']:>8.2f} {r['ref_p95']:>8.2f} {r['agree']:>6.2f}", flush=True)
    for a, b in zip(rows, rows[1:]):
        scale = np.log(b["n_train"] / a["n_train"])
        print(f"growth {a['n_train']} -> {b['n_train']}: exponent batched {np.log(b['batched_ms'] / a['batched_ms']) / scale:.2f}, "
              f"single p50 {np.log(b['p50'] / a['p50']) / scale:.2f}, reference p50 {np.log(b['ref_p50'] / a['ref_p50']) / scale:.2f} "
              f"(1.0 = linear)")


if __name__ == "__main__":
    main()
