"""One Flickr crawl per query (issue 14): the keys of the ``flickr/crawl_by_query`` dynamic
partitions, the crawl each key means, where its crawl folder lives, and the ingest tables of
several queries' crawls merged.

A key names one listing: ``group:<NSID>`` (a group pool, e.g. ``group:34427469792@N01``),
``tags:<tag>[,<tag>...]`` (a tag search, any of the tags) or ``text:<words>`` (a free-text
search). Each query is crawled into its own resumable folder (``crawler.crawl``, rate limits,
cursors and re-crawls as for one crawl), so adding a group is adding a partition, and a photo
found by two queries is one photo in the merged tables.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import pandas as pd

from tagrec_models.sources.flickr.crawler import CrawlSpec
from tagrec_models.sources.flickr.errors import FlickrConfigError
from tagrec_models.sources.tables import IngestTables

KINDS = ("group", "tags", "text")
QUERIES_FOLDER = "queries"


@dataclass(frozen=True)
class Query:
    kind: str
    value: str

    @property
    def key(self) -> str:
        return f"{self.kind}:{self.value}"


def parse_query(key: str) -> Query:
    """``group:<NSID>``, ``tags:a,b`` or ``text:words`` -> ``Query``; anything else is an error
    naming the accepted forms."""
    kind, sep, value = str(key).partition(":")
    kind, value = kind.strip().lower(), value.strip()
    if not sep or kind not in KINDS or not value:
        raise FlickrConfigError(f"Flickr query {key!r}: expected 'group:<NSID>', 'tags:<tag>[,<tag>...]' or 'text:<words>'")
    if kind == "tags":
        tags = [t.strip() for t in value.split(",") if t.strip()]
        if not tags:
            raise FlickrConfigError(f"Flickr query {key!r} names no tag")
        value = ",".join(tags)
    return Query(kind, value)


def query_spec(key: str, **options) -> CrawlSpec:
    """The ``CrawlSpec`` of this query; ``options`` are its other fields (page size, caps,
    image size, group fetching), never the listing (``group_ids``, ``tags``, ``text``)."""
    listed = sorted(set(options) & {"group_ids", "tags", "text"})
    if listed:
        raise FlickrConfigError(f"query_spec: the query names the listing; got {listed} too")
    query = parse_query(key)
    listing = {"group_ids": (), "tags": (), "text": None}
    if query.kind == "group":
        listing["group_ids"] = (query.value,)
    elif query.kind == "tags":
        listing["tags"] = tuple(query.value.split(","))
    else:
        listing["text"] = query.value
    return CrawlSpec(**listing, **options)


def query_folder(root: str | Path, key: str) -> Path:
    """The crawl folder of one query under ``root``: a readable, file-system-safe name plus a
    hash of the exact key (two keys never share a folder)."""
    query = parse_query(key)
    safe = re.sub(r"[^A-Za-z0-9@._-]+", "-", query.value).strip("-")[:60] or "q"
    digest = hashlib.blake2b(query.key.encode("utf-8"), digest_size=4).hexdigest()
    return Path(root) / QUERIES_FOLDER / f"{query.kind}-{safe}-{digest}"


def merge_tables(parts: Sequence[IngestTables]) -> IngestTables:
    """The ingest tables of several crawls as one: a photo found by several queries keeps the
    record of the first query that has it (queries in the order given), its tags and groups
    are the union, its image the first query's file."""
    if not parts:
        raise ValueError("merge_tables got no tables")
    photos = pd.concat([p.photos for p in parts], ignore_index=True).drop_duplicates("photo_id")
    tags = pd.concat([p.photo_tags for p in parts], ignore_index=True).drop_duplicates()
    groups = pd.concat([p.photo_groups for p in parts], ignore_index=True).drop_duplicates()
    images = pd.concat([p.images for p in parts], ignore_index=True).drop_duplicates("photo_id")
    return IngestTables(photos=photos.reset_index(drop=True), photo_tags=tags.reset_index(drop=True),
                        photo_groups=groups.reset_index(drop=True), images=images.reset_index(drop=True))
