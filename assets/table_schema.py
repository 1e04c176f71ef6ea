"""Column schemas with descriptions for the results tables (what the UI shows per column).

The meanings live in the library (``tagrec_models.reporting_columns``); this turns a results
DataFrame into the ``dagster/column_schema`` metadata Dagster displays. The IO manager attaches
it to every output whose asset names a ``results_table``, so each results asset gets it with no
code of its own.
"""

from __future__ import annotations

import dagster as dg
import pandas as pd

from tagrec_models.reporting_columns import describe_column

UNDESCRIBED = "(no description yet: add this column to tagrec_models/reporting_columns.py)"


def described_schema(frame: pd.DataFrame) -> dg.TableSchema:
    """Every column of ``frame`` with its type and its meaning. A column the library does not
    describe says where to add it (the tests fail on such columns, the pipeline does not: a
    missing sentence must not throw away a finished evaluation)."""
    return dg.TableSchema(columns=[
        dg.TableColumn(name=str(name), type=str(dtype), description=describe_column(str(name)) or UNDESCRIBED)
        for name, dtype in frame.dtypes.items()
    ])


def column_schema_metadata(frame: pd.DataFrame) -> dict[str, dg.TableSchema]:
    """``{"dagster/column_schema": described_schema(frame)}``, to merge into an output's metadata."""
    return {"dagster/column_schema": described_schema(frame)}
