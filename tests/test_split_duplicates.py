"""The recipe option ``duplicate_grouping`` (issue 15): a perceptual hash that a resized copy
shares and another drawing does not, duplicate groups kept in one part (train) by the split with
its guarantees intact, a predefined test part left as published, and off by default."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pandas as pd
import pytest
from PIL import Image

from tagrec_models.preprocess.checks import check_disjoint_parts, check_heldout_seen_in_train
from tagrec_models.preprocess.duplicates import (
    apply_duplicate_grouping,
    difference_hash,
    duplicate_keys,
    keep_duplicates_together,
)
from tagrec_models.preprocess.recipes import RecipeError, recipe_for
from tagrec_models.preprocess.splits import split_per_user, split_predefined

PNG = Path(__file__).resolve().parent / "fixtures" / "openclipart" / "png"
DOCTOR = PNG / "science" / "medicine" / "medicina_dottore_archite_01.png"
CHESS = PNG / "recreation" / "games" / "chess" / "chess_game_01.png"


def resized_copy(path: Path, out: Path, factor: float, suffix: str) -> Path:
    with Image.open(path) as image:
        image = image.convert("RGBA")
        white = Image.new("RGBA", image.size, (255, 255, 255, 255))
        copy = Image.alpha_composite(white, image).convert("RGB")
        copy = copy.resize((int(image.width * factor), int(image.height * factor)), Image.Resampling.LANCZOS)
    target = out / f"copy{suffix}"
    copy.save(target)
    return target


def test_a_resized_copy_shares_the_difference_hash_and_another_drawing_does_not(tmp_path):
    original = difference_hash(str(DOCTOR))
    assert len(original) == 16
    assert difference_hash(str(resized_copy(DOCTOR, tmp_path, 0.6, ".png"))) == original
    assert difference_hash(str(resized_copy(DOCTOR, tmp_path, 1.5, ".jpg"))) == original
    assert difference_hash(str(CHESS)) != original
    assert difference_hash(str(tmp_path / "missing.png")) == ""
    Image.new("RGB", (40, 30), (200, 0, 0)).save(tmp_path / "flat.png")
    assert difference_hash(str(tmp_path / "flat.png")) == ""  # degenerate: never grouped


def assignments() -> pd.DataFrame:
    """Two users with four posts each; 'copy' is a resized copy of ann's training image 'a1'."""
    rows = []
    for user, photos in (("ann", ["a1", "a2", "a3", "copy"]), ("bob", ["b1", "b2", "b3", "b4"])):
        for photo in photos:
            rows += [(user, photo, "drawing"), (user, photo, "doctor" if photo in ("a1", "copy") else "misc")]
    return pd.DataFrame(rows, columns=["user_id", "photo_id", "tag"])


def split(recipe):
    with duckdb.connect() as con:
        return split_per_user(con, assignments(), recipe)


def part_of(result, photo: str) -> str:
    (part,) = set(result.parts.loc[result.parts["photo_id"] == photo, "part"])
    return part


def test_a_duplicate_group_spread_over_parts_moves_whole_to_train():
    recipe = recipe_for("openclipart_default", core_users=1, core_tags=1, test_posts=1, val_posts=1, seed=11)
    before = split(recipe)
    # The seed puts the copy in a held-out part and the original in train (else the case is moot).
    assert part_of(before, "copy") != "train" and part_of(before, "a1") == "train"
    after = keep_duplicates_together(before, {"a1": "h1", "copy": "h1", "b1": "h2"})
    assert part_of(after, "copy") == "train"
    assert after.moved_to_train == before.moved_to_train + 1
    assert "1 duplicate group(s) spanned several parts; 1 held-out post(s) moved to train" in after.notes[-1]
    assert check_disjoint_parts(after.parts)[0] and check_heldout_seen_in_train(after.parts)[0]
    stats = after.stats.set_index("part")
    assert stats.loc["train", "posts"] == before.stats.set_index("part").loc["train", "posts"] + 1
    assert stats["assignments"].sum() == len(after.parts)
    untouched = before.parts[before.parts["photo_id"] != "copy"].reset_index(drop=True)
    pd.testing.assert_frame_equal(after.parts[after.parts["photo_id"] != "copy"].reset_index(drop=True), untouched)


def test_off_by_default_and_the_recipe_checks_its_value(tmp_path):
    recipe = recipe_for("openclipart_default", core_users=1, core_tags=1, test_posts=1, val_posts=1, seed=11)
    assert recipe.duplicate_grouping == "none"
    result = split(recipe)
    assert apply_duplicate_grouping(result, pd.DataFrame(columns=["photo_id", "path", "sha256"]), recipe) is result
    with pytest.raises(RecipeError, match="duplicate_grouping"):
        recipe_for("openclipart_default", duplicate_grouping="phash")


def test_the_recipe_option_finds_copies_from_the_image_files(tmp_path):
    recipe = recipe_for("openclipart_default", core_users=1, core_tags=1, test_posts=1, val_posts=1, seed=11,
                        duplicate_grouping="dhash")
    images = pd.DataFrame({
        "photo_id": ["a1", "copy", "a2", "a3", "b1", "b2", "b3", "b4"],
        "path": [str(DOCTOR), str(resized_copy(DOCTOR, tmp_path, 0.6, ".png"))] + [str(CHESS)] + [""] * 5,
        "sha256": list("abcdefgh"),
    })
    keys = duplicate_keys(images, "dhash")
    assert keys["a1"] == keys["copy"] and "b1" not in keys  # no file: never grouped
    assert duplicate_keys(images, "sha256")["copy"] == "b"
    after = apply_duplicate_grouping(split(recipe), images, recipe)
    assert part_of(after, "copy") == "train"


def test_a_predefined_test_part_never_moves():
    frame = assignments().assign(user_id=None)
    with duckdb.connect() as con:
        before = split_predefined(con, frame, ["copy", "b4"], val_fraction=None, seed=0)
    after = keep_duplicates_together(before, {"a1": "h1", "copy": "h1"}, fixed_test=True)
    assert part_of(after, "copy") == "test" and part_of(after, "a1") == "train"
    assert "1 group(s) still span train and the predefined test part" in after.notes[-1]
