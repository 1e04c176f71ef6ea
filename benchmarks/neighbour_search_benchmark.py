"""Neighbour search benchmark (issue 13): the exact top-k search of
``tagrec_models.neighbours.search`` (paper 2, eqs. 2-5) through each of its back ends, side by
side in one run, on generated codes of realistic sizes. Prints figures; asserts nothing.

Usage::

    python benchmarks/neighbour_search_benchmark.py [--k 15] [--single 20] [--skip-distances]

Cases (``--cases`` picks some by name):

* ``vlad5k`` / ``vlad20k``: 5,000 / 20,000 training codes of 4,096-d VLAD-like vectors
  (Gaussian topic clusters, power-normalised, L2-normalised float32, as
  ``paper2_benchmark.py`` generates them), 200 and 2,000 queries, each searched with paper 2's
  groups (UG, lambda 0.4: every group mate is a candidate) and without (noUG, visual only), plus
  ``--single`` queries one at a time (what a user uploading one photo waits);
* ``cnn``: the 1,280-d CNN embedding at Corel5k size: 4,500 training images, 499 queries,
  visual only (Corel5k has no groups); non-negative, unnormalised vectors, so the index back
  ends find the farthest image with the lifted index.

Back ends: ``dense`` (one float32 product per query batch), ``blocked`` (the training set
streamed through BLAS in blocks), ``index`` (scikit-learn ``NearestNeighbors``, algorithm
"brute") and ``faiss`` (``IndexFlatL2``). ``build s`` is the index construction (scikit-learn
fit, faiss add, both for the nearest and the farthest-point index); ``search s`` the search of
all queries of the row; ``x dense`` the back end's search time over dense's (below 1 =
faster than dense); ``same`` whether its neighbours equal dense's and its scores agree to 1e-12.

Threads: faiss runs OpenMP, NumPy its OpenBLAS; faiss is set (``faiss.omp_set_num_threads``)
to the thread count NumPy's BLAS uses (threadpoolctl), so both use the same cores.

The last table (``--skip-distances`` leaves it out) times the Corel5k annotation models'
distance step: 2PKNN's cosine distance matrix, 499 x 4,500 on the 1,280-d embedding, as
``crossmodal.distances.base_distance`` computes it (float64 BLAS) against faiss's float32
``pairwise_distances`` (inner product) and a float32 NumPy product, with the largest
difference from the float64 answer.

The machine's CPU may be shared with other work: compare figures within one run.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
from scipy import sparse
from threadpoolctl import threadpool_info

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tagrec_models.crossmodal.distances import base_distance  # noqa: E402
from tagrec_models.neighbours.search import NeighbourIndex, faiss_available  # noqa: E402

BACKENDS = ("dense", "blocked", "index", "faiss")
N_TOPICS, N_GROUPS, LAM = 80, 60, 0.4


def numpy_blas_threads() -> int:
    """The thread count of NumPy's own BLAS (not faiss's bundled one)."""
    for pool in threadpool_info():
        if pool.get("user_api") == "blas" and "numpy" in pool.get("filepath", ""):
            return int(pool["num_threads"])
    return os.cpu_count() or 1


def vlad_like(n: int, dim: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """L2-normalised, power-normalised Gaussian-cluster codes and their topics."""
    topic = rng.integers(0, N_TOPICS, n)
    centres = rng.standard_normal((N_TOPICS, dim), dtype=np.float32)
    codes = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, 5_000):
        stop = min(start + 5_000, n)
        block = centres[topic[start:stop]] + 2.0 * rng.standard_normal((stop - start, dim), dtype=np.float32)
        block = np.sign(block) * np.sqrt(np.abs(block))
        codes[start:stop] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return codes, topic


def cnn_like(n: int, dim: int, rng: np.random.Generator) -> np.ndarray:
    """Non-negative, unnormalised vectors like a ReLU6-pooled embedding (norms vary)."""
    topic = rng.integers(0, N_TOPICS, n)
    centres = rng.gamma(0.6, 0.5, size=(N_TOPICS, dim)).astype(np.float32)
    noise = rng.gamma(0.6, 0.3, size=(n, dim)).astype(np.float32)
    return np.clip(centres[topic] + noise, 0.0, 6.0) * rng.uniform(0.7, 1.3, size=(n, 1)).astype(np.float32)


def groups_of(topic: np.ndarray, rng: np.random.Generator) -> sparse.csr_matrix:
    """Each image in its topic's group, half of them in one more random group (paper2_benchmark)."""
    n = len(topic)
    rows = np.concatenate([np.arange(n), rng.integers(0, n, n // 2)])
    cols = np.concatenate([topic % N_GROUPS, rng.integers(0, N_GROUPS, n // 2)])
    g = sparse.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(n, N_GROUPS))
    g.data[:] = 1.0
    return g


def build(backend: str, train: np.ndarray, groups) -> tuple[NeighbourIndex, float]:
    start = time.perf_counter()
    index = NeighbourIndex(train, groups=groups, backend=backend, index_algorithm="brute")
    if backend in ("index", "faiss"):
        index._nearest_index()
        index._farthest_index()
    return index, time.perf_counter() - start


def timed_search(index: NeighbourIndex, queries, k: int, query_groups, use_groups: bool, batch_size: int):
    start = time.perf_counter()
    found = index.search(queries, k, lam=LAM, query_groups=query_groups, use_groups=use_groups,
                         batch_size=batch_size)
    return found, time.perf_counter() - start


def run_case(name: str, train, train_groups, queries, query_groups, k: int, query_counts, single: int, backends):
    print(f"\n== {name}: {train.shape[0]} training codes x {train.shape[1]}-d, k={k}", flush=True)
    indices = {}
    for backend in backends:
        indices[backend], seconds = build(backend, train, train_groups)
        print(f"   build {backend:<8} {seconds:7.2f} s", flush=True)
    settings = [("UG", True), ("noUG", False)] if train_groups is not None else [("noUG", False)]
    print(f"   {'setting':<7} {'queries':>8} {'backend':<8} {'search s':>9} {'x dense':>8} {'ms/query':>9} same")
    for label, use_groups in settings:
        runs = [(n_q, 256) for n_q in query_counts] + ([(single, 1)] if single else [])
        for n_q, batch in runs:
            q = queries[:n_q]
            qg = query_groups[:n_q] if use_groups else None
            found = {}
            for backend in backends:
                found[backend], seconds = timed_search(indices[backend], q, k, qg, use_groups, batch)
                ref = found[backends[0]]
                same = bool(np.array_equal(found[backend].index, ref.index)
                            and np.allclose(found[backend].score, ref.score, rtol=0, atol=1e-12))
                if backend == backends[0]:
                    base = seconds
                shown = f"{n_q} x1" if batch == 1 else str(n_q)
                print(f"   {label:<7} {shown:>8} {backend:<8} {seconds:9.3f} {seconds / base:8.2f} "
                      f"{1000 * seconds / n_q:9.2f} {'yes' if same else 'NO'}", flush=True)


def distances_table(rng: np.random.Generator) -> None:
    """2PKNN's cosine distance step on the Corel5k-sized CNN embedding."""
    ref = cnn_like(4500, 1280, rng)
    query = cnn_like(499, 1280, rng)
    print("\n== 2PKNN cosine distance matrix, 499 x 4500 x 1280-d (best of 3)")
    timings = {}

    def best(fn):
        out, times = None, []
        for _ in range(3):
            start = time.perf_counter()
            out = fn()
            times.append(time.perf_counter() - start)
        return out, min(times)

    exact, timings["numpy float64 (base_distance)"] = best(lambda: base_distance("cosine", query, ref))

    def unit32(x):
        return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)

    f32, timings["numpy float32"] = best(lambda: np.maximum(1.0 - unit32(query) @ unit32(ref).T, 0.0))
    results = {"numpy float32": f32}
    if faiss_available():
        import faiss

        def with_faiss():
            ip = faiss.pairwise_distances(unit32(query), unit32(ref), metric=faiss.METRIC_INNER_PRODUCT)
            return np.maximum(1.0 - ip, 0.0)

        results["faiss float32 pairwise_distances"], timings["faiss float32 pairwise_distances"] = best(with_faiss)
    base = timings["numpy float64 (base_distance)"]
    for name, seconds in timings.items():
        diff = 0.0 if name not in results else float(np.abs(results[name] - exact).max())
        changed = 0.0
        if name in results:  # share of queries whose 10 nearest training images change order
            a = np.argsort(exact, axis=1, kind="stable")[:, :10]
            b = np.argsort(results[name].astype(np.float64), axis=1, kind="stable")[:, :10]
            changed = float((a != b).any(axis=1).mean())
        print(f"   {name:<34} {seconds:7.3f} s  x{seconds / base:5.2f}  max |diff| {diff:.1e}  "
              f"top-10 order changed {100 * changed:.0f}% of queries", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", nargs="+", default=["vlad5k", "vlad20k", "cnn"])
    parser.add_argument("--k", type=int, default=15, help="neighbours per query (paper 2: 15)")
    parser.add_argument("--single", type=int, default=20, help="queries also searched one at a time (0: none)")
    parser.add_argument("--skip-distances", action="store_true")
    args = parser.parse_args()
    threads = numpy_blas_threads()
    backends = BACKENDS if faiss_available() else BACKENDS[:-1]
    if faiss_available():
        import faiss

        faiss.omp_set_num_threads(threads)
        print(f"faiss {faiss.__version__}: {faiss.omp_get_max_threads()} OpenMP threads "
              f"(= NumPy's BLAS threads, {threads}); {os.cpu_count()} CPUs (possibly shared)")
    else:
        print(f"faiss not installed: dense, blocked and index only; {os.cpu_count()} CPUs")
    rng = np.random.default_rng(0)
    for case in args.cases:
        if case in ("vlad5k", "vlad20k"):
            n = 5_000 if case == "vlad5k" else 20_000
            codes, topic = vlad_like(n + 2_000, 4096, rng)
            groups = groups_of(topic, rng)
            run_case(case, codes[:n], groups[:n], codes[n:], groups[n:], args.k, (200, 2000), args.single, backends)
            del codes
        elif case == "cnn":
            codes = cnn_like(4500 + 499, 1280, rng)
            run_case(case, codes[:4500], None, codes[4500:], None, args.k, (499,), args.single, backends)
        else:
            raise SystemExit(f"unknown case {case!r}")
    if not args.skip_distances:
        distances_table(rng)


if __name__ == "__main__":
    main()
