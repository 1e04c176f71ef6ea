"""Image features per shard of images (issue 14): the unit a backfill spreads over workers.

A photo's shard is a stable hash of its photo id (``shard_of``), so the shard of a photo never
depends on which other photos exist: a new crawl batch lands its photos in the shards, and a
shard re-materialised after it extracts only the photos it has not seen with the same settings
(``extract_shard`` reuses the stored rows of the others, matched by photo id and file path).
Shards are independent, so a backfill can run them on different machines (``dagster-celery``
workers, Kubernetes pods); ``assemble_shards`` then gathers every shard's rows into the
dataset-wide arrays in the order the splits ask for, the files ``extract_features`` writes for
one pass (``extraction.py``), so everything downstream (VLAD, models, ``tagrec suggest``) reads
the same layout as before.

Each shard folder holds what ``extract_features`` writes (``index.parquet``, ``cnn.npy``,
``ch64.npy``, ``cm225.npy``, ``patches_<d>.npy``, ``local_<stage>.npy``), the settings it
was computed with (``single.SETTINGS_FILE``) and ``photo_ids.parquet`` (photo_id per row).
"""

from __future__ import annotations

import hashlib
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from tagrec_models.features.extraction import ExtractionConfig, extract_features
from tagrec_models.features.single import read_extraction_settings, settings_to_dict, write_extraction_settings
from tagrec_models.storage.atomic import atomic_path, write_parquet

Log = Callable[[str], None]

SHARD_PREFIX = "shard"
IDS_FILE = "photo_ids.parquet"
INDEX_FILE = "index.parquet"
# What a changed value of these fields does not change: where and how fast the pass ran.
_RUN_ONLY_FIELDS = ("log_every_s",)


def shard_names(n_shards: int) -> list[str]:
    """``shard00`` .. ``shard<n-1>`` (zero-padded so they sort as numbers)."""
    if n_shards < 1:
        raise ValueError(f"n_shards must be positive, got {n_shards}")
    width = max(2, len(str(n_shards - 1)))
    return [f"{SHARD_PREFIX}{i:0{width}d}" for i in range(n_shards)]


def shard_of(photo_id: str, n_shards: int) -> str:
    """The shard of one photo: BLAKE2b of its id modulo ``n_shards`` (the same on every
    machine and Python process, unlike ``hash``)."""
    digest = hashlib.blake2b(str(photo_id).encode("utf-8"), digest_size=8).digest()
    return shard_names(n_shards)[int.from_bytes(digest, "big") % n_shards]


def shard_members(photo_ids: Sequence[str], n_shards: int, shard: str) -> list[int]:
    """Positions of the photos of ``photo_ids`` that belong to ``shard``, ordered by photo id."""
    if shard not in shard_names(n_shards):
        raise ValueError(f"unknown shard {shard!r} for {n_shards} shards")
    rows = [i for i, p in enumerate(photo_ids) if shard_of(p, n_shards) == shard]
    return sorted(rows, key=lambda i: str(photo_ids[i]))


@dataclass(frozen=True)
class FeatureShard:
    """What one shard's extraction left in ``out_dir``: one row per ``photo_ids[i]``."""

    shard: str
    out_dir: str
    photo_ids: tuple[str, ...]
    arrays: tuple[str, ...]
    n_extracted: int
    n_reused: int
    seconds: float

    def metadata(self) -> dict[str, object]:
        return {"shard": self.shard, "n_images": len(self.photo_ids), "n_extracted": self.n_extracted,
                "n_reused": self.n_reused, "seconds": round(self.seconds, 3)}


def _comparable(config: ExtractionConfig | None) -> dict | None:
    if config is None:
        return None
    values = settings_to_dict(config)
    for name in _RUN_ONLY_FIELDS:
        values.pop(name, None)
    return values


def _array_names(folder: Path) -> list[str]:
    return sorted(p.stem for p in folder.glob("*.npy"))


def _stored(out_dir: Path, config: ExtractionConfig) -> pd.DataFrame | None:
    """The rows stored in ``out_dir`` (photo_id, path, row) if they were computed with
    ``config``; None when there are none or the settings differ (then nothing is reused)."""
    ids, index = out_dir / IDS_FILE, out_dir / INDEX_FILE
    if not (ids.exists() and index.exists()):
        return None
    try:
        same = _comparable(read_extraction_settings(out_dir)) == _comparable(config)
    except ValueError:
        return None
    if not same:
        return None
    if config.cnn and config.embedding_stages and not (out_dir / "cnn_stages.npy").exists():
        return None  # written before cnn_stages had its own file (cnn.npy held the concatenation)
    stored = pd.read_parquet(ids)
    stored["row"] = np.arange(len(stored), dtype=np.int64)
    return stored


def gather_rows(sources: Sequence[tuple[Path, np.ndarray, np.ndarray]], n_rows: int, out_dir: Path,
                names: Sequence[str]) -> dict[str, Path]:
    """Write ``out_dir/<name>.npy`` for every name: ``out[target] = source[rows]`` for each
    ``(source_dir, rows, target)``, every target row written exactly once. Each file is written
    through a memory map (never all in memory) and moved into place atomically."""
    covered = np.zeros(n_rows, dtype=bool)
    for _, rows, target in sources:
        if len(rows) != len(target):
            raise ValueError("gather_rows: rows and target differ in length")
        if covered[target].any() or len(np.unique(target)) != len(target):
            raise ValueError("gather_rows: a target row is written twice")
        covered[target] = True
    if not covered.all():
        raise ValueError(f"gather_rows: {int((~covered).sum())} target rows have no source")
    files = {}
    for name in names:
        first = np.load(sources[0][0] / f"{name}.npy", mmap_mode="r")
        files[name] = out_dir / f"{name}.npy"
        with atomic_path(files[name]) as tmp:
            out = np.lib.format.open_memmap(tmp, mode="w+", dtype=first.dtype, shape=(n_rows,) + first.shape[1:])
            for folder, rows, target in sources:
                array = np.load(folder / f"{name}.npy", mmap_mode="r")
                if array.shape[1:] != first.shape[1:] or array.dtype != first.dtype:
                    raise ValueError(f"{name}: {folder} has {array.dtype} {array.shape[1:]}, "
                                     f"{sources[0][0]} has {first.dtype} {first.shape[1:]}")
                order = np.argsort(rows, kind="stable")  # read the source in file order
                out[target[order]] = array[rows[order]]
            out.flush()
            del out
    return files


def _gather_index(sources: Sequence[tuple[Path, np.ndarray, np.ndarray]], n_rows: int) -> pd.DataFrame:
    parts = []
    for folder, rows, target in sources:
        index = pd.read_parquet(folder / INDEX_FILE).iloc[rows].copy()
        index["row"] = target
        parts.append(index)
    return pd.concat(parts).sort_values("row").reset_index(drop=True)


def extract_shard(shard: str, photo_ids: Sequence[str], paths: Sequence[str | Path], out_dir: str | Path,
                  config: ExtractionConfig, log: Log | None = None) -> FeatureShard:
    """The features of one shard's photos in ``out_dir`` (rows in the order of ``photo_ids``).

    Rows already in ``out_dir`` for the same photo id and file, computed with the same settings,
    are kept; only the other photos go through ``extract_features``. With nothing new and
    nothing dropped, the folder is left as it is.
    """
    import time

    log = log or (lambda message: None)
    started = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    wanted = pd.DataFrame({"photo_id": [str(p) for p in photo_ids], "path": [str(p) for p in paths]})
    if wanted["photo_id"].duplicated().any():
        raise ValueError(f"shard {shard}: duplicate photo ids")
    stored = _stored(out_dir, config)
    if stored is not None and len(stored) == len(wanted) and (stored[["photo_id", "path"]].values == wanted.values).all():
        log(f"{shard}: {len(wanted)} images already extracted with these settings")
        return FeatureShard(shard, str(out_dir), tuple(wanted["photo_id"]), tuple(_array_names(out_dir)),
                            0, len(wanted), time.perf_counter() - started)
    known = wanted.merge(stored, on=["photo_id", "path"], how="left") if stored is not None else wanted.assign(row=np.nan)
    reuse = known["row"].notna().to_numpy()
    new = np.flatnonzero(~reuse)
    log(f"{shard}: {len(wanted)} images, {int(reuse.sum())} reused, {len(new)} to extract")
    if not reuse.any():
        extract_features(list(wanted["path"]), out_dir, config, log=log)
    else:
        with tempfile.TemporaryDirectory(dir=out_dir, prefix=".new-") as scratch:
            sources = [(out_dir, known.loc[reuse, "row"].to_numpy(np.int64), np.flatnonzero(reuse))]
            if len(new):
                extract_features(list(wanted["path"].iloc[new]), Path(scratch), config, log=log)
                sources.append((Path(scratch), np.arange(len(new), dtype=np.int64), new))
            names = _array_names(out_dir)
            index = _gather_index(sources, len(wanted))
            staged = Path(scratch) / "merged"
            staged.mkdir()
            gather_rows(sources, len(wanted), staged, names)
            for name in names:  # each move is atomic; the ids file below is written last
                (staged / f"{name}.npy").replace(out_dir / f"{name}.npy")
            write_parquet(index, out_dir / INDEX_FILE)
    write_extraction_settings(config, out_dir)
    write_parquet(wanted, out_dir / IDS_FILE)
    return FeatureShard(shard, str(out_dir), tuple(wanted["photo_id"]), tuple(_array_names(out_dir)),
                        len(new), int(reuse.sum()), time.perf_counter() - started)


def assemble_shards(shards: Sequence[FeatureShard], photo_ids: Sequence[str], out_dir: str | Path) -> dict[str, Path]:
    """Gather the rows of ``photo_ids`` from the shards into the dataset-wide files of
    ``out_dir`` (``extract_features``' layout: arrays, ``index.parquet``, the settings file).

    Every shard must have been extracted with the same settings and hold the same arrays; a
    photo found in no shard is an error naming it."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if not shards:
        raise ValueError("assemble_shards got no shards")
    settings = {s.shard: _comparable(read_extraction_settings(s.out_dir)) for s in shards}
    first = shards[0]
    differing = [name for name, values in settings.items() if values != settings[first.shard]]
    if differing:
        raise ValueError(f"shards {differing} were extracted with other settings than {first.shard}: "
                         "rematerialise them")
    names = list(first.arrays)
    for s in shards:
        if list(s.arrays) != names:
            raise ValueError(f"shard {s.shard} holds {list(s.arrays)}, {first.shard} holds {names}")
    position = {str(p): i for i, p in enumerate(photo_ids)}
    if len(position) != len(photo_ids):
        raise ValueError("assemble_shards: duplicate photo ids")
    sources, found = [], 0
    for s in shards:
        pairs = [(row, position[p]) for row, p in enumerate(s.photo_ids) if p in position]
        if pairs:
            rows, target = (np.array(x, dtype=np.int64) for x in zip(*pairs))
            sources.append((Path(s.out_dir), rows, target))
            found += len(pairs)
    if found != len(position):
        have = {p for s in shards for p in s.photo_ids}
        missing = [p for p in position if p not in have]
        raise ValueError(f"{len(missing)} photos are in no shard, e.g. {missing[:3]}: materialise their shards")
    files = gather_rows(sources, len(position), out_dir, names)
    index = _gather_index(sources, len(position))
    files["index"] = write_parquet(index, out_dir / INDEX_FILE)
    recorded = read_extraction_settings(first.out_dir)
    if recorded is not None:  # new photos get the same features (tagrec suggest)
        write_extraction_settings(recorded, out_dir)
    return files
