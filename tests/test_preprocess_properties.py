"""Guards the p-core and the 50% rule on random folksonomies: the SQL result must equal an
independent pure-Python reference (alternating user/tag filters, which reach the same unique
core), and the core property must hold afterwards."""

from __future__ import annotations

from collections import Counter

import duckdb
import numpy as np
import pandas as pd
import pytest

from tagrec_models.preprocess import Recipe, check_core, check_nonempty, preprocess

Row = tuple[str, str, str]


def random_folksonomy(seed: int, n_users: int = 60, n_tags: int = 50) -> list[Row]:
    """Users with a geometric number of images, each image 1-4 tags from a Zipf-like law."""
    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, n_tags + 1)
    weights /= weights.sum()
    rows = set()
    for u in range(n_users):
        for p in range(int(rng.geometric(0.12))):
            k = int(rng.integers(1, 5))
            for t in rng.choice(n_tags, size=k, replace=False, p=weights):
                rows.add((f"u{u}", f"u{u}-img{p}", f"t{t}"))
    return sorted(rows)


def reference_share(rows: set[Row], share: float) -> set[Row]:
    images = Counter(u for u, _ in {(u, p) for u, p, _ in rows})
    uses = Counter((u, t) for u, _, t in rows)
    return {(u, p, t) for u, p, t in rows if not uses[(u, t)] > share * images[u]}


def reference_core(rows: set[Row], k_users: int, k_tags: int) -> set[Row]:
    """Alternate the two filters until neither removes anything."""
    while True:
        before = len(rows)
        posts = Counter(u for u, _ in {(u, p) for u, p, _ in rows})
        rows = {r for r in rows if posts[r[0]] >= k_users}
        tag_posts = Counter(t for _, _, t in rows)
        rows = {r for r in rows if tag_posts[r[2]] >= k_tags}
        if len(rows) == before:
            return rows


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("cores", [(3, 4), (5, 10)])
def test_core_matches_the_reference_and_holds(seed, cores):
    rows = random_folksonomy(seed)
    data = pd.DataFrame(rows, columns=["user_id", "photo_id", "tag"])
    k_users, k_tags = cores
    recipe = Recipe(
        name="prop", max_user_tag_share=0.5, core_users=k_users, core_tags=k_tags,
        test_posts=1, min_users=0, min_tags=0, scale_down=False,
    )  # fmt: skip
    with duckdb.connect() as con:
        result = preprocess(con, data, recipe)
    got = set(map(tuple, result.assignments.astype(str).itertuples(index=False)))
    expected = reference_core(reference_share(set(rows), 0.5), k_users, k_tags)
    assert expected, "the fixture should leave a non-trivial core"
    assert got == expected
    assert check_core(result.assignments, k_users, k_tags)[0]
    assert check_nonempty(result.assignments)[0]
    # The unfiltered folksonomy violates the core, so the check is not vacuous.
    passed, details = check_core(data, k_users, k_tags)
    assert not passed and details["users_below_k"] > 0
