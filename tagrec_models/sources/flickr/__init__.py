"""Flickr source: a rate-limited, retried client over ``flickrapi`` and a resumable,
idempotent crawler that produces the ingest tables (DESIGN.md, "ingest", source ``flickr``).

Typical use (the Dagster layer reads the key and secret from ``FLICKR_API_KEY`` /
``FLICKR_API_SECRET``)::

    client = FlickrClient(FlickrCredentials(key, secret))
    summary = crawl(CrawlSpec(group_ids=("34427469121@N01",)), client, crawl_dir, log=print)
    tables = load_ingest_tables(crawl_dir)
"""

from tagrec_models.sources.flickr.client import (
    FLICKR_REST_URL,
    CallStats,
    ClientConfig,
    FlickrClient,
    FlickrCredentials,
)
from tagrec_models.sources.flickr.crawler import (
    CrawlSpec,
    CrawlSummary,
    clean_tag,
    crawl,
    load_ingest_tables,
    load_skips,
    recrawl,
)
from tagrec_models.sources.flickr.errors import (
    CrawlStateError,
    FlickrApiError,
    FlickrConfigError,
    FlickrPermanentError,
    FlickrResponseError,
    FlickrRetriesExhausted,
    ImageDownloadError,
)
from tagrec_models.sources.flickr.images import ImageConfig, ImageFetcher, ImageResult
from tagrec_models.sources.flickr.ratelimit import TokenBucket
from tagrec_models.sources.flickr.records import (
    GroupRecord,
    PhotoContexts,
    PhotoPage,
    PhotoRecord,
    SkippedRecord,
)
from tagrec_models.sources.flickr.retry import RetryPolicy

__all__ = [
    "FLICKR_REST_URL",
    "CallStats",
    "ClientConfig",
    "CrawlSpec",
    "CrawlStateError",
    "CrawlSummary",
    "FlickrApiError",
    "FlickrClient",
    "FlickrConfigError",
    "FlickrCredentials",
    "FlickrPermanentError",
    "FlickrResponseError",
    "FlickrRetriesExhausted",
    "GroupRecord",
    "ImageConfig",
    "ImageDownloadError",
    "ImageFetcher",
    "ImageResult",
    "PhotoContexts",
    "PhotoPage",
    "PhotoRecord",
    "RetryPolicy",
    "SkippedRecord",
    "TokenBucket",
    "clean_tag",
    "crawl",
    "load_ingest_tables",
    "load_skips",
    "recrawl",
]
