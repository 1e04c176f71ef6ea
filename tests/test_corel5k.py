"""Guards the Corel5k reader: the ingest tables, the standard 4,500/499 split and the 260 words
against the README's counts and the .mat matrices, and clear errors for a broken folder."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.io

from tagrec_models.sources.corel5k import Corel5kConfig, Corel5kData, read_corel5k
from tagrec_models.sources.tables import IngestError

TRAIN_IDS = ["1000/1000", "1000/1003", "1000/1004"]


@pytest.fixture(scope="module")
def corel(corel5k_dir) -> Corel5kData:
    return read_corel5k(corel5k_dir)


def test_counts_match_the_readme(corel):
    assert len(corel.words) == 260
    assert corel.split["part"].value_counts().to_dict() == {"train": 4500, "test": 499}
    parts = corel.tables.photo_tags.merge(corel.split, on="photo_id")["part"].value_counts()
    assert parts.to_dict() == {"train": 15_223, "test": 1_756}
    assert len(corel.tables.photos) == 4_999
    # README: every word occurs in both parts.
    for part in ("train", "test"):
        assert (corel.label_matrix(part)[1].sum(axis=0) > 0).all()


def test_tables_follow_the_contract(corel):
    photos = corel.tables.photos
    assert photos["owner"].isna().all()
    assert set(photos["source"]) == {"corel5k"}
    assert corel.tables.photo_groups.empty
    images = corel.tables.images
    assert (images["status"] == "ok").all()
    sizes = set(zip(images["width"], images["height"]))
    assert sizes <= {(192, 128), (128, 192)}
    assert images["sha256"].str.fullmatch(r"[0-9a-f]{64}").all()
    tags = corel.tables.photo_tags
    assert (tags["tag"] == tags["raw_tag"]).all()  # the 260 words are already clean


def test_first_image_read_by_hand(corel, corel5k_dir):
    # corel5k_train_tags.tsv, first line: "1000/1000<TAB>city mountain sky sun".
    tags = corel.tables.photo_tags
    assert tags[tags["photo_id"] == "1000/1000"]["raw_tag"].tolist() == [
        "city",
        "mountain",
        "sky",
        "sun",
    ]
    image = corel.tables.images.set_index("photo_id").loc["1000/1000"]
    assert Path(image["path"]) == (corel5k_dir / "1000" / "1000.jpeg").resolve()
    assert corel.split["photo_id"].head(3).tolist() == TRAIN_IDS
    assert corel.words[:3] == ("city", "mountain", "sky")


def test_label_matrix_equals_the_mat_files(corel, corel5k_dir):
    for part, key in (("train", "annot1"), ("test", "annot2")):
        ids, matrix = corel.label_matrix(part)
        expected = scipy.io.loadmat(corel5k_dir / f"corel5k_{part}_annot.mat")[key]
        assert len(ids) == expected.shape[0]
        np.testing.assert_array_equal(matrix.toarray(), expected.astype(np.float32))
    with pytest.raises(ValueError, match="validation"):
        corel.label_matrix("validation")


# --- a broken folder ------------------------------------------------------------------------------


@pytest.fixture()
def mini(tmp_path, corel5k_dir) -> Path:
    """The real layout cut down to 3 train and 2 test images (real files and annotations)."""
    root = tmp_path / "corel5k"
    root.mkdir()
    shutil.copyfile(corel5k_dir / "corel5k_words.txt", root / "corel5k_words.txt")
    for part, key, n in (("train", "annot1", 3), ("test", "annot2", 2)):
        ids = (corel5k_dir / f"corel5k_{part}_list.txt").read_text().split()[:n]
        (root / f"corel5k_{part}_list.txt").write_text("\n".join(ids) + "\n")
        lines = (corel5k_dir / f"corel5k_{part}_tags.tsv").read_text().splitlines()[: n + 1]
        (root / f"corel5k_{part}_tags.tsv").write_text("\n".join(lines) + "\n")
        matrix = scipy.io.loadmat(corel5k_dir / f"corel5k_{part}_annot.mat")[key][:n]
        scipy.io.savemat(root / f"corel5k_{part}_annot.mat", {key: matrix})
        for pid in ids:
            (root / pid).parent.mkdir(exist_ok=True)
            shutil.copyfile(corel5k_dir / f"{pid}.jpeg", root / f"{pid}.jpeg")
    return root


def test_mini_folder_reads(mini):
    data = read_corel5k(mini)
    assert data.split["part"].tolist() == ["train"] * 3 + ["test"] * 2
    assert data.split["photo_id"].head(3).tolist() == TRAIN_IDS
    assert (data.tables.images["status"] == "ok").all()


def test_missing_folder_names_it(tmp_path):
    with pytest.raises(IngestError, match=str(tmp_path / "nowhere")):
        read_corel5k(tmp_path / "nowhere")


@pytest.mark.parametrize(
    "name", ["corel5k_words.txt", "corel5k_test_list.txt", "corel5k_train_tags.tsv"]
)
def test_missing_file_names_it(mini, name):
    (mini / name).unlink()
    with pytest.raises(IngestError, match=name):
        read_corel5k(mini)


def test_missing_mat_only_matters_when_verifying(mini):
    (mini / "corel5k_test_annot.mat").unlink()
    with pytest.raises(IngestError, match="corel5k_test_annot.mat"):
        read_corel5k(mini)
    assert len(read_corel5k(mini, Corel5kConfig(verify_mat=False)).tables.photos) == 5


def test_unknown_word_is_an_error(mini):
    tsv = mini / "corel5k_train_tags.tsv"
    tsv.write_text(tsv.read_text().replace("city mountain", "city volcanoes"))
    with pytest.raises(IngestError, match="volcanoes"):
        read_corel5k(mini)


def test_list_and_tsv_must_agree(mini):
    listing = mini / "corel5k_train_list.txt"
    listing.write_text("\n".join(reversed(listing.read_text().split())) + "\n")
    with pytest.raises(IngestError, match="different images or orders"):
        read_corel5k(mini)


def test_tsv_that_disagrees_with_the_mat_is_an_error(mini):
    tsv = mini / "corel5k_train_tags.tsv"
    tsv.write_text(tsv.read_text().replace("city mountain sky sun", "city mountain sky"))
    with pytest.raises(IngestError, match="corel5k_train_annot.mat: 1 cell"):
        read_corel5k(mini)


def test_image_in_both_parts_is_an_error(mini):
    (mini / "corel5k_test_list.txt").write_text("1000/1000\n")
    (mini / "corel5k_test_tags.tsv").write_text("image\ttags\n1000/1000\tcity\n")
    with pytest.raises(IngestError, match="both train and test"):
        read_corel5k(mini, Corel5kConfig(verify_mat=False))


def test_missing_or_corrupt_jpeg_is_a_broken_row(mini):
    (mini / "1000" / "1003.jpeg").unlink()
    jpeg = mini / "1000" / "1004.jpeg"
    jpeg.write_bytes(jpeg.read_bytes()[:300])
    images = read_corel5k(mini).tables.images.set_index("photo_id")
    assert images.loc["1000/1003", "status"] == "broken"
    assert images.loc["1000/1003", "reason"] == "no image file at 1000/1003.jpeg"
    assert images.loc["1000/1004", "status"] == "broken"
    assert images.loc["1000/1004", "reason"].startswith("does not decode")
    assert images.loc["1000/1000", "status"] == "ok"
    assert pd.isna(images.loc["1000/1003", "sha256"])
