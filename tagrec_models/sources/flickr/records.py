"""Plain records parsed from Flickr's JSON answers, validated field by field.

A bad envelope (no ``photos``, no ``pages``) is a ``FlickrResponseError`` naming the call; a bad
single record (a photo without ``owner``, a pool without ``id``) is a ``SkippedRecord`` with its
reason, so one odd photo never stops a crawl and is never dropped silently either.

Shapes follow Flickr's JSON format (``format=json&nojsoncallback=1``): ``photos.page/pages/
perpage/total`` and ``photos.photo[]`` for ``flickr.photos.search`` and
``flickr.groups.pools.getPhotos`` (the latter adds ``dateadded``), ``pool[]`` of
``flickr.photos.getAllContexts`` and ``photo.tags.tag[].raw`` of ``flickr.photos.getInfo``.
Flickr sends numbers sometimes as strings (``"dateupload": "1600000000"``), so every number is
read with ``int()``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from tagrec_models.sources.flickr.errors import FlickrResponseError

# Image sizes Flickr offers as ``extras`` (``url_<suffix>``), smallest to largest.
IMAGE_SIZES = ("url_sq", "url_t", "url_s", "url_q", "url_m", "url_n", "url_w", "url_z", "url_c",
               "url_l", "url_h", "url_k", "url_o")

# The ``extras`` every listing asks for; the image size is added by the caller. Their answer
# field names differ from the request names (``owner_name`` -> ``ownername``).
BASE_EXTRAS = ("owner_name", "tags", "date_upload", "license")
_REQUIRED_PHOTO_FIELDS = ("id", "owner", "title", "ownername", "dateupload", "tags", "license")


@dataclass(frozen=True)
class SkippedRecord:
    """A record left out, with why. ``photo_id`` is ``None`` when the record had no id."""

    photo_id: str | None
    reason: str


@dataclass(frozen=True)
class PhotoRecord:
    """One photo of a listing. ``tags`` are Flickr's tags as the listing gives them (Flickr's
    normalised form: lower case, spaces and punctuation removed). ``image_url`` is ``None`` when
    Flickr offers no image at the requested size. Dates are Unix seconds (UTC)."""

    photo_id: str
    owner: str
    owner_name: str
    title: str
    date_uploaded: int
    license: str
    tags: tuple[str, ...]
    image_url: str | None
    image_width: int | None
    image_height: int | None
    date_added: int | None = None  # when the photo joined the group pool (pool listings only)


@dataclass(frozen=True)
class PhotoPage:
    """One page of a listing: the valid photos in Flickr's order and the skipped entries."""

    page: int
    pages: int
    per_page: int
    total: int
    photos: tuple[PhotoRecord, ...]
    skipped: tuple[SkippedRecord, ...]
    max_date_uploaded: int | None  # over every entry that had a readable date, kept or not
    max_date_added: int | None
    # Every entry in Flickr's order, kept and skipped interleaved: a re-crawl cursor must know
    # where on the page an entry that was left out sat.
    entries: tuple["PhotoRecord | SkippedRecord", ...] = ()


@dataclass(frozen=True)
class GroupRecord:
    group_id: str
    name: str


@dataclass(frozen=True)
class PhotoContexts:
    """The public group pools a photo is in (``flickr.photos.getAllContexts``)."""

    photo_id: str
    groups: tuple[GroupRecord, ...]
    skipped: tuple[SkippedRecord, ...]


def _int(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError(f"expected an integer, got {value!r}")
    return int(str(value).strip())


def _optional_int(value: Any) -> int | None:
    if value is None or value == "":
        return None
    try:
        return _int(value)
    except ValueError:
        return None


def parse_photo(entry: Any, image_size: str) -> PhotoRecord | SkippedRecord:
    """A ``photos.photo[]`` entry as a ``PhotoRecord``, or a ``SkippedRecord`` naming the first
    missing or unreadable field."""
    if not isinstance(entry, Mapping):
        return SkippedRecord(None, f"photo entry is a {type(entry).__name__}, not an object")
    raw_id = entry.get("id")
    photo_id = str(raw_id).strip() if raw_id not in (None, "") else None
    for name in _REQUIRED_PHOTO_FIELDS:
        if name not in entry or entry[name] is None:
            return SkippedRecord(photo_id, f"missing field {name!r}")
    if photo_id is None or not photo_id:
        return SkippedRecord(None, "empty field 'id'")
    owner = str(entry["owner"]).strip()
    if not owner:
        return SkippedRecord(photo_id, "empty field 'owner'")
    try:
        date_uploaded = _int(entry["dateupload"])
    except ValueError:
        return SkippedRecord(photo_id, f"field 'dateupload' is not a number: {entry['dateupload']!r}")
    if not isinstance(entry["tags"], str):
        return SkippedRecord(photo_id, f"field 'tags' is not a string: {entry['tags']!r}")
    date_added = None
    if "dateadded" in entry:
        try:
            date_added = _int(entry["dateadded"])
        except ValueError:
            return SkippedRecord(photo_id, f"field 'dateadded' is not a number: {entry['dateadded']!r}")
    suffix = image_size[len("url_"):]
    url = entry.get(image_size)
    url = str(url).strip() if url else None
    return PhotoRecord(
        photo_id=photo_id,
        owner=owner,
        owner_name=str(entry["ownername"]),
        title=str(entry["title"]),
        date_uploaded=date_uploaded,
        license=str(entry["license"]),
        tags=tuple(t for t in entry["tags"].split() if t),
        image_url=url or None,
        image_width=_optional_int(entry.get(f"width_{suffix}")),
        image_height=_optional_int(entry.get(f"height_{suffix}")),
        date_added=date_added,
    )


def parse_photo_page(
    payload: Mapping[str, Any], method: str, params: Mapping[str, object], image_size: str
) -> PhotoPage:
    """The ``photos`` envelope of a listing answer; see the module docstring."""
    photos = payload.get("photos")
    if not isinstance(photos, Mapping):
        raise FlickrResponseError(method, params, "answer has no 'photos' object")
    numbers = {}
    for name in ("page", "pages", "perpage", "total"):
        if name not in photos:
            raise FlickrResponseError(method, params, f"answer lacks 'photos.{name}'")
        try:
            numbers[name] = _int(photos[name])
        except ValueError:
            raise FlickrResponseError(
                method, params, f"'photos.{name}' is not a number: {photos[name]!r}"
            ) from None
    entries = photos.get("photo")
    if not isinstance(entries, list):
        raise FlickrResponseError(method, params, "answer lacks the list 'photos.photo'")
    kept: list[PhotoRecord] = []
    skipped: list[SkippedRecord] = []
    ordered: list[PhotoRecord | SkippedRecord] = []
    max_uploaded: int | None = None
    max_added: int | None = None
    for entry in entries:
        if isinstance(entry, Mapping):
            # The cursor counts every entry Flickr listed, even one we skip, so that a
            # re-crawl does not ask again for what this page already covered.
            up = _optional_int(entry.get("dateupload"))
            added = _optional_int(entry.get("dateadded"))
            if up is not None:
                max_uploaded = up if max_uploaded is None else max(max_uploaded, up)
            if added is not None:
                max_added = added if max_added is None else max(max_added, added)
        record = parse_photo(entry, image_size)
        (kept if isinstance(record, PhotoRecord) else skipped).append(record)
        ordered.append(record)
    return PhotoPage(
        page=numbers["page"],
        pages=numbers["pages"],
        per_page=numbers["perpage"],
        total=numbers["total"],
        photos=tuple(kept),
        skipped=tuple(skipped),
        max_date_uploaded=max_uploaded,
        max_date_added=max_added,
        entries=tuple(ordered),
    )


def parse_contexts(payload: Mapping[str, Any], photo_id: str) -> PhotoContexts:
    """``pool[]`` of ``flickr.photos.getAllContexts``; Flickr leaves ``pool`` out when the
    photo is in no pool."""
    pools = payload.get("pool", [])
    if not isinstance(pools, list):
        return PhotoContexts(photo_id, (), (SkippedRecord(photo_id, "field 'pool' is not a list"),))
    groups: list[GroupRecord] = []
    skipped: list[SkippedRecord] = []
    seen: set[str] = set()
    for entry in pools:
        if not isinstance(entry, Mapping) or not entry.get("id"):
            skipped.append(SkippedRecord(photo_id, "a pool of getAllContexts has no 'id'"))
            continue
        group_id = str(entry["id"]).strip()
        if "title" not in entry or entry["title"] is None:
            skipped.append(SkippedRecord(photo_id, f"pool {group_id!r} has no 'title'"))
            continue
        if group_id not in seen:
            seen.add(group_id)
            groups.append(GroupRecord(group_id, str(entry["title"])))
    return PhotoContexts(photo_id, tuple(groups), tuple(skipped))


def parse_raw_tags(
    payload: Mapping[str, Any], method: str, params: Mapping[str, object]
) -> tuple[str, ...]:
    """The authors' own spellings (``raw``) of a photo's tags from ``flickr.photos.getInfo``."""
    photo = payload.get("photo")
    if not isinstance(photo, Mapping):
        raise FlickrResponseError(method, params, "answer has no 'photo' object")
    tags = photo.get("tags", {})
    entries = tags.get("tag", []) if isinstance(tags, Mapping) else None
    if not isinstance(entries, list):
        raise FlickrResponseError(method, params, "'photo.tags.tag' is not a list")
    raw: list[str] = []
    for entry in entries:
        if isinstance(entry, Mapping):
            value = entry.get("raw", entry.get("_content"))
            if isinstance(value, str) and value.strip():
                raw.append(value)
    return tuple(raw)
