"""Where tagrec keeps its data: one data home (``TAGREC_HOME``, default ``./data``).

Layout under the data home::

    tagrec.duckdb                 the DuckDB database (views over Parquet, schema ``results``)
    dagster/                      DAGSTER_HOME for ``make ui`` and ``make demo``
    sources/openclipart/          the unpacked Debian openclipart packages
    sources/flickr/<crawl>/       crawl state, pages and image files
    datasets/<dataset>/...        every asset's files, one folder per dataset:
        tables/<asset>.parquet    a DataFrame an asset returned (the IO manager writes it)
        objects/<asset>.pkl       any other value an asset returned (a handle to its files)

The IO manager (``assets/io_manager.py``) and ``tagrec suggest`` both find an asset's value
through ``DataHome.table_path`` / ``DataHome.object_path``: the layout is written down here
only. WordNet 3.0 for nltk is not in the data home: it is one install for the whole machine
(``nltk_data_home``), so a fresh data home maps tags with no setup step of its own.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

HOME_ENV = "TAGREC_HOME"
WORDNET_MARKER = Path("corpora") / "wordnet" / "lexnames"  # written last by a finished install


def default_home() -> Path:
    return Path(os.environ.get(HOME_ENV, "data")).resolve()


def _writable(folder: Path) -> bool:
    """Whether this user can write ``folder``, or create it (its nearest existing parent)."""
    for candidate in (folder, *folder.parents):
        if candidate.exists():
            return candidate.is_dir() and os.access(candidate, os.W_OK | os.X_OK)
    return False


def nltk_data_home() -> Path:
    """The machine-wide nltk data folder that holds tagrec's WordNet: the first folder on nltk's
    own search path (``nltk.data.path``: ``$NLTK_DATA``, ``~/nltk_data``, the interpreter's
    prefix, ``/usr/share``, ``/usr/local/share``, ``/usr/lib``, ``/usr/local/lib``) that already
    holds a WordNet install, else the first this user can write or create. Every data home and
    every clone share it, and nltk itself finds it without configuration; ``NLTK_DATA`` moves it."""
    import nltk.data  # several seconds to import; only the vocabulary step needs it

    search = [Path(p).expanduser() for p in nltk.data.path]
    for folder in search:
        if (folder / WORDNET_MARKER).is_file():
            return folder.resolve()
    for folder in search:
        if _writable(folder):
            return folder.resolve()
    raise PermissionError(
        f"no folder on nltk's search path is writable for WordNet ({', '.join(map(str, search))}); "
        "set NLTK_DATA to a writable folder"
    )


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
        """WordNet for nltk: the machine-wide ``nltk_data_home()``, the same for every data home
        (kept on ``DataHome`` so that what reads the data home finds it in one place)."""
        return nltk_data_home()

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
