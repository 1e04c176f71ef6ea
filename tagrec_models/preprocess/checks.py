"""Data-quality rules of the preprocess and split stages, as plain functions.

Each returns ``(passed, details)``: ``details`` is a small JSON-able dict (counts and up to five
offending examples) for an asset check's metadata. They run in DuckDB, in a private in-memory
connection unless one is passed (a table or view name needs the connection that holds it).

* ``check_core``: the p-core property of paper 1 section 4.1 (each user has >= k_users posts,
  each tag is in >= k_tags posts).
* ``check_nonempty``: something is left (users, photos and tags all present).
* ``check_disjoint_parts``: no post (user, photo) in two parts of a split.
* ``check_heldout_seen_in_train``: every validation/test user and tag occurs in train (a null
  user, from a source without users, is not a user and is not checked).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

import duckdb

from tagrec_models.preprocess.relations import (
    fetch_one,
    Assignments,
    drop_tables,
    load_assignments,
)

EXAMPLES = 5
Check = tuple[bool, dict[str, Any]]


@contextmanager
def _connection(con: duckdb.DuckDBPyConnection | None) -> Iterator[duckdb.DuckDBPyConnection]:
    if con is not None:
        yield con
        return
    own = duckdb.connect()
    try:
        yield own
    finally:
        own.close()


def check_core(
    assignments: Assignments,
    k_users: int,
    k_tags: int,
    con: duckdb.DuckDBPyConnection | None = None,
) -> Check:
    """Every user has >= ``k_users`` distinct posts and every tag is in >= ``k_tags`` posts."""
    with _connection(con) as db:
        table = load_assignments(db, assignments, "check_core: assignments")
        try:
            users = db.execute(
                f"SELECT user_id, count(DISTINCT photo_id) AS n FROM {table} GROUP BY user_id "
                f"HAVING n < {int(k_users)} ORDER BY n, user_id"
            ).fetchall()
            tags = db.execute(
                f"SELECT tag, count(DISTINCT (user_id, photo_id)) AS n FROM {table} GROUP BY tag "
                f"HAVING n < {int(k_tags)} ORDER BY n, tag"
            ).fetchall()
            min_user, min_tag = fetch_one(
                db,
                f"SELECT (SELECT min(n) FROM (SELECT count(DISTINCT photo_id) AS n FROM {table} "
                f"GROUP BY user_id)), (SELECT min(n) FROM (SELECT count(DISTINCT (user_id, "
                f"photo_id)) AS n FROM {table} GROUP BY tag))"
            )
        finally:
            drop_tables(db, table)
    details = {
        "k_users": int(k_users),
        "k_tags": int(k_tags),
        "users_below_k": len(users),
        "tags_below_k": len(tags),
        "min_posts_per_user": None if min_user is None else int(min_user),
        "min_posts_per_tag": None if min_tag is None else int(min_tag),
        "example_users": [[u, int(n)] for u, n in users[:EXAMPLES]],
        "example_tags": [[t, int(n)] for t, n in tags[:EXAMPLES]],
    }
    return not users and not tags, details


def check_nonempty(
    assignments: Assignments, con: duckdb.DuckDBPyConnection | None = None
) -> Check:
    """At least one assignment, hence at least one photo and tag (users may be null for a
    source without users, so they are counted but not required)."""
    with _connection(con) as db:
        table = load_assignments(db, assignments, "check_nonempty: assignments")
        try:
            users, photos, tags, rows = fetch_one(
                db,
                f"SELECT count(DISTINCT user_id), count(DISTINCT photo_id), count(DISTINCT tag), "
                f"count(*) FROM {table}"
            )
        finally:
            drop_tables(db, table)
    details = {
        "users": int(users),
        "photos": int(photos),
        "tags": int(tags),
        "assignments": int(rows),
    }
    return rows > 0, details


def check_disjoint_parts(
    parts: Assignments, con: duckdb.DuckDBPyConnection | None = None
) -> Check:
    """No post (user, photo) has rows in two parts (``parts`` has a ``part`` column)."""
    with _connection(con) as db:
        table = load_assignments(db, parts, "check_disjoint_parts: parts", ("part",))
        try:
            shared = db.execute(
                f"SELECT user_id, photo_id, list(DISTINCT part ORDER BY part) AS parts "
                f"FROM {table} GROUP BY user_id, photo_id HAVING count(DISTINCT part) > 1 "
                f"ORDER BY user_id, photo_id"
            ).fetchall()
            counts = dict(
                db.execute(
                    f"SELECT part, count(DISTINCT (user_id, photo_id)) FROM {table} GROUP BY part"
                ).fetchall()
            )
        finally:
            drop_tables(db, table)
    details = {
        "posts_per_part": {str(k): int(v) for k, v in counts.items()},
        "posts_in_several_parts": len(shared),
        "examples": [[u, p, list(ps)] for u, p, ps in shared[:EXAMPLES]],
    }
    return not shared, details


def check_heldout_seen_in_train(
    parts: Assignments, con: duckdb.DuckDBPyConnection | None = None
) -> Check:
    """Every user and tag of the ``val`` and ``test`` rows also occurs in ``train`` rows."""
    with _connection(con) as db:
        table = load_assignments(db, parts, "check_heldout_seen_in_train: parts", ("part",))
        try:
            if not fetch_one(db, f"SELECT count(*) FROM {table} WHERE part = 'train'")[0]:
                drop_tables(db, table)
                return False, {"reason": "the train part is empty"}
            users = db.execute(
                f"SELECT DISTINCT part, user_id FROM {table} WHERE part <> 'train' "
                f"AND user_id IS NOT NULL AND user_id NOT IN "
                f"(SELECT user_id FROM {table} WHERE part = 'train' AND user_id IS NOT NULL) "
                f"ORDER BY part, user_id"
            ).fetchall()
            tags = db.execute(
                f"SELECT DISTINCT part, tag FROM {table} WHERE part <> 'train' AND tag NOT IN "
                f"(SELECT tag FROM {table} WHERE part = 'train') ORDER BY part, tag"
            ).fetchall()
        finally:
            drop_tables(db, table)
    details = {
        "unseen_users": len(users),
        "unseen_tags": len(tags),
        "example_users": [[p, u] for p, u in users[:EXAMPLES]],
        "example_tags": [[p, t] for p, t in tags[:EXAMPLES]],
    }
    return not users and not tags, details

