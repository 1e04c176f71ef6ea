"""The openclipart corpus (Debian ``openclipart-svg`` + ``openclipart-png``) as ingest tables.

The embedded default dataset (DESIGN.md, "Data flow and contracts", step 1): real users, tags,
categories and pixels, offline. Each SVG carries Creative Commons RDF metadata::

    <metadata><rdf:RDF><cc:Work>
        <dc:title>...</dc:title>
        <dc:subject><rdf:Bag><rdf:li>tag</rdf:li>...</rdf:Bag></dc:subject>
        <dc:creator><cc:Agent><dc:title>owner</dc:title></cc:Agent></dc:creator>
        <dc:date>...</dc:date>
        <cc:license rdf:resource="..."/>

and mapped to the contract of ``tagrec_models.sources.tables`` as:

* ``photos``: one row per real SVG file. ``photo_id`` is its path relative to ``svg/`` without
  the extension (stable across machines and re-reads); ``owner`` the creator (see
  ``OpenclipartConfig.merge_owner_case``); ``title``; ``date_uploaded`` from ``dc:date`` when it
  is an unambiguous ``YYYY-MM-DD`` date (with ``-``, ``/`` or ``.``, optional time), else null:
  most files leave it empty and the rest use free forms such as ``9/12/2005`` whose day/month
  order is unknowable; ``url`` the ``file://`` URI of the SVG (the package has no web address);
  ``license`` the ``cc:license`` resource; ``source`` = ``openclipart``.
* ``photo_tags``: every ``rdf:li`` of ``dc:subject`` as given (``raw_tag``; many are
  ``unsorted`` or the category name, kept: filtering is the preprocessing's job) and its
  ``clean_tag`` form (``tag``, null when cleaning drops it). A repeated raw tag on one image is
  one row.
* ``photo_groups``: the category folder(s). An image linked into several folders (663 symlinks
  in the full corpus) is ONE photo with one group per folder; ``group_id`` is the folder path
  (``recreation/games``), ``group_name`` its readable form (``Recreation / Games``).
* ``images``: the PNG at the photo's path under ``png/`` (falling back to the path of one of its
  links), with sha256, size, and ``status`` ``ok`` or ``broken`` with the reason (missing file,
  does not decode).

An SVG that cannot become a photo (unparsable XML, no RDF metadata, no ``cc:Work``, no creator,
a symlink that is broken, leaves the corpus or points at such a file) is a *skip*: a row of
``OpenclipartTables.skips`` (``path`` relative to ``svg/``, ``reason``), never a crash and never
silent. Every ``*.svg`` path under ``svg/`` ends up either in a photo's groups or in ``skips``.

XML is read with the standard library's expat parser (lxml is not installed), stopping at the
end of the RDF block so the (often large) drawing after it is not parsed. The files come from a
Debian package, and expat >= 2.4 limits entity expansion, so no further hardening is needed.
"""

from __future__ import annotations

import hashlib
import re
import warnings
import xml.etree.ElementTree as ET
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pandas as pd
from PIL import Image

from tagrec_models.sources.tables import (
    IMAGE_BROKEN,
    IMAGE_OK,
    IMAGES_COLUMNS,
    PHOTO_GROUPS_COLUMNS,
    PHOTOS_COLUMNS,
    IngestError,
    IngestTables,
    conform,
)
from tagrec_models.vocabulary.cleaning import DEFAULT_CLEANING, CleaningConfig, clean_tags

SOURCE = "openclipart"
# A file larger than this is not read at all (``check_image``'s ``max_file_bytes``): the
# largest real openclipart PNG is about 12 MB, a Corel5k JPEG well under 1 MB.
MAX_FILE_BYTES = 64 * 1024 * 1024
SKIPS_COLUMNS = {"path": "string", "reason": "string"}

_RDF = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"
_DC = "http://purl.org/dc/elements/1.1/"
_RDF_TAG = f"{{{_RDF}}}RDF"
_ISO_DATE = re.compile(
    r"^(\d{4})[-/.](\d{1,2})[-/.](\d{1,2})(?:[ T](\d{1,2}):(\d{2})(?::(\d{2}))?)?$"
)


@dataclass(frozen=True)
class OpenclipartConfig:
    """Reading choices the corpus leaves open.

    * ``merge_owner_case``: treat creator names that differ only in letter case or spacing as
      one user (``Architetto Francesco Rollandin`` and ``architetto francesco rollandin`` are
      one person: the corpus has 527 spellings of 514 users). The owner is then the most
      frequent spelling (ties: the alphabetically first).
    * ``check_images``: decode every PNG to tell ``ok`` from ``broken``; off, images are only
      hashed and their size read from the header.
    * ``max_pixels``: an image with more pixels is recorded ``broken`` (reason "too large")
      without decoding it. The corpus has 17 drawings rendered at up to 21k x 30k pixels
      (600 MB+ each once decoded) beside a median of 36k pixels; every later stage needs at most
      a few hundred pixels a side, so decoding them would only risk memory. ``None``: no limit
      beyond PIL's own decompression-bomb error.
    * ``merge_identical_copies``: the package also holds the same drawing as separate files in
      several folders (not symlinks: 922 photos in 367 sets with byte-identical PNGs and one
      owner, their SVGs differing only in a tag or two). On, each set becomes one photo (the
      first photo_id in sort order) with the union of tags and groups, the others recorded in
      ``skips`` as merged, so an image cannot sit in train and test at once. Off by default
      because the documented corpus counts (DESIGN.md) count the copies as posts.
    * ``cleaning``: the tag cleaning that fills ``photo_tags.tag``.
    * ``max_file_bytes``: a PNG file larger than this is recorded ``broken`` ("file too
      large") without reading it; ``None``: no limit.
    """

    merge_owner_case: bool = True
    check_images: bool = True
    max_pixels: int | None = 50_000_000
    merge_identical_copies: bool = False
    cleaning: CleaningConfig = DEFAULT_CLEANING
    max_file_bytes: int | None = MAX_FILE_BYTES


@dataclass(frozen=True)
class OpenclipartTables(IngestTables):
    """The four ingest tables plus ``skips`` (``path``, ``reason``): the SVG files that did not
    become photos, and why."""

    skips: pd.DataFrame = field(default_factory=lambda: IngestTables.empty_frame(SKIPS_COLUMNS))

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "skips", conform(self.skips, SKIPS_COLUMNS, "skips"))


@dataclass
class _Meta:
    owner: str
    title: str | None
    tags: list[str]
    date: pd.Timestamp | None
    license: str | None


class _Skip(Exception):
    """An SVG that cannot become a photo; the message is the recorded reason."""


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _child(element: ET.Element, name: str, namespace: str | None = None) -> ET.Element | None:
    """The first child named ``name``: in ``namespace`` when given, else by local name only
    (Creative Commons moved its namespace from web.resource.org/cc/ to creativecommons.org/ns#
    and files use both)."""
    for child in element:
        if namespace is not None:
            if child.tag == f"{{{namespace}}}{name}":
                return child
        elif _local(child.tag) == name:
            return child
    return None


def _text(element: ET.Element | None) -> str | None:
    if element is None or element.text is None:
        return None
    text = " ".join(element.text.split())
    return text or None


def parse_date(text: str | None) -> pd.Timestamp | None:
    """``dc:date`` as a UTC timestamp when it is ``YYYY-MM-DD`` (separators ``-``, ``/``, ``.``;
    optional ``HH:MM[:SS]``) and a valid date; anything else (empty, ``9/12/2005``,
    ``September 2006``) is ``None`` because its day/month order cannot be known."""
    if not text:
        return None
    match = _ISO_DATE.match(text.strip())
    if not match:
        return None
    year, month, day, hour, minute, second = (int(g) if g else 0 for g in match.groups())
    try:
        return pd.Timestamp(
            year=year, month=month, day=day, hour=hour, minute=minute, second=second, tz="UTC"
        )
    except ValueError:
        return None


def parse_svg_metadata(path: Path) -> _Meta:
    """The RDF metadata of one SVG, or ``_Skip`` with the reason it cannot be a photo."""
    rdf = None
    try:
        # Our own handle, so stopping early closes the file at once.
        with path.open("rb") as handle:
            for _event, element in ET.iterparse(handle, events=("end",)):
                if element.tag == _RDF_TAG:
                    rdf = element
                    break
    except ET.ParseError as error:
        raise _Skip(f"unparsable XML: {error}") from None
    except OSError as error:
        raise _Skip(f"cannot read: {error}") from None
    if rdf is None:
        raise _Skip("no RDF metadata (rdf:RDF)")
    work = _child(rdf, "Work")
    if work is None:
        raise _Skip("RDF metadata without cc:Work")
    creator = _child(work, "creator", _DC)
    agent = _child(creator, "Agent") if creator is not None else None
    owner = _text(_child(agent, "title", _DC)) if agent is not None else None
    if owner is None and creator is not None:
        owner = _text(creator)  # some tools write the name as the element's text
    if owner is None:
        raise _Skip("no creator (dc:creator/cc:Agent/dc:title is missing or empty)")
    tags: list[str] = []
    subject = _child(work, "subject", _DC)
    if subject is not None:
        bag = _child(subject, "Bag", _RDF)
        if bag is not None:
            for item in bag:
                if item.tag == f"{{{_RDF}}}li" and item.text and item.text.strip():
                    tags.append(item.text.strip())
        elif _text(subject):
            # A bare dc:subject holds a comma-separated keyword list (Dublin Core practice).
            tags = [t.strip() for t in str(_text(subject)).split(",") if t.strip()]
    license_element = _child(work, "license")
    license_uri = None
    if license_element is not None:
        license_uri = license_element.get(f"{{{_RDF}}}resource")
    return _Meta(
        owner=owner,
        title=_text(_child(work, "title", _DC)),
        tags=list(dict.fromkeys(tags)),
        date=parse_date(_text(_child(work, "date", _DC))),
        license=license_uri or None,
    )


def _group_name(group_id: str) -> str:
    return " / ".join(
        " ".join(part.replace("_", " ").replace("-", " ").split()).capitalize()
        for part in group_id.split("/")
    )


def file_sha256(path: Path) -> str:
    """The sha256 of a file, streamed in chunks (the file is never held whole in memory)."""
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def check_image(
    path: Path,
    decode: bool = True,
    max_pixels: int | None = None,
    max_file_bytes: int | None = MAX_FILE_BYTES,
) -> dict:
    """``path, sha256, width, height, status, reason`` of one image file (any format PIL
    reads; the Corel5k reader uses it for JPEGs too): ``broken`` with the
    reason when it cannot be read, it is larger than ``max_file_bytes`` (checked on the file's
    size before reading a byte), its header does not parse, it has more than ``max_pixels``
    pixels, or (``decode``) its pixel data does not decode. The hash is streamed and PIL reads
    the file lazily, so memory stays small whatever the file holds."""
    row = {"path": str(path), "sha256": None, "width": None, "height": None}
    try:
        size = path.stat().st_size
        if max_file_bytes is not None and size > max_file_bytes:
            return {
                **row,
                "status": IMAGE_BROKEN,
                "reason": f"file too large: {size:,} bytes > max_file_bytes {max_file_bytes:,}",
            }
        row["sha256"] = file_sha256(path)
    except OSError as error:
        return {**row, "status": IMAGE_BROKEN, "reason": f"cannot read: {error}"}
    try:
        with warnings.catch_warnings():
            # max_pixels is the limit that applies here; PIL's own warning would only repeat it.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                row["width"], row["height"] = width, height = image.size
                if max_pixels is not None and width * height > max_pixels:
                    return {
                        **row,
                        "status": IMAGE_BROKEN,
                        "reason": f"too large to decode safely: {width}x{height} = "
                        f"{width * height:,} pixels > max_pixels {max_pixels:,}",
                    }
                if decode:
                    image.load()
    except Image.DecompressionBombError as error:
        return {**row, "status": IMAGE_BROKEN, "reason": f"too large to decode safely: {error}"}
    except Exception as error:  # PIL raises many types (OSError, SyntaxError, ValueError, ...)
        # PIL may name the file by its full path: name it by its file name instead, so the
        # recorded reason is the same wherever the folder lies.
        message = str(error).replace(str(path), path.name)
        reason = f"does not decode: {type(error).__name__}: {message}"
        return {**row, "status": IMAGE_BROKEN, "reason": reason}
    return {**row, "status": IMAGE_OK, "reason": ""}


def read_openclipart(
    root: Path,
    config: OpenclipartConfig = OpenclipartConfig(),
    log: Callable[[str], None] | None = None,
) -> OpenclipartTables:
    """Read the corpus under ``root`` (the folder holding ``svg/`` and ``png/``, i.e.
    ``<data home>/sources/openclipart/usr/share/openclipart``) into ingest tables plus skips.

    A missing ``root``, ``svg/`` or ``png/`` folder, or an ``svg/`` without any SVG, is an
    ``IngestError`` naming the path; problems with single files are recorded (``skips``,
    ``images.status``), see the module docstring.
    """
    say = log or (lambda _msg: None)
    root = Path(root)
    svg_root, png_root = root / "svg", root / "png"
    for folder in (root, svg_root, png_root):
        if not folder.is_dir():
            raise IngestError(
                f"openclipart folder {folder} does not exist; run "
                "bash scripts/setup_system.sh DATA_HOME and pass "
                "DATA_HOME/sources/openclipart/usr/share/openclipart"
            )
    links, skips = _index_svg_paths(svg_root)
    photos, tag_rows, group_rows, image_rows = [], [], [], []
    for i, pid in enumerate(sorted(links)):
        svg_path = svg_root / f"{pid}.svg"
        try:
            meta = parse_svg_metadata(svg_path)
        except _Skip as skip:
            for rel in links[pid]:
                is_link = rel != f"{pid}.svg"
                reason = f"symlink to skipped {pid}.svg: {skip}" if is_link else str(skip)
                skips.append((rel, reason))
            continue
        photos.append(
            {
                "photo_id": pid,
                "owner": meta.owner,
                "title": meta.title,
                "date_uploaded": meta.date,
                "url": svg_path.resolve().as_uri(),
                "license": meta.license,
                "source": SOURCE,
            }
        )
        tag_rows.extend({"photo_id": pid, "raw_tag": tag} for tag in meta.tags)
        for group_id in sorted({Path(rel).parent.as_posix() for rel in links[pid]}):
            if group_id != ".":  # a file at the top of svg/ has no category
                group_rows.append(
                    {"photo_id": pid, "group_id": group_id, "group_name": _group_name(group_id)}
                )
        image_rows.append({"photo_id": pid, **_image_row(png_root, pid, links[pid], config)})
        if (i + 1) % 1000 == 0:
            say(f"openclipart: {i + 1:,}/{len(links):,} SVGs read")

    photos_frame = pd.DataFrame(photos, columns=list(PHOTOS_COLUMNS))
    if config.merge_owner_case and len(photos_frame):
        photos_frame["owner"] = _merge_owner_spellings(photos_frame["owner"])
    tags_frame = pd.DataFrame(tag_rows, columns=["photo_id", "raw_tag"])
    groups_frame = pd.DataFrame(group_rows, columns=list(PHOTO_GROUPS_COLUMNS))
    images_frame = pd.DataFrame(image_rows, columns=list(IMAGES_COLUMNS))
    if config.merge_identical_copies:
        photos_frame, tags_frame, groups_frame, images_frame, merged = _merge_copies(
            photos_frame, tags_frame, groups_frame, images_frame, links
        )
        skips.extend(merged)
        say(f"openclipart: merged {len(merged):,} SVG paths into identical copies")
    tags_frame["tag"] = clean_tags(tags_frame["raw_tag"].astype("string"), config.cleaning)
    tables = OpenclipartTables(
        photos=photos_frame,
        photo_tags=tags_frame,
        photo_groups=groups_frame,
        images=images_frame,
        skips=pd.DataFrame(sorted(skips), columns=["path", "reason"]),
    )
    broken = int((tables.images["status"] == IMAGE_BROKEN).sum())
    say(
        f"openclipart: {len(tables.photos):,} photos, {tables.photos['owner'].nunique():,} owners, "
        f"{len(tables.photo_tags):,} tag assignments, {len(tables.photo_groups):,} group "
        f"memberships, {broken:,} broken images, {len(tables.skips):,} skipped SVG paths"
    )
    return tables


def _index_svg_paths(svg_root: Path) -> tuple[dict[str, list[str]], list[tuple[str, str]]]:
    """Every ``*.svg`` path under ``svg_root``, grouped by the photo it shows: ``photo_id`` (the
    real file's path without extension) -> the relative paths (the file and its symlinks),
    plus the skips of links that are broken, leave the corpus or end at no regular .svg file."""
    svg_real_root = svg_root.resolve()
    paths = sorted(svg_root.rglob("*.svg"))
    if not paths:
        raise IngestError(f"openclipart folder {svg_root} holds no .svg files")
    skips: list[tuple[str, str]] = []
    links: dict[str, list[str]] = defaultdict(list)
    for path in paths:
        rel = path.relative_to(svg_root).as_posix()
        if path.is_symlink():
            if not path.exists():
                skips.append((rel, f"broken symlink to {path.readlink()}"))
                continue
            target = path.resolve()
            if not target.is_relative_to(svg_real_root):
                skips.append((rel, f"symlink leaves the corpus: {target}"))
                continue
            real_rel = target.relative_to(svg_real_root).as_posix()
        else:
            real_rel = rel
        links[real_rel.removesuffix(".svg")].append(rel)
    for pid in sorted(links):
        real = svg_root / f"{pid}.svg"
        if not real.is_file() or real.is_symlink():  # say ``a.svg -> a.xml``
            reason = f"symlink target {pid} is not a regular .svg file"
            skips.extend((rel, reason) for rel in links.pop(pid))
    return dict(links), skips


def _image_row(png_root: Path, pid: str, rels: list[str], config: OpenclipartConfig) -> dict:
    """The ``images`` row of one photo: its PNG at ``png/<photo_id>.png`` or, failing that, at
    the path of one of its links; ``broken`` when there is none."""
    png = png_root / f"{pid}.png"
    if not png.is_file():
        alternatives = [png_root / (rel.removesuffix(".svg") + ".png") for rel in rels]
        png = next((p for p in alternatives if p.is_file()), png)
    if png.is_file():
        return check_image(png.resolve(), config.check_images, config.max_pixels, config.max_file_bytes)
    return {
        "path": str(png.absolute()),
        "sha256": None,
        "width": None,
        "height": None,
        "status": IMAGE_BROKEN,
        "reason": f"no PNG at png/{pid}.png",
    }


def _merge_owner_spellings(owners: pd.Series) -> pd.Series:
    """Map each owner to the most frequent spelling among those equal up to case and spacing."""
    keys = owners.map(lambda name: " ".join(name.split()).casefold())
    counts: dict[str, Counter] = defaultdict(Counter)
    for key, name in zip(keys, owners):
        counts[key][name] += 1
    canonical = {key: min(c, key=lambda n: (-c[n], n)) for key, c in counts.items()}
    return keys.map(canonical)


def _merge_copies(
    photos: pd.DataFrame,
    tags: pd.DataFrame,
    groups: pd.DataFrame,
    images: pd.DataFrame,
    links: dict[str, list[str]],
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, pd.DataFrame, list[tuple[str, str]]]:
    """Fold photos of one owner whose PNGs are byte-identical (same sha256, both ``ok``) into
    the first photo_id of each set; see ``OpenclipartConfig.merge_identical_copies``."""
    keyed = images.loc[images["status"] == IMAGE_OK, ["photo_id", "sha256"]].merge(
        photos[["photo_id", "owner"]], on="photo_id"
    )
    keep_of: dict[str, str] = {}
    for _key, members in keyed.groupby(["owner", "sha256"])["photo_id"]:
        ids = sorted(members)
        keep_of.update({pid: ids[0] for pid in ids[1:]})
    if not keep_of:
        return photos, tags, groups, images, []
    merged = [
        (rel, f"merged into {keep}: identical PNG, same owner")
        for pid, keep in keep_of.items()
        for rel in links[pid]
    ]
    def remap(frame: pd.DataFrame) -> pd.DataFrame:
        out = frame.copy()
        out["photo_id"] = out["photo_id"].map(lambda pid: keep_of.get(pid, pid))
        return out

    tags = remap(tags).drop_duplicates(["photo_id", "raw_tag"]).reset_index(drop=True)
    groups = (
        remap(groups)
        .drop_duplicates(["photo_id", "group_id"])
        .sort_values(["photo_id", "group_id"])
        .reset_index(drop=True)
    )
    photos = photos[~photos["photo_id"].isin(keep_of)].reset_index(drop=True)
    images = images[~images["photo_id"].isin(keep_of)].reset_index(drop=True)
    return photos, tags, groups, images, merged
