"""Resources: where data lives, and the Flickr API credentials."""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from tagrec_models.paths import DataHome
from tagrec_models.storage.duckdb_store import DuckDBStore


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
        """WordNet for nltk: ``<data home>/nltk_data`` unless set elsewhere (tests share one)."""
        return Path(self.nltk_data_dir).resolve() if self.nltk_data_dir else self.home.nltk_data

    @property
    def store(self) -> DuckDBStore:
        return DuckDBStore(self.home.duckdb_path)


class FlickrCredentials(dg.ConfigurableResource):
    """Flickr API key and secret, read from the environment (``FLICKR_API_KEY``,
    ``FLICKR_API_SECRET``) and never logged. ``rest_url`` points the client elsewhere (a local
    test server); ``calls_per_hour`` is the rate limit (Flickr allows 3,600 per key)."""

    api_key: str = ""
    api_secret: str = ""
    rest_url: str = ""
    calls_per_hour: int = 3600

    def require(self) -> tuple[str, str]:
        if not self.api_key or not self.api_secret:
            raise dg.Failure(
                "Flickr credentials are missing: set FLICKR_API_KEY and FLICKR_API_SECRET in "
                "the environment of `dagster dev` (see README, 'Crawling Flickr')."
            )
        return self.api_key, self.api_secret
