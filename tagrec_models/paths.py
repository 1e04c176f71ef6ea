"""Where tagrec keeps its data: one data home (``TAGREC_HOME``, default ``./data``).

Layout under the data home::

    tagrec.duckdb                 the DuckDB database (views over Parquet, schema ``results``)
    dagster/                      DAGSTER_HOME for ``make ui`` and ``make demo``
    sources/openclipart/          the unpacked Debian openclipart packages
    sources/flickr/<crawl>/       crawl state, pages and image files
    nltk_data/                    WordNet 3.0 for nltk
    datasets/<dataset>/...        every asset's files, one folder per dataset:
        tables/<asset>.parquet    a DataFrame an asset returned (the IO manager writes it)
        objects/<asset>.pkl       any other value an asset returned (a handle to its files)

The IO manager (``assets/io_manager.py``) and ``tagrec suggest`` both find an asset's value
through ``DataHome.table_path`` / ``DataHome.object_path``: the layout is written down here
only.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

HOME_ENV = "TAGREC_HOME"


def default_home() -> Path:
    return Path(os.environ.get(HOME_ENV, "data")).resolve()


@dataclass(frozen=True)
class DataHome:
    root: Path

    @classmethod
    def from_env(cls) -> "DataHome":
        return cls(default_home())

    @property
    def duckdb_path(self) -> Path:
        return self.root / "tagrec.duckdb"

    @property
    def dagster_home(self) -> Path:
        return self.root / "dagster"

    @property
    def nltk_data(self) -> Path:
        return self.root / "nltk_data"

    def source_dir(self, source: str) -> Path:
        return self.root / "sources" / source

    def dataset_dir(self, dataset: str) -> Path:
        return self.root / "datasets" / dataset

    def table_path(self, dataset: str, asset: str) -> Path:
        """The Parquet file of a DataFrame asset (``asset``: the key's path after the dataset,
        joined with ``__``)."""
        return self.dataset_dir(dataset) / "tables" / f"{asset}.parquet"

    def object_path(self, dataset: str, asset: str) -> Path:
        """The pickle of any other asset value."""
        return self.dataset_dir(dataset) / "objects" / f"{asset}.pkl"

    def ensure(self) -> "DataHome":
        self.root.mkdir(parents=True, exist_ok=True)
        return self
