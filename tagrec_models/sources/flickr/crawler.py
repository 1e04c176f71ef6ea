"""Resumable, idempotent Flickr crawls into a crawl directory, and their ingest tables.

A crawl (DESIGN.md, "ingest", source ``flickr``) pages through one listing per group pool
(``flickr.groups.pools.getPhotos``) and one for the tag/text search (``flickr.photos.search``)
of a ``CrawlSpec``; for each photo not stored yet it fetches its group pools
(``flickr.photos.getAllContexts``), optionally the authors' raw tag spellings
(``flickr.photos.getInfo``), and the image file (``images.ImageFetcher``).

Layout of ``crawl_dir``::

    state.json                          spec + one entry per round (cursors, budget, complete)
    pages/r0000/<query>/p000001.json    one file per finished page: photos, groups, images, skips
    images/<photo_id>.<ext>             image files
    image_retries.json                  later downloads of images that arrived undecodable
    .lock                               held while a crawl runs (one crawl per directory)

Every file is written atomically. A page file is written only once everything of that page is
done, and the finished page files are the truth: at start the crawler reads them, skips every
finished page, and re-does the page it was in the middle of (reusing image files it had
already written). What a page stores depends only on Flickr's answers and on the pages before
it (the set of photos already stored, the photo budget), so a crawl killed at any point and
started again ends with exactly the data of an uninterrupted crawl, without asking Flickr for
a finished page again.

Rounds and re-crawls: the first ``crawl`` is round 0. ``recrawl`` starts a new round whose
queries ask only for what is new since the previous rounds: a search gets
``min_upload_date`` = its cursor, the upload date up to which every entry it listed was
handled (Flickr's bound is inclusive, so photos of that very second come again and are
recognised as stored); a group pool (which cannot be filtered by date, and lists the newest
addition first) is read until the first photo added before its cursor, the largest
``dateadded`` of the last round that read the pool to its end. A pool cursor uses the date a
photo joined the pool, not its upload date, so an old photo newly added to the pool counts as
new for that pool. The cursors never move past what a round left for later, so capped rounds
followed by uncapped re-crawls end with exactly what one uncapped crawl gets: a search cursor
stops before the first entry dropped by the photo budget or skipped for a missing field; a
pool cut by ``max_pages`` or the budget keeps its old cursor (the next round reads it down to
that cursor again, storing only what it lacks). An entry skipped for a missing or unreadable
field is listed again by the next rounds until it has been skipped in ``MAX_SKIP_ROUNDS``
rounds, then recorded for good. A photo already stored is never stored again, and changes to
stored photos (new tags) are not picked up. The cursors and budget of a round are written into
``state.json`` when it starts, so a resumed round asks exactly what it first asked.

Images that arrived undecodable (a truncated transfer) are downloaded again by the next
``crawl`` / ``recrawl`` call, up to ``MAX_IMAGE_DOWNLOADS`` downloads in all; the outcome is
kept in ``image_retries.json`` (page files never change) and read over the page's record.
Other broken images (HTTP 404, over ``max_bytes`` / ``max_pixels``) are the answer and stay.
Temporary files left by a crawl killed mid-write are removed when the next crawl starts.

Choices where the API leaves room: searches are sorted ``date-posted-asc`` so that uploads
during a crawl land on later pages and pages read before do not shift (pools cannot be sorted:
an addition during a crawl shifts later pages by one, which the photo dedup absorbs); Flickr
returns at most 4,000 results per search (a warning is logged: split the search); ``raw_tag``
is the tag as the listing's ``tags`` extra gives it (Flickr's normalised form, "newyork")
unless ``CrawlSpec.fetch_raw_tags`` asks ``getInfo`` for the authors' spelling ("New York") at
one more call per photo; a photo deleted between the listing and its ``getAllContexts`` call
(Flickr error 1) is a recorded skip, while every other permanent error stops the crawl.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Iterator

import pandas as pd

from tagrec_models.sources.flickr.client import FlickrClient
from tagrec_models.sources.flickr.errors import CrawlStateError, FlickrConfigError, FlickrPermanentError
from tagrec_models.sources.flickr.images import (
    MAX_PIXELS,
    ImageFetcher,
    ImageResult,
    extension_for,
    inspect_file,
    is_retryable,
)
from tagrec_models.sources.flickr.records import IMAGE_SIZES, PhotoPage, PhotoRecord, SkippedRecord
from tagrec_models.sources.tables import (
    IMAGE_BROKEN,
    IMAGES_COLUMNS,
    PHOTO_GROUPS_COLUMNS,
    PHOTO_TAGS_COLUMNS,
    PHOTOS_COLUMNS,
    IngestTables,
)
from tagrec_models.storage.atomic import atomic_path, sweep_stale_temps

Log = Callable[[str], None]
STATE_FILE = "state.json"
RETRIES_FILE = "image_retries.json"
# A listing entry skipped for a missing or unreadable field (Flickr answers differ from call to
# call) is listed again by the next rounds, until it has been skipped in this many rounds;
# then it is recorded as a skip for good.
MAX_SKIP_ROUNDS = 3
# Downloads of one image in all (the first included) while it keeps arriving undecodable.
MAX_IMAGE_DOWNLOADS = 3
STATE_FORMAT = 1
SOURCE = "flickr"
SEARCH_RESULT_CAP = 4000  # Flickr: "at most the first 4,000 results for any given search query"
_SAFE_ID = re.compile(r"^[A-Za-z0-9@._-]+$")
_PAGE_FILE = re.compile(r"^p(\d{6})\.json$")
# Flickr's error code 1 on getAllContexts / getInfo: "Photo not found" (deleted or made
# private between the listing and this call): the photo is skipped with that reason.
_PHOTO_NOT_FOUND = 1


def clean_tag(raw: str) -> str:
    """Minimal, local tag cleaning for ``photo_tags.tag``: white space trimmed and collapsed,
    lower case. The project's full cleaning lives in ``tagrec_models.vocabulary.cleaning`` and
    is applied downstream; this module does not import it so the source stays self-contained."""
    return " ".join(raw.split()).lower()


@dataclass(frozen=True)
class CrawlSpec:
    """What to crawl.

    ``group_ids`` (group NSIDs) each give one pool listing; ``tags`` and/or ``text`` give one
    search (``tag_mode`` "any" or "all"). ``max_pages`` caps pages per listing and round,
    ``max_photos`` the photos stored per round (``None``: no cap). ``image_size`` is the
    ``extras`` URL field of the image to download (``url_z``: 640 px on the longer side).
    ``min_upload_date`` (Unix seconds) drops older photos. ``fetch_groups`` fetches each photo's
    pools (needed by paper 2's group similarity); ``fetch_raw_tags`` see the module docstring.
    """

    group_ids: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    tag_mode: str = "any"
    text: str | None = None
    per_page: int = 100
    max_pages: int | None = None
    max_photos: int | None = None
    image_size: str = "url_z"
    min_upload_date: int | None = None
    fetch_groups: bool = True
    fetch_raw_tags: bool = False
    download_images: bool = True

    def __post_init__(self) -> None:
        for name in ("group_ids", "tags"):
            value = getattr(self, name)
            if isinstance(value, str):
                raise FlickrConfigError(f"CrawlSpec.{name} must be a sequence of strings, not one string {value!r}")
            object.__setattr__(self, name, tuple(str(v).strip() for v in value))
        for group_id in self.group_ids:
            if not _SAFE_ID.match(group_id):
                raise FlickrConfigError(f"CrawlSpec.group_ids holds a malformed group id {group_id!r}")
        if len(set(self.group_ids)) != len(self.group_ids):
            raise FlickrConfigError(f"CrawlSpec.group_ids repeats a group: {list(self.group_ids)}")
        if any(not t for t in self.tags):
            raise FlickrConfigError(f"CrawlSpec.tags holds an empty tag: {list(self.tags)}")
        if self.text is not None and not self.text.strip():
            raise FlickrConfigError("CrawlSpec.text is empty; use None for no text search")
        if not (self.group_ids or self.tags or self.text):
            raise FlickrConfigError("CrawlSpec needs group_ids, tags or text: it names nothing to crawl")
        if self.tag_mode not in {"any", "all"}:
            raise FlickrConfigError(f"CrawlSpec.tag_mode must be 'any' or 'all', got {self.tag_mode!r}")
        if not 1 <= self.per_page <= 500:
            raise FlickrConfigError(f"CrawlSpec.per_page must be in 1..500 (Flickr's range), got {self.per_page}")
        for name in ("max_pages", "max_photos"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise FlickrConfigError(f"CrawlSpec.{name} must be >= 1 or None, got {value}")
        if self.image_size not in IMAGE_SIZES:
            raise FlickrConfigError(f"CrawlSpec.image_size {self.image_size!r} is not one of {IMAGE_SIZES}")
        if self.min_upload_date is not None and self.min_upload_date < 0:
            raise FlickrConfigError(f"CrawlSpec.min_upload_date must be Unix seconds >= 0, got {self.min_upload_date}")

    def identity(self) -> dict[str, Any]:
        """The fields that decide what a page holds; a crawl directory keeps one identity.
        (``max_pages`` / ``max_photos`` may change from one round to the next.)"""
        out = asdict(self)
        out.pop("max_pages")
        out.pop("max_photos")
        return json.loads(json.dumps(out))

    def queries(self) -> tuple["Query", ...]:
        out = [Query(f"group-{g}", "group", g) for g in self.group_ids]
        if self.tags or self.text:
            out.append(Query("search", "search", None))
        return tuple(out)


@dataclass(frozen=True)
class Query:
    key: str
    kind: str  # "group" or "search"
    group_id: str | None


@dataclass(frozen=True)
class CrawlSummary:
    """What a ``crawl`` / ``recrawl`` call left in ``crawl_dir``: totals over every round, and
    what this call did (``new_photos``, ``pages_fetched``, ``api_calls``...)."""

    crawl_dir: str
    rounds: int
    complete: bool
    photos: int
    images_ok: int
    images_broken: int
    skipped: int
    new_photos: int
    pages_fetched: int
    pages_reused: int
    api_calls: dict[str, int] = field(default_factory=dict)
    retries: int = 0
    image_downloads: int = 0
    cursors: dict[str, dict[str, int | None]] = field(default_factory=dict)
    images_retried: int = 0


# -- files ------------------------------------------------------------------------------------


def _write_json(path: Path, payload: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(payload, sort_keys=True, indent=1), encoding="utf-8")


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CrawlStateError(f"cannot read crawl file {path}: {exc}") from None


def _round_dir(crawl_dir: Path, round_no: int) -> Path:
    return crawl_dir / "pages" / f"r{round_no:04d}"


def _page_path(crawl_dir: Path, round_no: int, query: str, page: int) -> Path:
    return _round_dir(crawl_dir, round_no) / query / f"p{page:06d}.json"


def _finished_pages(crawl_dir: Path, round_no: int, query: str) -> list[dict[str, Any]]:
    """The finished pages of one listing in page order; a gap means the directory was edited by
    hand and is an error (the crawler writes pages strictly in order)."""
    folder = _round_dir(crawl_dir, round_no) / query
    if not folder.is_dir():
        return []
    numbers = sorted(int(m.group(1)) for p in folder.iterdir() if (m := _PAGE_FILE.match(p.name)))
    if numbers != list(range(1, len(numbers) + 1)):
        raise CrawlStateError(f"pages of {folder} are not 1..n: {numbers}")
    return [_read_json(folder / f"p{n:06d}.json") for n in numbers]


class _PageStore:
    """The finished pages of one crawl directory, each file read at most once per call
    (finished pages never change: the crawler only adds new ones)."""

    def __init__(self, crawl_dir: Path, spec: CrawlSpec) -> None:
        self.crawl_dir = crawl_dir
        self.spec = spec
        self._cache: dict[tuple[int, str], list[dict[str, Any]]] = {}

    def finished(self, round_no: int, query: str) -> list[dict[str, Any]]:
        key = (round_no, query)
        if key not in self._cache:
            self._cache[key] = _finished_pages(self.crawl_dir, round_no, query)
        return self._cache[key]

    def write(self, record: dict[str, Any]) -> None:
        pages = self.finished(record["round"], record["query"])
        if record["page"] != len(pages) + 1:
            raise CrawlStateError(f"page {record['page']} of {record['query']} written out of order")
        _write_json(_page_path(self.crawl_dir, record["round"], record["query"], record["page"]), record)
        pages.append(record)

    def pages(self, rounds: range) -> Iterator[dict[str, Any]]:
        for round_no in rounds:
            for query in self.spec.queries():
                yield from self.finished(round_no, query.key)


def _load_state(crawl_dir: Path) -> dict[str, Any] | None:
    path = crawl_dir / STATE_FILE
    if not path.exists():
        return None
    state = _read_json(path)
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT or "rounds" not in state:
        raise CrawlStateError(f"{path} is not a crawl state of format {STATE_FORMAT}")
    return state


@contextlib.contextmanager
def _locked(crawl_dir: Path) -> Iterator[None]:
    crawl_dir.mkdir(parents=True, exist_ok=True)
    with open(crawl_dir / ".lock", "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise CrawlStateError(f"another crawl is running in {crawl_dir}") from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _check_spec(state: dict[str, Any], spec: CrawlSpec, crawl_dir: Path) -> None:
    stored, given = state["spec"], spec.identity()
    if stored != given:
        diff = sorted(k for k in set(stored) | set(given) if stored.get(k) != given.get(k))
        detail = ", ".join(f"{k}: stored {stored.get(k)!r}, given {given.get(k)!r}" for k in diff)
        raise CrawlStateError(
            f"{crawl_dir} holds a crawl of another spec ({detail}); use a new crawl directory"
        )


# -- the crawl ---------------------------------------------------------------------------------


class _Crawl:
    """One call of ``crawl``/``recrawl`` working on one round."""

    def __init__(
        self,
        spec: CrawlSpec,
        client: FlickrClient,
        store: _PageStore,
        fetcher: ImageFetcher | None,
        log: Log,
        on_step: Callable[[str], None],
    ) -> None:
        self.spec = spec
        self.client = client
        self.store = store
        self.crawl_dir = store.crawl_dir
        self.fetcher = fetcher
        self.log = log
        self.on_step = on_step
        self.pages_fetched = 0
        self.new_photos = 0
        self.images_retried = 0

    def run_round(self, state: dict[str, Any], round_no: int) -> None:
        info = state["rounds"][round_no]
        stored = {p["photo_id"] for page in self.store.pages(range(len(state["rounds"]))) for p in page["photos"]}
        in_round = sum(len(page["photos"]) for page in self.store.pages(range(round_no, round_no + 1)))
        budget = info["max_photos"]
        skip_rounds = _transient_skip_rounds(self.store, range(round_no))
        for query in self.spec.queries():
            pages = self.store.finished(round_no, query.key)
            if any(p["round_done"] for p in pages):
                return  # the photo budget ran out on a finished page of this round
            if pages and pages[-1]["query_done"]:
                continue
            page_no = len(pages) + 1
            cursor = info["cursors"].get(query.key, {})
            while True:
                remaining = None if budget is None else budget - in_round
                record = self._page(
                    query, round_no, page_no, cursor, info["max_pages"], stored, remaining, skip_rounds
                )
                self.store.write(record)
                self.on_step(f"page {query.key} {page_no}")
                self.pages_fetched += 1
                self.new_photos += len(record["photos"])
                in_round += len(record["photos"])
                stored.update(p["photo_id"] for p in record["photos"])
                if record["round_done"]:
                    return
                if record["query_done"]:
                    break
                page_no += 1

    def _listing(self, query: Query, page_no: int, cursor: dict[str, int | None]) -> PhotoPage:
        spec = self.spec
        if query.kind == "group":
            return self.client.group_pool_page(
                query.group_id, page=page_no, per_page=spec.per_page, image_size=spec.image_size
            )
        bounds = [d for d in (spec.min_upload_date, cursor.get("date_uploaded")) if d is not None]
        return self.client.search_page(
            page=page_no,
            per_page=spec.per_page,
            image_size=spec.image_size,
            tags=spec.tags,
            tag_mode=spec.tag_mode,
            text=spec.text,
            min_upload_date=max(bounds) if bounds else None,
        )

    def _page(
        self,
        query: Query,
        round_no: int,
        page_no: int,
        cursor: dict[str, int | None],
        max_pages: int | None,
        stored: set[str],
        remaining: int | None,
        skip_rounds: dict[str, int],
    ) -> dict[str, Any]:
        spec = self.spec
        listing = self._listing(query, page_no, cursor)
        self.on_step(f"listed {query.key} {page_no}")
        if query.kind == "search" and page_no == 1 and listing.total > SEARCH_RESULT_CAP:
            self.log(
                f"search matches {listing.total} photos; Flickr returns only the first "
                f"{SEARCH_RESULT_CAP}: narrow the search or crawl in date windows"
            )
        photos: list[dict[str, Any]] = []
        skips: list[dict[str, Any]] = []
        added_cursor = cursor.get("date_added")
        reached_old = False
        round_done = False
        # ``left_open``: an entry of this page was left for a later round (dropped by the photo
        # budget, or skipped for a field that may be there next time); ``handled_through``: the
        # largest upload date of the entries before the first such one, so that the next round's
        # cursor stops short of it (module docstring, "Rounds and re-crawls").
        left_open = False
        handled_through: int | None = None
        on_page: set[str] = set()
        entries = listing.entries or (*listing.photos, *listing.skipped)
        for record in entries:
            if isinstance(record, SkippedRecord):
                seen = skip_rounds.get(record.photo_id, 0) if record.photo_id else MAX_SKIP_ROUNDS
                retry = seen + 1 < MAX_SKIP_ROUNDS
                reason = record.reason if retry or record.photo_id is None else (
                    f"{record.reason} (in {seen + 1} rounds)"
                )
                skips.append({"photo_id": record.photo_id, "reason": reason, "retry": retry})
                left_open = left_open or retry
                continue
            if remaining is not None and remaining <= 0:
                round_done = True
                left_open = True
                break
            if query.kind == "group" and added_cursor is not None:
                if record.date_added is not None and record.date_added < added_cursor:
                    reached_old = True  # pools list newest additions first: the rest is old
                    break
            if not left_open:
                handled_through = max(handled_through or record.date_uploaded, record.date_uploaded)
            if spec.min_upload_date is not None and record.date_uploaded < spec.min_upload_date:
                continue
            if record.photo_id in stored or record.photo_id in on_page:
                continue
            if not re.fullmatch(r"[A-Za-z0-9_-]+", record.photo_id):
                skips.append({"photo_id": record.photo_id, "reason": "photo id unusable as a file name"})
                continue
            stored_photo = self._photo(record, skips)
            if stored_photo is None:
                continue
            photos.append(stored_photo)
            on_page.add(record.photo_id)
            if remaining is not None:
                remaining -= 1
        if remaining is not None and remaining <= 0:
            round_done = True  # the round's photo budget is spent
        last_page = listing.pages <= page_no or (not listing.photos and not listing.skipped)
        query_done = (
            round_done
            or reached_old
            or last_page
            or (max_pages is not None and page_no >= max_pages)
        )
        n_broken = sum(1 for p in photos if p["image"] and p["image"]["status"] == IMAGE_BROKEN)
        self.log(
            f"round {round_no} {query.key} page {page_no}/{max(listing.pages, page_no)}: "
            f"{len(listing.photos)} listed, {len(photos)} stored, {len(skips)} skipped, "
            f"{n_broken} broken images"
        )
        return {
            "round": round_no,
            "query": query.key,
            "page": page_no,
            "pages": listing.pages,
            "total": listing.total,
            "max_date_uploaded": listing.max_date_uploaded,
            "max_date_added": listing.max_date_added,
            "query_done": bool(query_done),
            "round_done": bool(round_done),
            "natural_end": bool(reached_old or last_page),
            "left_open": bool(left_open),
            "handled_through": handled_through,
            "photos": photos,
            "skips": skips,
        }

    def _photo(self, record: PhotoRecord, skips: list[dict[str, Any]]) -> dict[str, Any] | None:
        spec = self.spec
        photo_id = record.photo_id
        groups: list[list[str]] = []
        if spec.fetch_groups:
            try:
                contexts = self.client.photo_contexts(photo_id)
            except FlickrPermanentError as exc:
                if exc.code != _PHOTO_NOT_FOUND:
                    raise
                skips.append({"photo_id": photo_id, "reason": str(exc)})
                return None
            groups = [[g.group_id, g.name] for g in contexts.groups]
            skips.extend({"photo_id": s.photo_id, "reason": s.reason} for s in contexts.skipped)
            self.on_step(f"contexts {photo_id}")
        raw_tags = list(record.tags)
        if spec.fetch_raw_tags:
            try:
                raw_tags = list(self.client.photo_raw_tags(photo_id))
            except FlickrPermanentError as exc:
                if exc.code != _PHOTO_NOT_FOUND:
                    raise
                skips.append({"photo_id": photo_id, "reason": str(exc)})
                return None
            self.on_step(f"info {photo_id}")
        image = None
        if spec.download_images:
            image = self._image(record)
            self.on_step(f"image {photo_id}")
        return {
            "photo_id": photo_id,
            "owner": record.owner,
            "owner_name": record.owner_name,
            "title": record.title,
            "date_uploaded": record.date_uploaded,
            "date_added": record.date_added,
            "license": record.license,
            "url": record.image_url,
            "raw_tags": raw_tags,
            "groups": groups,
            "image": image,
        }

    def _image(self, record: PhotoRecord) -> dict[str, Any]:
        if record.image_url is None:
            result = ImageResult(
                IMAGE_BROKEN, f"Flickr gave no {self.spec.image_size} for this photo", None, None, None, None, 0
            )
        else:
            dest = self.crawl_dir / "images" / f"{record.photo_id}{extension_for(record.image_url)}"
            if dest.exists():
                # Written (atomically, so whole) by a run killed before this page finished.
                result = inspect_file(dest, self.fetcher.config.max_pixels if self.fetcher else MAX_PIXELS)
            elif self.fetcher is None:
                raise FlickrConfigError("download_images is set but no ImageFetcher was given")
            else:
                result = self.fetcher.fetch(record.photo_id, record.image_url, dest)
        return self._image_record(result)

    def _image_record(self, result: ImageResult) -> dict[str, Any]:
        return {
            "status": result.status,
            "reason": result.reason,
            "path": str(result.path.relative_to(self.crawl_dir)) if result.path else None,
            "sha256": result.sha256,
            "width": result.width,
            "height": result.height,
        }


    def retry_broken_images(self, complete_rounds: int) -> None:
        """Download again every image of the first ``complete_rounds`` rounds that arrived
        undecodable (a truncated transfer: ``images.is_retryable``), at most
        ``MAX_IMAGE_DOWNLOADS`` downloads per image in all. Outcomes go to ``image_retries.json``
        (page files never change), written after each image, which the tables read over the
        pages' own records."""
        if self.fetcher is None or complete_rounds == 0:
            return
        retries = _load_retries(self.crawl_dir)
        for page in self.store.pages(range(complete_rounds)):
            for photo in page["photos"]:
                photo_id, image = photo["photo_id"], photo["image"]
                if image is None or photo["url"] is None:
                    continue
                earlier = retries.get(photo_id)
                current = earlier["image"] if earlier else image
                downloads = earlier["downloads"] if earlier else 1
                if not is_retryable(current["status"], current["reason"]) or downloads >= MAX_IMAGE_DOWNLOADS:
                    continue
                dest = self.crawl_dir / "images" / f"{photo_id}{extension_for(photo['url'])}"
                result = self.fetcher.fetch(photo_id, photo["url"], dest)
                record = self._image_record(result)
                if record["status"] == IMAGE_BROKEN and downloads + 1 >= MAX_IMAGE_DOWNLOADS:
                    record["reason"] += f" (gave up after {downloads + 1} downloads)"
                retries[photo_id] = {"downloads": downloads + 1, "image": record}
                _write_json(self.crawl_dir / RETRIES_FILE, retries)
                self.images_retried += 1
                self.log(f"image of photo {photo_id} downloaded again: {record['status']} {record['reason']}".rstrip())
                self.on_step(f"retry image {photo_id}")


def _load_retries(crawl_dir: Path) -> dict[str, dict[str, Any]]:
    path = crawl_dir / RETRIES_FILE
    return _read_json(path) if path.exists() else {}


def _transient_skip_rounds(store: _PageStore, rounds: range) -> dict[str, int]:
    """Per photo id: in how many of ``rounds`` a listing skipped it for a reason that may pass."""
    seen: dict[str, set[int]] = {}
    for page in store.pages(rounds):
        for skip in page["skips"]:
            if skip.get("retry") and skip["photo_id"]:
                seen.setdefault(skip["photo_id"], set()).add(page["round"])
    return {photo_id: len(found) for photo_id, found in seen.items()}


def _later(current: int | None, candidate: int | None) -> int | None:
    if candidate is None:
        return current
    return candidate if current is None else max(current, candidate)


def _cursors(store: _PageStore, before_round: int) -> dict[str, dict[str, int | None]]:
    """Per listing, what the rounds before ``before_round`` have covered for good.

    Search (sorted by upload date, oldest first): the upload date up to which every listed
    entry was handled; an entry left for later (dropped by the photo budget, skipped for a
    field that may come back) stops it just before that entry. Pool (newest addition first,
    cannot be filtered): the largest ``dateadded`` of the last round that read the pool to its
    end (or down to the cursor before it) without leaving an entry for later; a round cut by
    ``max_pages`` or the budget leaves the cursor where it was, so the next round reads the
    pool down to it again and nothing older is hidden."""
    out: dict[str, dict[str, int | None]] = {}
    for query in store.spec.queries():
        uploaded: int | None = None
        added: int | None = None
        for round_no in range(before_round):
            pages = store.finished(round_no, query.key)
            if not pages:
                continue
            through = uploaded
            for page in pages:
                if page.get("left_open"):
                    through = _later(through, page.get("handled_through"))
                    break
                through = _later(through, page["max_date_uploaded"])
            uploaded = through
            covered = (
                pages[-1]["query_done"]
                and pages[-1].get("natural_end", True)
                and not any(page.get("left_open") for page in pages)
            )
            if covered:
                for page in pages:
                    added = _later(added, page["max_date_added"])
        out[query.key] = {"date_uploaded": uploaded, "date_added": added}
    return out


def _run(
    spec: CrawlSpec,
    client: FlickrClient,
    crawl_dir: str | Path,
    *,
    new_round: bool,
    log: Log | None,
    fetcher: ImageFetcher | None,
    on_step: Callable[[str], None] | None,
) -> CrawlSummary:
    if not isinstance(spec, CrawlSpec):
        raise FlickrConfigError(f"expected a CrawlSpec, got {type(spec).__name__}")
    crawl_dir = Path(crawl_dir).resolve()
    log = log or (lambda message: None)
    step = on_step or (lambda name: None)
    calls_before = dict(client.stats.attempts)
    retries_before = client.stats.retries
    own_fetcher = fetcher is None and spec.download_images
    if own_fetcher:
        fetcher = ImageFetcher(log=log)
    downloads_before = fetcher.requests if fetcher else 0
    try:
        with _locked(crawl_dir):
            state = _load_state(crawl_dir)
            if state is None:
                state = {"format": STATE_FORMAT, "spec": spec.identity(), "rounds": []}
            _check_spec(state, spec, crawl_dir)
            # Temporary files of a crawl killed mid-write (their writer is dead) go first.
            for leftover in sweep_stale_temps(crawl_dir, recursive=True):
                log(f"removed {leftover.relative_to(crawl_dir)}, left by a crawl killed mid-write")
            store = _PageStore(crawl_dir, spec)
            pages_before = sum(1 for _ in store.pages(range(len(state["rounds"]))))
            crawl = _Crawl(spec, client, store, fetcher, log, step)
            rounds = state["rounds"]
            complete_at_start = sum(1 for r in rounds if r["complete"])
            if rounds and not rounds[-1]["complete"]:
                round_no = len(rounds) - 1
                log(f"resuming round {round_no} in {crawl_dir}")
            elif not rounds or new_round:
                round_no = len(rounds)
                rounds.append(
                    {
                        "round": round_no,
                        "cursors": _cursors(store, round_no),
                        "max_pages": spec.max_pages,
                        "max_photos": spec.max_photos,
                        "complete": False,
                    }
                )
                _write_json(crawl_dir / STATE_FILE, state)
                step("state")
                log(f"starting round {round_no} in {crawl_dir}")
            else:
                round_no = None
                log(f"crawl in {crawl_dir} is complete; nothing to do")
            # Undecodable downloads of finished rounds are asked for again (after a new round is
            # recorded, so a crawl killed here resumes that round).
            crawl.retry_broken_images(complete_at_start)
            if round_no is not None:
                info = rounds[round_no]
                if (info["max_pages"], info["max_photos"]) != (spec.max_pages, spec.max_photos):
                    log(
                        f"round {round_no} keeps the limits it started with (max_pages="
                        f"{info['max_pages']}, max_photos={info['max_photos']})"
                    )
                crawl.run_round(state, round_no)
                info["complete"] = True
                _write_json(crawl_dir / STATE_FILE, state)
                step("state")
                log(f"round {round_no} complete: {crawl.new_photos} new photos")
            summary = _summarise(store, state)
    finally:
        if own_fetcher and fetcher is not None:
            fetcher.close()
    calls = {
        m: n - calls_before.get(m, 0) for m, n in client.stats.attempts.items() if n - calls_before.get(m, 0)
    }
    return CrawlSummary(
        **summary,
        new_photos=crawl.new_photos,
        pages_fetched=crawl.pages_fetched,
        pages_reused=pages_before,
        api_calls=calls,
        retries=client.stats.retries - retries_before,
        image_downloads=(fetcher.requests - downloads_before) if fetcher else 0,
        images_retried=crawl.images_retried,
    )


def _summarise(store: _PageStore, state: dict[str, Any]) -> dict[str, Any]:
    photos = ok = broken = 0
    retries = _load_retries(store.crawl_dir)
    for page in store.pages(range(len(state["rounds"]))):
        photos += len(page["photos"])
        for photo in page["photos"]:
            image = retries[photo["photo_id"]]["image"] if photo["photo_id"] in retries else photo["image"]
            if image:
                if image["status"] == IMAGE_BROKEN:
                    broken += 1
                else:
                    ok += 1
    rounds = state["rounds"]
    return {
        "crawl_dir": str(store.crawl_dir),
        "rounds": sum(1 for r in rounds if r["complete"]),
        "complete": bool(rounds) and rounds[-1]["complete"],
        "photos": photos,
        "images_ok": ok,
        "images_broken": broken,
        "skipped": len(_skips(store, len(rounds))),
        "cursors": _cursors(store, len(rounds)),
    }


def crawl(
    spec: CrawlSpec,
    client: FlickrClient,
    crawl_dir: str | Path,
    log: Log | None = None,
    *,
    fetcher: ImageFetcher | None = None,
    on_step: Callable[[str], None] | None = None,
) -> CrawlSummary:
    """Run (or resume) the crawl of ``spec`` into ``crawl_dir``; a finished crawl is a no-op.

    ``log`` gets one line per page and round (give the client the same ``log`` for its retry
    lines). ``fetcher`` downloads images (default: a new ``ImageFetcher``). ``on_step`` is
    called after every step with a short name (``"state"``, ``"listed <query> <page>"``,
    ``"contexts <photo>"``, ``"info <photo>"``, ``"image <photo>"``, ``"page <query> <page>"``):
    a progress hook, and a way to stop the crawl (raise from it); a stopped crawl resumes where
    it stopped. Raises ``FlickrPermanentError`` (bad key, unknown
    group), ``FlickrRetriesExhausted`` / ``ImageDownloadError`` (an outage outlasting the
    retries: run again later) and ``CrawlStateError`` (directory of another spec, or busy)."""
    return _run(spec, client, crawl_dir, new_round=False, log=log, fetcher=fetcher, on_step=on_step)


def recrawl(
    spec: CrawlSpec,
    client: FlickrClient,
    crawl_dir: str | Path,
    log: Log | None = None,
    *,
    fetcher: ImageFetcher | None = None,
    on_step: Callable[[str], None] | None = None,
) -> CrawlSummary:
    """Add what is new since the last round: finishes an unfinished round if there is one,
    else starts a new round that asks each listing only for photos past its cursor (module
    docstring). On an empty directory it is the first crawl. Never stores a photo twice."""
    return _run(spec, client, crawl_dir, new_round=True, log=log, fetcher=fetcher, on_step=on_step)


# -- reading a crawl ---------------------------------------------------------------------------


def _state_and_spec(crawl_dir: Path) -> tuple[dict[str, Any], CrawlSpec]:
    state = _load_state(crawl_dir)
    if state is None:
        raise CrawlStateError(f"no Flickr crawl in {crawl_dir} (no {STATE_FILE})")
    known = {f.name for f in fields(CrawlSpec)}
    spec = CrawlSpec(**{k: v for k, v in state["spec"].items() if k in known})
    return state, spec


def load_ingest_tables(crawl_dir: str | Path, *, require_complete: bool = True) -> IngestTables:
    """The four ingest tables (``tagrec_models.sources.tables``) of every finished page of
    every round in ``crawl_dir``, ``source = 'flickr'``.

    ``photos.owner`` is the owner's NSID, ``url`` the image URL of the crawled size,
    ``license`` Flickr's licence id. ``photo_tags.raw_tag`` is Flickr's tag (see the module
    docstring), ``tag`` its ``clean_tag``. ``photo_groups`` holds every public pool of the photo
    (not only the crawled groups). ``images.path`` is absolute. Raises ``CrawlStateError`` when
    the directory holds no crawl, or (``require_complete``) when its last round is unfinished."""
    crawl_dir = Path(crawl_dir).resolve()
    state, spec = _state_and_spec(crawl_dir)
    rounds = state["rounds"]
    if require_complete and not (rounds and rounds[-1]["complete"]):
        raise CrawlStateError(f"the crawl in {crawl_dir} is not finished; run crawl() to resume it")
    photos, tags, groups, images = [], [], [], []
    retries = _load_retries(crawl_dir)
    for page in _PageStore(crawl_dir, spec).pages(range(len(rounds))):
        for p in page["photos"]:
            pid = p["photo_id"]
            photos.append(
                {
                    "photo_id": pid,
                    "owner": p["owner"],
                    "title": p["title"],
                    "date_uploaded": pd.Timestamp(p["date_uploaded"], unit="s", tz="UTC"),
                    "url": p["url"],
                    "license": p["license"],
                    "source": SOURCE,
                }
            )
            seen_raw: set[str] = set()
            for raw in p["raw_tags"]:
                cleaned = clean_tag(raw)
                if cleaned and raw not in seen_raw:
                    seen_raw.add(raw)
                    tags.append({"photo_id": pid, "raw_tag": raw, "tag": cleaned})
            for group_id, name in p["groups"]:
                groups.append({"photo_id": pid, "group_id": group_id, "group_name": name})
            image = retries[pid]["image"] if pid in retries else p["image"]
            if image is not None:
                images.append(
                    {
                        "photo_id": pid,
                        "path": str(crawl_dir / image["path"]) if image["path"] else None,
                        "sha256": image["sha256"],
                        "width": image["width"],
                        "height": image["height"],
                        "status": image["status"],
                        "reason": image["reason"],
                    }
                )

    def frame(rows: list[dict[str, Any]], columns: dict[str, str]) -> pd.DataFrame:
        return pd.DataFrame(rows, columns=list(columns)) if rows else IngestTables.empty_frame(columns)

    return IngestTables(
        photos=frame(photos, PHOTOS_COLUMNS),
        photo_tags=frame(tags, PHOTO_TAGS_COLUMNS),
        photo_groups=frame(groups, PHOTO_GROUPS_COLUMNS),
        images=frame(images, IMAGES_COLUMNS),
    )


def _skips(store: _PageStore, n_rounds: int) -> list[dict[str, Any]]:
    """Every skip of the first ``n_rounds`` rounds but those of photos a later page stored
    after all (an entry skipped for a missing field that a later round got whole)."""
    pages = list(store.pages(range(n_rounds)))
    stored = {p["photo_id"] for page in pages for p in page["photos"]}
    return [
        {"round": page["round"], "query": page["query"], "page": page["page"],
         "photo_id": skip["photo_id"], "reason": skip["reason"]}
        for page in pages
        for skip in page["skips"]
        if skip["photo_id"] is None or skip["photo_id"] not in stored
    ]


def load_skips(crawl_dir: str | Path) -> pd.DataFrame:
    """Every record a crawl left out, with why: columns round, query, page, photo_id, reason.
    A photo skipped in one round and stored by a later one is not listed."""
    crawl_dir = Path(crawl_dir).resolve()
    state, spec = _state_and_spec(crawl_dir)
    rows = _skips(_PageStore(crawl_dir, spec), len(state["rounds"]))
    columns = ["round", "query", "page", "photo_id", "reason"]
    return pd.DataFrame(rows, columns=columns)
