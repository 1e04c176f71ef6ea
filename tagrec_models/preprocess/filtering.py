"""Paper-1 preprocessing in DuckDB SQL: WordNet mapping, top-N tags, seeded user sample, the
50% tag-share rule and the p-core of users and tags iterated to a fixed point.

Paper 1 (Nguyen et al., section 4.1) describes the rules but not one order; they do not
commute, so ``preprocess`` applies them in this order, for these reasons:

1. **WordNet mapping** first: popularity and every count below must be counted on the tags
   the models will see, and two raw tags that map to one WordNet form are one tag.
2. **Top-N tags** on the whole collection, before sampling users: the paper keeps "images
   annotated by the 100 most popular tags" of NUS-WIDE, a property of the collection, not of
   a sample. Posts left without a tag disappear (a post is its tags).
3. **User sample**, seeded, before the per-user rules: the share rule and the core must hold
   on the data that is published, so they come after the sample (a core computed before
   sampling is broken by the sample: a tag's 10 posts may belong to unsampled users).
4. **Tag-share rule** before the core: it removes assignments, which can break the core, while
   the core never raises a tag's share enough to matter for what the paper wants to remove
   (tags a user puts on *all* their images). Applying it once, before the core, is the
   paper's NUS-WIDE wording; the result is not re-checked against the share rule.
5. **p-core last, iterated to a fixed point**: dropping a user can push a tag under its k and
   dropping a tag can empty posts and push a user under hers, so both filters repeat until
   nothing changes. The fixed point is the unique largest sub-folksonomy in which every user
   has >= ``core_users`` posts and every tag is in >= ``core_tags`` posts (Jaeschke et al.,
   paper 1 ref. [6]); it is what the asset check verifies.

Everything runs as SQL on temporary tables in the caller's connection, so 10M assignments
never pass through Python objects. The result comes back as a pandas DataFrame, or, with
``output=``, as a Parquet file that DuckDB writes straight from the last table (the
pipeline's ``filtered_assignments`` asset is that file): on 100M assignments (recipe
``full10`` of ``benchmarks/preprocess_benchmark.py``) the DataFrame path peaked at 17.2 GiB.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import duckdb
import pandas as pd

from tagrec_models.preprocess.recipes import Recipe
from tagrec_models.preprocess.relations import (
    fetch_one,
    Assignments,
    Log,
    PreprocessInputError,
    count_null_users,
    drop_tables,
    load_assignments,
    relation_view,
    temp_name,
    to_frame,
    unordered,
)
from tagrec_models.storage.duckdb_store import copy_to_parquet, quote, sql_string

STATS_COLUMNS = ("step", "users", "photos", "posts", "tags", "assignments", "detail")


class PreprocessError(ValueError):
    """A recipe that filters everything away; the message names the recipe and the step."""


@dataclass(frozen=True)
class PreprocessResult:
    """What ``preprocess`` returns.

    * ``assignments``: the filtered ``user_id, photo_id, tag`` rows (pandas ``string``
      columns), sorted by user, photo, tag; ``None`` when ``preprocess`` wrote them to a
      Parquet file instead (``output=``).
    * ``parquet``: that file (the same rows, columns and order; VARCHAR columns), else ``None``.
    * ``stats``: one row per applied step (``input``, ``wordnet``, ``top_n_tags``,
      ``user_sample``, ``tag_share``, ``core``) with the counts of users, photos, posts
      (distinct (user, photo) pairs), tags and assignments after it, and a ``detail`` string.
    * ``notes``: sentences for the asset's metadata, e.g. that the core was scaled down.
    * ``recipe``: the recipe actually applied (``core_users``/``core_tags`` after scaling).
    """

    assignments: pd.DataFrame | None
    stats: pd.DataFrame
    notes: tuple[str, ...]
    recipe: Recipe
    parquet: Path | None = None

    @property
    def core(self) -> tuple[int, int]:
        return self.recipe.core_users, self.recipe.core_tags


def preprocess(
    con: duckdb.DuckDBPyConnection,
    assignments: Assignments,
    recipe: Recipe,
    log: Log | None = None,
    wordnet_mapping: Assignments | None = None,
    output: str | Path | None = None,
) -> PreprocessResult:
    """Apply ``recipe``'s filtering rules to ``assignments`` (paper 1, section 4.1).

    ``assignments``: rows ``user_id, photo_id, tag`` as a table/view name in ``con``, a Parquet
    path, a DataFrame, a pyarrow Table or a relation of ``con``; duplicates are collapsed.
    ``wordnet_mapping``: needed when ``recipe.wordnet``; rows ``tag, <recipe.wordnet_column>``
    (the vocabulary stage's mapping table), a null form meaning "not in WordNet".
    ``output``: a Parquet path; when given, DuckDB writes the sorted result there (``COPY ...
    TO``, atomically: ``storage.duckdb_store.copy_to_parquet``) and ``result.assignments`` is
    ``None``, so a large result never passes through pandas; else the result is a DataFrame.

    Where the core leaves fewer than ``recipe.min_users`` users or ``recipe.min_tags`` tags,
    the core sizes are scaled down level by level (``Recipe.core_levels``); the first level
    that meets both minima is used, else the smallest level that leaves anything, and a note
    says which and why. A step that leaves nothing at every level raises ``PreprocessError``
    naming the recipe and the step.
    """
    with unordered(con):
        return _preprocess(con, assignments, recipe, log, wordnet_mapping, output)


def _preprocess(
    con: duckdb.DuckDBPyConnection,
    assignments: Assignments,
    recipe: Recipe,
    log: Log | None,
    wordnet_mapping: Assignments | None,
    output: str | Path | None,
) -> PreprocessResult:
    say = log or (lambda message: None)
    owned: list[str] = []
    stats: list[dict] = []
    notes: list[str] = []
    try:
        current = load_assignments(con, assignments, f"recipe {recipe.name!r}: assignments")
        owned.append(current)
        stats.append(_stats(con, current, "input", "deduplicated input"))
        say(f"preprocess {recipe.name}: input {_describe(stats[-1])}")
        _require_rows(stats[-1], recipe, "input", None)

        null_users = count_null_users(con, current)
        if null_users and recipe.needs_users:
            raise PreprocessInputError(
                f"recipe {recipe.name!r}: assignments have {null_users} row(s) with a null "
                "user_id, but the recipe filters by user (n_users, max_user_tag_share or "
                "core_users); use a recipe without user rules for a source without users"
            )

        if recipe.wordnet:
            current = _map_wordnet(con, current, recipe, wordnet_mapping)
            owned.append(current)
            detail = "unmapped tags " + ("kept" if recipe.keep_unmapped else "dropped")
            stats.append(_stats(con, current, "wordnet", detail))
            say(f"preprocess {recipe.name}: wordnet {_describe(stats[-1])}")
            _require_rows(stats[-1], recipe, "wordnet", stats[-2])

        if recipe.top_n_tags is not None:
            current = _derive(
                con,
                owned,
                f"""
                WITH top AS (
                    SELECT tag FROM {current} GROUP BY tag
                    ORDER BY count(*) DESC, tag LIMIT {int(recipe.top_n_tags)}
                )
                SELECT * FROM {current} SEMI JOIN top USING (tag)
                """,
            )
            stats.append(_stats(con, current, "top_n_tags", f"{recipe.top_n_tags} most popular"))
            say(f"preprocess {recipe.name}: top-N tags {_describe(stats[-1])}")
            _require_rows(stats[-1], recipe, "top_n_tags", stats[-2])

        outcome = _filter_levels(con, current, stats[-1], recipe, owned, say)
        stats.extend(outcome.stats)
        notes.extend(outcome.notes)
        effective = replace(recipe, core_users=outcome.level[0], core_tags=outcome.level[1])
        query = f"SELECT user_id, photo_id, tag FROM {outcome.table} ORDER BY ALL"
        frame, parquet = None, None
        if output is None:
            frame = to_frame(con, query)
        else:
            parquet = copy_to_parquet(con, query, output)
        where = "" if parquet is None else f" written to {parquet}"
        say(f"preprocess {recipe.name}: done, {stats[-1]['assignments']} assignments{where}")
        return PreprocessResult(
            assignments=frame,
            stats=pd.DataFrame(stats, columns=list(STATS_COLUMNS)),
            notes=tuple(notes),
            recipe=effective,
            parquet=parquet,
        )
    finally:
        drop_tables(con, *owned)


# -- the level-dependent steps: sample, share rule, core --------------------------------------
@dataclass(frozen=True)
class _LevelOutcome:
    table: str
    level: tuple[int, int]
    stats: list[dict]
    notes: list[str]


def _filter_levels(
    con: duckdb.DuckDBPyConnection,
    source: str,
    source_stats: dict,
    recipe: Recipe,
    owned: list[str],
    say: Log,
) -> _LevelOutcome:
    """Run sample -> share rule -> core at each core level until one meets the minima.

    ``source_stats`` counts ``source``; it stands for the result when a recipe has none of
    these steps."""
    levels = recipe.core_levels()
    tried: list[tuple[tuple[int, int], dict | None, str | None]] = []
    fallback: _LevelOutcome | None = None
    last_empty: tuple[str, dict | None] | None = None
    for index, level in enumerate(levels):
        # At the last level nothing will read ``source`` again (unless it is an earlier
        # level's result, kept as the fallback): it is dropped as soon as the level's first
        # step has copied what it keeps (on 100M rows, a table of several GB).
        last = index == len(levels) - 1 and (fallback is None or fallback.table != source)
        attempt, empty_step = _run_level(con, source, recipe, level, owned, say, last)
        if empty_step is not None:
            tried.append((level, None, empty_step))
            before = attempt.stats[-2] if len(attempt.stats) > 1 else source_stats
            last_empty = (empty_step, before)
            continue
        final = attempt.stats[-1] if attempt.stats else source_stats
        tried.append((level, final, None))
        if final["users"] >= recipe.min_users and final["tags"] >= recipe.min_tags:
            notes = list(attempt.notes)
            if level != levels[0]:
                notes.append(_scaled_note(recipe, levels[0], level, tried))
            return replace(attempt, notes=notes)
        fallback = attempt
    if fallback is not None:
        notes = list(fallback.notes)
        if fallback.level != levels[0]:
            notes.append(_scaled_note(recipe, levels[0], fallback.level, tried))
        final = fallback.stats[-1] if fallback.stats else source_stats
        notes.append(
            f"recipe {recipe.name!r} keeps {final['users']} users and {final['tags']} tags, "
            f"under min_users={recipe.min_users} / min_tags={recipe.min_tags} even at the "
            f"smallest core {fallback.level[0]}/{fallback.level[1]}"
        )
        return replace(fallback, notes=notes)
    step, before = last_empty if last_empty is not None else ("core", None)
    had = f" (it had {_describe(before)} before)" if before else ""
    scaled = (
        f" at every core level tried ({', '.join(f'{u}/{t}' for u, t in levels)})"
        if len(levels) > 1
        else ""
    )
    raise PreprocessError(
        f"recipe {recipe.name!r}: step {step!r} left no assignments{scaled}{had}"
    )


def _run_level(
    con: duckdb.DuckDBPyConnection,
    source: str,
    recipe: Recipe,
    level: tuple[int, int],
    owned: list[str],
    say: Log,
    release_source: bool = False,
) -> tuple[_LevelOutcome, str | None]:
    """Sample, share rule and core at one level; returns the outcome and the step that left
    nothing (None when something is left).

    Each step's input table is dropped once the step has made its output (only the level's
    result is read later), ``source`` too when ``release_source``: the peak memory is then
    two tables, not one per step."""
    k_users, k_tags = level
    stats: list[dict] = []
    notes: list[str] = []
    current = source
    keep = None if release_source else source

    def outcome(step: str | None) -> tuple[_LevelOutcome, str | None]:
        return _LevelOutcome(current, level, stats, notes), step

    if recipe.n_users is not None:
        eligible_min = k_users if recipe.sample_eligible_only else 1
        salt = sql_string(f"{recipe.seed}:")
        before = current
        current = _derive(
            con,
            owned,
            f"""
            WITH eligible AS (
                SELECT user_id FROM {source} GROUP BY user_id
                HAVING count(DISTINCT photo_id) >= {int(eligible_min)}
            ), chosen AS (
                SELECT user_id FROM eligible
                ORDER BY md5({salt} || user_id), user_id LIMIT {int(recipe.n_users)}
            )
            SELECT * FROM {source} SEMI JOIN chosen USING (user_id)
            """,
        )
        _release(con, owned, before, keep)
        stats.append(
            _stats(
                con,
                current,
                "user_sample",
                f"seed {recipe.seed}, users with >= {eligible_min} posts",
            )
        )
        say(f"preprocess {recipe.name}: user sample {_describe(stats[-1])}")
        if stats[-1]["users"] < recipe.n_users:
            notes.append(
                f"user sample: only {stats[-1]['users']} users have >= {eligible_min} posts, "
                f"all kept (n_users={recipe.n_users})"
            )
        if stats[-1]["assignments"] == 0:
            return outcome("user_sample")

    if recipe.max_user_tag_share is not None:
        share = float(recipe.max_user_tag_share)
        before = current
        current = _derive(
            con,
            owned,
            f"""
            WITH images AS (
                SELECT user_id, count(DISTINCT photo_id) AS n FROM {before} GROUP BY user_id
            ), uses AS (
                SELECT user_id, tag, count(*) AS c FROM {before} GROUP BY user_id, tag
            ), too_common AS (
                SELECT user_id, tag FROM uses JOIN images USING (user_id)
                WHERE uses.c > {share!r} * images.n
            )
            SELECT * FROM {before} ANTI JOIN too_common USING (user_id, tag)
            """,
        )
        _release(con, owned, before, keep)
        detail = f"tags on > {share:g} of a user's images dropped"
        stats.append(_stats(con, current, "tag_share", detail))
        say(f"preprocess {recipe.name}: tag-share rule {_describe(stats[-1])}")
        if stats[-1]["assignments"] == 0:
            return outcome("tag_share")

    if k_users > 1 or k_tags > 1:
        current, iterations = _core(con, current, k_users, k_tags, owned, say, recipe.name, keep)
        stats.append(
            _stats(con, current, "core", f"{k_users}/{k_tags}-core, {iterations} iteration(s)")
        )
        say(f"preprocess {recipe.name}: core {_describe(stats[-1])}")
        if stats[-1]["assignments"] == 0:
            return outcome("core")
    return outcome(None)


def _core(
    con: duckdb.DuckDBPyConnection,
    source: str,
    k_users: int,
    k_tags: int,
    owned: list[str],
    say: Log,
    name: str,
    keep: str | None = None,
) -> tuple[str, int]:
    """The (k_users, k_tags)-core by repeated simultaneous filtering until nothing changes.

    Each pass counts every user's posts and every tag's posts, and stops when no user and
    no tag is under its k; otherwise it removes the rows of all such users and tags at once.
    The fixed point is the same as alternating the two filters (the core is unique), and
    simultaneous filtering needs fewer passes. The last pass only counts: on 10M rows that
    spares a full copy of the table. Each pass's input table is dropped once the next exists,
    ``source`` included unless it is ``keep``. Returns the table and the number of passes.
    """
    current = source
    iterations = 0
    small_users, small_tags = quote(temp_name("few_u")), quote(temp_name("few_t"))
    try:
        while True:
            iterations += 1
            # Only the few users/tags under k are materialised; they are what gets removed.
            con.execute(
                f"CREATE OR REPLACE TEMP TABLE {small_users} AS SELECT user_id FROM {current} "
                f"GROUP BY user_id HAVING count(DISTINCT photo_id) < {int(k_users)}"
                if k_users > 1
                else f"CREATE OR REPLACE TEMP TABLE {small_users} AS "
                f"SELECT NULL::VARCHAR AS user_id WHERE FALSE"
            )
            con.execute(
                f"CREATE OR REPLACE TEMP TABLE {small_tags} AS SELECT tag FROM {current} "
                f"GROUP BY tag HAVING count(*) < {int(k_tags)}"
                if k_tags > 1
                else f"CREATE OR REPLACE TEMP TABLE {small_tags} AS "
                f"SELECT NULL::VARCHAR AS tag WHERE FALSE"
            )
            n_users, n_tags = fetch_one(
                con,
                f"SELECT (SELECT count(*) FROM {small_users}), (SELECT count(*) FROM {small_tags})",
            )
            say(
                f"preprocess {name}: core {k_users}/{k_tags} pass {iterations}: "
                f"{n_users} users and {n_tags} tags under k"
            )
            if n_users == 0 and n_tags == 0:
                return current, iterations
            previous = current
            current = _derive(
                con,
                owned,
                f"SELECT * FROM {previous} ANTI JOIN {small_users} USING (user_id) "
                f"ANTI JOIN {small_tags} USING (tag)",
            )
            # Drop intermediate tables as we go: on 10M rows each one is hundreds of MB.
            _release(con, owned, previous, keep)
            if fetch_one(con, f"SELECT count(*) FROM {current}")[0] == 0:
                return current, iterations
    finally:
        drop_tables(con, small_users, small_tags)


# -- single steps -------------------------------------------------------------------------------
def _map_wordnet(
    con: duckdb.DuckDBPyConnection,
    current: str,
    recipe: Recipe,
    mapping: Assignments | None,
) -> str:
    """Replace each tag by its WordNet form (paper 1, Flickr-PTR); see ``Recipe.wordnet``."""
    if mapping is None:
        raise PreprocessInputError(
            f"recipe {recipe.name!r} maps tags to WordNet but no wordnet_mapping was given"
        )
    column = recipe.wordnet_column
    view = relation_view(
        con, mapping, f"recipe {recipe.name!r}: wordnet_mapping", ("tag", column)
    )
    table = quote(temp_name("map"))
    try:
        con.execute(
            f"CREATE TEMP TABLE {table} AS SELECT DISTINCT CAST(tag AS VARCHAR) AS tag, "
            f"CAST({quote(column)} AS VARCHAR) AS form FROM {view} "
            f"WHERE tag IS NOT NULL AND {quote(column)} IS NOT NULL AND {quote(column)} <> ''"
        )
        ambiguous = con.execute(
            f"SELECT tag, list(form ORDER BY form) FROM {table} GROUP BY tag "
            f"HAVING count(*) > 1 ORDER BY tag LIMIT 5"
        ).fetchall()
        if ambiguous:
            raise PreprocessInputError(
                f"recipe {recipe.name!r}: wordnet_mapping gives several {column!r} values for "
                f"one tag, e.g. {ambiguous}; the vocabulary stage must choose one per tag"
            )
        out = quote(temp_name("wn"))
        keep = "TRUE" if recipe.keep_unmapped else "m.form IS NOT NULL"
        con.execute(
            f"CREATE TEMP TABLE {out} AS SELECT DISTINCT a.user_id, a.photo_id, "
            f"coalesce(m.form, a.tag) AS tag FROM {current} AS a LEFT JOIN {table} AS m "
            f"USING (tag) WHERE {keep}"
        )
        return out
    finally:
        con.execute(f"DROP VIEW IF EXISTS {view}")
        drop_tables(con, table)


def _release(con: duckdb.DuckDBPyConnection, owned: list[str], table: str, keep: str | None) -> None:
    """Drop ``table`` when this call made it (it is in ``owned``) and it is not ``keep``."""
    if table != keep and table in owned:
        owned.remove(table)
        drop_tables(con, table)


def _derive(con: duckdb.DuckDBPyConnection, owned: list[str], query: str) -> str:
    """Materialise ``query`` as a new temporary table that the caller will drop."""
    table = quote(temp_name("step"))
    con.execute(f"CREATE TEMP TABLE {table} AS {query}")
    owned.append(table)
    return table


def _stats(con: duckdb.DuckDBPyConnection, table: str, step: str, detail: str) -> dict:
    # One (user, photo) aggregate serves users, photos and posts: on 10M rows the three
    # separate DISTINCT counts cost three hash tables of millions of groups.
    users, photos, posts, tags, rows = fetch_one(
        con,
        f"""
        WITH posts AS MATERIALIZED (
            SELECT user_id, photo_id FROM {table} GROUP BY user_id, photo_id
        )
        SELECT (SELECT count(DISTINCT user_id) FROM posts),
               (SELECT count(DISTINCT photo_id) FROM posts),
               (SELECT count(*) FROM posts),
               (SELECT count(DISTINCT tag) FROM {table}),
               (SELECT count(*) FROM {table})
        """,
    )
    return {
        "step": step,
        "users": int(users),
        "photos": int(photos),
        "posts": int(posts),
        "tags": int(tags),
        "assignments": int(rows),
        "detail": detail,
    }


def _describe(row: dict | None) -> str:
    if row is None:
        return "nothing"
    return (
        f"{row['users']} users, {row['photos']} photos, {row['posts']} posts, "
        f"{row['tags']} tags, {row['assignments']} assignments"
    )


def _require_rows(row: dict, recipe: Recipe, step: str, before: dict | None) -> None:
    if row["assignments"] == 0:
        had = f" (it had {_describe(before)} before)" if before else ""
        raise PreprocessError(f"recipe {recipe.name!r}: step {step!r} left no assignments{had}")


def _scaled_note(
    recipe: Recipe,
    original: tuple[int, int],
    chosen: tuple[int, int],
    tried: list[tuple[tuple[int, int], dict | None, str | None]],
) -> str:
    parts = []
    for level, final, empty_step in tried:
        if level == chosen:
            break
        if final is None:
            parts.append(f"{level[0]}/{level[1]} left nothing (step {empty_step!r})")
        else:
            kept = f"{final['users']} users, {final['tags']} tags"
            parts.append(f"{level[0]}/{level[1]} keeps {kept}")
    return (
        f"core scaled from {original[0]}/{original[1]} to {chosen[0]}/{chosen[1]} "
        f"(recipe {recipe.name!r}, min_users={recipe.min_users}, min_tags={recipe.min_tags}): "
        + "; ".join(parts)
    )
