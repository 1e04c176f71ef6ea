"""Tag suggestions for a new photo from what the Dagster assets materialised (issue 7).

``Suggester.load`` reads, under the data home, a dataset's split tables (the vocabulary the
models index by), one model asset's ``TrainedModel`` handle and the fit of one seed, and
exactly the side information that model reads (feature arrays, patches, group memberships).
``Suggester.suggest`` computes the same features for new image files
(``features.single.NewImageFeatures``, the settings of the dataset's features run) and scores
one post (user, new image) per file with ``SideInfo`` extended by one row per file: the new
images get the indices ``n_images, n_images + 1, ...`` after the dataset's own.

Which model: the one asked for, or the best on validation in DuckDB's ``results.leaderboard``
(``val_f1@5``) among those whose asset is materialised. A user the training posts never saw
gets the best non-personalised model instead (``Recommender.personalised`` False), and the
result says so. Nothing here writes anything: DuckDB is opened read-only.

No dagster here (layers point one way); file names follow ``assets/io_manager.py``:
the files ``paths.DataHome.table_path`` and ``object_path`` name.
"""

from __future__ import annotations

import pickle
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd
from scipy import sparse

from tagrec_models.artifacts import ArrayFile, TrainedModel
from tagrec_models.bundle import SplitBundle, build_bundle
from tagrec_models.data import UNKNOWN_USER, Posts, SideInfo, group_matrix
from tagrec_models.experiment import FEATURE_SOURCES, side_info
from tagrec_models.paths import DataHome
from tagrec_models.recommenders.base import Recommender
from tagrec_models.recommenders.registry import available, get_recommender, load_model


LEADERBOARD = "leaderboard"
LEADERBOARD_METRIC = "val_f1@5"
SPLIT_PARTS = ("train", "val", "test")


class SuggestError(RuntimeError):
    """Bad input or a missing asset: the message says which and what to do."""


def materialise_hint(dataset: str, asset: str) -> str:
    return (f"materialise {dataset}/{asset}: `make ui` (select the asset, Materialize) or "
            f"`python -m pipelines.demo --dataset {dataset}`")


# -- reading what the assets wrote -----------------------------------------------------------
@dataclass(frozen=True)
class MaterialisedDataset:
    """One dataset's folder under the data home, read the way the IO manager wrote it."""

    home: DataHome
    name: str

    @property
    def folder(self) -> Path:
        return self.home.dataset_dir(self.name)

    @classmethod
    def open(cls, home: DataHome, name: str) -> "MaterialisedDataset":
        found = cls(home, name)
        if not home.table_path(name, "train").exists():
            have = sorted(p.name for p in (home.root / "datasets").glob("*")
                          if home.table_path(p.name, "train").exists())
            raise SuggestError(
                f"unknown dataset {name!r}: no materialised splits under {found.folder} "
                f"(datasets with splits under {home.root}: {have or 'none'}); "
                + materialise_hint(name, "train"))
        return found

    def object_path(self, asset: str) -> Path:
        return self.home.object_path(self.name, asset)

    def has_object(self, asset: str) -> bool:
        return self.object_path(asset).exists()

    def table(self, asset: str) -> pd.DataFrame:
        path = self.home.table_path(self.name, asset)
        if not path.exists():
            raise SuggestError(f"asset {self.name}/{asset} has never been materialised (no {path}); "
                               + materialise_hint(self.name, asset))
        return pd.read_parquet(path)

    def object(self, asset: str) -> Any:
        path = self.object_path(asset)
        if not path.exists():
            raise SuggestError(f"asset {self.name}/{asset} has never been materialised (no {path}); "
                               + materialise_hint(self.name, asset))
        with path.open("rb") as handle:
            return pickle.load(handle)

    def bundle(self) -> SplitBundle:
        return build_bundle(*(self.table(part) for part in SPLIT_PARTS))


def read_leaderboard(home: DataHome, dataset: str) -> pd.DataFrame:
    """This dataset's rows of ``results.leaderboard``, best ``val_f1@5`` first (read-only)."""
    from tagrec_models.storage.duckdb_store import DatabaseBusyError, DuckDBStore

    missing = (f"no leaderboard for {dataset!r} (DuckDB table results.{LEADERBOARD} in {home.duckdb_path}): "
               f"{materialise_hint(dataset, LEADERBOARD)}, or pass --model NAME")
    try:
        # Another process may hold the database (a pipeline step, a duckdb shell): wait, say so.
        con = DuckDBStore(home.duckdb_path, log=lambda message: print(message, file=sys.stderr)).reader()
    except FileNotFoundError:
        raise SuggestError(missing) from None
    except DatabaseBusyError as error:
        raise SuggestError(f"cannot read the leaderboard: {error}; or pass --model NAME") from None
    try:
        exists = con.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'results' AND table_name = ?",
            [LEADERBOARD]).fetchone()[0]
        if not exists:
            raise SuggestError(missing)
        frame = con.execute(f'SELECT * FROM results."{LEADERBOARD}" WHERE dataset = ?', [dataset]).df()
    finally:
        con.close()
    needed = {"method", LEADERBOARD_METRIC}
    if not needed <= set(frame.columns):
        raise SuggestError(f"results.{LEADERBOARD} lacks column(s) {sorted(needed - set(frame.columns))}; "
                           + materialise_hint(dataset, LEADERBOARD))
    if frame.empty:
        raise SuggestError(missing)
    return frame.sort_values(LEADERBOARD_METRIC, ascending=False, na_position="last", kind="stable")


@dataclass(frozen=True)
class ModelChoice:
    """The model to score with, and why (``note``: what the user should be told)."""

    name: str
    reason: str
    note: str = ""


def choose_model(
    data: MaterialisedDataset,
    requested: str | None,
    user_known: bool,
    leaderboard: Callable[[], pd.DataFrame] | None = None,
) -> ModelChoice:
    """``requested`` if given (it must be a registered recommender), else the leaderboard's
    best materialised model; for an unknown user the best materialised non-personalised one."""
    board = leaderboard or (lambda: read_leaderboard(data.home, data.name))
    if requested is not None:
        names = available()
        if requested not in names:
            raise SuggestError(f"unknown model {requested!r}; models: {', '.join(names)}")
        if not data.has_object(f"model_{requested}"):
            raise SuggestError(f"model asset {data.name}/model_{requested} has never been materialised "
                               f"(no {data.object_path(f'model_{requested}')}); "
                               + materialise_hint(data.name, f"model_{requested}"))
        if user_known:
            return ModelChoice(requested, "asked for with --model")
        if not get_recommender(requested).personalised:
            return ModelChoice(requested, "asked for with --model",
                               note=f"{requested} is not personalised, so it answers as for anyone")
    try:
        frame = board()
    except SuggestError as error:
        if requested is None:
            raise
        raise SuggestError(
            f"the user is not in {data.name}'s training data and {requested} is personalised; "
            f"choosing a non-personalised model instead needs the leaderboard: {error} "
            "(a non-personalised one, e.g. knn_voting)") from None
    rows = [(str(m), float(v)) for m, v in zip(frame["method"], frame[LEADERBOARD_METRIC])]
    registered = set(available())
    ranked = [(m, v) for m, v in rows if m in registered and data.has_object(f"model_{m}")]
    if user_known:
        if not ranked:
            raise SuggestError(
                f"no model of the {data.name} leaderboard is materialised "
                f"(leaderboard methods: {[m for m, _ in rows]}); "
                + materialise_hint(data.name, "model_<name>") + ", or pass --model NAME")
        name, value = ranked[0]
        return ModelChoice(name, f"best {LEADERBOARD_METRIC} on validation ({value:.4f}) in results.{LEADERBOARD}")
    content = [(m, v) for m, v in ranked if not get_recommender(m).personalised]
    if not content:
        raise SuggestError(
            f"the user is not in {data.name}'s training data and no non-personalised model is "
            f"materialised (leaderboard methods: {[m for m, _ in rows]}); materialise one, e.g. "
            f"{data.name}/model_knn_voting: `make ui` or `python -m pipelines.demo --dataset {data.name}`")
    name, value = content[0]
    instead = f" instead of {requested}" if requested else ""
    return ModelChoice(
        name,
        f"best non-personalised {LEADERBOARD_METRIC} on validation ({value:.4f}) in results.{LEADERBOARD}",
        note=f"using the best non-personalised model {name}{instead}",
    )


# -- what a model reads ----------------------------------------------------------------------
@dataclass(frozen=True)
class _ReadRecorder(SideInfo):
    """A ``SideInfo`` that records what a model's input check asks for instead of holding it."""

    asked: list = field(default_factory=list)

    def feature(self, name: str) -> np.ndarray:
        self.asked.append(name)
        return np.zeros((0, 0), dtype=np.float32)

    def require_patches(self) -> np.ndarray:
        self.asked.append("patches")
        return np.zeros((0,), dtype=np.uint8)

    def require_groups(self) -> sparse.csr_matrix:
        self.asked.append("groups")
        return sparse.csr_matrix((0, 0))


def side_reads(model: Recommender) -> tuple[str, ...]:
    """What ``model.score`` reads from ``SideInfo`` (feature names, ``patches``, ``groups``):
    the model's own input check (``Recommender._check_side``), which follows its config (a
    neighbour model's ``feature``, JEC's ``features``), not just the class's ``needs``."""
    recorder = _ReadRecorder()
    model._check_side(recorder)
    return tuple(dict.fromkeys(recorder.asked))


# -- suggestions ------------------------------------------------------------------------------
@dataclass(frozen=True)
class ImageSuggestions:
    """Top tags of one image (``tags``/``scores`` best first), or why it has none (``error``)."""

    path: str
    tags: tuple[str, ...] = ()
    scores: tuple[float, ...] = ()
    error: str = ""

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"path": self.path}
        if self.error:
            out["error"] = self.error
        else:
            out["tags"] = [{"tag": t, "score": s} for t, s in zip(self.tags, self.scores)]
        return out


def top_k(scores: np.ndarray, tags: Sequence[str], k: int) -> tuple[tuple[str, ...], tuple[float, ...]]:
    """The ``k`` best tags of one score row, ties in vocabulary order."""
    order = np.argsort(-scores, kind="stable")[: min(k, len(tags))]
    return tuple(tags[i] for i in order), tuple(float(scores[i]) for i in order)


@dataclass
class Suggester:
    """One dataset, one model fit, its side information and the new-image featuriser,
    loaded once; ``suggest`` then scores any number of image files."""

    data: MaterialisedDataset
    bundle: SplitBundle
    trained: TrainedModel
    seed: int
    model: Recommender
    reads: tuple[str, ...]
    side: SideInfo
    group_names: tuple[str, ...] = ()
    featuriser: Any = None
    """``features.single.NewImageFeatures`` when the model reads pixels-derived features."""
    verified: dict[str, float] = field(default_factory=dict)
    """Agreement of a recomputed stored image with its stored rows, when checked."""
    load_seconds: float = 0.0

    @property
    def content_blind(self) -> bool:
        return not any(r in FEATURE_SOURCES or r == "patches" for r in self.reads)

    def user_index(self, user: str) -> int:
        return self.bundle.vocab.user_index().get(str(user), UNKNOWN_USER)

    @classmethod
    def load(
        cls,
        data: MaterialisedDataset,
        model_name: str,
        seed: int = 0,
        bundle: SplitBundle | None = None,
        device: str = "cpu",
        threads: int | None = 1,
    ) -> "Suggester":
        """Load the splits (unless given), the seed's fit and what it reads; ``device`` and
        ``threads`` (torch CPU threads, None: all cores) are where new images' CNN runs."""
        started = time.perf_counter()
        bundle = bundle if bundle is not None else data.bundle()
        trained: TrainedModel = data.object(f"model_{model_name}")
        if seed not in trained.model_paths:
            raise SuggestError(f"{data.name}/model_{model_name} has no fit for seed {seed}; "
                               f"seeds: {sorted(trained.model_paths)}")
        path = Path(trained.model_paths[seed])
        if not path.exists():
            raise SuggestError(f"the seed-{seed} fit of {data.name}/model_{model_name} is missing at {path}; "
                               + materialise_hint(data.name, f"model_{model_name}"))
        model = load_model(path)
        if model.n_tags != bundle.vocab.n_tags:
            raise SuggestError(
                f"{data.name}/model_{model_name} was fitted on {model.n_tags} tags but the current "
                f"splits have {bundle.vocab.n_tags}: the splits changed since; "
                + materialise_hint(data.name, f"model_{model_name}"))
        reads = side_reads(model)
        arrays: dict[str, ArrayFile] = {}
        for name in reads:
            if name in ("patches", "groups"):
                continue
            if name not in FEATURE_SOURCES:
                raise SuggestError(f"model {model_name} reads feature {name!r}, which no feature asset provides "
                                   f"(assets: {FEATURE_SOURCES})")
            arrays[name] = data.object(FEATURE_SOURCES[name])
        patches = data.object("patches") if "patches" in reads else None
        groups_table = data.table("photo_groups") if "groups" in reads else None
        try:
            side = side_info(bundle, arrays, patches, groups_table)
        except (KeyError, FileNotFoundError, ValueError) as error:
            raise SuggestError(f"side information of {data.name}/model_{model_name}: {error}") from error
        group_names: tuple[str, ...] = ()
        if groups_table is not None:
            _, group_names = group_matrix(groups_table, bundle.vocab)
        model.prepare(side)  # e.g. a neighbour model's training rows: loading, not answering
        suggester = cls(data=data, bundle=bundle, trained=trained, seed=seed, model=model, reads=reads,
                        side=side, group_names=group_names)
        pixel = [r for r in reads if r in FEATURE_SOURCES or r == "patches"]
        if pixel:
            suggester._prepare_featuriser(pixel, arrays, patches, device, threads)
        suggester.load_seconds = time.perf_counter() - started
        return suggester

    def _prepare_featuriser(self, pixel: list[str], arrays: dict[str, ArrayFile],
                            patches: ArrayFile | None, device: str, threads: int | None) -> None:
        from tagrec_models.features.device import DeviceConfig
        from tagrec_models.features.single import (
            FeatureSettingsError, NewImageFeatures, legacy_settings, read_extraction_settings,
            verify_against_stored)
        from tagrec_models.features.vlad import VladCodebook, codebook_file, stage_of_codes

        handles = [*arrays.values(), *([patches] if patches is not None else [])]
        folder = Path(handles[0].path).parent
        codebook = None
        if "vlad" in arrays:
            stage = stage_of_codes(arrays["vlad"].name)
            book = codebook_file(arrays["vlad"].path, stage)
            if not book.exists():
                raise SuggestError(f"the VLAD codebook of stage {stage!r} is missing at {book}; "
                                   + materialise_hint(self.data.name, "vlad"))
            codebook = VladCodebook.load(book)
        finetuned, finetuned_max_side = None, 0
        if "cnn_finetuned" in arrays:
            from tagrec_models.features.finetune import load_network
            from tagrec_models.features.finetuned import NETWORK_FILE

            network = Path(arrays["cnn_finetuned"].path).parent / NETWORK_FILE
            if not network.exists():
                raise SuggestError(f"the fine-tuned network is missing at {network}; "
                                   + materialise_hint(self.data.name, "cnn_finetuned"))
            tuned, _, finetuned_max_side = load_network(network)
            finetuned = tuned.backbone
        try:
            settings = read_extraction_settings(folder)
            recorded = settings is not None
            if not recorded:
                local_shape = None
                if codebook is not None:
                    conv_maps = self.data.object("conv_maps")
                    if codebook.stage not in conv_maps:
                        raise SuggestError(f"{self.data.name}/conv_maps has no stage {codebook.stage!r}; "
                                           + materialise_hint(self.data.name, "vlad"))
                    local_shape = conv_maps[codebook.stage].shape
                settings = legacy_settings(patches.shape if patches is not None else None, local_shape)
            self.featuriser = NewImageFeatures(settings, pixel, codebook=codebook,
                                               device=DeviceConfig(device=device, num_workers=0, threads=threads),
                                               finetuned=finetuned, finetuned_max_side=finetuned_max_side)
            if not recorded:
                self.verified = self._verify(
                    folder, {**arrays, **({'patches': patches} if patches is not None else {})},
                    verify_against_stored)
        except FeatureSettingsError as error:
            raise SuggestError(
                f"features of {self.data.name} in {folder}: {error}; rematerialise them: "
                + materialise_hint(self.data.name, "cnn_embedding")) from error

    def _verify(self, folder: Path, handles: dict[str, ArrayFile], verify) -> dict[str, float]:
        """Recompute one stored image (the first of the vocabulary that decoded) and compare
        it with its stored rows. ``index.parquet`` of the features run gives each row's file."""
        index_path = folder / "index.parquet"
        if not index_path.exists():
            raise SuggestError(f"cannot check the feature settings: {index_path} is missing; "
                               + materialise_hint(self.data.name, "cnn_embedding"))
        index = pd.read_parquet(index_path)
        photo_ids = next(iter(handles.values())).photo_ids
        if len(index) != len(photo_ids):
            raise SuggestError(f"{index_path} has {len(index)} rows but the feature arrays {len(photo_ids)}; "
                               + materialise_hint(self.data.name, "cnn_embedding"))
        row_of = {p: i for i, p in enumerate(photo_ids)}
        position = self.bundle.vocab.image_index()
        for photo in self.bundle.vocab.images:
            row = row_of.get(photo)
            if row is not None and index["status"].iloc[row] != "broken":
                stored = {n: (self.side.patches if n == "patches" else self.side.features[n])[position[photo]]
                          for n in self.featuriser.wanted}
                return verify(self.featuriser, str(index["path"].iloc[row]), stored)
        raise SuggestError(f"cannot check the feature settings: no stored image of {self.data.name} decoded")

    # -- scoring --------------------------------------------------------------------------
    def extended_side(self, new: Any, rows: np.ndarray, groups: Sequence[str]) -> SideInfo:
        """``self.side`` with one more row per new image (``rows`` of the featuriser's batch),
        so that the new images get indices ``n_images, n_images + 1, ...``."""
        n_new = len(rows)
        features = {name: np.concatenate([array, new.features[name][rows]]) for name, array in self.side.features.items()}
        patches = None
        if self.side.patches is not None:
            patches = np.concatenate([self.side.patches, new.patches[rows]])
        image_groups = None
        if self.side.image_groups is not None:
            image_groups = sparse.vstack([self.side.image_groups, self.group_rows(groups, n_new)]).tocsr()
        return SideInfo(features=features, patches=patches, image_groups=image_groups)

    def group_rows(self, groups: Sequence[str], n: int) -> sparse.csr_matrix:
        column = {g: j for j, g in enumerate(self.group_names)}
        cols = sorted({column[g] for g in groups if g in column})
        dense = np.zeros((n, len(self.group_names)), dtype=np.float32)
        dense[:, cols] = 1.0
        return sparse.csr_matrix(dense)

    def unknown_groups(self, groups: Sequence[str]) -> list[str]:
        known = set(self.group_names)
        return [g for g in groups if g not in known]

    def score_new(self, user: int, new: Any, rows: np.ndarray, groups: Sequence[str] = ()) -> np.ndarray:
        """Scores ``[len(rows), n_tags]`` of posts (user, new image) for the given rows of a
        ``NewImageBatch`` (or, for a model that reads no image information, of as many posts)."""
        vocab = self.bundle.vocab
        n = len(rows)
        if self.content_blind:
            # Such a model (MP, MP-u, PITF, FM) knows an image only by its training posts, so
            # every image outside training is the same unseen image to it; score the new one
            # as the dataset's own unseen images are scored (paper 1's "new images" scenario).
            unseen = np.setdiff1d(np.arange(vocab.n_images), self.bundle.train_images())
            image = np.full(n, unseen[0] if len(unseen) else vocab.n_images, dtype=np.int64)
            n_images = vocab.n_images if len(unseen) else vocab.n_images + 1
            side = self.side
        else:
            image = vocab.n_images + np.arange(n, dtype=np.int64)
            n_images = vocab.n_images + n
            side = self.extended_side(new, rows, groups)
        posts = Posts(
            user=np.full(n, user, dtype=np.int64),
            image=image,
            tags=sparse.csr_matrix((n, vocab.n_tags), dtype=np.float32),
            n_users=vocab.n_users,
            n_images=n_images,
        )
        return self.model.score(posts, side)

    def suggest(self, paths: Sequence[str], user: str, k: int = 10, groups: Sequence[str] = ()) -> list[ImageSuggestions]:
        """Top ``k`` tags of each image file for ``user``; a file that does not decode gets an
        ``error`` instead. The user is looked up in the training vocabulary (unknown: -1)."""
        if k < 1:
            raise SuggestError(f"k must be at least 1, got {k}")
        paths = [str(p) for p in paths]
        user_index = self.user_index(user)
        if self.featuriser is not None:
            new = self.featuriser.compute(paths)
            ok = np.flatnonzero(new.ok)
            errors = {i: f"cannot read the image: {new.reason[i]}" for i in np.flatnonzero(~new.ok)}
        else:
            from tagrec_models.features.images import load_rgb

            new, errors = None, {}
            for i, p in enumerate(paths):  # the model ignores pixels, but the file must be an image
                loaded = load_rgb(p)
                if not loaded.ok:
                    errors[i] = f"cannot read the image: {loaded.reason}"
            ok = np.array([i for i in range(len(paths)) if i not in errors], dtype=np.int64)
        results: list[ImageSuggestions] = [ImageSuggestions(p, error=errors.get(i, "")) for i, p in enumerate(paths)]
        if len(ok):
            scores = self.score_new(user_index, new, ok, groups)
            for row, i in enumerate(ok):
                tags, values = top_k(scores[row], self.bundle.vocab.tags, k)
                results[i] = ImageSuggestions(paths[i], tags=tags, scores=values)
        return results
