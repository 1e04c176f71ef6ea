"""Ingest assets: each source's four tables (DESIGN.md, "Data flow", step 1).

``photos``, ``photo_tags``, ``photo_groups`` and ``images`` per dataset, plus what a source
skipped and why (never silently). Flickr adds the crawl itself as an upstream asset, so the
re-crawl schedule can materialise it alone; Corel5k adds its standard split; a
bring-your-own folder adds the rows of its posts file that it skipped.
"""


import warnings
from pathlib import Path
from typing import Any, Callable

import dagster as dg
import pandas as pd
from pydantic import Field

from assets.common import key, md_table, progress
from assets.datasets import DatasetSpec, default_corel5k_folder
from assets.resources import DUCKDB_POOL, DataHomeResource, FlickrResource
from tagrec_models.sources.corel5k import Corel5kConfig, read_corel5k
from tagrec_models.sources.flickr.crawler import STATE_FILE, CrawlSpec, load_ingest_tables, load_skips, recrawl
from tagrec_models.sources.flickr.crawler import crawl as crawl_fn
from tagrec_models.sources.folder import FolderConfig, read_folder
from tagrec_models.sources.openclipart import MAX_FILE_BYTES, OpenclipartConfig, read_openclipart
from tagrec_models.sources.flickr.errors import (
    CrawlStateError,
    FlickrApiError,
    FlickrConfigError,
    ImageDownloadError,
)
from tagrec_models.sources.flickr.queries import merge_tables, query_folder, query_spec
from tagrec_models.sources.tables import IMAGE_BROKEN, IngestError, IngestTables

TABLES = ("photos", "photo_tags", "photo_groups", "images")
TABLE_DESCRIPTIONS = {
    "photos": "One row per photo: photo_id, owner, title, date_uploaded, url, license, source.",
    "photo_tags": "Tag assignments as the source gave them (raw_tag) and cleaned (tag).",
    "photo_groups": "Group memberships (photo_id, group_id, group_name); paper 2, eq. 4 reads them.",
    "images": "Image files: path, sha256, width, height, status ok/broken with the reason.",
}


def ingest_multi_asset(spec: DatasetSpec, extra: dict[str, str], **kwargs: Any):
    """``@dg.multi_asset`` for a source's ingest step: the four ingest tables plus ``extra``
    (name -> description), in the ``duckdb`` pool since it writes tagrec.duckdb's views."""
    return dg.multi_asset(pool=DUCKDB_POOL, name=f"{spec.name}__ingest", outs=_outs(spec, extra), **kwargs)


def _outs(spec: DatasetSpec, extra: dict[str, str] | None = None) -> dict[str, dg.AssetOut]:
    described = {**TABLE_DESCRIPTIONS, **(extra or {})}
    return {
        name: dg.AssetOut(
            key=key(spec, name),
            description=f"{described[name]} ({spec.name})",
            group_name=spec.name,
            kinds={"pandas", "parquet"},
        )
        for name in described
    }


def failing_clearly(read, *args, **kwargs):
    """Call a source reader; its input errors become a Dagster ``Failure`` whose message
    names the bad input (shown as is in the UI), instead of a wrapped stack trace."""
    try:
        return read(*args, **kwargs)
    except (IngestError, CrawlStateError, FlickrApiError, FlickrConfigError) as error:
        raise dg.Failure(description=str(error)) from error
    except ImageDownloadError as error:
        # An image host outage outlasting the retries: say which photo and URL, and that a
        # later run resumes (the crawl keeps every finished page).
        raise dg.Failure(
            description=f"{error}; materialise the crawl again later: it resumes where it stopped",
            metadata={"photo_id": error.photo_id, "url": dg.MetadataValue.url(error.url)},
        ) from error


def _emit(tables: IngestTables, extra: dict[str, pd.DataFrame] | None = None):
    broken = tables.images[tables.images["status"] == IMAGE_BROKEN]
    for name in TABLES:
        frame = getattr(tables, name)
        metadata = {}
        if name == "images":
            metadata = {
                "broken_images": len(broken),
                "broken_examples": md_table(broken[["photo_id", "path", "reason"]].head(10))
                if len(broken)
                else "none",
            }
        yield dg.Output(frame, output_name=name, metadata=metadata)
    for name, frame in (extra or {}).items():
        yield dg.Output(frame, output_name=name)


class ImageLimits(dg.Config):
    """What an offline reader refuses before decoding an image (decompression bombs, huge files)."""

    max_pixels: int = Field(
        default=50_000_000,
        description="An image with more pixels is refused ('too large') without decoding: the "
        "file is recorded broken, or its row skipped; 0: no limit.",
    )
    max_file_bytes: int = Field(
        default=MAX_FILE_BYTES,
        description="An image file larger than this is refused ('file too large') without being "
        "read; 0: no limit.",
    )


# -- openclipart ------------------------------------------------------------------------------
class OpenclipartSettings(ImageLimits):
    folder: str = Field(
        default="",
        description="Folder holding svg/ and png/; empty: <data home>/sources/openclipart/"
        "usr/share/openclipart, installed by `make setup`.",
    )
    merge_owner_case: bool = Field(
        default=True,
        description="Creator names differing only in case/spacing are one user (527 spellings of 514 users).",
    )
    merge_identical_copies: bool = Field(
        default=True,
        description="Merge byte-identical drawings by one owner filed as separate files in several "
        "folders (922 photos in 367 sets) into one photo with the union of tags and groups, so no "
        "drawing sits in train and test at once. Off reproduces DESIGN.md's corpus counts, with that leak.",
    )


def openclipart_ingest(spec: DatasetSpec) -> dg.AssetsDefinition:
    @ingest_multi_asset(spec, {"skipped_files": "SVG files that did not become photos, with the reason."})
    def ingest(
        context: dg.AssetExecutionContext, config: OpenclipartSettings, data_home: DataHomeResource
    ):
        """Parse openclipart's SVG RDF metadata (dc:creator = owner, dc:subject = tags,
        dc:title), category folders as groups (a symlinked drawing is one photo in several
        groups), and the PNG at the same path as the image."""
        folder = Path(config.folder) if config.folder else (
            data_home.home.source_dir("openclipart") / "usr" / "share" / "openclipart"
        )
        tables = failing_clearly(
            read_openclipart,
            folder,
            OpenclipartConfig(
                merge_owner_case=config.merge_owner_case,
                merge_identical_copies=config.merge_identical_copies,
                max_pixels=config.max_pixels or None,
                max_file_bytes=config.max_file_bytes or None,
            ),
            log=progress(context),
        )
        yield from _emit(tables, {"skipped_files": tables.skips})

    return ingest


# -- Corel5k ----------------------------------------------------------------------------------
class Corel5kSettings(dg.Config):
    folder: str = Field(
        default_factory=default_corel5k_folder,
        description="The Corel5k folder in the standard layout (env TAGREC_COREL5K; default ../shared/data/corel5k).",
    )
    check_images: bool = Field(default=True, description="Decode every JPEG to tell ok from broken.")


def corel5k_ingest(spec: DatasetSpec) -> dg.AssetsDefinition:
    @ingest_multi_asset(spec, {"standard_split": "The benchmark's own split: photo_id -> part (4,500 train / 499 test)."})
    def ingest(context: dg.AssetExecutionContext, config: Corel5kSettings):
        """Read Corel5k from its folder: images, the 260-word annotations (no owners, no
        groups) and the standard split; annotations are checked against the .mat files."""
        data = failing_clearly(
            read_corel5k,
            Path(config.folder),
            Corel5kConfig(check_images=config.check_images),
            log=progress(context),
        )
        yield from _emit(data.tables, {"standard_split": data.split})

    return ingest


# -- Flickr -----------------------------------------------------------------------------------
class FlickrCrawlSettings(dg.Config):
    crawl_name: str = Field(default="default", description="Crawl folder under <data home>/sources/flickr/.")
    group_ids: list[str] = Field(default_factory=list, description="Group NSIDs whose pools to crawl.")
    tags: list[str] = Field(default_factory=list, description="Tags to search for (flickr.photos.search).")
    tag_mode: str = Field(default="any", description="'any' or 'all' of the tags.")
    text: str = Field(default="", description="Free-text search; empty: none.")
    per_page: int = Field(default=100, description="Photos per page (1..500).")
    max_pages: int = Field(default=0, description="Pages per listing and round; 0: no cap.")
    max_photos: int = Field(default=0, description="Photos stored per round; 0: no cap.")
    image_size: str = Field(default="url_z", description="Image size extra to download (url_z: 640 px).")
    fetch_groups: bool = Field(default=True, description="Fetch each photo's pools (paper 2 needs them).")
    mode: str = Field(default="crawl", description="'crawl' (finish or resume) or 'recrawl' (add only what is new since the cursor).")

    def crawl_options(self) -> dict:
        """Every crawl setting but the listing (a query partition names the listing)."""
        return {"tag_mode": self.tag_mode, "per_page": self.per_page, "max_pages": self.max_pages or None,
                "max_photos": self.max_photos or None, "image_size": self.image_size,
                "fetch_groups": self.fetch_groups}

    def crawl_spec(self) -> CrawlSpec:
        return CrawlSpec(group_ids=tuple(self.group_ids), tags=tuple(self.tags), text=self.text or None,
                         **self.crawl_options())


def _run_crawl(context, config: FlickrCrawlSettings, flickr: FlickrResource, crawl_spec: CrawlSpec,
               crawl_dir: Path) -> dg.MaterializeResult:
    """One crawl (or re-crawl) of ``crawl_spec`` into ``crawl_dir``, its figures as metadata."""
    if config.mode not in ("crawl", "recrawl"):
        raise dg.Failure(f"crawl mode must be 'crawl' or 'recrawl', got {config.mode!r}")
    run = recrawl if config.mode == "recrawl" else crawl_fn

    def start_crawl():
        client = flickr.client(log=progress(context))
        fetcher = flickr.image_fetcher(log=progress(context))
        try:
            return run(crawl_spec, client, crawl_dir, log=progress(context), fetcher=fetcher)
        finally:
            fetcher.close()

    summary = failing_clearly(start_crawl)
    return dg.MaterializeResult(
        metadata={
            "crawl_dir": dg.MetadataValue.path(str(crawl_dir)),
            "rounds": summary.rounds,
            "photos": summary.photos,
            "new_photos": summary.new_photos,
            "images_ok": summary.images_ok,
            "images_broken": summary.images_broken,
            "skipped_records": summary.skipped,
            "pages_fetched": summary.pages_fetched,
            "pages_reused": summary.pages_reused,
            "api_calls": dg.MetadataValue.json(summary.api_calls),
            "retries": summary.retries,
            "images_retried": summary.images_retried,
            "cursors": dg.MetadataValue.json(summary.cursors),
        }
    )


def flickr_crawl_asset(spec: DatasetSpec) -> dg.AssetsDefinition:
    @dg.asset(
        key=key(spec, "crawl"),
        group_name=spec.name,
        pool="flickr",
        kinds={"python"},
    )
    def crawl(
        context: dg.AssetExecutionContext,
        config: FlickrCrawlSettings,
        data_home: DataHomeResource,
        flickr: FlickrResource,
    ) -> dg.MaterializeResult:
        """Crawl Flickr (group pools and/or tag/text search) into a resumable crawl folder:
        pages, each photo's groups (flickr.photos.getAllContexts) and image files. Rate limited,
        retried with back-off; a killed crawl resumes without re-asking finished pages; mode
        'recrawl' (the schedule's) adds only photos uploaded since the cursor."""
        crawl_dir = data_home.home.source_dir("flickr") / config.crawl_name
        return _run_crawl(context, config, flickr, config.crawl_spec(), crawl_dir)

    return crawl


# One partition per Flickr query (tagrec_models.sources.flickr.queries): `group:<NSID>`,
# `tags:<tag>[,<tag>...]`, `text:<words>`. Add one in the UI (the asset's partitions tab, or the
# launchpad) or with `dagster instance`'s API; the re-crawl schedule covers every partition.
FLICKR_QUERIES = dg.DynamicPartitionsDefinition(name="flickr_queries")


def flickr_query_crawl_asset(spec: DatasetSpec) -> dg.AssetsDefinition:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.BetaWarning)  # backfill_policy is beta in Dagster 1.13
        return _flickr_query_crawl_asset(spec)


def _flickr_query_crawl_asset(spec: DatasetSpec) -> dg.AssetsDefinition:
    @dg.asset(
        key=key(spec, "crawl_by_query"),
        group_name=spec.name,
        pool="flickr",
        kinds={"python"},
        partitions_def=FLICKR_QUERIES,
        backfill_policy=dg.BackfillPolicy.multi_run(max_partitions_per_run=1),
    )
    def crawl_by_query(
        context: dg.AssetExecutionContext,
        config: FlickrCrawlSettings,
        data_home: DataHomeResource,
        flickr: FlickrResource,
    ) -> dg.MaterializeResult:
        """The crawl of one query (this partition's key: a group pool, a tag search or a text
        search) into its own resumable folder, <crawl_name>/queries/<query>/; the settings'
        group_ids, tags and text are not used, the other settings are. The `flickr` pool keeps
        one crawl per API key at a time across every partition's run."""
        try:
            crawl_spec = query_spec(context.partition_key, **config.crawl_options())
        except FlickrConfigError as error:
            raise dg.Failure(str(error)) from error
        root = data_home.home.source_dir("flickr") / config.crawl_name
        return _run_crawl(context, config, flickr, crawl_spec, query_folder(root, context.partition_key))

    return crawl_by_query


class FlickrTablesSettings(dg.Config):
    crawl_name: str = Field(default="default", description="Crawl folder under <data home>/sources/flickr/.")


def flickr_ingest(spec: DatasetSpec) -> dg.AssetsDefinition:
    @ingest_multi_asset(spec, {"skipped_files": "Flickr records that were malformed, with the reason."},
                        deps=[key(spec, "crawl"), key(spec, "crawl_by_query")])
    def ingest(context: dg.AssetExecutionContext, config: FlickrTablesSettings, data_home: DataHomeResource):
        """The ingest tables of every finished page of the crawl and of every query partition's
        crawl, merged (a photo found by several queries is one photo)."""
        root = data_home.home.source_dir("flickr") / config.crawl_name
        folders = [root] if (root / STATE_FILE).exists() else []
        folders += [query_folder(root, q) for q in sorted(context.instance.get_dynamic_partitions(FLICKR_QUERIES.name))
                    if (query_folder(root, q) / STATE_FILE).exists()]
        if not folders:
            failing_clearly(load_ingest_tables, root)  # the crawl's own error: nothing crawled yet
        tables = merge_tables([failing_clearly(load_ingest_tables, f) for f in folders])
        skips = pd.concat([load_skips(f) for f in folders], ignore_index=True)
        context.log.info(f"flickr ingest: {len(folders)} crawl folder(s), {len(tables.photos)} photos")
        yield from _emit(tables, {"skipped_files": skips})

    return ingest


# -- bring your own dataset (a folder) ---------------------------------------------------------
class FolderSettings(ImageLimits):
    folder: str = Field(
        default="",
        description="The dataset folder (posts.csv or posts.parquet + images/); empty: the folder "
        "the dataset was found at (<data home>/byo/<name>/ or TAGREC_DATASETS).",
    )
    check_images: bool = Field(default=True, description="Decode every image; a row whose image fails is skipped.")


def folder_ingest(spec: DatasetSpec) -> dg.AssetsDefinition:
    @ingest_multi_asset(spec, {"skipped_rows": "Rows of the posts file that did not become photos (row, photo_id, reason)."})
    def ingest(context: dg.AssetExecutionContext, config: FolderSettings):
        """Read a bring-your-own dataset folder (format: tagrec_models.sources.folder): one
        photo per row of posts.csv/posts.parquet with its owner, '|'-separated tags and groups,
        and its image under images/ (decoded to check it); rows that do not fit are skipped
        with the reason."""
        tables = failing_clearly(
            read_folder,
            Path(config.folder or spec.folder),
            FolderConfig(
                check_images=config.check_images,
                max_pixels=config.max_pixels or None,
                max_file_bytes=config.max_file_bytes or None,
            ),
            log=progress(context),
        )
        skipped = tables.skipped_rows
        yield from _emit(tables)
        yield dg.Output(
            skipped,
            output_name="skipped_rows",
            metadata={"skipped_examples": md_table(skipped.head(10)) if len(skipped) else "none"},
        )

    return ingest


# Each source's ingest asset factories, by ``DatasetSpec.source``: a new source is one entry.
SOURCE_ASSETS: dict[str, tuple[Callable[[DatasetSpec], dg.AssetsDefinition], ...]] = {
    "openclipart": (openclipart_ingest,),
    "corel5k": (corel5k_ingest,),
    "flickr": (flickr_crawl_asset, flickr_query_crawl_asset, flickr_ingest),
    "folder": (folder_ingest,),
}
# Extra ingest outputs a source offers to later stages (the splits read ``standard_split``).
SOURCE_SPLIT_TABLE: dict[str, str] = {"corel5k": "standard_split"}


def ingest_assets(spec: DatasetSpec) -> list[dg.AssetsDefinition]:
    if spec.source not in SOURCE_ASSETS:
        raise ValueError(
            f"dataset {spec.name!r}: unknown source {spec.source!r}; known: {sorted(SOURCE_ASSETS)}"
        )
    return [build(spec) for build in SOURCE_ASSETS[spec.source]]
