"""Bring your own dataset: a folder of posts and images as ingest tables (issue 7, part 3).

A dataset folder holds::

    posts.csv   or  posts.parquet      one row per post (photo), columns below
    images/                            the image files (any format PIL reads), sub-folders allowed
    dataset.json                       optional: {"recipe": ..., "description": ...,
                                                  "recipe_overrides": {...}}

Columns of the posts file (names exact; any other column is an error, so a misspelt optional
column cannot silently drop data):

* ``photo_id`` (required): the post's id, unique in the file.
* ``owner`` (required): the user who posted it (every personalised model needs one).
* ``tags`` (required): the post's tags. In a text cell tags are separated by ``|`` (a tag may
  hold spaces: ``new york|sunset``); each piece is stripped, empty pieces and repeats are
  dropped. In ``posts.parquet`` the column may instead be a list of strings (taken as is,
  no ``|`` splitting). An empty cell is a post without tags (kept as a photo; it only adds
  no assignments).
* ``groups`` (optional): the groups (pools, albums, categories) the post belongs to, same
  convention as ``tags``; ``group_id`` and ``group_name`` are both the given text. Paper 2's
  group-aware neighbours (paper 2, eq. 4) use them; without any, the dataset runs paper 2's no-group
  variants.
* ``title``, ``url``, ``license`` (optional): copied to ``photos``; ``url`` defaults to the
  image file's ``file://`` URI.
* ``upload_date`` (optional): ISO 8601 (``2021-06-30``, ``2021-06-30T14:05:00``, optionally
  with a zone such as ``+02:00`` or ``Z``); a time without a zone is read as UTC. In
  ``posts.parquet`` a timestamp column also works.
* ``image`` (optional): the image's file name relative to ``images/``. Empty or absent: the
  one file ``images/<photo_id>.<extension>`` (any extension).

Mapped to the contract of ``tagrec_models.sources.tables``: ``photos`` (``source`` =
``folder``), ``photo_tags`` (``raw_tag`` as given, ``tag`` its ``clean_tag`` form),
``photo_groups`` and ``images`` (checked with the same ``check_image`` the openclipart and
Corel5k readers use: sha256, size, full decode).

Errors and skips. A problem with the folder or the file as a whole is an ``IngestError`` naming
the path: no folder, no ``images/``, no posts file or both, a file that does not parse (not
UTF-8, unbalanced quotes, empty), a NUL byte in a CSV (named by line: pandas would cut the
cell there silently), missing required columns (the message lists the columns found), unknown
columns, no rows, or no usable row at all. A trailing comma on every row (and the header) is
read as the comma it is, not as a shifted first column. A problem with one row makes that row a *skip*: a row of
``FolderTables.skipped_rows`` (``row``: 1-based data row, the header not counted;
``photo_id``; ``reason``), never a crash and never silent. A row is skipped for: an empty
``photo_id``; a ``photo_id`` seen on an earlier row (the first one is kept); an empty
``owner``; an ``upload_date`` that is not ISO 8601; an ``image`` outside ``images/``, or an
``images/<photo_id>.<ext>`` that is a link to a file outside it (containment is checked on the
resolved path); no image file, or several ``images/<photo_id>.*`` candidates; an image file
larger than ``FolderConfig.max_file_bytes`` (not read at all), or one that fails to decode (or
is larger than ``FolderConfig.max_pixels``). So every row of the posts file is either a photo or
a skip.

Where tagrec finds such folders (``discover_folder_datasets``): every ``<data home>/byo/<name>/``
holding a posts file, and every ``name=/path/to/folder`` entry of the environment variable
``TAGREC_DATASETS`` (entries separated by ``,``). Each becomes a dataset named ``<name>``
(lower-case letters, digits and single underscores, starting with a letter) with its own
asset group and ``<name>_all`` job. ``dataset.json`` may pick the preprocessing recipe (one of
``tagrec_models.preprocess.recipes.PROFILES``; default ``DEFAULT_RECIPE``), override recipe
fields and describe the dataset; a name clashing with a built-in dataset or given twice for
different folders, a bad name, or a bad ``dataset.json`` is a ``FolderDatasetError``
(``tagrec_models.catalog.discover_datasets`` also checks the recipe and its overrides).
Discovery reads only the header of each posts file, so a file that does not parse (wrong
encoding, unbalanced quotes, empty) never stops the other datasets from loading: it fails
its own dataset's ingest, naming the file.
"""

from __future__ import annotations

import codecs
import csv
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from tagrec_models.sources.openclipart import MAX_FILE_BYTES, check_image
from tagrec_models.sources.tables import (
    IMAGE_BROKEN,
    IMAGES_COLUMNS,
    PHOTO_GROUPS_COLUMNS,
    PHOTOS_COLUMNS,
    IngestError,
    IngestTables,
    conform,
)
from tagrec_models.vocabulary.cleaning import DEFAULT_CLEANING, CleaningConfig, clean_tags

SOURCE = "folder"
POSTS_FILES = ("posts.csv", "posts.parquet")
IMAGES_DIR = "images"
MANIFEST_FILE = "dataset.json"
REQUIRED_COLUMNS = ("photo_id", "owner", "tags")
OPTIONAL_COLUMNS = ("groups", "title", "upload_date", "image", "url", "license")
MULTI_VALUE_SEPARATOR = "|"
SKIPPED_ROWS_COLUMNS = {"row": "Int64", "photo_id": "string", "reason": "string"}

DATASETS_ENV = "TAGREC_DATASETS"
DATASETS_ENV_SEPARATOR = ","
BYO_DIR = "byo"
# The embedded default's recipe: paper 1's rules (50% tag-share rule, p-core, 2 test and 2
# validation posts per user) with no top-N cut, user sample or WordNet mapping, so it fits a
# collection of any size and language; core sizes scale down where a collection is small.
DEFAULT_RECIPE = "openclipart_default"
MANIFEST_KEYS = ("recipe", "description", "recipe_overrides")
# A dataset name becomes an asset key prefix, a group, a job name (``<name>_all``), an op name
# prefix (``<name>__ingest``) and a DuckDB schema: lower case (DuckDB folds case) and no
# double underscore (the op names use it as a separator).
_NAME = re.compile(r"^[a-z](?:_?[a-z0-9])*$")


class FolderDatasetError(IngestError):
    """A dataset folder, its ``dataset.json`` or a ``TAGREC_DATASETS`` entry that tagrec
    cannot register as a dataset; the message names it."""


@dataclass(frozen=True)
class FolderConfig:
    """``check_images``: decode every image (else only hash it and read its header);
    ``max_pixels``: an image with more pixels is skipped ("too large") without decoding, as in
    ``OpenclipartConfig``; ``None``: only PIL's own decompression-bomb limit; ``cleaning``: the
    cleaning that fills ``photo_tags.tag``; ``max_file_bytes``: an image file larger than this
    is skipped ("file too large") without reading it; ``None``: no limit."""

    check_images: bool = True
    max_pixels: int | None = 50_000_000
    cleaning: CleaningConfig = DEFAULT_CLEANING
    max_file_bytes: int | None = MAX_FILE_BYTES


@dataclass(frozen=True)
class FolderTables(IngestTables):
    """The four ingest tables plus ``skipped_rows`` (``row``, ``photo_id``, ``reason``): the
    rows of the posts file that did not become photos, and why."""

    skipped_rows: pd.DataFrame = field(
        default_factory=lambda: IngestTables.empty_frame(SKIPPED_ROWS_COLUMNS)
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(
            self, "skipped_rows", conform(self.skipped_rows, SKIPPED_ROWS_COLUMNS, "skipped_rows")
        )


# -- the posts file ---------------------------------------------------------------------------
def posts_file(folder: Path) -> Path:
    """The folder's ``posts.csv`` or ``posts.parquet``; an ``IngestError`` when it has neither
    or both."""
    found = [folder / name for name in POSTS_FILES if (folder / name).is_file()]
    if not found:
        raise IngestError(f"dataset folder {folder} has no {' or '.join(POSTS_FILES)}")
    if len(found) > 1:
        raise IngestError(
            f"dataset folder {folder} has both {' and '.join(POSTS_FILES)}; keep one"
        )
    return found[0]


def _read_posts(path: Path, columns: list[str] | None = None) -> tuple[pd.DataFrame, set[str]]:
    """The posts file as a DataFrame (text cells as read, nothing parsed as NA) and the names
    of its list-typed columns (Parquet only)."""
    try:
        if path.suffix == ".csv":
            _refuse_nul_bytes(path)
            frame = pd.read_csv(
                # utf-8-sig: spreadsheet programs often start a CSV with a byte-order mark,
                # which would otherwise become part of the first column's name.
                path, dtype=str, keep_default_na=False, encoding="utf-8-sig",
                usecols=(lambda name: name.strip() in columns) if columns else None,
                # A trailing comma on every row must not turn the first column into the
                # index (pandas' default when rows have one field more than the header).
                index_col=False,
            )
            list_columns: set[str] = set()
        else:
            table = pq.read_table(path, columns=columns)
            list_columns = {
                f.name.strip() for f in table.schema
                if pa.types.is_list(f.type) or pa.types.is_large_list(f.type)
            }
            frame = table.to_pandas()
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError,
            pa.ArrowException, OSError) as error:
        kind = "CSV (UTF-8)" if path.suffix == ".csv" else "Parquet"
        raise IngestError(f"{path} cannot be read as {kind}: {error}") from None
    if path.suffix == ".csv":
        # A trailing comma on the header too gives a nameless column with nothing in it.
        trailing = [c for c in frame.columns if _UNNAMED.match(str(c)) and (frame[c] == "").all()]
        frame = frame.drop(columns=trailing)
    frame.columns = [str(c).strip() for c in frame.columns]
    return frame, list_columns


# pandas' name for a column whose header cell is empty.
_UNNAMED = re.compile(r"^Unnamed: \d+$")
_SCAN_CHUNK = 1 << 20


def _refuse_nul_bytes(path: Path) -> None:
    """An ``IngestError`` naming the line when the CSV holds a NUL byte: pandas' parser would
    silently cut the cell at it. The file is scanned in chunks, never held whole."""
    line, offset = 1, 0
    with path.open("rb") as handle:
        while chunk := handle.read(_SCAN_CHUNK):
            at = chunk.find(b"\x00")
            if at >= 0:
                line += chunk.count(b"\n", 0, at)
                raise IngestError(
                    f"{path} holds a NUL byte on line {line} (byte {offset + at:,}): a text CSV "
                    "has none, and the cell would be cut short there; remove it or re-export the file"
                )
            line += chunk.count(b"\n")
            offset += len(chunk)


def _check_columns(path: Path, frame: pd.DataFrame) -> None:
    found = list(frame.columns)
    missing = [c for c in REQUIRED_COLUMNS if c not in found]
    if missing:
        raise IngestError(
            f"{path} lacks required column(s) {missing}; found columns {found} "
            f"(required: {list(REQUIRED_COLUMNS)}, optional: {list(OPTIONAL_COLUMNS)})"
        )
    unknown = [c for c in found if c not in REQUIRED_COLUMNS + OPTIONAL_COLUMNS]
    if unknown:
        raise IngestError(
            f"{path} has unknown column(s) {unknown}; allowed are {list(REQUIRED_COLUMNS)} "
            f"(required) and {list(OPTIONAL_COLUMNS)} (optional)"
        )
    if len(set(found)) != len(found):
        raise IngestError(f"{path} names a column twice: {found}")


def _text(frame: pd.DataFrame, column: str) -> pd.Series:
    """One cell per row as stripped text, ``""`` where empty or absent."""
    if column not in frame.columns:
        return pd.Series("", index=frame.index, dtype="string")
    return frame[column].astype("string").fillna("").str.strip()


def split_multi_values(series: pd.Series, is_list: bool = False) -> pd.DataFrame:
    """``row, value`` pairs of a ``tags``/``groups`` column: text cells split on ``|`` (or list
    cells exploded as they are when ``is_list``), values stripped, empty values and repeats
    within a row dropped, order of first appearance kept. ``row`` is the series' index."""
    values = series if is_list else series.astype("string").fillna("").str.split(
        MULTI_VALUE_SEPARATOR, regex=False
    )
    exploded = values.explode().dropna().astype("string").str.strip()
    pairs = pd.DataFrame({"row": exploded.index, "value": exploded.to_numpy()})
    pairs = pairs[pairs["value"] != ""]
    return pairs.drop_duplicates().reset_index(drop=True)


def _upload_dates(frame: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
    """The ``upload_date`` column as UTC timestamps (NaT where empty) and a mask of the rows
    whose non-empty value is not ISO 8601."""
    if "upload_date" not in frame.columns:
        return pd.Series(pd.NaT, index=frame.index, dtype="datetime64[ns, UTC]"), pd.Series(
            False, index=frame.index
        )
    column = frame["upload_date"]
    if pd.api.types.is_datetime64_any_dtype(column):
        return pd.to_datetime(column, utc=True), pd.Series(False, index=frame.index)
    text = _text(frame, "upload_date")
    parsed = pd.to_datetime(
        text.where(text != ""), format="ISO8601", utc=True, errors="coerce"
    )
    return parsed, (text != "") & parsed.isna()


# -- images -----------------------------------------------------------------------------------
def _index_images(images_root: Path) -> dict[str, list[Path]]:
    """Every file with an extension under ``images/``, keyed by its relative path without the
    extension (what a ``photo_id`` names when the ``image`` cell is empty)."""
    index: dict[str, list[Path]] = {}
    for path in sorted(images_root.rglob("*")):
        if path.suffix and path.is_file():
            stem = path.relative_to(images_root).with_suffix("").as_posix()
            index.setdefault(stem, []).append(path)
    return index


def _locate_image(
    images_root: Path, photo_id: str, image: str, index: dict[str, list[Path]]
) -> tuple[Path | None, str]:
    """The image file of one row, or ``None`` and the reason to skip the row."""
    if image:
        path = images_root / image
        if not path.resolve().is_relative_to(images_root.resolve()):
            return None, f"image {image!r} lies outside {IMAGES_DIR}/"
        if not path.is_file():
            return None, f"image file {IMAGES_DIR}/{image} does not exist"
        return path, ""
    candidates = index.get(photo_id, [])
    if not candidates:
        return None, (
            f"no image file {IMAGES_DIR}/{photo_id}.<ext> (or name the file in the image column)"
        )
    if len(candidates) > 1:
        names = [p.relative_to(images_root).as_posix() for p in candidates]
        return None, f"several image files for photo_id {photo_id!r}: {names}; name one in the image column"
    # The same containment check as a named image: a symlink under images/ pointing outside
    # the folder must not let a posts file read (and record the path of) any file on disk.
    found = candidates[0]
    if not found.resolve().is_relative_to(images_root.resolve()):
        rel = found.relative_to(images_root).as_posix()
        return None, f"image {IMAGES_DIR}/{rel} is a link to a file outside {IMAGES_DIR}/"
    return found, ""


# -- reading a folder -------------------------------------------------------------------------
def read_folder(
    folder: Path,
    config: FolderConfig = FolderConfig(),
    log: Callable[[str], None] | None = None,
) -> FolderTables:
    """Read the dataset folder ``folder`` (``posts.csv`` or ``posts.parquet`` plus ``images/``)
    into ingest tables plus skipped rows; see the module docstring for the format, the
    mapping and what is an error or a skip."""
    say = log or (lambda _msg: None)
    folder = Path(folder)
    if not folder.is_dir():
        raise IngestError(f"dataset folder {folder} does not exist")
    folder = folder.resolve()
    images_root = folder / IMAGES_DIR
    if not images_root.is_dir():
        raise IngestError(f"dataset folder {folder} has no {IMAGES_DIR}/ folder")
    path = posts_file(folder)
    frame, list_columns = _read_posts(path)
    _check_columns(path, frame)
    if frame.empty:
        raise IngestError(f"{path} has no rows")
    frame.index = pd.RangeIndex(1, len(frame) + 1, name="row")  # 1-based data rows

    photo_ids, owners, images = _text(frame, "photo_id"), _text(frame, "owner"), _text(frame, "image")
    dates, bad_dates = _upload_dates(frame)
    reasons = pd.Series("", index=frame.index, dtype="string")

    def skip(mask: pd.Series, reason: pd.Series | str) -> None:
        free = mask & (reasons == "")  # a row keeps its first reason
        reasons[free] = reason if isinstance(reason, str) else reason[free]

    skip(photo_ids == "", "empty photo_id")
    first_row = frame.index.to_series().groupby(photo_ids).transform("min")
    skip(photo_ids.duplicated(keep="first"),
         "duplicate photo_id " + photo_ids + " (first on row " + first_row.astype("string") + ")")
    skip(owners == "", "empty owner")
    if "upload_date" in frame.columns:
        skip(bad_dates, "upload_date " + _text(frame, "upload_date") + " is not an ISO 8601 date")

    index = _index_images(images_root)
    image_rows: dict[int, dict] = {}
    candidates = reasons.index[reasons == ""]
    for i, row in enumerate(candidates):
        image_path, reason = _locate_image(images_root, photo_ids[row], images[row], index)
        if image_path is None:
            reasons[row] = reason
            continue
        checked = check_image(
            image_path.resolve(), config.check_images, config.max_pixels, config.max_file_bytes
        )
        if checked["status"] == IMAGE_BROKEN:
            rel = f"{IMAGES_DIR}/{image_path.relative_to(images_root).as_posix()}"
            reasons[row] = f"image {rel}: {checked['reason']}"
            continue
        image_rows[row] = checked
        if (i + 1) % 1000 == 0:
            say(f"{path.name}: {i + 1:,}/{len(candidates):,} images checked")

    skipped = reasons != ""
    skipped_rows = pd.DataFrame(
        {"row": frame.index[skipped], "photo_id": photo_ids[skipped].to_numpy(),
         "reason": reasons[skipped].to_numpy()}
    )
    kept = frame.index[~skipped]
    if len(kept) == 0:
        examples = "; ".join(
            f"row {r.row}: {r.reason}" for r in skipped_rows.head(5).itertuples()
        )
        raise IngestError(
            f"{path}: none of its {len(frame):,} rows is usable (every row was skipped), "
            f"e.g. {examples}"
        )

    images_frame = pd.DataFrame(
        [{"photo_id": photo_ids[r], **image_rows[r]} for r in kept], columns=list(IMAGES_COLUMNS)
    )
    urls = _text(frame, "url")
    photos = pd.DataFrame(
        {
            "photo_id": photo_ids[kept].to_numpy(),
            "owner": owners[kept].to_numpy(),
            "title": _text(frame, "title")[kept].replace("", pd.NA).to_numpy(),
            "date_uploaded": dates[kept].to_numpy(),
            "url": [urls[r] or Path(image_rows[r]["path"]).as_uri() for r in kept],
            "license": _text(frame, "license")[kept].replace("", pd.NA).to_numpy(),
            "source": SOURCE,
        },
        columns=list(PHOTOS_COLUMNS),
    )
    kept_frame = frame.loc[kept]
    tags = split_multi_values(kept_frame["tags"], "tags" in list_columns)
    tags_frame = pd.DataFrame(
        {"photo_id": photo_ids[tags["row"]].to_numpy(), "raw_tag": tags["value"].to_numpy()}
    )
    tags_frame["tag"] = clean_tags(tags_frame["raw_tag"], config.cleaning)
    if "groups" in frame.columns:
        groups = split_multi_values(kept_frame["groups"], "groups" in list_columns)
        groups_frame = pd.DataFrame(
            {"photo_id": photo_ids[groups["row"]].to_numpy(),
             "group_id": groups["value"].to_numpy(), "group_name": groups["value"].to_numpy()}
        )
    else:
        groups_frame = IngestTables.empty_frame(PHOTO_GROUPS_COLUMNS)

    tables = FolderTables(
        photos=photos,
        photo_tags=tags_frame,
        photo_groups=groups_frame,
        images=images_frame,
        skipped_rows=skipped_rows,
    )
    say(
        f"{path}: {len(tables.photos):,} photos, {tables.photos['owner'].nunique():,} owners, "
        f"{len(tables.photo_tags):,} tag assignments, {len(tables.photo_groups):,} group "
        f"memberships, {len(tables.skipped_rows):,} skipped rows"
    )
    return tables


# -- discovery --------------------------------------------------------------------------------
@dataclass(frozen=True)
class FolderDataset:
    """A dataset folder registered under ``name``, with what ``dataset.json`` says and
    whether its posts file has a ``groups`` column."""

    name: str
    folder: Path
    recipe: str
    description: str
    recipe_overrides: dict = field(default_factory=dict)
    has_groups: bool = False


def check_dataset_name(name: str, where: str) -> str:
    if not _NAME.match(name):
        raise FolderDatasetError(
            f"{where}: dataset name {name!r} must be lower-case letters, digits and single "
            "underscores, starting with a letter (it becomes a DuckDB schema and a job name)"
        )
    return name


def read_manifest(folder: Path) -> tuple[str, str, dict]:
    """``recipe``, ``description`` and ``recipe_overrides`` from the folder's optional
    ``dataset.json``; defaults: ``DEFAULT_RECIPE``, a description naming the folder, none.
    The file's shape is checked here (a bad one fails when the datasets are loaded, naming
    it); whether the recipe exists and takes those overrides is checked by the caller
    (``tagrec_models.catalog``), as recipes live in ``tagrec_models.preprocess``, a layer above
    the sources."""
    path = folder / MANIFEST_FILE
    manifest: dict = {}
    if path.exists():
        try:
            manifest = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise FolderDatasetError(f"{path} is not readable JSON: {error}") from None
        if not isinstance(manifest, dict):
            raise FolderDatasetError(f"{path} must hold a JSON object, got {type(manifest).__name__}")
        unknown = sorted(set(manifest) - set(MANIFEST_KEYS))
        if unknown:
            raise FolderDatasetError(f"{path} has unknown key(s) {unknown}; allowed: {list(MANIFEST_KEYS)}")
    recipe = manifest.get("recipe", DEFAULT_RECIPE)
    if not isinstance(recipe, str):
        raise FolderDatasetError(f"{path}: recipe must be a string naming a recipe")
    description = manifest.get("description", f"Your own dataset from {folder} (posts file + images/).")
    if not isinstance(description, str):
        raise FolderDatasetError(f"{path}: description must be a string")
    overrides = manifest.get("recipe_overrides", {})
    if not isinstance(overrides, dict):
        raise FolderDatasetError(f"{path}: recipe_overrides must be an object of recipe fields")
    return recipe, description, dict(overrides)


# The header of a posts.csv is read from at most this many bytes: discovery runs when the
# Definitions load and must stay cheap whatever the file holds.
HEADER_MAX_BYTES = 1 << 20


def posts_columns(path: Path) -> list[str] | None:
    """The column names of a posts file, reading only its header (the first line of a CSV,
    the footer schema of a Parquet file), or ``None`` when the header cannot be read (wrong
    encoding, empty file, unbalanced quotes, not Parquet). Discovery uses it so that one bad
    file never breaks the loading of every dataset: the file's own ingest then fails with
    ``read_folder``'s error naming it."""
    try:
        if path.suffix == ".parquet":
            return [name.strip() for name in pq.read_schema(path).names]
        with path.open("rb") as handle:
            first = handle.readline(HEADER_MAX_BYTES)
        text = codecs.decode(first, "utf-8-sig")
        if not text.strip() or "\x00" in text:
            return None
        row = next(csv.reader([text.rstrip("\r\n")], strict=True))
    except (OSError, UnicodeDecodeError, csv.Error, StopIteration, pa.ArrowException):
        return None
    return [name.strip() for name in row]


def has_groups(folder: Path) -> bool:
    """Whether the posts file declares a ``groups`` column (only its header is read; a file
    whose header cannot be read has none: its ingest reports why)."""
    columns = posts_columns(posts_file(folder))
    return columns is not None and "groups" in columns


def describe_folder(name: str, folder: Path, where: str) -> FolderDataset:
    """The ``FolderDataset`` of one folder; ``where`` says where it was named (for errors)."""
    check_dataset_name(name, where)
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise FolderDatasetError(f"{where}: dataset folder {folder} does not exist")
    folder = folder.resolve()
    try:
        groups = has_groups(folder)
    except FolderDatasetError:
        raise
    except IngestError as error:
        raise FolderDatasetError(f"{where}: {error}") from None
    recipe, description, overrides = read_manifest(folder)
    return FolderDataset(name, folder, recipe, description, overrides, groups)


def parse_datasets_env(value: str) -> list[tuple[str, Path]]:
    """``name=/path/to/folder`` entries of ``TAGREC_DATASETS``, separated by ``,``."""
    entries = []
    for entry in value.split(DATASETS_ENV_SEPARATOR):
        entry = entry.strip()
        if not entry:
            continue
        name, sep, folder = entry.partition("=")
        if not sep or not name.strip() or not folder.strip():
            raise FolderDatasetError(
                f"{DATASETS_ENV} entry {entry!r} is not name=/path/to/folder "
                f"(entries are separated by {DATASETS_ENV_SEPARATOR!r})"
            )
        entries.append((name.strip(), Path(folder.strip())))
    return entries


def discover_folder_datasets(
    home: Path, env_value: str | None = None, builtin: Iterable[str] = ()
) -> tuple[FolderDataset, ...]:
    """Every dataset folder tagrec should register, sorted by name: the sub-folders of
    ``<home>/byo/`` that hold a posts file, and the entries of ``env_value`` (the value of
    ``TAGREC_DATASETS``). A name in ``builtin``, or one name for two different folders, is a
    ``FolderDatasetError``."""
    named: list[tuple[str, Path, str]] = []
    byo = Path(home) / BYO_DIR
    if byo.is_dir():
        for sub in sorted(byo.iterdir()):
            if sub.is_dir() and any((sub / name).is_file() for name in POSTS_FILES):
                named.append((sub.name, sub, f"dataset folder {sub}"))
    for name, folder in parse_datasets_env(env_value or ""):
        named.append((name, folder, f"{DATASETS_ENV} entry {name}={folder}"))

    reserved = set(builtin)
    found: dict[str, tuple[FolderDataset, str]] = {}
    for name, folder, where in named:
        if name in reserved:
            raise FolderDatasetError(
                f"{where}: the name {name!r} is a built-in dataset ({sorted(reserved)}); "
                "rename the folder or the entry"
            )
        described = describe_folder(name, folder, where)
        if name in found:
            earlier, earlier_where = found[name]
            if earlier.folder != described.folder:
                raise FolderDatasetError(
                    f"dataset name {name!r} is given twice for different folders: "
                    f"{earlier_where} and {where}"
                )
            continue
        found[name] = (described, where)
    return tuple(found[name][0] for name in sorted(found))

