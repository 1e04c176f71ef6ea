"""Resources: where data lives, and the Flickr API client."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import dagster as dg

from tagrec_models.paths import DataHome
from tagrec_models.sources.flickr.client import ClientConfig, FlickrClient, FlickrCredentials
from tagrec_models.sources.flickr.images import ImageConfig, ImageFetcher
from tagrec_models.sources.flickr.retry import RetryPolicy
from tagrec_models.storage.duckdb_store import DuckDBStore


# The concurrency pool (``dagster.yaml``: one step at a time) of every asset that writes
# ``tagrec.duckdb``, so that writers queue in Dagster rather than wait on the file lock.
DUCKDB_POOL = "duckdb"


class DataHomeResource(dg.ConfigurableResource):
    """The tagrec data home (``TAGREC_HOME``, default ``./data``): sources, dataset files,
    and the DuckDB database ``tagrec.duckdb``."""

    root: str
    nltk_data_dir: str = ""

    @property
    def home(self) -> DataHome:
        return DataHome(Path(self.root).resolve())

    @property
    def nltk_data(self) -> Path:
        """WordNet for nltk: the machine-wide install (``tagrec_models.paths.nltk_data_home``),
        the same for every data home, unless ``nltk_data_dir`` names another folder."""
        return Path(self.nltk_data_dir).resolve() if self.nltk_data_dir else self.home.nltk_data

    @property
    def store(self) -> DuckDBStore:
        return DuckDBStore(self.home.duckdb_path)


class FlickrResource(dg.ConfigurableResource):
    """The Flickr API client for the crawl asset. The key and secret come from the environment
    (``FLICKR_API_KEY``, ``FLICKR_API_SECRET``, bound with ``dg.EnvVar`` in
    ``pipelines.definitions``) and never reach a log line, metadata or file: they travel only
    inside the client's OAuth signing. ``rest_url`` points the client elsewhere (a local test
    server); ``calls_per_hour`` is the rate limit (Flickr allows 3,600 per key);
    ``max_attempts`` and ``retry_base_delay_s`` the retries of transient failures (doubling
    back-off from the base delay)."""

    api_key: str = ""
    api_secret: str = ""
    rest_url: str = ""
    calls_per_hour: int = 3600
    max_attempts: int = 6
    retry_base_delay_s: float = 1.0

    def retry_policy(self) -> RetryPolicy:
        """Attempts and back-off for API calls and image downloads alike."""
        default = RetryPolicy()
        return RetryPolicy(
            max_attempts=self.max_attempts,
            base_delay_s=self.retry_base_delay_s,
            max_delay_s=max(default.max_delay_s, self.retry_base_delay_s),
        )

    def image_fetcher(self, log: Callable[[str], None] | None = None) -> ImageFetcher:
        """The image downloader of a crawl, with this resource's retry policy (the caller
        closes it)."""
        return ImageFetcher(ImageConfig(retry=self.retry_policy()), log=log)

    def client(self, log: Callable[[str], None] | None = None) -> FlickrClient:
        """A rate-limited, retrying ``FlickrClient`` with this resource's credentials; a
        ``dagster.Failure`` naming the environment variables when they are not set."""
        if not self.api_key or not self.api_secret:
            raise dg.Failure(
                "Flickr credentials are missing: set FLICKR_API_KEY and FLICKR_API_SECRET in "
                "the environment of `dagster dev` (see README, 'Crawling Flickr')."
            )
        return FlickrClient(
            FlickrCredentials(self.api_key, self.api_secret),
            ClientConfig(
                **({"rest_url": self.rest_url} if self.rest_url else {}),
                calls_per_hour=float(self.calls_per_hour),
                retry=self.retry_policy(),
            ),
            log=log,
        )
