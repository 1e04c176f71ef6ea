"""VLAD codes of convolutional local descriptors, and the choice of the stage by retrieval MAP
(paper 2: Liu Zheng et al. 2020, sections 3.5 and 5.1; VLAD: Jegou et al., CVPR 2010).

Paper 2, section 3.5 (paper 2, eq. 1), for the local descriptors f_ij of one layer l:

1. L2-normalise every local descriptor f_ij.
2. Learn K visual words c_1..c_K by k-means on the normalised descriptors (K = 100, sec. 5.1).
3. For each word c_k: v_k = sum over the f_ij whose nearest word is c_k of (f_ij - c_k).
4. Concatenate v_1..v_K into one K * d_l vector.

The paper says nothing more about normalising the code; we apply the standard VLAD
post-processing (Jegou et al., TPAMI 2012): signed power normalisation sign(v) |v|^alpha
(alpha = 0.5, ``VladConfig.power``; 1 turns it off) then L2 normalisation of the whole code,
so that Euclidean distances between codes (paper 2, eq. 2) are comparable across images with
different numbers of descriptors per word.

Leakage: the codebook is fitted on training images only. ``fit_codebook`` takes the training
image indices *and* the held-out (validation and test) indices as required keyword
arguments, refuses overlapping sets (``LeakageError``) and records both, so an asset check can
prove, from the saved codebook alone, that no held-out image shaped it
(``VladCodebook.check_no_leakage``).

Stage choice (paper 2, section 5.1 and Fig. 9): every validation image queries the training
images ranked by Euclidean distance between codes; a training image is relevant when it
shares at least one tag with the query; MAP@k (k = 15, the paper's neighbourhood size) with
the project's AP definition (``evaluation.metrics.metrics_at_k``) is reported per stage and the
best stage wins.
"""

from __future__ import annotations

import io
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Mapping

import numpy as np
from scipy import sparse
from sklearn.cluster import KMeans, MiniBatchKMeans
from sklearn.metrics.pairwise import euclidean_distances
from threadpoolctl import threadpool_limits

from tagrec_models.evaluation.metrics import metrics_at_k
from tagrec_models.storage.atomic import write_bytes

Log = Callable[[str], None]

_EPS = 1e-12


class LeakageError(ValueError):
    """A held-out image would shape (or has shaped) a codebook fitted on training images."""


@dataclass(frozen=True)
class VladConfig:
    """VLAD hyper-parameters (paper 2, sections 3.5 and 5.1)."""

    n_words: int = 100
    """K, the number of visual words (paper 2, section 5.1: 100)."""
    seed: int = 0
    kmeans: str = "minibatch"
    """``minibatch`` (scikit-learn MiniBatchKMeans) or ``full`` (KMeans, Lloyd)."""
    max_fit_descriptors: int = 200_000
    """Training descriptors sampled (seeded) for k-means; the paper clusters all of them, which
    changes the words little and costs much more."""
    n_init: int = 1
    """k-means++ restarts (scikit-learn's own default for k-means++ is 1)."""
    max_iter: int = 100
    minibatch_size: int = 4096
    power: float = 0.5
    """Exponent of the signed power normalisation (0.5 = signed square root; 1 = none)."""
    encode_batch: int = 512
    """Images encoded per chunk (bounds memory)."""
    threads: int | None = 1
    """BLAS/OpenMP threads for k-means and encoding. 1 by default: on a shared 2-core machine
    scikit-learn's OpenMP k-means ran 10x slower with 2 threads than with 1 (threads spin
    while waiting for a busy core); None leaves the libraries' defaults (all cores)."""

    def __post_init__(self) -> None:
        if self.n_words < 2:
            raise ValueError(f"VladConfig.n_words must be at least 2, got {self.n_words}")
        if self.kmeans not in ("minibatch", "full"):
            raise ValueError(f"VladConfig.kmeans must be 'minibatch' or 'full', got {self.kmeans!r}")
        if self.max_fit_descriptors < self.n_words:
            raise ValueError("VladConfig.max_fit_descriptors must be at least n_words")
        if not 0.0 < self.power <= 1.0:
            raise ValueError(f"VladConfig.power must be in (0, 1], got {self.power}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"VladConfig.threads must be positive or None, got {self.threads}")
        if self.encode_batch < 1 or self.n_init < 1 or self.max_iter < 1 or self.minibatch_size < 1:
            raise ValueError("VladConfig.encode_batch, n_init, max_iter and minibatch_size must be positive")


def l2_normalise(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """x / ||x||_2 along ``axis``; zero vectors stay zero."""
    norm = np.linalg.norm(x, axis=axis, keepdims=True)
    return x / np.maximum(norm, _EPS)


def _index_array(values: object, n_images: int, name: str) -> np.ndarray:
    array = np.asarray(values)
    if array.dtype == bool:
        raise TypeError(f"{name} must be image indices, not a boolean mask")
    array = array.astype(np.int64).ravel()
    if len(np.unique(array)) != len(array):
        raise ValueError(f"{name} has duplicate image indices")
    if len(array) and (array.min() < 0 or array.max() >= n_images):
        raise ValueError(f"{name} has indices outside [0, {n_images}): min {array.min()}, max {array.max()}")
    return np.sort(array)


def _check_descriptors(descriptors: np.ndarray) -> None:
    if descriptors.ndim != 3:
        raise ValueError(f"descriptors must be [n_images, positions, channels], got shape {descriptors.shape}")


@dataclass(frozen=True)
class VladCodebook:
    """K visual words of one stage, with the image sets that fitted (and must not have
    fitted) them."""

    stage: str
    centroids: np.ndarray
    train_images: np.ndarray
    held_out_images: np.ndarray
    n_fit_descriptors: int
    inertia: float
    config: VladConfig

    @property
    def n_words(self) -> int:
        return self.centroids.shape[0]

    @property
    def dim(self) -> int:
        return self.centroids.shape[0] * self.centroids.shape[1]

    def check_no_leakage(self, held_out: np.ndarray | None = None) -> None:
        """Raise ``LeakageError`` if an image of ``held_out`` (default: the recorded held-out
        set) is among the images the codebook was fitted on."""
        held = self.held_out_images if held_out is None else np.asarray(held_out, dtype=np.int64)
        leaked = np.intersect1d(self.train_images, held)
        if len(leaked):
            raise LeakageError(
                f"VLAD codebook of stage {self.stage!r} was fitted on {len(leaked)} held-out "
                f"image(s), e.g. {leaked[:5].tolist()}"
            )

    def encode(self, descriptors: np.ndarray, images: np.ndarray | None = None, log: Log | None = None) -> np.ndarray:
        """VLAD codes float32 ``[len(images), K * C]`` of ``descriptors[images]`` (all rows by
        default). ``descriptors`` may be a memory map; it is read ``encode_batch`` rows at a time."""
        with threadpool_limits(limits=self.config.threads):
            return vlad_encode(
                descriptors, self.centroids, images=images, power=self.config.power, batch=self.config.encode_batch, log=log
            )

    def save(self, path: str | Path) -> Path:
        """Write atomically as ``.npz`` (arrays + the config as fields)."""
        buffer = io.BytesIO()
        np.savez(
            buffer,
            stage=np.array(self.stage),
            centroids=self.centroids,
            train_images=self.train_images,
            held_out_images=self.held_out_images,
            n_fit_descriptors=np.array(self.n_fit_descriptors),
            inertia=np.array(self.inertia),
            **{f"config_{k}": np.array(v) for k, v in asdict(self.config).items()},
        )
        return write_bytes(path, buffer.getvalue())

    @classmethod
    def load(cls, path: str | Path) -> "VladCodebook":
        with np.load(path, allow_pickle=False) as data:
            config = VladConfig(**{k.removeprefix("config_"): data[k].item() for k in data.files if k.startswith("config_")})
            return cls(
                stage=str(data["stage"]),
                centroids=data["centroids"],
                train_images=data["train_images"],
                held_out_images=data["held_out_images"],
                n_fit_descriptors=int(data["n_fit_descriptors"]),
                inertia=float(data["inertia"]),
                config=config,
            )


def fit_codebook(
    descriptors: np.ndarray,
    *,
    train_images: np.ndarray,
    held_out_images: np.ndarray,
    stage: str = "",
    config: VladConfig = VladConfig(),
    log: Log | None = None,
) -> VladCodebook:
    """k-means codebook (paper 2, sec. 3.5 steps 1-2) on the L2-normalised local descriptors
    of ``train_images`` only.

    ``descriptors``: ``[n_images, positions, C]`` of *all* images (rows by image index, e.g.
    the memory-mapped ``local_<stage>.npy``); only the rows of ``train_images`` are read.
    ``held_out_images``: the validation and test image indices; an overlap with
    ``train_images`` is a ``LeakageError``. All-zero descriptors (the rows of broken images)
    are left out of the fit.
    """
    _check_descriptors(descriptors)
    n_images = descriptors.shape[0]
    train = _index_array(train_images, n_images, "train_images")
    held = _index_array(held_out_images, n_images, "held_out_images")
    if len(train) == 0:
        raise ValueError("fit_codebook needs at least one training image")
    leaked = np.intersect1d(train, held)
    if len(leaked):
        raise LeakageError(
            f"train_images and held_out_images share {len(leaked)} image(s), e.g. {leaked[:5].tolist()}: "
            "a codebook must be fitted on training images only"
        )
    log = log or (lambda message: None)
    start = time.perf_counter()
    rng = np.random.default_rng(config.seed)
    local = l2_normalise(np.asarray(descriptors[train], dtype=np.float32).reshape(-1, descriptors.shape[2]))
    local = local[np.linalg.norm(local, axis=1) > 0.5]  # unit vectors kept, zero rows dropped
    if len(local) < config.n_words:
        raise ValueError(f"stage {stage!r}: {len(local)} non-zero training descriptors for {config.n_words} words")
    if len(local) > config.max_fit_descriptors:
        local = local[np.sort(rng.choice(len(local), config.max_fit_descriptors, replace=False))]
    seed = int(rng.integers(2**31 - 1))
    if config.kmeans == "minibatch":
        model = MiniBatchKMeans(
            n_clusters=config.n_words,
            random_state=seed,
            n_init=config.n_init,
            max_iter=config.max_iter,
            batch_size=config.minibatch_size,
        )
    else:
        model = KMeans(n_clusters=config.n_words, random_state=seed, n_init=config.n_init, max_iter=config.max_iter)
    with threadpool_limits(limits=config.threads):
        model.fit(local)
    log(
        f"vlad: stage {stage!r} codebook K={config.n_words} on {len(local)} descriptors of "
        f"{len(train)} training images in {time.perf_counter() - start:.1f} s"
    )
    return VladCodebook(
        stage=stage,
        centroids=model.cluster_centers_.astype(np.float32),
        train_images=train,
        held_out_images=held,
        n_fit_descriptors=len(local),
        inertia=float(model.inertia_),
        config=config,
    )


def vlad_encode(
    descriptors: np.ndarray,
    centroids: np.ndarray,
    images: np.ndarray | None = None,
    power: float = 0.5,
    batch: int = 512,
    log: Log | None = None,
) -> np.ndarray:
    """VLAD codes (paper 2, eq. 1, then power and L2 normalisation) of ``descriptors[images]``.

    Each descriptor is L2-normalised and assigned to its nearest centroid (Euclidean);
    the residuals are summed per centroid; the ``K x C`` result, flattened word-major, is
    signed-power- and L2-normalised. An image whose descriptors are all zero (a broken
    image) gets the zero code.
    """
    _check_descriptors(descriptors)
    centroids = np.asarray(centroids, dtype=np.float32)
    if centroids.ndim != 2 or centroids.shape[1] != descriptors.shape[2]:
        raise ValueError(f"centroids {centroids.shape} do not match descriptors with {descriptors.shape[2]} channels")
    if images is None:
        rows = np.arange(descriptors.shape[0])
    else:
        _index_array(images, descriptors.shape[0], "images")  # range and duplicate checks
        rows = np.asarray(images, dtype=np.int64).ravel()  # in the caller's order
    k, c = centroids.shape
    half_sq_norms = 0.5 * (centroids**2).sum(axis=1)
    codes = np.empty((len(rows), k * c), dtype=np.float32)
    log = log or (lambda message: None)
    for start in range(0, len(rows), batch):
        chunk = rows[start : start + batch]
        local = l2_normalise(np.asarray(descriptors[chunk], dtype=np.float32))  # [b, G, C]
        valid = np.linalg.norm(local, axis=2) > 0.5  # [b, G]
        # argmin ||x - c||^2 = argmax (x . c - ||c||^2 / 2)
        nearest = np.argmax(local @ centroids.T - half_sq_norms, axis=2)  # [b, G]
        assign = np.zeros(nearest.shape + (k,), dtype=np.float32)
        np.put_along_axis(assign, nearest[..., None], 1.0, axis=2)
        assign *= valid[..., None]
        # v_k = sum_{x -> k} x - n_k c_k, for all images of the chunk at once
        sums = np.einsum("bgk,bgc->bkc", assign, local, optimize=True)
        residual = sums - assign.sum(axis=1)[..., None] * centroids[None]
        code = residual.reshape(len(chunk), -1)
        code = np.sign(code) * np.abs(code) ** power
        codes[start : start + len(chunk)] = l2_normalise(code)
        if len(rows) > batch:
            log(f"vlad: encoded {min(start + batch, len(rows))}/{len(rows)} images")
    return codes


@dataclass(frozen=True)
class RetrievalMAP:
    """Neighbour-retrieval MAP@k over the queries that have at least one relevant image."""

    map: float
    k: int
    n_queries: int
    n_without_relevant: int


def relevance(image_tags: sparse.spmatrix, queries: np.ndarray, database: np.ndarray) -> sparse.csr_matrix:
    """Binary ``[len(queries), len(database)]``: 1 where the two images share a tag."""
    tags = sparse.csr_matrix(image_tags, dtype=np.float32)
    shared = tags[queries] @ tags[database].T
    shared = sparse.csr_matrix(shared)
    shared.data = (shared.data > 0).astype(np.float32)
    shared.eliminate_zeros()
    return shared


def retrieval_map(
    codes: np.ndarray,
    image_tags: sparse.spmatrix,
    queries: np.ndarray,
    database: np.ndarray,
    k: int = 15,
    chunk: int = 256,
) -> RetrievalMAP:
    """MAP@k of ranking ``database`` images by Euclidean distance of ``codes`` to each query
    (paper 2, section 5.1); relevant = shares at least one tag (rows of ``image_tags``).

    ``codes`` and ``image_tags`` are indexed by image; ``queries`` and ``database`` are
    disjoint image index arrays (a query in the database would find itself).
    """
    codes = np.asarray(codes)
    if codes.ndim != 2:
        raise ValueError(f"codes must be [n_images, dim], got {codes.shape}")
    if image_tags.shape[0] != codes.shape[0]:
        raise ValueError(f"image_tags has {image_tags.shape[0]} rows but codes has {codes.shape[0]}")
    queries = _index_array(queries, codes.shape[0], "queries")
    database = _index_array(database, codes.shape[0], "database")
    if len(np.intersect1d(queries, database)):
        raise ValueError("queries and database overlap: a query would retrieve itself")
    if len(queries) == 0 or len(database) == 0:
        raise ValueError("retrieval_map needs at least one query and one database image")
    db_codes = np.asarray(codes[database], dtype=np.float32)
    db_sq = (db_codes**2).sum(axis=1)[None, :]
    total, counted, empty = 0.0, 0, 0
    for start in range(0, len(queries), chunk):
        q = queries[start : start + chunk]
        truth = relevance(image_tags, q, database)
        has_relevant = truth.getnnz(axis=1) > 0
        empty += int((~has_relevant).sum())
        if not has_relevant.any():
            continue
        q_codes = np.asarray(codes[q[has_relevant]], dtype=np.float32)
        distances = euclidean_distances(q_codes, db_codes, Y_norm_squared=db_sq)
        result = metrics_at_k(-distances, truth[has_relevant], k_max=k)
        total += float(result.map[-1]) * result.n_posts
        counted += result.n_posts
    if counted == 0:
        raise ValueError("no query shares a tag with any database image: MAP is undefined")
    return RetrievalMAP(map=total / counted, k=min(k, len(database)), n_queries=counted, n_without_relevant=empty)


@dataclass(frozen=True)
class StageSelection:
    """MAP@k per stage and the best stage (ties go to the earlier stage in the input order)."""

    best: str
    map_by_stage: dict[str, float]
    k: int
    n_queries: int

    def to_rows(self) -> list[dict[str, object]]:
        return [{"stage": s, "map": m, "best": s == self.best} for s, m in self.map_by_stage.items()]


def select_stage(
    codes_by_stage: Mapping[str, np.ndarray],
    image_tags: sparse.spmatrix,
    queries: np.ndarray,
    database: np.ndarray,
    k: int = 15,
) -> StageSelection:
    """Paper 2, section 5.1: the stage whose codes give the best neighbour-retrieval MAP@k of
    ``queries`` (validation images) against ``database`` (training images)."""
    if not codes_by_stage:
        raise ValueError("select_stage got no stage")
    maps = {}
    n_queries = 0
    for stage, codes in codes_by_stage.items():
        result = retrieval_map(codes, image_tags, queries, database, k=k)
        maps[stage] = result.map
        n_queries = result.n_queries
    best = max(maps, key=lambda s: maps[s])  # max keeps the first of equal values
    return StageSelection(best=best, map_by_stage=maps, k=k, n_queries=n_queries)


@dataclass(frozen=True)
class StageSearch:
    selection: StageSelection
    codebooks: dict[str, VladCodebook]


def search_stages(
    descriptors_by_stage: Mapping[str, np.ndarray],
    image_tags: sparse.spmatrix,
    *,
    train_images: np.ndarray,
    val_images: np.ndarray,
    held_out_images: np.ndarray,
    config: VladConfig = VladConfig(),
    k: int = 15,
    log: Log | None = None,
) -> StageSearch:
    """For each stage: fit the codebook on ``train_images``, encode training and validation
    images, and score validation-to-training retrieval; return the selection and the
    codebooks (encode every image with ``search.codebooks[search.selection.best]``).

    ``held_out_images`` must contain every non-training image (validation and test);
    ``val_images`` must be a subset of it.
    """
    log = log or (lambda message: None)
    val = np.asarray(val_images, dtype=np.int64)
    if not np.isin(val, np.asarray(held_out_images, dtype=np.int64)).all():
        raise LeakageError("val_images must be part of held_out_images")
    codebooks: dict[str, VladCodebook] = {}
    maps: dict[str, float] = {}
    n_queries = 0
    for stage, descriptors in descriptors_by_stage.items():
        codebook = fit_codebook(
            descriptors, train_images=train_images, held_out_images=held_out_images, stage=stage, config=config, log=log
        )
        # Encode only the training and validation images, compactly: stage-7 codes are
        # 32,000-d, so codes for every image of a large dataset would not fit in memory twice.
        wanted = np.concatenate([codebook.train_images, np.sort(val)])
        codes = codebook.encode(descriptors, wanted)
        n_train = len(codebook.train_images)
        result = retrieval_map(
            codes,
            sparse.csr_matrix(image_tags)[wanted],
            queries=np.arange(n_train, len(wanted)),
            database=np.arange(n_train),
            k=k,
        )
        codebooks[stage], maps[stage], n_queries = codebook, result.map, result.n_queries
        log(f"vlad: stage {stage!r} validation MAP@{k} = {result.map:.4f} ({result.n_queries} queries)")
    best = max(maps, key=lambda s: maps[s])  # max keeps the first of equal values
    log(f"vlad: best stage {best!r} (MAP@{k} {maps[best]:.4f})")
    return StageSearch(selection=StageSelection(best=best, map_by_stage=maps, k=k, n_queries=n_queries), codebooks=codebooks)


# -- where the vlad asset keeps its codes and codebook (read by the paper-2 sweeps and by
# `tagrec suggest`, which must encode new images with the same codebook) ---------------------
def codes_name(stage: str) -> str:
    """The name of the VLAD codes' ``ArrayFile``: it carries the stage chosen on validation."""
    return f"vlad:{stage}"


def stage_of_codes(name: str) -> str:
    """Inverse of ``codes_name`` ("" when ``name`` names no stage)."""
    prefix, _, stage = name.partition(":")
    return stage if prefix == "vlad" else ""


def codebook_file(codes_path: str | Path, stage: str) -> Path:
    """The codebook of ``stage``, saved beside the codes at ``codes_path``."""
    return Path(codes_path).parent / f"vlad_codebook_{stage}.npz"
