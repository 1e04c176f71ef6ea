"""Guards the splits (tagrec_models.preprocess.splits) and the split checks: the documented
md5 order per user, held-out counts, the seen-in-train repair (by hand and against a Python
reference), the predefined Corel5k split, and the Parquet files and DuckDB views."""

from __future__ import annotations

import hashlib
import math
from collections import defaultdict
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from test_preprocess_properties import random_folksonomy

from tagrec_models.preprocess import (
    PreprocessInputError,
    Recipe,
    check_disjoint_parts,
    check_heldout_seen_in_train,
    check_nonempty,
    create_views,
    split_per_user,
    split_predefined,
    write_splits,
)

COLUMNS = ["user_id", "photo_id", "tag"]


def frame(rows) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=COLUMNS)


def md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


def recipe(**fields) -> Recipe:
    return Recipe(**{**dict(name="s", test_posts=1), **fields})


def post_parts(result) -> dict[tuple[str, str], str]:
    pairs = result.parts[["user_id", "photo_id", "part"]].drop_duplicates()
    out = {}
    for u, p, part in pairs.astype(object).itertuples(index=False):
        u = u if isinstance(u, str) else None  # a source without users has null user_id
        assert (u, p) not in out, f"post {(u, p)} in two parts"
        out[(u, p)] = part
    return out


@pytest.fixture()
def con():
    connection = duckdb.connect()
    yield connection
    connection.close()


def test_held_out_posts_follow_the_documented_md5_order(con):
    # Every post carries tag "common", so no repair can interfere.
    rows = [(u, f"{u}-{p}", "common") for u in ("ann", "bob") for p in range(6)]
    result = split_per_user(con, frame(rows), recipe(test_posts=2, val_posts=1, seed=3))
    parts = post_parts(result)
    for user in ("ann", "bob"):
        order = sorted((f"{user}-{p}" for p in range(6)), key=lambda p: (md5(f"3:{user}:{p}"), p))
        assert [parts[(user, p)] for p in order] == ["test", "test", "val"] + ["train"] * 3
    assert result.moved_to_train == result.dropped_assignments == 0
    assert result.stats.set_index("part")["posts"].to_dict() == {"train": 6, "val": 2, "test": 4}


def test_counts_per_user_keep_a_train_post_and_round_as_configured(con):
    sizes = {"one": 1, "two": 2, "seven": 7, "eight": 8}
    rows = [(u, f"{u}-{p}", "common") for u, n in sizes.items() for p in range(n)]

    def counts(rules: Recipe) -> dict[str, dict[str, int]]:
        table = defaultdict(lambda: defaultdict(int))
        for (user, _), part in post_parts(split_per_user(con, frame(rows), rules)).items():
            table[user][part] += 1
        return {u: dict(c) for u, c in table.items()}

    fixed = counts(recipe(test_posts=2, val_posts=2))
    assert fixed["one"] == {"train": 1}
    assert fixed["two"] == {"test": 1, "train": 1}
    assert fixed["seven"] == {"test": 2, "val": 2, "train": 3}
    # floor: 0.2 * 7 = 1.4 -> 1 and 0.2 * 8 = 1.6 -> 1; val 0.2 * 6 = 1.2 -> 1, 0.2 * 7 -> 1
    floor = counts(recipe(test_posts=None, test_fraction=0.2, val_fraction=0.2))
    assert floor["seven"] == {"test": 1, "val": 1, "train": 5}
    assert floor["eight"] == {"test": 1, "val": 1, "train": 6}
    assert floor["two"] == {"train": 2}
    # round: 1.6 -> 2 test of eight; val 0.2 * 6 = 1.2 -> 1
    rounded = counts(
        recipe(test_posts=None, test_fraction=0.2, val_fraction=0.2, fraction_rounding="round")
    )
    assert rounded["eight"] == {"test": 2, "val": 1, "train": 5}


def test_repair_moves_a_post_without_seen_tags_back_and_drops_unseen_tags(con):
    rows = [
        # Whichever of u1's posts is held out, its tag is nowhere else: it moves back.
        ("u1", "a1", "x"), ("u1", "a2", "z"),
        # Whichever of u2's posts is held out, it keeps "shared" and loses its own tag.
        ("u2", "b1", "shared"), ("u2", "b1", "r1"), ("u2", "b2", "shared"), ("u2", "b2", "r2"),
    ]  # fmt: skip
    result = split_per_user(con, frame(rows), recipe(test_posts=1))
    parts = post_parts(result)
    assert parts[("u1", "a1")] == parts[("u1", "a2")] == "train"
    assert result.moved_to_train == 1
    assert result.dropped_assignments == 1
    test = result.part("test")
    assert len(test) == 1 and test.loc[0, "tag"] == "shared" and test.loc[0, "user_id"] == "u2"
    assert any("moved to train" in n for n in result.notes)
    assert check_heldout_seen_in_train(result.parts)[0]


def reference_split(rows: list[tuple[str, str, str]], rules: Recipe) -> set[tuple[str, ...]]:
    """The documented per-user split and repair, in plain Python."""
    tags = defaultdict(set)
    for u, p, t in rows:
        tags[(u, p)].add(t)
    photos = defaultdict(list)
    for u, p in tags:
        photos[u].append(p)

    def how_many(fixed, fraction, n):
        if fixed is not None:
            return fixed
        if fraction is None:
            return 0
        offset = 0.5 if rules.fraction_rounding == "round" else 0.0
        return math.floor(fraction * n + offset + 1e-9)

    part = {}
    for u, ps in photos.items():
        order = sorted(ps, key=lambda p: (md5(f"{rules.seed}:{u}:{p}"), p))
        n = len(order)
        n_test = min(how_many(rules.test_posts, rules.test_fraction, n), n - 1)
        n_val = min(how_many(rules.val_posts, rules.val_fraction, n - n_test), n - n_test - 1)
        for i, p in enumerate(order):
            part[(u, p)] = "test" if i < n_test else "val" if i < n_test + n_val else "train"
    while True:
        train_tags = set().union(*(tags[k] for k, v in part.items() if v == "train"))
        back = [k for k, v in part.items() if v != "train" and not tags[k] & train_tags]
        if not back:
            break
        part.update({k: "train" for k in back})
    return {
        (u, p, t, part[(u, p)])
        for (u, p), ts in tags.items()
        for t in ts
        if part[(u, p)] == "train" or t in train_tags
    }


@pytest.mark.parametrize(
    "fields",
    [
        dict(test_posts=2, val_posts=2, seed=0),
        dict(test_posts=None, test_fraction=0.2, val_fraction=0.2, seed=5),
    ],
)
def test_split_matches_the_reference_on_a_random_folksonomy(con, fields):
    rows = random_folksonomy(11, n_users=40, n_tags=120)  # many rare tags: the repair works
    rules = recipe(**fields)
    result = split_per_user(con, frame(rows), rules)
    got = set(map(tuple, result.parts.astype(object).itertuples(index=False)))
    assert got == reference_split(rows, rules)
    assert result.moved_to_train > 0 and result.dropped_assignments > 0
    assert check_disjoint_parts(result.parts)[0]
    assert check_heldout_seen_in_train(result.parts)[0]
    train_users = set(result.part("train")["user_id"])
    assert train_users == {u for u, _, _ in rows}


def test_split_is_deterministic_from_the_seed(con):
    rows = [(f"u{u}", f"u{u}-{p}", "common") for u in range(5) for p in range(8)]
    first = split_per_user(con, frame(rows), recipe(test_posts=2, seed=1))
    again = split_per_user(con, frame(rows), recipe(test_posts=2, seed=1))
    other = split_per_user(con, frame(rows), recipe(test_posts=2, seed=2))
    pd.testing.assert_frame_equal(first.parts, again.parts)
    assert post_parts(first) != post_parts(other)


def test_per_user_split_rejects_inputs_without_users_or_a_predefined_recipe(con):
    with pytest.raises(PreprocessInputError, match="null user_id"):
        split_per_user(con, frame([(None, "i1", "sky")]), recipe())
    predefined = Recipe(name="corel", split="predefined", val_fraction=0.1)
    with pytest.raises(PreprocessInputError, match="use split_predefined"):
        split_per_user(con, frame([("u", "i1", "sky")]), predefined)


def test_predefined_split_repairs_validation_and_reports_unseen_test_tags(con):
    images = [f"img{i}" for i in range(10)]
    val_image = min(images, key=lambda i: (md5(f"4:val:{i}"), i))  # 10% of 10 train images
    rows = [(None, i, "common") for i in images]
    rows += [(None, val_image, "solo")]  # its only image: carving it out must not lose it
    rows += [(None, "t1", "common"), (None, "t1", "never"), (None, "t2", "never")]
    result = split_predefined(con, frame(rows), ["t1", "t2", "absent"], 0.1, seed=4)
    parts = post_parts(result)
    assert parts[(None, val_image)] == "train" and result.moved_to_train == 1
    assert set(result.part("val")["photo_id"]) == set()
    test = result.part("test")
    assert list(test["photo_id"]) == ["t1"] and list(test["tag"]) == ["common"]
    assert result.dropped_assignments == 2
    notes = " ".join(result.notes)
    assert "1 test photo id(s) have no assignments" in notes
    assert "1 held-out post(s) lost every tag" in notes
    assert check_heldout_seen_in_train(result.parts)[0]
    with pytest.raises(PreprocessInputError, match="none of the 1 test photo ids"):
        split_predefined(con, frame(rows), ["nope"], 0.1, seed=4)


def test_predefined_split_carves_validation_from_train_on_a_synthetic_source(con):
    """The twin of the Corel5k test that always runs: a source's own test list is kept as
    given, validation is the documented seeded 10% of the train images (md5 order, floor),
    and every held-out word is seen in train."""
    words = [f"w{k}" for k in range(6)]
    train_ids = [f"train{i:03d}" for i in range(60)]
    test_ids = [f"test{i:02d}" for i in range(12)]
    rows = [(None, image, words[i % 6]) for i, image in enumerate(train_ids)]
    rows += [(None, image, words[(i + 1) % 6]) for i, image in enumerate(train_ids)]
    rows += [(None, image, words[i % 6]) for i, image in enumerate(test_ids)]
    result = split_predefined(con, frame(rows), test_ids, 0.1, seed=7)
    stats = result.stats.set_index("part")
    expected_val = set(sorted(train_ids, key=lambda i: (md5(f"7:val:{i}"), i))[:6])
    parts = post_parts(result)
    assert {p for (_, p), part in parts.items() if part == "val"} == expected_val
    assert {p for (_, p), part in parts.items() if part == "test"} == set(test_ids)
    assert (stats.loc["val", "posts"], stats.loc["val", "assignments"]) == (6, 12)
    assert (stats.loc["test", "posts"], stats.loc["train", "posts"]) == (12, 54)
    assert result.moved_to_train == 0 and result.dropped_assignments == 0
    assert check_disjoint_parts(result.parts)[0] and check_heldout_seen_in_train(result.parts)[0]


def read_corel5k(folder: Path, name: str) -> list[tuple[None, str, str]]:
    lines = (folder / f"corel5k_{name}_tags.tsv").read_text().splitlines()[1:]
    rows = []
    for line in lines:
        image, words = line.split("\t")
        rows += [(None, image, w) for w in words.split()]
    return rows


def test_corel5k_standard_split_keeps_the_benchmark_test_set(con, corel5k_dir):
    train, test = read_corel5k(corel5k_dir, "train"), read_corel5k(corel5k_dir, "test")
    test_ids = (corel5k_dir / "corel5k_test_list.txt").read_text().split()
    result = split_predefined(con, frame(train + test), test_ids, 0.1, seed=0)
    stats = result.stats.set_index("part")
    # README: 1,756 test assignments on 499 images; 4,493 train images carry words, 10% = 449.
    assert (stats.loc["test", "posts"], stats.loc["test", "assignments"]) == (499, 1756)
    assert stats.loc["val", "posts"] == 449
    assert stats.loc["train", "assignments"] + stats.loc["val", "assignments"] == 15223
    assert result.dropped_assignments == 0
    assert check_disjoint_parts(result.parts)[0] and check_heldout_seen_in_train(result.parts)[0]


def test_write_splits_and_views_round_trip(con, tmp_path):
    rows = [(f"u{u}", f"u{u}-{p}", "common") for u in range(3) for p in range(4)]
    result = split_per_user(con, frame(rows), recipe(test_posts=1))  # no val part
    paths = write_splits(result, tmp_path / "splits")
    assert sorted(p.name for p in (tmp_path / "splits").iterdir()) == [
        "test.parquet", "train.parquet", "val.parquet",
    ]  # fmt: skip
    views = create_views(con, "toy", paths)
    assert views == ['"toy"."train"', '"toy"."val"', '"toy"."test"']
    counts = {n: con.execute(f"SELECT count(*) FROM toy.{n}").fetchall()[0][0] for n in paths}
    assert counts == {"train": 9, "val": 0, "test": 3}
    assert con.execute("SELECT * FROM toy.test ORDER BY ALL").df().equals(
        result.part("test").astype(object).sort_values(COLUMNS).reset_index(drop=True)
    )
    bad = result.parts.assign(part="holdout")
    with pytest.raises(PreprocessInputError, match="part values"):
        write_splits(bad, tmp_path / "bad")
    with pytest.raises(PreprocessInputError, match="does not exist"):
        create_views(con, "toy", {"train": tmp_path / "nope.parquet"})


def test_checks_fail_on_bad_splits_and_say_why():
    parts = pd.DataFrame(
        [("u1", "p1", "a", "train"), ("u1", "p1", "a", "test"), ("u2", "p2", "b", "val")],
        columns=COLUMNS + ["part"],
    )
    passed, details = check_disjoint_parts(parts)
    assert not passed and details["examples"] == [["u1", "p1", ["test", "train"]]]
    passed, details = check_heldout_seen_in_train(parts)
    assert not passed
    assert details["example_users"] == [["val", "u2"]] and details["example_tags"] == [["val", "b"]]
    assert check_nonempty(frame([]))[0] is False
    assert check_nonempty(frame([("u", "p", "t")]))[1] == {
        "users": 1, "photos": 1, "tags": 1, "assignments": 1,
    }  # fmt: skip
