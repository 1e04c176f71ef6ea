"""Train / validation / test splits in DuckDB SQL, written as Parquet and exposed as views.

* ``split_per_user``: paper 1's leave-posts-out per user (section 4.1, after ref. [11]): for
  each user, ``test_posts`` posts (NUS-WIDE: 2) or ``test_fraction`` of the posts (Flickr-PTR:
  20 percent) go to test; validation is carved from each user's remaining train posts the same
  way. Which posts: the user's posts ordered by ``md5(f"{seed}:{user_id}:{photo_id}")`` (then
  photo_id), the first ones to test, the next to validation: the same on every run, machine
  and DuckDB version. A user always keeps at least one train post.
* ``split_predefined``: a source's own test list (Corel5k's 499 test images); validation is
  ``val_fraction`` of the other images, the ones with the smallest
  ``md5(f"{seed}:val:{photo_id}")``.

Both then make every held-out user and tag one that training has seen (a tag the model never
saw cannot be recommended, and a held-out post without a known tag has no defined recall);
see each function for the repair, which is deterministic and reported.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, TypeVar

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
from tagrec_models.storage.atomic import write_parquet
from tagrec_models.storage.duckdb_store import quote, sql_string

PARTS = ("train", "val", "test")
F = TypeVar("F", bound=Callable[..., Any])
PART_COLUMNS = ("user_id", "photo_id", "tag", "part")


@dataclass(frozen=True)
class SplitResult:
    """What a split returns.

    * ``parts``: ``user_id, photo_id, tag, part`` rows, ``part`` in {train, val, test}, sorted
      by part, user, photo, tag.
    * ``stats``: one row per part: users, photos, posts, tags, assignments.
    * ``notes``: sentences for metadata (what the repair changed, missing test ids...).
    * ``moved_to_train``: held-out posts moved back to train by the repair.
    * ``dropped_assignments``: held-out assignments removed because train never has the tag.
    """

    parts: pd.DataFrame
    stats: pd.DataFrame
    notes: tuple[str, ...]
    moved_to_train: int
    dropped_assignments: int

    def part(self, name: str) -> pd.DataFrame:
        """The ``user_id, photo_id, tag`` rows of one part."""
        if name not in PARTS:
            raise KeyError(f"unknown part {name!r}; parts are {PARTS}")
        rows = self.parts[self.parts["part"] == name]
        return rows[["user_id", "photo_id", "tag"]].reset_index(drop=True)


def _without_insertion_order(function: F) -> F:
    """Run a split with DuckDB's insertion order off (see ``relations.unordered``)."""

    @functools.wraps(function)
    def wrapper(con: duckdb.DuckDBPyConnection, *args: Any, **kwargs: Any) -> Any:
        with unordered(con):
            return function(con, *args, **kwargs)

    return wrapper  # type: ignore[return-value]


@_without_insertion_order
def split_per_user(
    con: duckdb.DuckDBPyConnection,
    assignments: Assignments,
    recipe: Recipe,
    log: Log | None = None,
) -> SplitResult:
    """Leave-posts-out per user (paper 1, section 4.1), validation carved from train.

    Per user with ``n`` posts: ``n_test`` = ``test_posts``, or ``test_fraction * n`` rounded as
    ``recipe.fraction_rounding`` says, at most ``n - 1``; then ``n_val`` the same way from the
    ``n - n_test`` posts left, at most ``n - n_test - 1``. So every user keeps a train post.

    Repair (so that every held-out tag is a train tag), repeated to a fixed point: a held-out
    post none of whose tags is in train moves back to train (whole; this can bring new tags
    into train, hence the repetition). Then a held-out post's tags that train still lacks are
    removed from it; every held-out post keeps at least one tag. Dropping unseen tags rather
    than moving every post that has one keeps the held-out parts the random sample the paper
    describes; only the rarest tags are touched.
    """
    say = log or (lambda message: None)
    if recipe.split != "per_user":
        raise PreprocessInputError(
            f"recipe {recipe.name!r} has split={recipe.split!r}; use split_predefined"
        )
    owned: list[str] = []
    try:
        base = load_assignments(con, assignments, f"recipe {recipe.name!r}: split input")
        owned.append(base)
        nulls = count_null_users(con, base)
        if nulls:
            raise PreprocessInputError(
                f"recipe {recipe.name!r}: split input has {nulls} row(s) with a null user_id; a "
                "per-user split needs users (use split_predefined for a source without users)"
            )
        posts, post_tags = _index_posts(con, base, owned, recipe.name)
        salt = sql_string(f"{recipe.seed}:")
        n_test = _count_expr(recipe.test_posts, recipe.test_fraction, "n", recipe)
        n_val = _count_expr(recipe.val_posts, recipe.val_fraction, "(n - n_test)", recipe)
        parts = quote(temp_name("parts"))
        owned.append(parts)
        con.execute(
            f"""
            CREATE TEMP TABLE {parts} AS
            WITH ranked AS (
                SELECT post,
                       row_number() OVER (
                           PARTITION BY user_id
                           ORDER BY md5({salt} || user_id || ':' || photo_id), photo_id
                       ) AS r,
                       count(*) OVER (PARTITION BY user_id) AS n
                FROM {posts}
            ), with_test AS (
                SELECT post, r, n, least({n_test}, n - 1) AS n_test FROM ranked
            ), sized AS (
                SELECT post, r, n_test, least({n_val}, n - n_test - 1) AS n_val FROM with_test
            )
            SELECT post,
                   CASE WHEN r <= n_test THEN 'test'
                        WHEN r <= n_test + n_val THEN 'val'
                        ELSE 'train' END AS part
            FROM sized
            """
        )
        say(f"split {recipe.name}: {_part_counts(con, parts)} posts before the repair")
        parts, moved = _move_unseen_back(con, parts, post_tags, ("test", "val"), owned)
        return _finish(con, posts, post_tags, parts, moved, [], say, recipe.name)
    finally:
        drop_tables(con, *owned)


@_without_insertion_order
def split_predefined(
    con: duckdb.DuckDBPyConnection,
    assignments: Assignments,
    test_photo_ids: Iterable[str],
    val_fraction: float | None,
    seed: int,
    log: Log | None = None,
    name: str = "predefined",
) -> SplitResult:
    """A source's own test list (e.g. Corel5k's standard 499 test images) plus a seeded
    validation part of ``val_fraction`` of the other images (floor, at least one image when
    the fraction is set). ``user_id`` may be null (Corel5k has no users).

    The test part is the benchmark's and is never changed by moving posts. Repair: a validation
    post with a tag that the train part lacks goes back to train (one pass suffices: that only
    adds train tags), so carving validation never takes away a tag's last train images. A
    test tag that train lacks (none in Corel5k, where every word is in both parts) is removed
    from its test posts and reported in the notes.
    """
    say = log or (lambda message: None)
    if val_fraction is not None and not 0 < val_fraction < 1:
        raise PreprocessInputError(f"{name}: val_fraction={val_fraction!r} must lie in (0, 1)")
    test_ids = pd.DataFrame({"photo_id": pd.Series(list(test_photo_ids), dtype="string")})
    if test_ids.empty or test_ids["photo_id"].isna().any():
        raise PreprocessInputError(
            f"{name}: test_photo_ids must be a non-empty list of photo ids without nulls"
        )
    owned: list[str] = []
    try:
        base = load_assignments(con, assignments, f"{name}: split input")
        owned.append(base)
        posts, post_tags = _index_posts(con, base, owned, name)
        ids = quote(temp_name("testids"))
        owned.append(ids)
        ids_view = relation_view(
            con, test_ids.drop_duplicates(), f"{name}: test_photo_ids", ("photo_id",)
        )
        try:
            con.execute(f"CREATE TEMP TABLE {ids} AS SELECT photo_id FROM {ids_view}")
        finally:
            con.execute(f"DROP VIEW IF EXISTS {ids_view}")
        missing, matched = fetch_one(
            con,
            f"SELECT count(*) FILTER (WHERE NOT EXISTS (SELECT 1 FROM {posts} p "
            f"WHERE p.photo_id = i.photo_id)), count(*) FROM {ids} i"
        )
        matched -= missing
        if matched == 0:
            raise PreprocessInputError(
                f"{name}: none of the {missing} test photo ids occurs in the assignments"
            )
        notes: list[str] = []
        if missing:
            notes.append(f"{missing} test photo id(s) have no assignments and are left out")
        fraction = 0.0 if val_fraction is None else float(val_fraction)
        val_salt = sql_string(f"{seed}:val:")
        parts = quote(temp_name("parts"))
        owned.append(parts)
        con.execute(
            f"""
            CREATE TEMP TABLE {parts} AS
            WITH tagged AS (
                SELECT post, photo_id, photo_id IN (SELECT photo_id FROM {ids}) AS is_test
                FROM {posts}
            ), train_images AS (
                SELECT DISTINCT photo_id FROM tagged WHERE NOT is_test
            ), chosen AS (
                SELECT photo_id FROM train_images
                ORDER BY md5({val_salt} || photo_id), photo_id
                LIMIT (SELECT CASE WHEN {fraction!r} = 0 THEN 0
                                   ELSE greatest(1, floor({fraction!r} * count(*) + 1e-9))
                              END FROM train_images)
            )
            SELECT post,
                   CASE WHEN is_test THEN 'test'
                        WHEN photo_id IN (SELECT photo_id FROM chosen) THEN 'val'
                        ELSE 'train' END AS part
            FROM tagged
            """
        )
        say(f"split {name}: {_part_counts(con, parts)} posts before the repair")
        moved_table = quote(temp_name("parts"))
        owned.append(moved_table)
        con.execute(
            f"""
            CREATE TEMP TABLE {moved_table} AS
            WITH train_tags AS (
                SELECT DISTINCT tag FROM {post_tags}
                SEMI JOIN (SELECT post FROM {parts} WHERE part = 'train') USING (post)
            ), lacking AS (
                SELECT DISTINCT post FROM {post_tags} ANTI JOIN train_tags USING (tag)
            )
            SELECT p.post,
                   CASE WHEN p.part = 'val' AND l.post IS NOT NULL THEN 'train'
                        ELSE p.part END AS part
            FROM {parts} p LEFT JOIN lacking l USING (post)
            """
        )
        moved = _changed(con, parts, moved_table)
        return _finish(con, posts, post_tags, moved_table, moved, notes, say, name)
    finally:
        drop_tables(con, *owned)


def write_splits(parts: pd.DataFrame | SplitResult, out_dir: str | Path) -> dict[str, Path]:
    """Write ``train.parquet``, ``val.parquet`` and ``test.parquet`` (columns ``user_id,
    photo_id, tag``) into ``out_dir``, each atomically; an empty part is written too, so the
    three files always exist. Returns {part: path}."""
    frame = parts.parts if isinstance(parts, SplitResult) else parts
    missing = [c for c in PART_COLUMNS if c not in frame.columns]
    if missing:
        raise PreprocessInputError(f"write_splits: parts frame lacks column(s) {missing}")
    unknown = sorted(set(frame["part"].dropna().astype(str)) - set(PARTS))
    if unknown or frame["part"].isna().any():
        raise PreprocessInputError(
            f"write_splits: part values must be in {PARTS}; found {unknown or 'null'}"
        )
    out = Path(out_dir)
    paths: dict[str, Path] = {}
    for name in PARTS:
        rows = frame.loc[frame["part"] == name, ["user_id", "photo_id", "tag"]]
        rows = rows.astype("string").reset_index(drop=True)
        paths[name] = write_parquet(rows, out / f"{name}.parquet")
    return paths


def create_views(
    con: duckdb.DuckDBPyConnection, schema: str, paths: Mapping[str, str | Path]
) -> list[str]:
    """``CREATE OR REPLACE VIEW <schema>.<part> AS SELECT * FROM read_parquet(<path>)`` for
    each part; returns the qualified view names. Paths are stored absolute, so the views work
    from any working directory."""
    if not paths:
        raise PreprocessInputError("create_views: no paths given")
    con.execute(f"CREATE SCHEMA IF NOT EXISTS {quote(schema)}")
    views = []
    for name, path in paths.items():
        path = Path(path)
        if not path.is_file():
            raise PreprocessInputError(f"create_views: {name} file {path} does not exist")
        view = f"{quote(schema)}.{quote(name)}"
        con.execute(
            f"CREATE OR REPLACE VIEW {view} AS "
            f"SELECT * FROM read_parquet({sql_string(str(path.resolve()))})"
        )
        views.append(view)
    return views


# -- helpers -----------------------------------------------------------------------------------
def _index_posts(
    con: duckdb.DuckDBPyConnection, base: str, owned: list[str], name: str
) -> tuple[str, str]:
    """Number the posts (distinct (user, photo)) and key every assignment by its post, so the
    rest of the SQL joins on one integer, null users included."""
    posts, post_tags = quote(temp_name("posts")), quote(temp_name("ptags"))
    owned.extend([posts, post_tags])
    con.execute(
        f"CREATE TEMP TABLE {posts} AS SELECT row_number() OVER (ORDER BY user_id, photo_id) "
        f"AS post, user_id, photo_id FROM (SELECT DISTINCT user_id, photo_id FROM {base})"
    )
    con.execute(
        f"CREATE TEMP TABLE {post_tags} AS SELECT p.post, a.tag FROM {base} a JOIN {posts} p "
        f"ON a.user_id IS NOT DISTINCT FROM p.user_id AND a.photo_id = p.photo_id"
    )
    if fetch_one(con, f"SELECT count(*) FROM {posts}")[0] == 0:
        raise PreprocessInputError(f"{name}: the split input has no assignments")
    return posts, post_tags


def _count_expr(posts: int | None, fraction: float | None, n: str, recipe: Recipe) -> str:
    """SQL for a per-user held-out count: a fixed number, or a share of ``n``."""
    if posts is not None:
        return str(int(posts))
    if fraction is None:
        return "0"
    # 1e-9 keeps 0.29 * 100 at 29 despite binary floating point (28.999999999999996).
    offset = 0.5 if recipe.fraction_rounding == "round" else 0.0
    return f"CAST(floor({float(fraction)!r} * {n} + {offset!r} + 1e-9) AS BIGINT)"


def _move_unseen_back(
    con: duckdb.DuckDBPyConnection,
    parts: str,
    post_tags: str,
    movable: tuple[str, ...],
    owned: list[str],
) -> tuple[str, int]:
    """Move held-out posts without any train tag back to train until none is left."""
    parts_in = ", ".join(sql_string(p) for p in movable)
    total = 0
    while True:
        nxt = quote(temp_name("parts"))
        owned.append(nxt)
        con.execute(
            f"""
            CREATE TEMP TABLE {nxt} AS
            WITH train_tags AS (
                SELECT DISTINCT tag FROM {post_tags}
                SEMI JOIN (SELECT post FROM {parts} WHERE part = 'train') USING (post)
            ), seen AS (
                SELECT DISTINCT post FROM {post_tags} SEMI JOIN train_tags USING (tag)
            )
            SELECT p.post,
                   CASE WHEN p.part IN ({parts_in}) AND s.post IS NULL THEN 'train'
                        ELSE p.part END AS part
            FROM {parts} p LEFT JOIN seen s USING (post)
            """
        )
        moved = _changed(con, parts, nxt)
        parts = nxt
        total += moved
        if moved == 0:
            return parts, total


def _changed(con: duckdb.DuckDBPyConnection, before: str, after: str) -> int:
    return int(
        fetch_one(
            con,
            f"SELECT count(*) FROM {before} b JOIN {after} a USING (post) WHERE a.part <> b.part"
        )[0]
    )


def _part_counts(con: duckdb.DuckDBPyConnection, parts: str) -> str:
    rows = con.execute(f"SELECT part, count(*) FROM {parts} GROUP BY part ORDER BY part").fetchall()
    return ", ".join(f"{part} {n}" for part, n in rows)


def _finish(
    con: duckdb.DuckDBPyConnection,
    posts: str,
    post_tags: str,
    parts: str,
    moved: int,
    notes: list[str],
    say: Log,
    name: str,
) -> SplitResult:
    """Drop held-out tags that train lacks, join back to ids, and count each part."""
    result, train_tags = quote(temp_name("split")), quote(temp_name("ttags"))
    try:
        con.execute(
            f"CREATE TEMP TABLE {train_tags} AS SELECT DISTINCT tag FROM {post_tags} "
            f"SEMI JOIN (SELECT post FROM {parts} WHERE part = 'train') USING (post)"
        )
        con.execute(
            f"""
            CREATE TEMP TABLE {result} AS
            SELECT p.user_id, p.photo_id, t.tag, s.part
            FROM {post_tags} t JOIN {parts} s USING (post) JOIN {posts} p USING (post)
            WHERE s.part = 'train' OR t.tag IN (SELECT tag FROM {train_tags})
            """
        )
        total = fetch_one(con, f"SELECT count(*) FROM {post_tags}")[0]
        kept = fetch_one(con, f"SELECT count(*) FROM {result}")[0]
        dropped = int(total - kept)
        emptied = fetch_one(
            con,
            f"SELECT count(*) FROM {parts} s WHERE s.part <> 'train' AND NOT EXISTS "
            f"(SELECT 1 FROM {post_tags} t SEMI JOIN {train_tags} USING (tag) "
            f"WHERE t.post = s.post)"
        )[0]
        notes = list(notes)
        if moved:
            notes.append(f"{moved} held-out post(s) had no tag seen in train and moved to train")
        if dropped:
            notes.append(f"{dropped} held-out assignment(s) with a tag unseen in train dropped")
        if emptied:
            notes.append(f"{emptied} held-out post(s) lost every tag and were left out")
        stats = con.execute(
            f"""
            SELECT part, count(DISTINCT user_id) AS users, count(DISTINCT photo_id) AS photos,
                   count(DISTINCT (user_id, photo_id)) AS posts, count(DISTINCT tag) AS tags,
                   count(*) AS assignments
            FROM {result} GROUP BY part
            """
        ).df()
        stats = (
            stats.set_index("part").reindex(list(PARTS), fill_value=0).reset_index()
            .astype({c: "int64" for c in ("users", "photos", "posts", "tags", "assignments")})
        )
        frame = to_frame(
            con,
            f"SELECT user_id, photo_id, tag, part FROM {result} ORDER BY "
            f"CASE part WHEN 'train' THEN 0 WHEN 'val' THEN 1 ELSE 2 END, user_id, photo_id, tag",
        )
        summary = ", ".join(
            f"{row.part} {row.posts} posts / {row.assignments} assignments"
            for row in stats.itertuples()
        )
        say(f"split {name}: {summary}")
        return SplitResult(
            parts=frame,
            stats=stats,
            notes=tuple(notes),
            moved_to_train=int(moved),
            dropped_assignments=dropped,
        )
    finally:
        drop_tables(con, result, train_tags)
