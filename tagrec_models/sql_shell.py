"""``tagrec sql``: query the project's DuckDB database (``<data home>/tagrec.duckdb``) with the
``duckdb`` library the project pins, read-only.

Why not the ``duckdb`` shell: the PyPI ``duckdb-cli`` package stops at 1.5.x, whose storage
reader refuses the files duckdb 2.0.0 writes ("database file with version number 69 ... we can
only read versions between 64 and 68"), and Debian ships no shell at all. The library that
wrote the file always reads it, so the command is built on it.

Statements come from the command line (each argument may hold several, separated by ``;``),
else from stdin when it is not a terminal, else from a minimal prompt (a statement runs when
a line ends with ``;``; ``.quit`` or end of input leaves). Each statement that returns rows is
printed as a table (or CSV). The database is opened read-only, so a query never changes
results and several readers may look at once; while a pipeline step writes, DuckDB refuses
readers and the error says so.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, TextIO

import duckdb
import pandas as pd

from tagrec_models.storage.duckdb_store import DatabaseBusyError, DuckDBStore

PROMPT = "tagrec sql> "
CONTINUATION = "       ...> "
QUIT_COMMANDS = {".quit", ".exit", "\\q"}
DEFAULT_MAX_ROWS = 100


class SqlShellError(RuntimeError):
    """The database cannot be opened (missing, or held by a writer); the message says why."""


def open_read_only(database: Path) -> duckdb.DuckDBPyConnection:
    """A read-only connection to ``database``; ``SqlShellError`` naming the fix when the file
    does not exist or a pipeline step holds it for writing."""
    if not database.is_file():
        raise SqlShellError(
            f"no tagrec database at {database}: materialise a dataset first (make demo), or "
            "point --home / $TAGREC_HOME at the data home that holds tagrec.duckdb"
        )
    try:
        return DuckDBStore(database).reader()
    except DatabaseBusyError as error:
        raise SqlShellError(f"{error} (a pipeline step is writing; retry when it is done)") from error


def format_result(frame: pd.DataFrame, csv: bool, max_rows: int) -> str:
    """A result as text: CSV (every row), or an aligned table of at most ``max_rows`` rows
    followed by a row count."""
    if csv:
        return frame.to_csv(index=False)
    if frame.columns.empty:
        return "(no columns)\n"
    shown = frame if max_rows <= 0 else frame.head(max_rows)
    text = shown.to_string(index=False, na_rep="NULL") if len(shown) else "  ".join(map(str, frame.columns))
    count = f"({len(frame)} row{'s' if len(frame) != 1 else ''}"
    count += f", first {len(shown)} shown; --max-rows 0 shows all)" if len(shown) < len(frame) else ")"
    return f"{text}\n{count}\n"


def run_statements(
    con: duckdb.DuckDBPyConnection, sql: str, out: TextIO, csv: bool = False, max_rows: int = DEFAULT_MAX_ROWS
) -> int:
    """Run every statement in ``sql`` in order, printing each result that has columns; returns
    the number of statements run. A failing statement raises ``duckdb.Error`` (statements
    before it have run and printed)."""
    statements = con.extract_statements(sql)
    for statement in statements:
        cursor = con.execute(statement)
        if cursor.description is not None:
            out.write(format_result(cursor.df(), csv, max_rows))
            out.flush()
    return len(statements)


def statement_complete(buffer: str) -> bool:
    """Whether the prompt should run what was typed: the text ends with ``;`` (outside a
    trailing comment)."""
    lines = [line.split("--", 1)[0].rstrip() for line in buffer.rstrip().splitlines()]
    code = [line for line in lines if line]
    return bool(code) and code[-1].endswith(";")


def interactive(con: duckdb.DuckDBPyConnection, lines: Iterable[str], out: TextIO, err: TextIO,
                csv: bool, max_rows: int) -> int:
    """The minimal prompt: collect lines until a statement ends with ``;``, run it, print the
    result; an error is printed and the prompt goes on. Returns 1 if any statement failed."""
    failed = False
    buffer = ""
    out.write(PROMPT)
    out.flush()
    for line in lines:
        if not buffer and line.strip() in QUIT_COMMANDS:
            break
        buffer += line if line.endswith("\n") else line + "\n"
        if statement_complete(buffer):
            try:
                run_statements(con, buffer, out, csv, max_rows)
            except duckdb.Error as error:
                err.write(f"error: {error}\n")
                failed = True
            buffer = ""
        out.write(CONTINUATION if buffer.strip() else PROMPT)
        out.flush()
    out.write("\n")
    return 1 if failed else 0


def run(
    database: Path,
    queries: list[str],
    stdin: TextIO,
    out: TextIO,
    err: TextIO,
    csv: bool = False,
    max_rows: int = DEFAULT_MAX_ROWS,
) -> int:
    """The ``tagrec sql`` command: exit status 0 when every statement ran, 1 when one failed
    (its error is printed; later arguments are not run), ``SqlShellError`` when the database
    cannot be opened."""
    con = open_read_only(database)
    try:
        if queries or not stdin.isatty():
            for sql in queries or [stdin.read()]:
                try:
                    run_statements(con, sql, out, csv, max_rows)
                except duckdb.Error as error:
                    err.write(f"error: {error}\n")
                    return 1
            return 0
        err.write(f"tagrec sql: {database} (read-only); statements end with ';', .quit leaves\n")
        return interactive(con, iter(stdin.readline, ""), out, err, csv, max_rows)
    finally:
        con.close()

