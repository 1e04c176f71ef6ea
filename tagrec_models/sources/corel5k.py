"""Corel5k in its standard layout as ingest tables, the standard split and the 260 words.

Corel5k (Duygulu et al. 2002) is the image-annotation benchmark of paper 3 (Zhang et al.,
Tables 1 and 2) and of DESIGN.md's "Numbers to beat". The folder layout (see its README)::

    <cd>/<id>.jpeg                      the images (50 CD folders)
    corel5k_words.txt                   the 260 words; line n is column n of the .mat matrices
    corel5k_{train,test}_list.txt       image ids ``<cd>/<id>`` in matrix row order
    corel5k_{train,test}_tags.tsv       ``image<TAB>space-separated words`` (header line)
    corel5k_{train,test}_annot.mat      binary image x word matrices (``annot1``, ``annot2``)

Mapped to the ingest contract (``tagrec_models.sources.tables``): ``photo_id`` = ``<cd>/<id>``,
``owner`` null (the set has no users, so it serves the non-personalised rows), ``source`` =
``corel5k``, tags from the ``.tsv`` files (``raw_tag`` the word, ``tag`` its ``clean_tag``
form), no groups (the README lists none; the CD folders are thematic and using them would leak
the label), images from ``<cd>/<id>.jpeg`` with sha256, size and status.

Checks, each an ``IngestError`` naming the file: every file above exists; the word list has
no duplicates; the list and ``.tsv`` of a part name the same images in the same order; every
``.tsv`` word is one of the 260 words; no image is in both parts; and (``verify_mat``) the
``.tsv`` annotations equal the ``.mat`` matrices they were derived from. A missing or
undecodable JPEG is not an error but an ``images`` row with status ``broken`` and the reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import scipy.io
from scipy import sparse

from tagrec_models.sources.openclipart import check_image
from tagrec_models.sources.tables import (
    IMAGE_BROKEN,
    IMAGES_COLUMNS,
    PHOTO_GROUPS_COLUMNS,
    IngestError,
    IngestTables,
)
from tagrec_models.vocabulary.cleaning import DEFAULT_CLEANING, CleaningConfig, clean_tags

SOURCE = "corel5k"
PARTS = ("train", "test")
LICENSE = "Corel copyright, research use only"
_MAT_KEY = {"train": "annot1", "test": "annot2"}


@dataclass(frozen=True)
class Corel5kConfig:
    """``check_images``: decode every JPEG (else only hash it and read its header);
    ``verify_mat``: check the ``.tsv`` annotations against the ``.mat`` matrices;
    ``cleaning``: the cleaning that fills ``photo_tags.tag``."""

    check_images: bool = True
    verify_mat: bool = True
    cleaning: CleaningConfig = DEFAULT_CLEANING


@dataclass(frozen=True)
class Corel5kData:
    """The ingest tables, the standard split (``photo_id``, ``part`` in ``train``/``test``, in
    the lists' order) and the 260 words in matrix column order."""

    tables: IngestTables
    split: pd.DataFrame
    words: tuple[str, ...]

    def label_matrix(self, part: str) -> tuple[tuple[str, ...], sparse.csr_matrix]:
        """The photo ids of ``part`` in list order and their binary ``[n_images, 260]`` label
        matrix with columns in ``words`` order (the layout of the ``.mat`` files)."""
        if part not in PARTS:
            raise ValueError(f"part must be one of {PARTS}, got {part!r}")
        ids = tuple(self.split.loc[self.split["part"] == part, "photo_id"])
        row = {pid: i for i, pid in enumerate(ids)}
        col = {word: j for j, word in enumerate(self.words)}
        tags = self.tables.photo_tags
        tags = tags[tags["photo_id"].isin(row)]
        matrix = sparse.csr_matrix(
            (
                np.ones(len(tags), dtype=np.float32),
                (tags["photo_id"].map(row).to_numpy(), tags["raw_tag"].map(col).to_numpy()),
            ),
            shape=(len(ids), len(self.words)),
        )
        return ids, matrix


def _require(path: Path) -> Path:
    if not path.is_file():
        raise IngestError(f"Corel5k file {path} does not exist")
    return path


def _read_lines(path: Path) -> list[str]:
    return [line.strip() for line in _require(path).read_text().splitlines() if line.strip()]


def _read_part(root: Path, part: str, words: tuple[str, ...]) -> tuple[list[str], pd.DataFrame]:
    """The image ids of one part (list order) and its ``photo_id, raw_tag`` rows, the
    ``.tsv`` checked against the list file."""
    ids = _read_lines(root / f"corel5k_{part}_list.txt")
    tsv = _require(root / f"corel5k_{part}_tags.tsv")
    frame = pd.read_csv(tsv, sep="\t", dtype=str, keep_default_na=False)
    if list(frame.columns) != ["image", "tags"]:
        raise IngestError(
            f"{tsv} must have the header 'image<TAB>tags', got {list(frame.columns)}"
        )
    if frame["image"].tolist() != ids:
        raise IngestError(
            f"{tsv} and corel5k_{part}_list.txt name different images or orders "
            f"({len(frame)} vs {len(ids)} rows)"
        )
    if len(set(ids)) != len(ids):
        raise IngestError(f"corel5k_{part}_list.txt in {root} lists an image twice")
    rows = frame.assign(raw_tag=frame["tags"].str.split()).explode("raw_tag")
    rows = rows[rows["raw_tag"].notna()].rename(columns={"image": "photo_id"})
    unknown = sorted(set(rows["raw_tag"]) - set(words))
    if unknown:
        raise IngestError(f"{tsv} uses words not in corel5k_words.txt: {unknown[:10]}")
    duplicated = rows.duplicated(["photo_id", "raw_tag"])
    if duplicated.any():
        example = rows.loc[duplicated, ["photo_id", "raw_tag"]].iloc[0].tolist()
        raise IngestError(f"{tsv} repeats a word on one image, e.g. {example}")
    return ids, rows[["photo_id", "raw_tag"]].reset_index(drop=True)


def read_corel5k(
    root: Path,
    config: Corel5kConfig = Corel5kConfig(),
    log: Callable[[str], None] | None = None,
) -> Corel5kData:
    """Read the Corel5k folder ``root`` (for instance ``../shared/data/corel5k``; never
    hard-coded, pass it from config) into ``Corel5kData``; see the module docstring for the
    mapping and the checks."""
    say = log or (lambda _msg: None)
    root = Path(root)
    if not root.is_dir():
        raise IngestError(f"Corel5k folder {root} does not exist (set it in the dataset config)")
    root = root.resolve()  # absolute, without "..", for the paths and URLs stored
    words = tuple(_read_lines(root / "corel5k_words.txt"))
    if len(set(words)) != len(words):
        raise IngestError(f"{root / 'corel5k_words.txt'} lists a word twice")

    ids, parts = {}, {}
    for part in PARTS:
        ids[part], parts[part] = _read_part(root, part, words)
    both = sorted(set(ids["train"]) & set(ids["test"]))
    if both:
        raise IngestError(f"Corel5k images in both train and test lists of {root}: {both[:5]}")
    split = pd.DataFrame(
        [(pid, part) for part in PARTS for pid in ids[part]], columns=["photo_id", "part"]
    ).astype("string")
    tags = pd.concat([parts[part] for part in PARTS], ignore_index=True)

    data = Corel5kData(
        tables=IngestTables(
            photos=pd.DataFrame(
                {
                    "photo_id": split["photo_id"],
                    "owner": None,
                    "title": None,
                    "date_uploaded": pd.NaT,
                    "url": [
                        (root / f"{pid}.jpeg").as_uri() for pid in split["photo_id"]
                    ],
                    "license": LICENSE,
                    "source": SOURCE,
                }
            ),
            photo_tags=tags.assign(
                tag=clean_tags(tags["raw_tag"].astype("string"), config.cleaning)
            ),
            photo_groups=IngestTables.empty_frame(PHOTO_GROUPS_COLUMNS),
            images=_images(root, list(split["photo_id"]), config.check_images, say),
        ),
        split=split,
        words=words,
    )
    if config.verify_mat:
        for part in PARTS:
            labels = data.label_matrix(part)[1]
            _verify_mat(root / f"corel5k_{part}_annot.mat", _MAT_KEY[part], labels)
    broken = int((data.tables.images["status"] == IMAGE_BROKEN).sum())
    say(
        f"corel5k: {len(ids['train']):,} train / {len(ids['test']):,} test images, "
        f"{len(parts['train']):,} / {len(parts['test']):,} assignments, {len(words)} words, "
        f"{broken} broken images"
    )
    return data


def _images(
    root: Path, photo_ids: list[str], decode: bool, say: Callable[[str], None]
) -> pd.DataFrame:
    rows = []
    for i, pid in enumerate(photo_ids):
        path = root / f"{pid}.jpeg"
        if path.is_file():
            row = check_image(path, decode)
        else:
            row = {
                "path": str(path),
                "sha256": None,
                "width": None,
                "height": None,
                "status": IMAGE_BROKEN,
                "reason": f"no image file at {pid}.jpeg",
            }
        rows.append({"photo_id": pid, **row})
        if (i + 1) % 1000 == 0:
            say(f"corel5k: {i + 1:,}/{len(photo_ids):,} images checked")
    return pd.DataFrame(rows, columns=list(IMAGES_COLUMNS))


def _verify_mat(path: Path, key: str, expected: sparse.csr_matrix) -> None:
    """The ``.mat`` matrix under ``key`` must equal the labels read from the ``.tsv`` file."""
    try:
        matrix = scipy.io.loadmat(_require(path))[key]
    except (KeyError, ValueError, NotImplementedError) as error:
        raise IngestError(f"{path} has no readable matrix {key!r}: {error}") from None
    if matrix.shape != expected.shape:
        raise IngestError(
            f"{path}: {key} has shape {matrix.shape}, the .tsv annotations {expected.shape}"
        )
    differs = np.argwhere((np.asarray(matrix) != 0) != (expected.toarray() != 0))
    if len(differs):
        r, c = differs[0]
        raise IngestError(
            f"{path}: {len(differs)} cell(s) of {key} differ from the .tsv annotations, "
            f"first at row {r}, column {c}"
        )
