"""Guards the paper-1 preprocessing rules (tagrec_models.preprocess.filtering) against results
worked out by hand: the p-core fixed point, the 50% rule, top-N, the seeded user sample, the
WordNet mapping, the core scale-down note and the errors for bad input and empty results."""

from __future__ import annotations

import hashlib

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from tagrec_models.preprocess import (
    PROFILES,
    PreprocessError,
    PreprocessInputError,
    Recipe,
    RecipeError,
    check_core,
    preprocess,
    recipe_for,
)

COLUMNS = ["user_id", "photo_id", "tag"]


def frame(rows) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=COLUMNS)


def triples(result) -> set[tuple[str, str, str]]:
    return set(map(tuple, result.assignments[COLUMNS].astype(str).itertuples(index=False)))


def recipe(**fields) -> Recipe:
    base = dict(name="t", test_posts=1, min_users=0, min_tags=0)
    return Recipe(**{**base, **fields})


@pytest.fixture()
def con():
    connection = duckdb.connect()
    yield connection
    connection.close()


# A chain that the 2/2-core only unravels in four removing passes (worked out by hand):
# pass 1 drops tag d (1 post), emptying u2's post p4; pass 2 drops u2 (1 post left), which
# takes c's post p3; pass 3 drops c (1 post: p5), emptying p5; pass 4 drops u3 (1 post: p6);
# pass 5 changes nothing. Left: u1's two posts.
CHAIN = [
    ("u1", "p1", "a"), ("u1", "p1", "b"), ("u1", "p2", "a"), ("u1", "p2", "b"),
    ("u2", "p3", "a"), ("u2", "p3", "c"), ("u2", "p4", "d"),
    ("u3", "p5", "c"), ("u3", "p6", "a"),
]  # fmt: skip


def test_core_reaches_the_fixed_point_over_several_passes(con):
    result = preprocess(con, frame(CHAIN), recipe(core_users=2, core_tags=2))
    assert triples(result) == {
        ("u1", "p1", "a"), ("u1", "p1", "b"), ("u1", "p2", "a"), ("u1", "p2", "b"),
    }  # fmt: skip
    core = result.stats.set_index("step").loc["core"]
    assert core["detail"] == "2/2-core, 5 iteration(s)"
    assert (core["users"], core["posts"], core["tags"], core["assignments"]) == (1, 2, 2, 4)
    assert result.stats["step"].tolist() == ["input", "core"]
    assert result.stats.set_index("step").loc["input", "assignments"] == 9
    assert check_core(result.assignments, 2, 2)[0]
    assert not check_core(frame(CHAIN), 2, 2)[0]


def test_tag_share_rule_drops_tags_on_more_than_half_of_a_users_images(con):
    rows = [
        # u1 has 3 images: a on 3/3 and b on 2/3 (> 1/2) go, c on 1/3 stays; p1 and p3
        # are left without tags and disappear.
        ("u1", "p1", "a"), ("u1", "p1", "b"), ("u1", "p2", "a"), ("u1", "p2", "c"),
        ("u1", "p3", "a"), ("u1", "p3", "b"),
        # u2 has 2 images: a and b are each on exactly 1/2, which is not more than half.
        ("u2", "q1", "a"), ("u2", "q2", "b"),
    ]  # fmt: skip
    result = preprocess(con, frame(rows), recipe(max_user_tag_share=0.5))
    assert triples(result) == {("u1", "p2", "c"), ("u2", "q1", "a"), ("u2", "q2", "b")}
    share = result.stats.set_index("step").loc["tag_share"]
    assert (share["users"], share["posts"], share["assignments"]) == (2, 3, 3)


def test_top_n_counts_posts_and_breaks_ties_by_name(con):
    rows = [
        ("u1", "p1", "x"), ("u1", "p2", "x"), ("u2", "p3", "x"),
        ("u1", "p1", "z"), ("u2", "p4", "z"),
        ("u2", "p3", "y"), ("u2", "p5", "y"),
        ("u2", "p6", "w"),
    ]  # fmt: skip
    # x is on 3 posts; y and z tie on 2 and y wins by name; p4 (z) and p6 (w) disappear.
    result = preprocess(con, frame(rows), recipe(top_n_tags=2))
    assert triples(result) == {
        ("u1", "p1", "x"), ("u1", "p2", "x"), ("u2", "p3", "x"), ("u2", "p3", "y"),
        ("u2", "p5", "y"),
    }  # fmt: skip


def test_top_n_tie_break_by_name_holds_on_shuffled_inputs_with_many_ties(con):
    """Twenty tags tie on the same post count; top-3 must keep the three alphabetically first
    whatever order the rows arrive in (the row order DuckDB happens to scan must not decide)."""
    import random

    tags = [f"tag{i:02d}" for i in range(20)]
    rows = [(f"u{j}", f"p{t}-{j}", t) for t in tags for j in range(3)]  # every tag on 3 posts
    rows += [("u9", f"q{j}", "zz_popular") for j in range(4)]  # one clear winner on 4
    for seed in range(8):
        shuffled = rows[:]
        random.Random(seed).shuffle(shuffled)
        result = preprocess(con, frame(shuffled), recipe(top_n_tags=3))
        assert sorted(result.assignments["tag"].unique()) == ["tag00", "tag01", "zz_popular"], seed


def many_users(n_users: int = 40, posts: int = 3) -> pd.DataFrame:
    return frame(
        [(f"user{u:02d}", f"user{u:02d}-p{p}", "t") for u in range(n_users) for p in range(posts)]
    )


def expected_sample(users: list[str], seed: int, n: int) -> set[str]:
    """The sample the recipe documents: the n smallest md5("<seed>:<user>"), by Python."""
    def key(user: str) -> tuple[str, str]:
        return hashlib.md5(f"{seed}:{user}".encode()).hexdigest(), user

    return set(sorted(users, key=key)[:n])


def test_user_sample_is_the_documented_md5_order_and_depends_on_the_seed(con):
    data = many_users()
    users = sorted(data["user_id"].unique())
    samples = {}
    for seed in (0, 1):
        first = preprocess(con, data, recipe(n_users=10, seed=seed))
        again = preprocess(con, data, recipe(n_users=10, seed=seed))
        pd.testing.assert_frame_equal(first.assignments, again.assignments)
        samples[seed] = set(first.assignments["user_id"])
        assert samples[seed] == expected_sample(users, seed, 10)
    assert samples[0] != samples[1]


def test_user_sample_skips_users_who_cannot_reach_the_core(con):
    data = pd.concat(
        [many_users(10, posts=3), frame([(f"light{u}", f"light{u}-p", "t") for u in range(30)])]
    )
    eligible = preprocess(con, data, recipe(n_users=5, core_users=2))
    assert set(eligible.assignments["user_id"]) <= {f"user{u:02d}" for u in range(10)}
    assert eligible.assignments["user_id"].nunique() == 5
    everyone = sorted(data["user_id"].unique())
    plain = preprocess(con, data, recipe(n_users=5, core_users=2, sample_eligible_only=False))
    sampled = expected_sample(everyone, 0, 5)
    assert set(plain.assignments["user_id"]) == {u for u in sampled if u.startswith("user")}


def test_sample_larger_than_the_eligible_users_keeps_them_all_with_a_note(con):
    result = preprocess(con, many_users(4), recipe(n_users=10))
    assert result.assignments["user_id"].nunique() == 4
    assert any("only 4 users" in note for note in result.notes)


def test_core_is_scaled_down_with_a_note_when_the_source_is_too_small(con):
    rules = recipe(name="tiny", core_users=4, core_tags=4, min_users=1, min_tags=1)
    result = preprocess(con, frame(CHAIN), rules)
    assert result.core == (2, 2)
    assert triples(result) == {
        ("u1", "p1", "a"), ("u1", "p1", "b"), ("u1", "p2", "a"), ("u1", "p2", "b"),
    }  # fmt: skip
    (note,) = result.notes
    assert note.startswith("core scaled from 4/4 to 2/2")
    assert "4/4 left nothing" in note


def test_a_core_under_the_minimum_at_every_level_keeps_the_smallest_with_a_note(con):
    rules = recipe(name="tiny", core_users=4, core_tags=4, min_users=3, min_tags=1)
    result = preprocess(con, frame(CHAIN), rules)
    assert result.core == (2, 2)
    assert any("under min_users=3" in note for note in result.notes)


def test_scaling_picks_the_first_level_that_meets_the_minima(con):
    # Three heavy users share tags a and b on 4 posts each; u4 has 2 posts. The 4/4-core
    # keeps 3 users (< min_users 4); the 2/2-core keeps all 4.
    rows = [(f"u{u}", f"u{u}p{p}", t) for u in (1, 2, 3) for p in range(4) for t in "ab"]
    rows += [("u4", "u4p0", "a"), ("u4", "u4p1", "b")]
    result = preprocess(con, frame(rows), recipe(core_users=4, core_tags=4, min_users=4))
    assert result.core == (2, 2)
    assert result.assignments["user_id"].nunique() == 4
    assert "4/4 keeps 3 users, 2 tags" in result.notes[0]


def test_a_recipe_that_filters_everything_away_names_the_recipe_and_step(con):
    with pytest.raises(PreprocessError, match=r"recipe 'strict': step 'core' left no"):
        preprocess(con, frame(CHAIN), recipe(name="strict", core_users=10, scale_down=False))
    single = frame([(f"u{u}", f"p{u}", "t") for u in range(5)])  # one image per user
    with pytest.raises(PreprocessError, match=r"recipe 'share': step 'tag_share'"):
        preprocess(con, single, recipe(name="share", max_user_tag_share=0.5))
    with pytest.raises(PreprocessError, match=r"step 'input'"):
        preprocess(con, frame([]), recipe())


def test_wordnet_mapping_merges_synonyms_and_keeps_or_drops_unmapped_tags(con):
    rows = [("u1", "p1", "puppy"), ("u1", "p1", "dog"), ("u1", "p2", "xyzzy")]
    mapping = pd.DataFrame(
        {"raw_tag": ["Puppy", "dog", "xyzzy"], "tag": ["puppy", "dog", "xyzzy"],
         "lemma": ["dog", "dog", None]}
    )  # fmt: skip
    dropped = preprocess(
        con, frame(rows), recipe(wordnet=True, keep_unmapped=False), wordnet_mapping=mapping
    )
    assert triples(dropped) == {("u1", "p1", "dog")}
    kept = preprocess(con, frame(rows), recipe(wordnet=True), wordnet_mapping=mapping)
    assert triples(kept) == {("u1", "p1", "dog"), ("u1", "p2", "xyzzy")}
    assert kept.stats["step"].tolist() == ["input", "wordnet"]
    with pytest.raises(PreprocessInputError, match="no wordnet_mapping"):
        preprocess(con, frame(rows), recipe(wordnet=True))
    ambiguous = pd.DataFrame({"tag": ["dog", "dog"], "lemma": ["dog", "hound"]})
    with pytest.raises(PreprocessInputError, match="several 'lemma' values"):
        preprocess(con, frame(rows), recipe(wordnet=True), wordnet_mapping=ambiguous)


def test_bad_input_gets_an_error_naming_it(con):
    with pytest.raises(PreprocessInputError, match=r"lacks column\(s\) \['tag'\]"):
        preprocess(con, pd.DataFrame({"user_id": ["u"], "photo_id": ["p"]}), recipe())
    with pytest.raises(PreprocessInputError, match="no table or view named 'missing'"):
        preprocess(con, "missing", recipe())
    with pytest.raises(PreprocessInputError, match="null tag"):
        preprocess(con, frame([("u", "p", None)]), recipe())
    corel_like = frame([(None, "i1", "sky"), (None, "i2", "sky")])
    with pytest.raises(PreprocessInputError, match="null user_id"):
        preprocess(con, corel_like, recipe(core_users=2))
    # Without user rules a source without users passes through.
    assert len(preprocess(con, corel_like, recipe_for("corel5k_standard")).assignments) == 2


def test_every_input_form_gives_the_same_result(con, tmp_path):
    data = frame(CHAIN + CHAIN)  # duplicates collapse
    rules = recipe(core_users=2, core_tags=2)
    expected = preprocess(con, data, rules).assignments
    path = tmp_path / "a.parquet"
    data.to_parquet(path)
    con.execute("CREATE TABLE chain AS SELECT * FROM read_parquet(?)", [str(path)])
    for form in (path, "chain", pa.Table.from_pandas(data), con.table("chain")):
        pd.testing.assert_frame_equal(preprocess(con, form, rules).assignments, expected)
    # Nothing is left behind in the caller's connection: no temporary table, same settings.
    assert con.execute("SELECT count(*) FROM duckdb_tables() WHERE temporary").fetchall() == [(0,)]
    setting = "SELECT current_setting('preserve_insertion_order')"
    assert con.execute(setting).fetchall() == [(True,)]


def test_recipes_validate_and_the_profiles_follow_paper_1():
    with pytest.raises(RecipeError, match="exactly one"):
        Recipe(test_posts=2, test_fraction=0.2)
    with pytest.raises(RecipeError, match="max_user_tag_share"):
        Recipe(test_posts=2, max_user_tag_share=1.5)
    with pytest.raises(RecipeError, match="unknown recipe profile"):
        recipe_for("nus")
    with pytest.raises(RecipeError, match="unknown field"):
        recipe_for("nuswide", cores=3)
    assert recipe_for("nuswide", seed=7).seed == 7
    levels = recipe_for("flickr_ptr").core_levels()
    assert levels[:5] == [(40, 400), (20, 200), (10, 100), (5, 50), (3, 25)]
    assert levels[-1] == (2, 2)
    nus, ptr = PROFILES["nuswide"], PROFILES["flickr_ptr"]
    assert (nus.top_n_tags, nus.n_users, nus.core_users, nus.core_tags, nus.test_posts) == (
        100, 1000, 10, 10, 2,
    )  # fmt: skip
    assert (ptr.wordnet, ptr.n_users, ptr.core_users, ptr.core_tags, ptr.test_fraction) == (
        True, 500, 40, 400, 0.2,
    )  # fmt: skip
    assert nus.max_user_tag_share == ptr.max_user_tag_share == 0.5
    assert PROFILES["corel5k_standard"].split == "predefined"


def assert_parquet_equals_frame(con, data, rules, tmp_path, wordnet_mapping=None):
    """The Parquet output (``output=``) holds the DataFrame result's rows in the same order,
    with the same stats, notes and effective recipe."""
    in_memory = preprocess(con, data, rules, wordnet_mapping=wordnet_mapping)
    path = tmp_path / "out" / "filtered.parquet"
    on_disk = preprocess(con, data, rules, wordnet_mapping=wordnet_mapping, output=path)
    assert on_disk.assignments is None and on_disk.parquet == path and in_memory.parquet is None
    written = pd.read_parquet(path)
    assert list(written.columns) == COLUMNS
    pd.testing.assert_frame_equal(
        written.astype(str), in_memory.assignments.astype(str), check_dtype=False
    )
    pd.testing.assert_frame_equal(on_disk.stats, in_memory.stats)
    assert (on_disk.notes, on_disk.recipe) == (in_memory.notes, in_memory.recipe)
    assert on_disk.stats.iloc[-1]["assignments"] == len(written)
    # Written atomically: nothing but the file itself is left in its folder.
    assert [p.name for p in path.parent.iterdir()] == [path.name]
    return written


def test_parquet_output_equals_the_dataframe_on_the_openclipart_fixture(con, tmp_path, openclipart_sample):
    from tagrec_models.preprocess.assemble import assignments_from_ingest
    from tagrec_models.sources.openclipart import read_openclipart

    tables = read_openclipart(openclipart_sample)
    data = assignments_from_ingest(tables.photos, tables.photo_tags, tables.images)
    rules = recipe_for("openclipart_default")  # 50% rule, 5/5-core scaled down on 50 images
    written = assert_parquet_equals_frame(con, data, rules, tmp_path)
    assert len(written) > 0
    assert check_core(written, *preprocess(con, data, rules).core)[0]


def test_parquet_output_equals_the_dataframe_on_many_rows_in_parallel(con, tmp_path):
    # Enough rows for several DuckDB row groups and threads: the file must still be in the
    # ORDER BY order although preprocessing turns preserve_insertion_order off.
    rng = np.random.default_rng(3)
    n = 400_000
    data = pd.DataFrame({
        "user_id": [f"u{i}" for i in rng.integers(0, 3_000, n)],
        "photo_id": [f"p{i}" for i in rng.integers(0, 60_000, n)],
        "tag": [f"t{i}" for i in rng.integers(0, 500, n)],
    })  # fmt: skip
    con.execute("SET threads = 4")
    written = assert_parquet_equals_frame(con, data, recipe(core_users=3, core_tags=3), tmp_path)
    ordered = written.sort_values(COLUMNS, kind="stable").reset_index(drop=True)
    pd.testing.assert_frame_equal(written, ordered)


def test_parquet_output_replaces_an_older_file_and_keeps_the_chain_result(con, tmp_path):
    path = tmp_path / "out" / "filtered.parquet"
    path.parent.mkdir()
    path.write_bytes(b"an older result")
    rules = recipe(core_users=2, core_tags=2)
    preprocess(con, frame(CHAIN), rules, output=path)
    assert set(map(tuple, pd.read_parquet(path).itertuples(index=False))) == {
        ("u1", "p1", "a"), ("u1", "p1", "b"), ("u1", "p2", "a"), ("u1", "p2", "b"),
    }  # fmt: skip


def test_the_preprocessing_connection_holds_half_the_machine_unless_told(tmp_path):
    from tagrec_models.preprocess.relations import connect, machine_memory_bytes

    def setting(con, name):
        return con.execute(f"SELECT current_setting('{name}')").fetchall()[0][0]

    units = {"KiB": 2**10, "MiB": 2**20, "GiB": 2**30}
    with connect() as default:
        number, unit = setting(default, "memory_limit").split()
        assert abs(float(number) * units[unit] - machine_memory_bytes() / 2) < 0.1 * 2**30
    with connect("1GB", tmp_path / "spill", threads=1) as told:
        assert setting(told, "memory_limit") == "953.6 MiB"  # 10^9 bytes
        assert setting(told, "temp_directory") == str(tmp_path / "spill")
        assert setting(told, "threads") == 1
        assert (tmp_path / "spill").is_dir()
