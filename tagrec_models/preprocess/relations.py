"""Getting an assignments relation into DuckDB, whatever form the caller holds it in.

Preprocessing, splitting and the checks all take "assignments": rows of ``user_id, photo_id,
tag``. The caller may hold them as a table or view name in the connection, a Parquet file, a
pandas DataFrame, a pyarrow Table or a DuckDB relation; this module turns each into a temporary
table of plain VARCHAR columns, deduplicated (one row per (user, photo, tag), the contract of
the ingest stage), so the SQL downstream needs no special cases.
"""

from __future__ import annotations

import os
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Union

import duckdb
import pandas as pd
import pyarrow as pa

from tagrec_models.storage.duckdb_store import quote, sql_string

Assignments = Union[str, Path, pd.DataFrame, pa.Table, duckdb.DuckDBPyRelation]
Log = Callable[[str], None]
ASSIGNMENT_COLUMNS = ("user_id", "photo_id", "tag")


# The share of the machine's memory a preprocessing connection may hold (see ``connect``).
DEFAULT_MEMORY_SHARE = 0.5


def machine_memory_bytes() -> int:
    """Physical memory, or the cgroup's limit where a container sets a smaller one."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
    except OSError:
        return total
    return min(total, int(limit)) if limit.isdigit() else total


def connect(
    memory_limit: str | None = None,
    temp_directory: str | Path | None = None,
    threads: int | None = None,
) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection for preprocessing, splitting and the checks.

    ``memory_limit`` (DuckDB's syntax, e.g. ``'12GB'``): what DuckDB may hold before it spills
    to ``temp_directory`` (DuckDB's ``.tmp`` in the working folder when ``None``). The default
    is ``DEFAULT_MEMORY_SHARE`` of the machine's memory, not DuckDB's own 80%: DuckDB fills what
    it is allowed, and the step shares the machine with Dagster and the steps beside it. On the
    preprocessing benchmark's 10M assignments (``full10``) a limit of half what DuckDB takes
    unbounded cut the peak from 2.0 to 1.2 GiB for 11% more time; small inputs never reach it.
    ``threads``: DuckDB's default (all cores) when ``None``.
    """
    if memory_limit is None:
        memory_limit = f"{int(machine_memory_bytes() * DEFAULT_MEMORY_SHARE) // 2**20}MiB"
    config = {"memory_limit": memory_limit}
    if temp_directory is not None:
        Path(temp_directory).mkdir(parents=True, exist_ok=True)
        config["temp_directory"] = str(temp_directory)
    if threads is not None:
        config["threads"] = int(threads)
    return duckdb.connect(config=config)


class PreprocessInputError(ValueError):
    """Input that preprocessing or splitting cannot use; the message names the input."""


@contextmanager
def unordered(con: duckdb.DuckDBPyConnection) -> Iterator[None]:
    """Turn off DuckDB's ``preserve_insertion_order`` for the duration, then restore it.

    No intermediate table here needs the row order of its input (every order that matters is
    an explicit ORDER BY), and without it DuckDB builds 10M-row tables in parallel with less
    memory; measured on the preprocessing benchmark it cuts the 10M run by about a third.
    """
    before = con.execute("SELECT current_setting('preserve_insertion_order')").fetchall()[0][0]
    con.execute("SET preserve_insertion_order = false")
    try:
        yield
    finally:
        con.execute(f"SET preserve_insertion_order = {'true' if before else 'false'}")


def temp_name(prefix: str) -> str:
    """A fresh identifier, so concurrent calls on one connection never share a table."""
    return f"_tagrec_{prefix}_{uuid.uuid4().hex[:10]}"


def relation_view(
    con: duckdb.DuckDBPyConnection,
    assignments: Assignments,
    what: str,
    columns: tuple[str, ...] = ASSIGNMENT_COLUMNS,
) -> str:
    """Expose ``assignments`` as a temporary view in ``con`` and return its quoted name.

    ``what`` names the input in error messages. The view has at least ``columns``.
    """
    view = temp_name("in")
    if isinstance(assignments, str):
        try:
            relation = con.table(assignments)
        except duckdb.CatalogException as error:
            raise PreprocessInputError(
                f"{what}: no table or view named {assignments!r} in the DuckDB connection"
            ) from error
    elif isinstance(assignments, Path):
        if not assignments.is_file():
            raise PreprocessInputError(f"{what}: Parquet file {assignments} does not exist")
        relation = con.sql(f"SELECT * FROM read_parquet({sql_string(str(assignments))})")
    elif isinstance(assignments, pd.DataFrame):
        relation = con.from_df(assignments)
    elif isinstance(assignments, pa.Table):
        relation = con.from_arrow(assignments)
    elif isinstance(assignments, duckdb.DuckDBPyRelation):
        relation = assignments
    else:
        raise PreprocessInputError(
            f"{what}: expected a table name, Parquet path, pandas DataFrame, pyarrow Table or "
            f"DuckDB relation, got {type(assignments).__name__}"
        )
    missing = [c for c in columns if c not in relation.columns]
    if missing:
        raise PreprocessInputError(
            f"{what}: lacks column(s) {missing}; has {list(relation.columns)}"
        )
    relation.create_view(view, replace=True)
    try:
        con.execute(f"SELECT 1 FROM {quote(view)} LIMIT 0")
    except duckdb.CatalogException as error:
        raise PreprocessInputError(
            f"{what}: the DuckDB relation belongs to another connection than the one passed in"
        ) from error
    return quote(view)


def load_assignments(
    con: duckdb.DuckDBPyConnection,
    assignments: Assignments,
    what: str = "assignments",
    extra_columns: tuple[str, ...] = (),
) -> str:
    """Copy ``assignments`` into a deduplicated temporary table of VARCHAR ``user_id, photo_id,
    tag`` (plus ``extra_columns`` as they are) and return its quoted name.

    A null ``photo_id`` or ``tag`` is an error naming the input; a null ``user_id`` is allowed
    (sources without users, like Corel5k); callers that need users check for it.
    """
    view = relation_view(con, assignments, what, ASSIGNMENT_COLUMNS + extra_columns)
    table = quote(temp_name("asg"))
    extras = "".join(f", {quote(c)}" for c in extra_columns)
    try:
        con.execute(
            f"CREATE TEMP TABLE {table} AS SELECT DISTINCT CAST(user_id AS VARCHAR) AS user_id, "
            f"CAST(photo_id AS VARCHAR) AS photo_id, CAST(tag AS VARCHAR) AS tag{extras} "
            f"FROM {view}"
        )
    finally:
        con.execute(f"DROP VIEW IF EXISTS {view}")
    nulls = fetch_one(
        con,
        f"SELECT count(*) FILTER (WHERE photo_id IS NULL), count(*) FILTER (WHERE tag IS NULL) "
        f"FROM {table}"
    )
    if nulls[0] or nulls[1]:
        con.execute(f"DROP TABLE {table}")
        raise PreprocessInputError(
            f"{what}: {nulls[0]} row(s) with a null photo_id and {nulls[1]} with a null tag; "
            "every assignment needs both"
        )
    return table


def fetch_one(con: duckdb.DuckDBPyConnection, query: str, params: list | None = None) -> tuple:
    """The single row of ``query``. ``fetchall`` rather than ``fetchone``: DuckDB 2 keeps a
    result that was not read to its end open, and refuses relation calls on the connection
    until it is finished."""
    rows = con.execute(query, params or []).fetchall()
    if len(rows) != 1:
        raise RuntimeError(f"expected one row, got {len(rows)} from: {query}")
    return rows[0]


def count_null_users(con: duckdb.DuckDBPyConnection, table: str) -> int:
    return int(fetch_one(con, f"SELECT count(*) FROM {table} WHERE user_id IS NULL")[0])


def to_frame(con: duckdb.DuckDBPyConnection, query: str) -> pd.DataFrame:
    """Run ``query`` and return its rows as a DataFrame with pandas ``string`` columns backed by
    Arrow (a 10M-row result costs a fraction of the memory of Python string objects)."""
    table = con.sql(query).to_arrow_table()
    mapping = {pa.string(): pd.StringDtype("pyarrow"), pa.large_string(): pd.StringDtype("pyarrow")}
    return table.to_pandas(types_mapper=mapping.get)


def drop_tables(con: duckdb.DuckDBPyConnection, *tables: str) -> None:
    for table in tables:
        con.execute(f"DROP TABLE IF EXISTS {table}")
