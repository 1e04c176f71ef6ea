"""Leakage guards (issue 15): groups that spell held-out tags and held-out images that are near
duplicates of training images are found on hand-built data where the answer is known, through
the library and through the WARN asset checks, and a clean dataset keeps both checks quiet."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from assets.datasets import DatasetSpec
from assets.io_manager import TagrecIOManager
from assets.leakage import GROUPS_CHECK, NEAR_DUPLICATES_CHECK, groups_spell_check, near_duplicate_check
from assets.resources import DataHomeResource
from tagrec_models.artifacts import ArrayFile
from tagrec_models.bundle import build_bundle
from tagrec_models.evaluation.leakage import (
    NEAR_DUPLICATE_DISTANCE,
    groups_spell_tags,
    nearest_training_images,
    number_forms,
    spelling_token,
    tokens,
    unspelled_test_rows,
)
from tagrec_models.features.extraction import ExtractionConfig, extract_features

FIXTURE_PNG = Path(__file__).resolve().parent / "fixtures" / "openclipart" / "png"
# Four unrelated drawings of the real openclipart sample.
DRAWINGS = {
    "doctor": "science/medicine/medicina_dottore_archite_01.png",
    "chess": "recreation/games/chess/chess_game_01.png",
    "angel": "unsorted/angel_01.png",
    "plane": "shapes/airplane_nicu_buculei_01.png",
}


def frame(rows: list[tuple[str, str, str]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["user_id", "photo_id", "tag"])


# -- the pieces --------------------------------------------------------------------------------
def test_group_names_split_into_letter_tokens():
    assert tokens("signs_and_symbols/flags") == ["signs", "and", "symbols", "flags"]
    assert tokens("Computer / Icons / Etiquette-theme 2") == ["computer", "icons", "etiquette", "theme"]


def test_a_token_spells_a_tag_in_singular_or_plural_or_as_its_lemma():
    assert spelling_token("book", ["education", "books"], {}) == "books"
    assert spelling_token("books", ["education", "book"], {}) == "book"
    assert spelling_token("berry", ["fruit", "berries"], {}) == "berries"
    assert spelling_token("activities", ["kids", "activity"], {"activities": {"activity"}}) == "activity"
    assert spelling_token("signs and symbols", ["signs", "and", "symbols", "flags"], {}) == "signs and symbols"
    assert spelling_token("bookshelf", ["education", "books"], {}) is None  # whole tokens only
    assert {"box", "boxes"} <= number_forms("box") and "box" in number_forms("boxes")


# -- groups that spell the tags ---------------------------------------------------------------
TRAIN = frame([("ann", "p1", "book"), ("ann", "p2", "cat"), ("bob", "p3", "book"), ("bob", "p4", "cat")])


def spelling_case(spelled: bool):
    val = frame([("ann", "v1", "cat")])
    test = frame([("ann", "t1", "book"), ("ann", "t1", "cat"), ("bob", "t2", "cat")])
    if spelled:  # openclipart-style category folders derived from the tags
        groups = [("v1", "animals/cats", "Animals / Cats"), ("t1", "education/books", "Education / Books"),
                  ("t1", "pets/cat", "Pets / Cat"), ("t2", "cats", "Cats")]
    else:  # groups a user picks, naming none of the tags
        groups = [("v1", "holiday2021", "Holiday 2021"), ("t1", "my_favourites", "My favourites"),
                  ("t2", "holiday2021", "Holiday 2021")]
    return {"train": TRAIN, "val": val, "test": test}, pd.DataFrame(groups, columns=["photo_id", "group_id", "group_name"])


def test_groups_spelling_every_held_out_tag_are_all_counted():
    parts, groups = spelling_case(spelled=True)
    spelling = groups_spell_tags(parts, groups)
    summary = spelling.summary().set_index("part")
    assert summary.loc["test", "spelled_assignments"] == 3 and summary.loc["test", "assignments"] == 3
    assert summary.loc["test", "posts_with_a_spelled_tag"] == 2
    assert summary.loc["val", "spelled_assignments"] == 1
    assert spelling.share() == 1.0
    worst = spelling.worst_groups().set_index("group_id")
    assert worst.loc["education/books", "spelled_by_group"] == 1 and worst.loc["cats", "share"] == 1.0
    assert set(spelling.examples()["token"]) >= {"books", "cats"}
    bundle = build_bundle(parts["train"], parts["val"], parts["test"])
    assert len(unspelled_test_rows(bundle, spelling)) == 0


def test_groups_naming_no_tag_spell_nothing():
    parts, groups = spelling_case(spelled=False)
    spelling = groups_spell_tags(parts, groups)
    assert spelling.share() == 0.0 and not spelling.assignments["spelled"].any()
    bundle = build_bundle(parts["train"], parts["val"], parts["test"])
    assert len(unspelled_test_rows(bundle, spelling)) == bundle.test.n_posts == 2


def test_only_the_posts_own_groups_count():
    parts, groups = spelling_case(spelled=True)
    groups = groups[groups["photo_id"] != "t2"]  # t2's folder gone: another photo's 'cats' must not count
    spelling = groups_spell_tags(parts, groups)
    test = spelling.assignments[spelling.assignments["part"] == "test"].set_index("photo_id")
    assert not test.loc["t2", "spelled"]
    bundle = build_bundle(parts["train"], parts["val"], parts["test"])
    rows = unspelled_test_rows(bundle, spelling)
    assert [bundle.vocab.images[i] for i in bundle.test.image[rows]] == ["t2"]


# -- near-duplicate images ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def embedded(tmp_path_factory):
    """CNN embeddings (the features asset's backbone and settings) of four unrelated drawings
    and of a copy of the doctor drawing resized to 60 percent."""
    folder = tmp_path_factory.mktemp("near_duplicates")
    paths = {name: str(FIXTURE_PNG / rel) for name, rel in DRAWINGS.items()}
    with Image.open(paths["doctor"]) as image:
        image = image.convert("RGBA")
        white = Image.new("RGBA", image.size, (255, 255, 255, 255))
        copy = Image.alpha_composite(white, image).convert("RGB")
        copy = copy.resize((int(image.width * 0.6), int(image.height * 0.6)), Image.Resampling.LANCZOS)
    paths["doctor_copy"] = str(folder / "doctor_copy.png")
    copy.save(paths["doctor_copy"])
    ids = list(paths)
    result = extract_features([paths[i] for i in ids], folder / "features",
                              ExtractionConfig(stages=(), lowlevel=False, patch_sizes=()))
    array = np.load(result.files["cnn"])
    return ids, array, paths, folder / "features" / "cnn.npy"


def test_a_resized_copy_of_a_training_image_is_a_near_duplicate(embedded):
    ids, array, _, _ = embedded
    found = nearest_training_images(array, ids, {"train": ["doctor", "chess"], "val": ["angel"],
                                                 "test": ["doctor_copy", "plane"]})
    flagged = found.flagged
    assert list(flagged["photo_id"]) == ["doctor_copy"]
    assert flagged["train_photo_id"].iloc[0] == "doctor"
    assert flagged["distance"].iloc[0] < NEAR_DUPLICATE_DISTANCE / 2
    assert found.count("test") == 1 and found.share("test") == 0.5 and found.count("val") == 0


def test_unrelated_images_are_no_near_duplicates(embedded):
    ids, array, _, _ = embedded
    found = nearest_training_images(array, ids, {"train": ["doctor", "chess"], "val": ["angel"], "test": ["plane"]})
    assert found.count() == 0 and (found.nearest["distance"] > NEAR_DUPLICATE_DISTANCE).all()


def test_a_held_out_post_of_a_training_photo_is_not_its_own_duplicate():
    array = np.eye(3, dtype=np.float32)
    found = nearest_training_images(array, ["a", "b", "c"], {"train": ["a", "b"], "test": ["a", "c"]})
    assert found.count() == 0
    assert found.nearest.set_index("photo_id").loc["a", "train_photo_id"] == "b"


# -- the asset checks, materialised on tiny inputs ---------------------------------------------
SPEC = DatasetSpec(name="tiny", source="folder", recipe="openclipart_default", description="hand-built")


def source(name: str, value) -> dg.AssetsDefinition:
    @dg.asset(key=dg.AssetKey(["tiny", name]))
    def produce():
        return value

    return produce


def check_result(result: dg.ExecuteInProcessResult, name: str) -> dg.AssetCheckEvaluation:
    (evaluation,) = [e for e in result.get_asset_check_evaluations() if e.check_name == name]
    return evaluation


def materialise(home: Path, tables: dict, check) -> dg.AssetCheckEvaluation:
    result = dg.materialize(
        [*(source(name, value) for name, value in tables.items()), check],
        resources={"io_manager": TagrecIOManager(root=str(home)), "data_home": DataHomeResource(root=str(home))},
    )
    assert result.success
    return check_result(result, check.check_key.name)


@pytest.mark.parametrize("spelled", [True, False])
def test_the_groups_check_warns_exactly_when_groups_spell_the_tags(tmp_path, spelled):
    parts, groups = spelling_case(spelled)
    tag_mapping = pd.DataFrame({"raw_tag": ["cat"], "tag": ["cat"], "lemma": ["cat"], "synset": ["cat.n.01"]})
    evaluation = materialise(tmp_path, {"val": parts["val"], "test": parts["test"], "photo_groups": groups,
                                        "tag_mapping": tag_mapping}, groups_spell_check(SPEC))
    assert evaluation.check_name == GROUPS_CHECK
    assert evaluation.passed is (not spelled)
    assert evaluation.severity == dg.AssetCheckSeverity.WARN
    metadata = evaluation.metadata
    assert metadata["held_out_share"].value == (1.0 if spelled else 0.0)
    assert metadata["test_spelled"].value.startswith("3 of 3" if spelled else "0 of 3")
    assert "worst_groups" in metadata and "examples" in metadata


@pytest.mark.parametrize("with_copy", [True, False])
def test_the_near_duplicate_check_warns_exactly_when_a_held_out_image_copies_a_training_one(
    tmp_path, embedded, with_copy
):
    ids, array, paths, cnn_path = embedded
    held = "doctor_copy" if with_copy else "plane"
    train = frame([("ann", "doctor", "medicine"), ("ann", "chess", "game")])
    val = frame([("ann", "angel", "angel")])
    test = frame([("ann", held, "medicine")])
    images = pd.DataFrame({"photo_id": list(paths), "path": list(paths.values())})
    handle = ArrayFile.describe("cnn", cnn_path, ids, array)
    evaluation = materialise(tmp_path, {"cnn_embedding": handle, "train": train, "val": val, "test": test,
                                        "images": images}, near_duplicate_check(SPEC))
    assert evaluation.check_name == NEAR_DUPLICATES_CHECK
    assert evaluation.passed is (not with_copy)
    assert evaluation.severity == dg.AssetCheckSeverity.WARN
    metadata = evaluation.metadata
    assert metadata["near_duplicates"].value == (1 if with_copy else 0)
    assert metadata["contact_sheet"].value.startswith("![closest held-out / training pairs](data:image/png;base64,")
    assert Path(metadata["contact_sheet_file"].value).stat().st_size > 0
