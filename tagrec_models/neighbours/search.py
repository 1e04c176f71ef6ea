"""Exact top-k neighbour search with paper 2's score (section 4.1, paper 2, eqs. 2-5), batched.

For a query image p and every training image x the score is

    y(p, x) = lambda * s(p, x) + (1 - lambda) * J(g_p, g_x)  [+ bonus if x is the user's own]

with ``s`` the min-max normalised Euclidean similarity over the *whole* training set (paper 2, eq. 3)
and ``J`` the Jaccard coefficient of the group sets (paper 2, eq. 4). The top k by ``y`` are the
neighbours (ties go to the lower training row, so every back end gives the same answer).

Four back ends, one answer:

* ``"dense"``: every (query, training image) score from one BLAS product per query batch.
  Simplest; best while the training set is small.
* ``"blocked"``: streams the training set through float32 BLAS in blocks, keeping only each
  query's running nearest and farthest images and the screened distances of the candidate
  set (below); memory stays bounded however large the training set, time grows linearly.
* ``"index"``: the same candidate set, with the nearest and farthest images found by a
  scikit-learn ``NearestNeighbors`` index (``index_algorithm``: "brute", "ball_tree"...); its
  group mates are all scored exactly, as the index gives no distances for them.
* ``"faiss"``: the index back end with faiss's exact flat index (``IndexFlatL2``; never an
  approximate index, the answer must be exact) in place of scikit-learn's: the same candidate
  set, the farthest image by the same negation or lifting (below). Needs ``faiss-cpu`` (the
  ``faiss`` extra); its index holds its own float32 copy of the codes (a second, lifted one
  for codes of unequal norm), built on first search and never pickled.

Exactness of the candidate set rests on one observation: a training image that shares no
group with the query (and is not the user's own) scores ``lambda * s``, which is at most
the score of each of the query's m visual nearest neighbours. So the exact top m lies in
{m visual nearest neighbours} U {images sharing a group} U {the user's own images}; only
those are scored. ``d_min`` is the nearest neighbour's distance; ``d_max`` (paper 2, eq. 3 needs the
*farthest* training image) comes from the farthest-point search: the blocked back end keeps
it on the way; the index answers it as a nearest-neighbour query: for codes of equal norm
(VLAD codes are L2-normalised) the farthest point from q is the nearest to -q; otherwise the
codes are lifted onto a sphere with one extra coordinate ``sqrt(C - 2|x|^2)``, where
``|(-q, 0) - (x, sqrt(C - 2|x|^2))|^2 = const + 2 q.x - |x|^2``, whose minimum is the maximum
of ``|q - x|^2``.

Why "auto" picks neither index: measured on this project's 2-CPU machine (faiss 1.15.1 on 2
OpenMP threads, NumPy's OpenBLAS on 2 threads; another job shared the CPU), all in one run of
``nice -n 10 python benchmarks/neighbour_search_benchmark.py``, seconds for all queries, k = 15,
every back end giving the same answer:

=========================================  ======  =======  =====  =====
case                                        dense  blocked  index  faiss
=========================================  ======  =======  =====  =====
5k VLAD 4096-d, 200 queries, groups         0.17    0.14    0.65   0.42
5k VLAD, 2,000 queries, groups              1.69    1.59    6.94   4.77
5k VLAD, 2,000 queries, visual only         1.71    2.20    4.14   3.00
20k VLAD, 200 queries, groups               0.67    0.59    2.71   2.33
20k VLAD, 2,000 queries, groups             5.93    6.55    26.6   22.5
20k VLAD, 200 queries, visual only          1.19    0.63    1.47   1.02
20k VLAD, 2,000 queries, visual only        7.41    6.56    14.1   9.79
20k VLAD, 20 queries one at a time          0.32    0.32    1.67   0.66
Corel5k CNN 1280-d, 4,500 x 499 queries     0.30    0.25    0.29   0.48
=========================================  ======  =======  =====  =====

faiss's flat search costs what the BLAS product of the dense and blocked paths costs, but the
index back ends need two passes (nearest, and farthest for d_max; one call for codes of equal
norm, still twice the queries) where the screens read both off one product, and with groups
they re-measure every group mate exactly while the screens read their distances off the same
product: faiss took 1.1 to 3.9 times the faster screen's time in every batched case, and one
query at a time twice dense's (0.66 s for 20 queries on 20k codes against 0.32 s).
The one case it won, 1.9 ms against 8 ms per single query on the 4,500 x 1,280 embedding, was
OpenBLAS's two threads waiting on the core the other job held: in a separate probe with
NumPy's BLAS on one thread (threadpoolctl) the dense path took 0.8-1.0 ms to faiss's 1.8-2.1.
scikit-learn's exact ``kneighbors`` (brute) was slower than faiss on the VLAD codes, and a
ball tree on 5k such codes answered more slowly than brute force (trees cannot prune in
thousands of dimensions). So ``"auto"`` picks
``"dense"`` below ``dense_max_train`` training images and ``"blocked"`` from there on; both
indexes stay available, and exact (scikit-learn trees for low-dimensional features, where they
pay off; faiss as the optional ``faiss`` extra).

The table predates the bands below (issue 13's tie fix). Measured side by side after it, in
one process on the same generated codes (main's ``search.py`` at 0cb82ba loaded beside this
one, calls interleaved, best of 3, k = 15, 2 shared cores, every answer equal to the old
one on these codes), new over old time: dense 0.69-0.95, blocked 0.72-0.89 (the bands
re-score about 16 pairs per query where the old fixed margin re-scored 39), index 0.96-1.11,
faiss 0.86-1.05, over the vlad5k (2,000 queries), vlad20k (200) and cnn cases, with and
without groups.

Every back end is exact however many images tie (issue 13's tie fix). float32 cannot tell
images apart whose distances differ by less than its rounding, and exact duplicates of one
image get screened distances a rounding step apart (BLAS kernels treat columns differently),
while screens and indexes order equal values their own way. So no back end decides
anything from float32 values: each proves which images *may* belong to the answer and
re-scores those exactly (float64 differences), ranking them with ties to the lower training
row (``_exact_top``), with the one score evaluation ``_score`` the reference's formulas use.

* The screens' error bound (``_screen_error``, Higham's ``gamma_n`` for an n-term dot
  product): a screened squared distance ``|q|^2 + |x|^2 - 2 q.x`` (float32 product) is off
  by at most ``2 gamma_dim(u32) |q| |x|`` plus float64 rounding, so each image's exact
  distance lies in a known interval [d_lo, d_hi].
* Exact extremes (eq. 3's normalisers): the nearest image lies among those with
  ``d_lo <= min d_hi`` and the farthest among those with ``d_hi >= max d_lo``; those bands
  are re-measured exactly, however many images they hold.
* The band at the cut: with exact d_min and d_max the score is a non-increasing function of
  the distance, so an image's exact score lies in [score(d_hi), score(d_lo)]; with T the m-th
  largest lower end, every image of the exact top m has an upper end of at least T, and all
  of those are re-scored, all images tied at the cut among them. Typically 15 to 16 pairs per
  query for k = 15 on the benchmark's codes (the old fixed margin re-scored 39).
* ``dense`` sees every image, so its bands are complete. ``blocked`` keeps running lists
  ((m + 16) nearest, 4 farthest); the error bound at the list's last screened value shows
  whether an image outside could still change d_min, d_max or the top m; ``index`` and
  ``faiss`` do the same with the index's own distances (faiss computes them in float32 as
  ``|q|^2 + |x|^2 - 2 q.x`` or from float32 differences, scikit-learn in float64; the bound
  covers both) and the farthest-point identities above. A query whose lists are not provably
  complete (more images within rounding of the cut or of an extreme than the lists hold, say
  many copies of one image) is searched again with lists 8 times longer, up to the whole
  training set.

``brute_force_neighbours`` is the plain one-query-at-a-time NumPy reference the tests
compare against.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable, Literal

import numpy as np
from scipy import sparse

from tagrec_models.neighbours.similarity import (
    WeightNormalisation,
    correlation,
    euclidean,
    group_sizes,
    jaccard_from_counts,
    min_max_similarity,
    neighbour_weights,
)

Backend = Literal["auto", "dense", "blocked", "index", "faiss"]
BACKENDS = ("auto", "dense", "blocked", "index", "faiss")
Log = Callable[[str], None]

# How many (query x training) float64 cells one dense batch may hold (about 32 MB each).
_DENSE_CELLS = 4_000_000
# The blocked and index back ends' list lengths on the first pass: the (m + 16) nearest and the
# 4 farthest images by screened distance; a query whose lists cannot be proved complete is
# searched again with lists 8 times longer (``_search_batch``).
_SCREEN_MARGIN = 16
_EXTREMES = 4
# Unit roundoffs of float32 and float64 (the screens' error bound, ``_screen_error``).
_U32 = 2.0 ** -24
_U64 = 2.0 ** -53


@dataclass(frozen=True)
class Neighbours:
    """The top-k training images of each query, best first.

    ``index[q, j]`` is a row of the training table (-1 where a query has fewer than k
    candidates); ``score`` is paper 2, eq. 5's correlation degree y (plus any own-image bonus),
    ``visual`` paper 2, eq. 3's similarity, ``group`` paper 2, eq. 4's Jaccard coefficient, ``distance`` paper 2, eq. 2's
    Euclidean distance; ``d_min``/``d_max`` are each query's extreme distances over the
    training set (paper 2, eq. 3's normalisers).
    """

    index: np.ndarray
    score: np.ndarray
    visual: np.ndarray
    group: np.ndarray
    distance: np.ndarray
    d_min: np.ndarray
    d_max: np.ndarray

    @property
    def valid(self) -> np.ndarray:
        return self.index >= 0

    def weights(self, mode: WeightNormalisation = "sum") -> np.ndarray:
        """Section 4.1.3: the neighbours' scores normalised into voting weights."""
        return neighbour_weights(np.maximum(self.score, 0.0), mode, self.valid)


class NeighbourIndex:
    """Training images (features, groups, owners) ready for batched exact neighbour search.

    ``features``: float ``[n_train, dim]``; ``groups``: binary CSR ``[n_train, n_groups]`` or
    None; ``image_ids``: each row's global image index (a query showing the same image can be
    kept from finding itself); ``image_users``: binary CSR ``[n_train, n_users]``, who posted
    each training image (for the own-image bonus); ``owners``: one user per row (for the
    one-image-per-user rule of neighbour voting). ``backend="auto"`` uses the dense path below
    ``dense_max_train`` training images and the blocked path from there on.
    """

    def __init__(
        self,
        features: np.ndarray,
        *,
        groups: sparse.spmatrix | None = None,
        image_ids: np.ndarray | None = None,
        image_users: sparse.spmatrix | None = None,
        owners: np.ndarray | None = None,
        backend: Backend = "auto",
        dense_max_train: int = 20_000,
        index_algorithm: str = "auto",
        block_cells: int = 4_000_000,
    ) -> None:
        features = np.asarray(features)
        if features.ndim != 2 or features.shape[0] == 0:
            raise ValueError(f"NeighbourIndex: features must be a non-empty 2-d array, got shape {features.shape}")
        n = features.shape[0]
        self.features = np.ascontiguousarray(features, dtype=np.float32)
        # Squared norms in float64, a block of at most ``block_cells`` values at a time: a
        # float64 copy of 100k x 4096 codes would need 3 GB, and even 3,364 x 32,000 VLAD codes
        # (openclipart) cost 0.9 GB of fresh pages per index, which made kernel time a fifth of
        # `make demo`. Each row's sum is the same whatever the block size.
        rows = max(1, int(block_cells) // max(features.shape[1], 1))
        self.sq_norms = np.concatenate([_row_sq(self.features[s : s + rows]) for s in range(0, n, rows)])
        # A row's float64 sum of float32 squares is finite exactly when the row is (no overflow
        # below 1e300), so this checks the features without a boolean copy of them.
        if not np.isfinite(self.sq_norms).all():
            raise ValueError("NeighbourIndex: features hold NaN or infinite values (or values beyond float32)")
        self.groups = None if groups is None else _checked_rows(groups, n, "groups")
        self.group_sizes = None if self.groups is None else group_sizes(self.groups)
        self.image_ids = np.arange(n) if image_ids is None else np.asarray(image_ids, dtype=np.int64)
        if self.image_ids.shape != (n,):
            raise ValueError(f"NeighbourIndex: image_ids must have shape ({n},), got {self.image_ids.shape}")
        self._id_order = np.argsort(self.image_ids, kind="stable")
        self.image_users = None if image_users is None else _checked_rows(image_users, n, "image_users").tocsc()
        self.owners = None if owners is None else np.asarray(owners, dtype=np.int64)
        if self.owners is not None and self.owners.shape != (n,):
            raise ValueError(f"NeighbourIndex: owners must have shape ({n},), got {self.owners.shape}")
        if backend not in BACKENDS:
            raise ValueError(
                f"NeighbourIndex: backend must be one of {', '.join(map(repr, BACKENDS))}, got {backend!r}"
            )
        if backend == "faiss" and not faiss_available():
            raise ValueError(
                "NeighbourIndex: backend 'faiss' needs faiss-cpu (the 'faiss' extra: pip install -e '.[faiss]')"
            )
        self.backend: Literal["dense", "blocked", "index", "faiss"] = (
            ("blocked" if n >= dense_max_train else "dense") if backend == "auto" else backend
        )
        self.index_algorithm = index_algorithm
        self.block_cells = int(block_cells)
        self._nn = None
        self._far = None

    @property
    def n_train(self) -> int:
        return self.features.shape[0]

    # -- pickling: the scikit-learn index is rebuilt on demand rather than stored twice ------
    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_nn"] = None
        state["_far"] = None
        return state

    # -- a saved model need not copy the training features (see NeighbourMemory) ------------
    @property
    def has_features(self) -> bool:
        return self.__dict__.get("features") is not None

    def detached(self) -> "NeighbourIndex":
        """A shallow copy without the training feature rows (kept: their squared-norm sum, to
        check the rows given back to ``attach``)."""
        twin = copy.copy(self)
        twin.__dict__.update(features=None, sq_norms=None, _nn=None, _far=None,
                             features_sq_sum=float(self.sq_norms.sum()),
                             features_shape=tuple(self.features.shape))
        return twin

    def attach(self, features: np.ndarray) -> None:
        """Give a detached index its training rows back (``features[r]`` = training row r);
        they must be the rows it was built on."""
        rows = np.ascontiguousarray(features, dtype=np.float32)
        sq_norms = np.concatenate([_row_sq(rows[s : s + 8192]) for s in range(0, len(rows), 8192)])
        if rows.shape != self.features_shape or not np.isclose(
            sq_norms.sum(), self.features_sq_sum, rtol=1e-6, atol=1e-9
        ):
            raise ValueError(
                f"NeighbourIndex: the training features given back (shape {rows.shape}) are not the "
                f"ones the model was fitted on (shape {self.features_shape}): the feature asset was "
                "rematerialised after the model; refit (rematerialise) the model"
            )
        self.features, self.sq_norms = rows, sq_norms

    def search(
        self,
        query_features: np.ndarray,
        k: int,
        *,
        lam: float = 0.4,
        query_groups: sparse.spmatrix | None = None,
        use_groups: bool = True,
        query_images: np.ndarray | None = None,
        query_users: np.ndarray | None = None,
        own_image_bonus: float = 0.0,
        distinct_owners: bool = False,
        batch_size: int = 256,
        log: Log | None = None,
    ) -> Neighbours:
        """The exact top-k neighbours of each query by paper 2, eq. 5's score.

        ``use_groups=False`` (or no groups on either side) scores by visual similarity alone
        (the paper's noUG). ``query_images`` (global image indices) keep a query from finding
        its own image. ``own_image_bonus`` is added to the score of training images posted
        by ``query_users[q]`` (-1: unknown user, no bonus). ``distinct_owners`` keeps only the
        best image of each owner (Li et al. 2008's one-image-per-user rule).
        """
        query_features = np.asarray(query_features)
        if query_features.ndim != 2 or query_features.shape[1] != self.features.shape[1]:
            raise ValueError(
                f"search: query_features must have shape [n, {self.features.shape[1]}], got {query_features.shape}"
            )
        if not np.isfinite(query_features).all():
            raise ValueError("search: query_features hold NaN or infinite values")
        if k < 1:
            raise ValueError(f"search: k must be at least 1, got {k}")
        if not 0.0 <= lam <= 1.0:
            raise ValueError(f"search: lambda must lie in [0, 1], got {lam}")
        if own_image_bonus < 0:
            raise ValueError(f"search: own_image_bonus must be non-negative, got {own_image_bonus}")
        n_q = query_features.shape[0]
        use_groups = bool(use_groups) and lam < 1.0
        if use_groups:
            if self.groups is None:
                raise ValueError("search: use_groups=True but the training images have no groups")
            if query_groups is None:
                raise ValueError("search: use_groups=True but query_groups is missing")
            query_groups = _checked_rows(query_groups, n_q, "query_groups")
            if query_groups.shape[1] != self.groups.shape[1]:
                raise ValueError(
                    f"search: query_groups has {query_groups.shape[1]} groups, training {self.groups.shape[1]}"
                )
        query_images = None if query_images is None else _checked_vector(query_images, n_q, "query_images")
        if own_image_bonus > 0:
            if self.image_users is None:
                raise ValueError("search: own_image_bonus needs image_users on the index")
            if query_users is None:
                raise ValueError("search: own_image_bonus needs query_users")
            query_users = _checked_vector(query_users, n_q, "query_users")
        if distinct_owners and self.owners is None:
            raise ValueError("search: distinct_owners needs owners on the index")

        request = _Request(
            lam=lam,
            use_groups=use_groups,
            bonus=float(own_image_bonus),
        )
        if n_q == 0:
            empty = np.zeros((0, k))
            return Neighbours(np.zeros((0, k), dtype=np.int64), empty, empty, empty, empty, np.zeros(0), np.zeros(0))
        if self.backend == "dense":
            batch_size = max(1, min(batch_size, _DENSE_CELLS // max(self.n_train, 1)))
        parts = []
        for start in range(0, n_q, batch_size):
            stop = min(start + batch_size, n_q)
            batch = _Batch(
                x=np.ascontiguousarray(query_features[start:stop], dtype=np.float32),
                groups=None if not use_groups else query_groups[start:stop],
                images=None if query_images is None else query_images[start:stop],
                users=None if own_image_bonus <= 0 else query_users[start:stop],
            )
            parts.append(self._search_batch(batch, k, request, distinct_owners))
            if log is not None and (stop == n_q or (start // batch_size) % 20 == 19):
                log(f"neighbour search ({self.backend}): {stop}/{n_q} queries")
        return Neighbours(*(np.concatenate([getattr(p, f) for p in parts]) for f in Neighbours.__dataclass_fields__))

    # -- internals ---------------------------------------------------------------------------
    def _search_batch(self, batch: "_Batch", k: int, request: "_Request", distinct: bool) -> Neighbours:
        b = batch.x.shape[0]
        n_avail = self.n_train
        m = min(k * 4 if distinct else k, n_avail)
        rows = np.arange(b)
        widen = 1
        result: Neighbours | None = None
        while True:
            sub = batch.take(rows)
            tables = _Tables.build(self, sub, request)
            if self.backend == "dense":
                pairs_q, pairs_x, d_min, d_max, unsure = self._dense_candidates(sub, m, request, tables)
            elif self.backend == "blocked":
                pairs_q, pairs_x, d_min, d_max, unsure = self._blocked_candidates(sub, m, request, tables, widen)
            else:
                pairs_q, pairs_x, d_min, d_max, unsure = self._index_candidates(sub, m, request, tables, widen)
            top = self._exact_top(sub, pairs_q, pairs_x, d_min, d_max, m, request, tables)
            top = _first_per_owner(top, self.owners, k) if distinct else _cut(top, k)
            result = top if result is None else _replace_rows(result, rows, top)
            # Again, for the rows whose screen could not prove its candidate lists complete
            # (with longer lists), and for rows short of k distinct owners (with a larger m).
            short = np.zeros(len(rows), dtype=bool)
            if distinct and m < n_avail:
                short = (top.index >= 0).sum(axis=1) < k
            if not (unsure.any() or short.any()):
                return result
            if unsure.any():
                widen *= 8
            if short.any():
                m = min(2 * m, n_avail)
            rows = rows[unsure | short]

    def _excluded(self, images: np.ndarray | None) -> sparse.csr_matrix | None:
        """[b, n_train] marks of training rows showing the query's own image."""
        if images is None:
            return None
        order = self._id_order
        pos = np.minimum(np.searchsorted(self.image_ids[order], images), len(order) - 1)
        hit = self.image_ids[order][pos] == images
        q = np.flatnonzero(hit)
        return sparse.csr_matrix((np.ones(len(q)), (q, order[pos[hit]])), shape=(len(images), self.n_train))

    # -- the float32 screens and their error bound -------------------------------------------
    def _screen_error(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(coef, floor)`` per query: for every training row t, the screened squared
        distance ``|x|^2 + |t|^2 - 2 x.t`` (float32 product, float64 norms and sums) and the
        exact one (float64 differences, ``euclidean``) differ by at most
        ``e = coef[q] * |t| + floor[q]``.

        Higham (Accuracy and Stability of Numerical Algorithms, 2nd ed., eq. 3.5): an n-term
        dot product computed in precision u, in any order (blocked or FMA kernels included), is
        off by at most ``gamma_n * sum |x_i t_i| <= gamma_n |x| |t|`` (Cauchy-Schwarz), with
        ``gamma_n = n u / (1 - n u)``: the float32 product's 2 x.t is off by at most
        ``2 gamma_dim(u32) |x| |t|`` (``coef``). Everything else is float64: the norms (float32
        squares are exact in float64, the sums are off by ``gamma_dim(u64)`` of the norms), the
        two additions, and the exact distance itself (differences, squares, sum: relative
        ``gamma_(dim+3)(u64)``), each bounded by a multiple of ``u64 (|x| + |t|)^2``;
        ``floor`` takes ``gamma_(2 dim + 16)(u64) (|x| + max|t|)^2``, a few spare rounding
        steps included for evaluating the bound itself.
        """
        dim = self.features.shape[1]
        x_norm = np.sqrt(_row_sq(x))
        t_max = float(np.sqrt(self.sq_norms.max()))
        return 2.0 * _gamma(dim, _U32) * x_norm, _gamma(2 * dim + 16, _U64) * (x_norm + t_max) ** 2

    def _exact_extremes_of(self, batch: "_Batch", near_q, near_x, far_q, far_x, tables: "_Tables") -> tuple[np.ndarray, np.ndarray]:
        """Exact (float64 difference) d_min and d_max of each query over the given (query, row)
        pairs, the query's own image left out."""
        b = len(batch.x)
        d_min = np.full(b, np.inf)
        d_max = np.full(b, -np.inf)
        for q, t, into, pick in ((near_q, near_x, d_min, np.minimum), (far_q, far_x, d_max, np.maximum)):
            keep = ~tables.excluded.has(q, t)
            q, t = q[keep], t[keep]
            pick.at(into, q, self._pair_distances(batch.x, q, t))
        # Only possible when the query's own image is the only training image.
        d_min = np.where(np.isfinite(d_min), d_min, 0.0)
        d_max = np.where(np.isfinite(d_max), d_max, 0.0)
        return d_min, np.maximum(d_max, d_min)

    def _dense_candidates(self, batch: "_Batch", m: int, request: "_Request", tables: "_Tables"):
        """Screen every training image with one float32 product, then keep every image whose
        exact score may reach the m-th best (the band below); the caller re-scores them exactly.

        The band: the screen's error bound (``_screen_error``) gives each (query, image) an
        interval [d_lo, d_hi] holding its exact distance. d_min and d_max are first made exact:
        the nearest image's exact distance is at most every image's d_hi, so it is among the
        images with ``d_lo <= min d_hi``, re-measured exactly (likewise the farthest, among
        ``d_hi >= max d_lo``). With exact d_min and d_max the score (eqs. 3-5) is a
        non-increasing function of the distance, evaluated with the same float64 operations
        here as in the exact re-scoring, so the exact score lies in [score(d_hi), score(d_lo)].
        m images have exact scores of at least the m-th largest lower end T; an image of the
        exact top m (the lower training row winning ties) scores at least T, so its upper end
        is at least T: every image with ``score(d_lo) >= T`` is re-scored, and that holds all
        images tied at the cut, however many."""
        x = batch.x
        b, n = len(x), self.n_train
        d2 = np.maximum(_row_sq(x)[:, None] + self.sq_norms[None, :] - 2.0 * (x @ self.features.T), 0.0)
        coef, floor = self._screen_error(x)
        err = np.multiply.outer(coef, np.sqrt(self.sq_norms))
        err += floor[:, None]
        d_lo = np.sqrt(np.maximum(d2 - err, 0.0))
        d_hi = d2
        d_hi += err
        np.sqrt(d_hi, out=d_hi)
        del err, d2
        exc_q, exc_x = tables.excluded.pairs()
        # The query's own image is neither nearest nor farthest (set aside, then put back).
        saved = d_hi[exc_q, exc_x]
        d_hi[exc_q, exc_x] = np.inf
        near_q, near_x = np.nonzero(d_lo <= d_hi.min(axis=1)[:, None])
        d_hi[exc_q, exc_x] = saved
        saved = d_lo[exc_q, exc_x]
        d_lo[exc_q, exc_x] = -np.inf
        far_q, far_x = np.nonzero(d_hi >= d_lo.max(axis=1)[:, None])
        d_lo[exc_q, exc_x] = saved
        d_min, d_max = self._exact_extremes_of(batch, near_q, near_x, far_q, far_x, tables)
        grp = own = 0.0
        if request.use_groups:
            grp = jaccard_from_counts(
                tables.inter.matrix.toarray(), tables.query_group_sizes[:, None], self.group_sizes[None, :]
            )
        if request.bonus > 0:
            own = tables.own.matrix.toarray()
        low = _score(d_hi, d_min[:, None], d_max[:, None], grp, own, request)[0]
        high = _score(d_lo, d_min[:, None], d_max[:, None], grp, own, request)[0]
        del d_lo, d_hi, grp, own
        low[exc_q, exc_x] = -np.inf
        high[exc_q, exc_x] = -np.inf
        n_top = min(m, n)
        cut = np.partition(low, n - n_top, axis=1)[:, n - n_top]
        pairs_q, pairs_x = np.nonzero(high >= cut[:, None])
        return pairs_q, pairs_x, d_min, d_max, np.zeros(b, dtype=bool)

    def _blocked_candidates(self, batch: "_Batch", m: int, request: "_Request", tables: "_Tables", widen: int):
        """Stream the training set through float32 BLAS in blocks, keeping each query's
        running (m + 16 widen) nearest and (4 widen) farthest images by screened distance and
        reading off the screened distances of its group mates and own images on the way; then
        the dense back end's bands (``_dense_candidates``) within those lists.

        The lists may be too short (many images within the screen's error of the cut): an
        image outside the nearest list has a screened squared distance of at least the list's
        largest, so its exact distance is at least L (that minus the error bound for the
        largest norm), and, sharing no group and not the user's own (those are all kept), its
        exact score is at most score(L) with no group evidence; it cannot change d_min when
        ``L >= d_min``, nor enter the top m when ``score(L) < T``. The farthest list likewise
        bounds d_max. A query whose lists cannot be shown complete is marked unsure and
        searched again with lists 8 times longer (``widen``), up to the whole training set."""
        x = batch.x
        b = len(x)
        n = self.n_train
        n_near = min(n, m + _SCREEN_MARGIN * widen)
        n_far = min(n, _EXTREMES * widen)
        extra_q, extra_x = _union_pairs(n, tables.inter.pairs(), tables.own.pairs())
        by_col = np.argsort(extra_x, kind="stable")
        extra_q, extra_x = extra_q[by_col], extra_x[by_col]
        extra_d2 = np.empty(len(extra_x))
        exc_q, exc_x = tables.excluded.pairs()
        x_sq = _row_sq(x)[:, None]
        step = max(1, self.block_cells // max(b, 1))
        near_d = np.empty((b, 0))
        near_i = np.empty((b, 0), dtype=np.int64)
        far_d = np.empty((b, 0))
        far_i = np.empty((b, 0), dtype=np.int64)
        for start in range(0, n, step):
            stop = min(start + step, n)
            d2 = np.maximum(x_sq + self.sq_norms[None, start:stop] - 2.0 * (x @ self.features[start:stop].T), 0.0)
            lo, hi = np.searchsorted(extra_x, [start, stop])
            extra_d2[lo:hi] = d2[extra_q[lo:hi], extra_x[lo:hi] - start]
            in_block = (exc_x >= start) & (exc_x < stop)
            near_block, far_block = d2, -d2
            if in_block.any():  # the query's own image is neither nearest nor farthest
                near_block, far_block = d2.copy(), -d2
                near_block[exc_q[in_block], exc_x[in_block] - start] = np.inf
                far_block[exc_q[in_block], exc_x[in_block] - start] = np.inf
            rows = np.broadcast_to(np.arange(start, stop), d2.shape)
            near_d, near_i = _keep_smallest(np.hstack([near_d, near_block]), np.hstack([near_i, rows]), n_near)
            far_d, far_i = _keep_smallest(np.hstack([far_d, far_block]), np.hstack([far_i, rows]), n_far)
        # A list holds every eligible image when it has room for all of them (then it also
        # holds an excluded one, +inf, the last to be kept).
        near_out = ~np.isfinite(near_d)
        far_out = ~np.isfinite(far_d)
        near_full = (n_near >= n) | near_out.any(axis=1)
        far_full = (n_far >= n) | far_out.any(axis=1)
        coef, floor = self._screen_error(x)
        norms = np.sqrt(self.sq_norms)
        err_max = coef * norms.max() + floor
        near_q = np.repeat(np.arange(b), near_i.shape[1]).reshape(near_i.shape)[~near_out]
        far_q = np.repeat(np.arange(b), far_i.shape[1]).reshape(far_i.shape)[~far_out]
        near_x, near_d2 = near_i[~near_out], near_d[~near_out]
        far_x, far_d2 = far_i[~far_out], -far_d[~far_out]
        with np.errstate(invalid="ignore"):
            outside_near = np.where(
                near_full, np.inf, np.sqrt(np.maximum(near_d.max(axis=1, initial=0.0) - err_max, 0.0))
            )
            outside_far = np.where(
                far_full, -np.inf, np.sqrt(np.maximum(-far_d.max(axis=1, initial=-np.inf), 0.0) + err_max)
            )
        # Candidates for the top m: the nearest list and every group mate / own image.
        cand_q = np.concatenate([near_q, extra_q])
        cand_x = np.concatenate([near_x, extra_x])
        cand_d2 = np.concatenate([near_d2, extra_d2])

        def interval(q, t, d2):
            err = coef[q] * norms[t] + floor[q]
            return q, t, np.sqrt(np.maximum(d2 - err, 0.0)), np.sqrt(d2 + err)

        return self._bands(
            batch, m, request, tables, interval(near_q, near_x, near_d2), interval(far_q, far_x, far_d2),
            interval(cand_q, cand_x, cand_d2), outside_near, outside_far,
        )

    def _bands(self, batch: "_Batch", m: int, request: "_Request", tables: "_Tables", near, far, cand,
               outside_near: np.ndarray, outside_far: np.ndarray):
        """The bands of ``_dense_candidates`` within a screen's lists (blocked, index, faiss).

        ``near``, ``far``, ``cand``: ``(query, row, d_lo, d_hi)`` flat arrays, each pair's exact
        distance within [d_lo, d_hi]: the nearest list, the farthest list, and the candidates
        for the top m (the nearest list and every group mate / own image). ``outside_near``:
        per query, a lower bound of the exact distance of every image outside the nearest list
        (inf when the list holds them all); ``outside_far``: an upper bound outside the farthest
        list (-inf when it holds them all). Returns the pairs to re-score exactly, exact d_min
        and d_max, and which queries' lists could not be proved complete."""
        b = len(batch.x)
        keep = [~tables.excluded.has(q, t) for q, t, _, _ in (near, far, cand)]
        near, far, cand = ([v[k] for v in part] for part, k in zip((near, far, cand), keep))
        nearest_hi = np.full(b, np.inf)
        np.minimum.at(nearest_hi, near[0], near[3])
        near_band = near[2] <= nearest_hi[near[0]]
        farthest_lo = np.full(b, -np.inf)
        np.maximum.at(farthest_lo, far[0], far[2])
        far_band = far[3] >= farthest_lo[far[0]]
        d_min, d_max = self._exact_extremes_of(
            batch, near[0][near_band], near[1][near_band], far[0][far_band], far[1][far_band], tables
        )
        # Each candidate once (the first copy: callers list exact intervals first).
        q, t, lo, hi = cand
        _, first = np.unique(q * self.n_train + t, return_index=True)
        q, t, lo, hi = q[first], t[first], lo[first], hi[first]
        grp = own = 0.0
        if request.use_groups:
            grp = jaccard_from_counts(tables.inter.get(q, t), tables.query_group_sizes[q], self.group_sizes[t])
        if request.bonus > 0:
            own = tables.own.get(q, t)
        low = _score(hi, d_min[q], d_max[q], grp, own, request)[0]
        high = _score(lo, d_min[q], d_max[q], grp, own, request)[0]
        cut = _mth_largest(q, low, b, m)
        # An image outside the nearest list shares no group and is not the user's own (those
        # are all candidates): its exact score is at most the plain score at outside_near.
        listed = np.isinf(outside_near)
        plain = _score(np.where(listed, d_max, outside_near), d_min, d_max, 0.0, 0.0, request)[0]
        sure = (listed | ((outside_near >= d_min) & (plain < cut))) & (outside_far <= d_max)
        band = high >= cut[q]
        return q[band], t[band], d_min, d_max, ~sure

    def _flat_index(self, rows: np.ndarray):
        """An exact nearest-neighbour index over ``rows``: faiss's ``IndexFlatL2`` for the faiss
        back end, scikit-learn's ``NearestNeighbors`` for the index back end."""
        if self.backend == "faiss":
            import faiss

            flat = faiss.IndexFlatL2(rows.shape[1])
            flat.add(np.ascontiguousarray(rows, dtype=np.float32))
            return flat
        from sklearn.neighbors import NearestNeighbors

        return NearestNeighbors(algorithm=self.index_algorithm).fit(rows)

    def _knn(self, flat, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """``(squared distances, rows)`` of the k nearest training images of each query, nearest
        first, as the index computed them (its order among near-equal distances is its own;
        the exact re-scoring fixes the order)."""
        if self.backend == "faiss":
            dist, rows = flat.search(np.ascontiguousarray(queries, dtype=np.float32), k)
            return dist.astype(np.float64), rows.astype(np.int64)
        dist, rows = flat.kneighbors(queries, n_neighbors=k, return_distance=True)
        return np.square(dist, dtype=np.float64), rows

    def _nearest_index(self):
        if self._nn is None:
            self._nn = self._flat_index(self.features)
        return self._nn

    def _farthest_index(self):
        """``(index, lift)``: the index answering farthest-point queries, and whether the
        queries must be lifted (codes of unequal norm) or only negated (equal norms)."""
        if self._far is None:
            norms = np.sqrt(self.sq_norms)
            if norms.max() - norms.min() <= 1e-6 * max(norms.max(), 1e-12):
                self._far = (self._nearest_index(), False)
            else:
                c = 2.0 * self.sq_norms.max()
                extra = np.sqrt(np.maximum(c - 2.0 * self.sq_norms, 0.0))
                lifted = np.hstack([self.features, extra[:, None].astype(np.float32)])
                self._far = (self._flat_index(lifted), True)
        return self._far

    def _index_candidates(self, batch: "_Batch", m: int, request: "_Request", tables: "_Tables", widen: int):
        """Nearest and farthest from the exact index (scikit-learn or faiss), then the bands of
        ``_bands`` with the index's own distances (group mates and own images, which the
        index gives no distances for, are measured exactly).

        The lists hold the images nearest (farthest) by the index's own computed distances, so
        an image outside the nearest list has a computed squared distance of at least the
        list's last. Both indexes compute squared distances in at most float32 precision
        (faiss: ``|q|^2 + |x|^2 - 2 q.x`` in float32, or float32 differences; scikit-learn
        in float64), off by at most ``gamma_(dim+8)(u32) (|q| + max|x|)^2`` (Higham's bound,
        as ``_screen_error``), which gives every listed image an interval for its exact
        distance and every image outside the list a lower bound L; as for the blocked back
        end, the list is complete when ``L >= d_min`` and ``score(L) <`` the cut's lower
        end. The farthest list answers |-q - x|^2 = 2|q|^2 + 2|x|^2 - |q - x|^2 (equal
        norms) or, lifted, 2|q|^2 + C - |q - x|^2 (plus the float32 rounding of the lifting
        coordinate), which bounds from above the distance of every image outside it. A query
        whose lists cannot be shown complete is marked unsure and searched again with lists
        8 times longer (``widen``)."""
        x = batch.x
        b = len(x)
        n = self.n_train
        dim = self.features.shape[1]
        n_exc = int(np.diff(tables.excluded.matrix.indptr).max(initial=0))
        n_near = min(n, m + n_exc + _SCREEN_MARGIN * widen)
        n_far = min(n, _EXTREMES * widen + n_exc)
        far_index, lift = self._farthest_index()
        if not lift:
            # Equal norms: q and -q go to the same index in one call (one pass over the codes).
            both_d, both = self._knn(far_index, np.vstack([x, -x]), max(n_near, n_far))
            near_d, near = both_d[:b, :n_near], both[:b, :n_near]
            far_d, far = both_d[b:, :n_far], both[b:, :n_far]
        else:
            near_d, near = self._knn(self._nearest_index(), x, n_near)
            far_d, far = self._knn(far_index, np.hstack([-x, np.zeros((b, 1), dtype=np.float32)]), n_far)
        extra_q, extra_x = _union_pairs(n, tables.inter.pairs(), tables.own.pairs())
        extra_d = self._pair_distances(x, extra_q, extra_x)  # the index gives none for them
        # The index's squared distances, off by at most err (docstring), as intervals; the
        # farthest list's through the identities of the negated or lifted query.
        x_sq = _row_sq(x)
        t_sq = float(self.sq_norms.max())
        err = _gamma(dim + 8, _U32) * (np.sqrt(x_sq) + np.sqrt(t_sq)) ** 2
        if not lift:
            far_d2 = 2.0 * x_sq[:, None] + 2.0 * self.sq_norms[far] - far_d
            outside_far_sq = 2.0 * x_sq + 2.0 * t_sq - far_d[:, -1] + err
            far_err = err
        else:
            c = 2.0 * t_sq  # the lifting constant of _farthest_index
            far_err = _gamma(dim + 9, _U32) * (np.sqrt(x_sq) + np.sqrt(c)) ** 2 + 4.0 * _U32 * c
            far_d2 = 2.0 * x_sq[:, None] + c - far_d
            outside_far_sq = 2.0 * x_sq + c - far_d[:, -1] + far_err
        outside_near = np.where(n_near >= n, np.inf, np.sqrt(np.maximum(near_d[:, -1] - err, 0.0)))
        outside_far = np.where(n_far >= n, -np.inf, np.sqrt(np.maximum(outside_far_sq, 0.0)))

        def interval(rows, d2, e):
            q = np.repeat(np.arange(b), rows.shape[1])
            e = np.repeat(e, rows.shape[1])
            d2 = d2.ravel()
            return q, rows.ravel(), np.sqrt(np.maximum(d2 - e, 0.0)), np.sqrt(np.maximum(d2 + e, 0.0))

        near_iv = interval(near, near_d, err)
        cand = tuple(np.concatenate([a, c]) for a, c in zip((extra_q, extra_x, extra_d, extra_d), near_iv))
        return self._bands(batch, m, request, tables, near_iv, interval(far, far_d2, far_err), cand,
                           outside_near, outside_far)

    def _pair_distances(self, x: np.ndarray, q: np.ndarray, t: np.ndarray) -> np.ndarray:
        out = np.empty(len(q), dtype=np.float64)
        step = max(1, 2_000_000 // max(self.features.shape[1], 1))
        for s in range(0, len(q), step):
            out[s : s + step] = euclidean(x[q[s : s + step]], self.features[t[s : s + step]])
        return out

    def _own_matrix(self, users: np.ndarray) -> sparse.csr_matrix:
        """[b, n_train]: 1 where the training image was posted by the query's user."""
        known = users >= 0
        own = self.image_users[:, np.where(known, users, 0)].T.tocsr()
        own = sparse.csr_matrix(sparse.diags(known.astype(np.float64)) @ own)
        own.eliminate_zeros()
        return own

    def _exact_top(self, batch, pairs_q, pairs_x, d_min, d_max, m, request, tables: "_Tables") -> Neighbours:
        """Exact scores of the candidate pairs; the top m per query, best first, ties to the
        lower training row."""
        b = len(batch.x)
        n = self.n_train
        key = np.unique(pairs_q * n + pairs_x)
        pq, px = key // n, key % n
        keep = ~tables.excluded.has(pq, px)
        pq, px = pq[keep], px[keep]
        dist = self._pair_distances(batch.x, pq, px)
        grp = np.zeros(len(pq))
        if request.use_groups:
            grp = jaccard_from_counts(tables.inter.get(pq, px), tables.query_group_sizes[pq], self.group_sizes[px])
        own = tables.own.get(pq, px) if request.bonus > 0 else 0.0
        y, vis = _score(dist, d_min[pq], d_max[pq], grp, own, request)
        order = np.lexsort((px, -y, pq))
        pq, px, y, vis, grp, dist = pq[order], px[order], y[order], vis[order], grp[order], dist[order]
        counts = np.bincount(pq, minlength=b)
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        rank = np.arange(len(pq)) - starts[pq]
        sel = rank < m
        out = {name: np.zeros((b, m)) for name in ("score", "visual", "group", "distance")}
        out["index"] = np.full((b, m), -1, dtype=np.int64)
        for name, values in (("index", px), ("score", y), ("visual", vis), ("group", grp), ("distance", dist)):
            out[name][pq[sel], rank[sel]] = values[sel]
        return Neighbours(**out, d_min=d_min, d_max=d_max)


class _Lookup:
    """Values of a sparse [b, n] matrix at arbitrary (row, column) pairs, by sorted keys."""

    def __init__(self, matrix: sparse.spmatrix | None, shape: tuple[int, int]) -> None:
        self.matrix = sparse.csr_matrix(shape) if matrix is None else sparse.csr_matrix(matrix)
        coo = self.matrix.tocoo()
        self.n = shape[1]
        keys = coo.row.astype(np.int64) * self.n + coo.col
        order = np.argsort(keys, kind="stable")
        self.keys, self.values = keys[order], coo.data[order].astype(np.float64)

    def get(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        if not len(self.keys):
            return np.zeros(len(rows))
        key = rows * self.n + cols
        pos = np.minimum(np.searchsorted(self.keys, key), len(self.keys) - 1)
        return np.where(self.keys[pos] == key, self.values[pos], 0.0)

    def has(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        return self.get(rows, cols) != 0

    def pairs(self) -> tuple[np.ndarray, np.ndarray]:
        return self.keys // self.n, self.keys % self.n


@dataclass(frozen=True)
class _Tables:
    """Per-batch sparse facts about (query, training row) pairs: the query's own image
    (excluded), shared-group counts (paper 2, eq. 4's intersections) and the user's own images."""

    excluded: _Lookup
    inter: _Lookup
    own: _Lookup
    query_group_sizes: np.ndarray | None

    @classmethod
    def build(cls, index: NeighbourIndex, batch: "_Batch", request: "_Request") -> "_Tables":
        shape = (len(batch.x), index.n_train)
        inter = batch.groups @ index.groups.T if request.use_groups else None
        own = index._own_matrix(batch.users) if request.bonus > 0 else None
        return cls(
            excluded=_Lookup(index._excluded(batch.images), shape),
            inter=_Lookup(inter, shape),
            own=_Lookup(own, shape),
            query_group_sizes=group_sizes(batch.groups) if request.use_groups else None,
        )


def faiss_available() -> bool:
    """Whether the faiss library (PyPI ``faiss-cpu``) can be imported."""
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


def _row_sq(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    return np.einsum("ij,ij->i", x, x)



def _gamma(n: int, u: float) -> float:
    """Higham's ``gamma_n = n u / (1 - n u)``: n rounding steps of unit roundoff u at most
    multiply a value by ``1 +- gamma_n`` (Accuracy and Stability of Numerical Algorithms,
    2nd ed., lemma 3.1)."""
    if n * u >= 0.5:
        raise ValueError(f"neighbour search: {n} terms are too many for a float32 error bound")
    return n * u / (1.0 - n * u)


def _score(dist, d_min, d_max, grp, own, request: "_Request") -> tuple[np.ndarray, np.ndarray]:
    """``(y, s)``: eqs. 3-5 plus the own-image bonus from distances, group Jaccard values and
    own-image marks (arrays or scalars, broadcast). The one evaluation every screen bound and
    the exact re-scoring share: each step is a correctly rounded, monotone float64 operation,
    so y is non-increasing in the distance, value for value, which the screens' bands rest on."""
    vis = min_max_similarity(dist, d_min, d_max)
    y = correlation(vis, grp, request.lam) if request.use_groups else vis
    if request.bonus > 0:
        y = y + request.bonus * own
    return y, vis


def _mth_largest(pq: np.ndarray, values: np.ndarray, b: int, m: int) -> np.ndarray:
    """Per query (``pq`` in 0..b-1), the m-th largest of its values (-inf with fewer than m)."""
    order = np.lexsort((-values, pq))
    pq, values = pq[order], values[order]
    counts = np.bincount(pq, minlength=b)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    out = np.full(b, -np.inf)
    has = counts >= m
    out[has] = values[starts[has] + m - 1]
    return out


def _union_pairs(n: int, *pairs: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    keys = np.unique(np.concatenate([q * n + x for q, x in pairs] + [np.zeros(0, dtype=np.int64)]))
    return keys // n, keys % n


@dataclass(frozen=True)
class _Request:
    lam: float
    use_groups: bool
    bonus: float


@dataclass(frozen=True)
class _Batch:
    x: np.ndarray
    groups: sparse.csr_matrix | None
    images: np.ndarray | None
    users: np.ndarray | None

    def take(self, rows: np.ndarray) -> "_Batch":
        return _Batch(
            x=self.x[rows],
            groups=None if self.groups is None else self.groups[rows],
            images=None if self.images is None else self.images[rows],
            users=None if self.users is None else self.users[rows],
        )


def _keep_smallest(values: np.ndarray, rows: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``n`` smallest values of each row and their training rows (unordered)."""
    if values.shape[1] <= n:
        return values, rows
    pick = np.argpartition(values, n - 1, axis=1)[:, :n]
    return np.take_along_axis(values, pick, axis=1), np.take_along_axis(rows, pick, axis=1)


def _cut(top: Neighbours, k: int) -> Neighbours:
    """The first k columns, padded with -1 when fewer candidates exist."""
    fields = {}
    for name in ("index", "score", "visual", "group", "distance"):
        values = getattr(top, name)[:, :k]
        if values.shape[1] < k:
            fill = -1 if name == "index" else 0.0
            values = np.pad(values, ((0, 0), (0, k - values.shape[1])), constant_values=fill)
        fields[name] = values
    return Neighbours(**fields, d_min=top.d_min, d_max=top.d_max)


def _first_per_owner(top: Neighbours, owners: np.ndarray, k: int) -> Neighbours:
    """Keep each owner's best image only (rows are sorted best first), then the first k."""
    idx = top.index
    valid = idx >= 0
    own = np.where(valid, owners[np.where(valid, idx, 0)], np.iinfo(np.int64).max)
    order = np.argsort(own, axis=1, kind="stable")
    sorted_own = np.take_along_axis(own, order, axis=1)
    first_sorted = np.ones_like(sorted_own, dtype=bool)
    first_sorted[:, 1:] = sorted_own[:, 1:] != sorted_own[:, :-1]
    first = np.zeros_like(first_sorted)
    np.put_along_axis(first, order, first_sorted, axis=1)
    keep = first & valid
    # Move the kept entries to the front, in their (best-first) order.
    move = np.argsort(~keep, axis=1, kind="stable")
    fields = {}
    for name in ("index", "score", "visual", "group", "distance"):
        values = np.take_along_axis(getattr(top, name), move, axis=1)
        kept = np.take_along_axis(keep, move, axis=1)
        values = np.where(kept, values, -1 if name == "index" else 0.0)
        fields[name] = values
    return _cut(Neighbours(**fields, d_min=top.d_min, d_max=top.d_max), k)


def _replace_rows(result: Neighbours, rows: np.ndarray, new: Neighbours) -> Neighbours:
    fields = {}
    for name in Neighbours.__dataclass_fields__:
        values = getattr(result, name).copy()
        values[rows] = getattr(new, name)
        fields[name] = values
    return Neighbours(**fields)


def _checked_rows(matrix: sparse.spmatrix, n: int, name: str) -> sparse.csr_matrix:
    matrix = sparse.csr_matrix(matrix, dtype=np.float64)
    if matrix.shape[0] != n:
        raise ValueError(f"{name}: expected {n} rows, got {matrix.shape[0]}")
    matrix.sum_duplicates()
    if matrix.nnz and (matrix.data < 0).any():
        raise ValueError(f"{name}: membership matrices must be non-negative")
    matrix.data[:] = 1.0
    matrix.eliminate_zeros()
    return matrix


def _checked_vector(values: np.ndarray, n: int, name: str) -> np.ndarray:
    values = np.asarray(values, dtype=np.int64)
    if values.shape != (n,):
        raise ValueError(f"{name}: expected shape ({n},), got {values.shape}")
    return values


def brute_force_neighbours(
    train_features: np.ndarray,
    query_features: np.ndarray,
    k: int,
    *,
    lam: float = 0.4,
    train_groups: sparse.spmatrix | None = None,
    query_groups: sparse.spmatrix | None = None,
    use_groups: bool = True,
    train_image_ids: np.ndarray | None = None,
    query_images: np.ndarray | None = None,
    train_image_users: sparse.spmatrix | None = None,
    query_users: np.ndarray | None = None,
    own_image_bonus: float = 0.0,
    owners: np.ndarray | None = None,
    distinct_owners: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """The reference: one query at a time, every distance, plain NumPy, no screening.

    Returns ``(index [Q, k], score [Q, k])`` with -1 / 0 padding, ties to the lower row.
    """
    x = np.asarray(train_features, dtype=np.float64)
    n = len(x)
    ids = np.arange(n) if train_image_ids is None else np.asarray(train_image_ids)
    use_groups = use_groups and lam < 1.0
    if use_groups:
        gt = sparse.csr_matrix(train_groups).toarray() > 0
        gq = sparse.csr_matrix(query_groups).toarray() > 0
    if own_image_bonus > 0:
        posted = sparse.csr_matrix(train_image_users).toarray() > 0
    out_i = np.full((len(query_features), k), -1, dtype=np.int64)
    out_s = np.zeros((len(query_features), k))
    for q, feature in enumerate(np.asarray(query_features, dtype=np.float64)):
        d = np.sqrt(((x - feature) ** 2).sum(axis=1))
        allowed = np.ones(n, dtype=bool) if query_images is None else ids != query_images[q]
        if not allowed.any():
            continue
        d_min, d_max = d[allowed].min(), d[allowed].max()
        s = 1.0 - (d - d_min) / (d_max - d_min) if d_max > d_min else np.ones(n)
        s = np.clip(s, 0.0, 1.0)
        if use_groups:
            inter = (gt & gq[q]).sum(axis=1)
            union = (gt | gq[q]).sum(axis=1)
            jac = np.where(union > 0, inter / np.maximum(union, 1), 0.0)
            y = lam * s + (1 - lam) * jac
        else:
            y = s
        if own_image_bonus > 0 and query_users[q] >= 0:
            y = y + own_image_bonus * posted[:, query_users[q]]
        order = [i for i in np.lexsort((np.arange(n), -y)) if allowed[i]]
        if distinct_owners:
            seen, kept = set(), []
            for i in order:
                if owners[i] not in seen:
                    seen.add(owners[i])
                    kept.append(i)
            order = kept
        chosen = np.array(order[:k], dtype=np.int64)
        out_i[q, : len(chosen)] = chosen
        out_s[q, : len(chosen)] = y[chosen]
    return out_i, out_s
