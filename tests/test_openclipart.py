"""Guards the openclipart reader: RDF metadata to the ingest tables, symlinked images as one
photo with several groups, image checks, and recorded skips for bad SVGs, on the real
50-image sample (and, marked slow, the full Debian corpus)."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from tagrec_models.paths import DataHome
from tagrec_models.sources.openclipart import (
    OpenclipartConfig,
    OpenclipartTables,
    parse_date,
    read_openclipart,
)
from tagrec_models.sources.tables import IngestError, IngestTables

REPO = Path(__file__).resolve().parents[1]
PROVETTA = "science/provetta_plasma_sangue_a_01"
ARROW = "shapes/arki_arrow_down_jean_vic_"


@pytest.fixture(scope="module")
def sample(openclipart_sample) -> OpenclipartTables:
    return read_openclipart(openclipart_sample)


def test_sample_gives_the_four_tables(sample):
    assert isinstance(sample, IngestTables)
    assert len(sample.photos) == 50  # 53 SVG paths, 3 of them symlinks to photos
    assert sample.photos["photo_id"].is_unique
    assert set(sample.photos["source"]) == {"openclipart"}
    assert sample.photos["owner"].notna().all()
    assert sample.skips.empty
    assert set(sample.images["photo_id"]) == set(sample.photos["photo_id"])
    assert set(sample.photo_tags["photo_id"]) <= set(sample.photos["photo_id"])


def test_one_photo_read_by_hand(sample):
    photo = sample.photos.set_index("photo_id").loc[PROVETTA]
    assert photo["owner"] == "Architetto Francesco Rollandin"
    assert photo["title"] == "Provetta plasma sangue"
    assert photo["license"] == "http://web.resource.org/cc/PublicDomain"
    assert pd.isna(photo["date_uploaded"])  # <dc:date></dc:date>
    assert photo["url"].startswith("file://") and photo["url"].endswith(f"{PROVETTA}.svg")
    tags = sample.photo_tags[sample.photo_tags["photo_id"] == PROVETTA]
    assert tags["raw_tag"].tolist() == ["unsorted"]  # kept as the source gives it
    groups = sample.photo_groups[sample.photo_groups["photo_id"] == PROVETTA]
    assert groups[["group_id", "group_name"]].values.tolist() == [["science", "Science"]]


def test_empty_subject_items_are_not_tags(sample):
    # chess_game_01.svg lists <rdf:li></rdf:li>, game, recreation.
    chess = "recreation/games/chess/chess_game_01"
    tags = sample.photo_tags[sample.photo_tags["photo_id"] == chess]
    assert tags["raw_tag"].tolist() == ["game", "recreation"]
    groups = sample.photo_groups.set_index("photo_id").loc[chess]
    assert groups["group_name"] == "Recreation / Games / Chess"


def test_symlinked_image_is_one_photo_with_both_groups(sample, openclipart_sample):
    link = openclipart_sample / "svg" / f"{ARROW.replace('shapes/', 'shapes/arrows/')}.svg"
    assert link.is_symlink()
    assert not (sample.photos["photo_id"] == ARROW.replace("shapes/", "shapes/arrows/")).any()
    groups = sample.photo_groups[sample.photo_groups["photo_id"] == ARROW]
    assert groups["group_id"].tolist() == ["shapes", "shapes/arrows"]
    assert groups["group_name"].tolist() == ["Shapes", "Shapes / Arrows"]
    counts = sample.photo_groups.groupby("photo_id").size()
    assert sorted(counts[counts > 1].index) == sorted(
        [ARROW, "shapes/arki_arrow_left_jean_vic_", "shapes/arki_arrow_right_jean_vi_"]
    )


def test_every_svg_path_is_a_group_membership_or_a_skip(sample, openclipart_sample):
    svg = openclipart_sample / "svg"
    memberships = set(zip(sample.photo_groups["photo_id"], sample.photo_groups["group_id"]))
    skipped = set(sample.skips["path"])
    for path in svg.rglob("*.svg"):
        rel = path.relative_to(svg).as_posix()
        pid = path.resolve().relative_to(svg.resolve()).as_posix().removesuffix(".svg")
        assert (pid, path.parent.relative_to(svg).as_posix()) in memberships or rel in skipped, rel


def test_images_match_the_png_files(sample, openclipart_sample):
    assert (sample.images["status"] == "ok").all()
    assert (sample.images["reason"] == "").all()
    for row in sample.images.head(10).itertuples():
        path = Path(row.path)
        assert path.is_absolute()
        assert path == (openclipart_sample / "png" / f"{row.photo_id}.png").resolve()
        assert row.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
        with Image.open(path) as image:
            assert (row.width, row.height) == image.size


def test_clean_tag_column_follows_the_raw_tag(sample):
    tags = sample.photo_tags
    assert (tags["tag"].dropna() == tags["tag"].dropna().str.lower()).all()
    assert not tags.duplicated(["photo_id", "raw_tag"]).any()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2006-07-12", "2006-07-12 00:00:00+00:00"),
        ("2006/7/2", "2006-07-02 00:00:00+00:00"),
        ("2005-10-01 13:45:07", "2005-10-01 13:45:07+00:00"),
        ("", None),
        (None, None),
        ("9/12/2005", None),  # day/month order unknowable
        ("September 2006", None),
        ("2006-13-01", None),  # no month 13
    ],
)
def test_parse_date(text, expected):
    result = parse_date(text)
    assert (str(result) if result is not None else None) == expected


# --- bad input ------------------------------------------------------------------------------------


def _copy_pair(sample_root: Path, pid: str, root: Path, new_id: str, png: bool = True) -> Path:
    svg = root / "svg" / f"{new_id}.svg"
    svg.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(sample_root / "svg" / f"{pid}.svg", svg)
    if png:
        target = root / "png" / f"{new_id}.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(sample_root / "png" / f"{pid}.png", target)
    return svg


@pytest.fixture()
def bad_corpus(tmp_path, openclipart_sample) -> Path:
    """A corpus with one good photo and one of every kind of bad input."""
    root = tmp_path / "openclipart"
    (root / "svg").mkdir(parents=True)
    (root / "png").mkdir()
    _copy_pair(openclipart_sample, PROVETTA, root, "good/a")
    _copy_pair(openclipart_sample, ARROW, root, "good/nopng", png=False)
    _copy_pair(openclipart_sample, "containers/cesto_architetto_frances_01", root, "good/badpng")
    png = root / "png" / "good" / "badpng.png"
    png.write_bytes(png.read_bytes()[:200])  # a truncated PNG
    (root / "svg" / "good" / "nometa.svg").write_text(
        '<svg xmlns="http://www.w3.org/2000/svg"><rect width="1" height="1"/></svg>'
    )
    truncated = '<svg xmlns="http://www.w3.org/2000/svg"><meta'
    (root / "svg" / "good" / "broken.svg").write_text(truncated)
    nocreator = _copy_pair(openclipart_sample, PROVETTA, root, "good/nocreator")
    text = re.sub(r"<dc:creator>.*?</dc:creator>", "", nocreator.read_text(), flags=re.S)
    nocreator.write_text(text)
    other = root / "svg" / "other"
    other.mkdir()
    os.symlink("../good/a.svg", other / "link.svg")
    os.symlink("../good/nocreator.svg", other / "link_to_nocreator.svg")
    os.symlink("../good/missing.svg", other / "dangling.svg")
    (root / "svg" / "good" / "drawing.xml").write_text("<svg/>")
    os.symlink("../good/drawing.xml", other / "not_svg.svg")
    os.symlink(openclipart_sample / "svg" / f"{PROVETTA}.svg", other / "outside.svg")
    return root


def test_bad_input_is_recorded_not_fatal(bad_corpus):
    tables = read_openclipart(bad_corpus)
    assert sorted(tables.photos["photo_id"]) == ["good/a", "good/badpng", "good/nopng"]
    reasons = dict(zip(tables.skips["path"], tables.skips["reason"]))
    assert set(reasons) == {
        "good/nometa.svg",
        "good/broken.svg",
        "good/nocreator.svg",
        "other/link_to_nocreator.svg",
        "other/dangling.svg",
        "other/outside.svg",
        "other/not_svg.svg",
    }
    assert reasons["good/nometa.svg"].startswith("no RDF metadata")
    assert reasons["good/broken.svg"].startswith("unparsable XML")
    assert reasons["good/nocreator.svg"].startswith("no creator")
    assert reasons["other/link_to_nocreator.svg"].startswith(
        "symlink to skipped good/nocreator.svg"
    )
    assert reasons["other/dangling.svg"].startswith("broken symlink")
    assert reasons["other/outside.svg"].startswith("symlink leaves the corpus")
    assert reasons["other/not_svg.svg"] == "symlink target good/drawing.xml is not a regular .svg file"
    images = tables.images.set_index("photo_id")
    assert images.loc["good/a", "status"] == "ok"
    assert images.loc["good/nopng", "status"] == "broken"
    assert images.loc["good/nopng", "reason"] == "no PNG at png/good/nopng.png"
    assert images.loc["good/badpng", "status"] == "broken"
    assert images.loc["good/badpng", "reason"].startswith("does not decode")
    assert pd.notna(images.loc["good/badpng", "sha256"])  # the bytes that were there
    groups = tables.photo_groups[tables.photo_groups["photo_id"] == "good/a"]
    assert groups["group_id"].tolist() == ["good", "other"]


def test_missing_folders_are_errors_naming_the_path(tmp_path, bad_corpus):
    with pytest.raises(IngestError, match=str(tmp_path / "nowhere")):
        read_openclipart(tmp_path / "nowhere")
    shutil.rmtree(bad_corpus / "png")
    with pytest.raises(IngestError, match=str(bad_corpus / "png")):
        read_openclipart(bad_corpus)
    empty = tmp_path / "empty"
    (empty / "svg").mkdir(parents=True)
    (empty / "png").mkdir()
    with pytest.raises(IngestError, match="no .svg files"):
        read_openclipart(empty)


def test_owner_spellings_merge_by_case(tmp_path, openclipart_sample):
    root = tmp_path / "openclipart"
    (root / "png").mkdir(parents=True)
    name = "Architetto Francesco Rollandin"
    for new_id, spelling in [("a/x", name), ("a/y", name), ("a/z", name.lower())]:
        svg = _copy_pair(openclipart_sample, PROVETTA, root, new_id)
        text = svg.read_text().replace(f"<dc:title>{name}", f"<dc:title>{spelling}")
        svg.write_text(text)
    merged = read_openclipart(root)
    assert merged.photos["owner"].tolist() == [name, name, name]  # the most frequent spelling
    kept = read_openclipart(root, OpenclipartConfig(merge_owner_case=False))
    assert kept.photos["owner"].tolist() == [name, name, name.lower()]


def test_max_pixels_marks_large_images_broken(openclipart_sample):
    tables = read_openclipart(openclipart_sample, OpenclipartConfig(max_pixels=10_000))
    images = tables.images
    large = images["width"] * images["height"] > 10_000
    assert large.any() and (~large).any()
    assert (images.loc[large, "status"] == "broken").all()
    assert images.loc[large, "reason"].str.startswith("too large to decode safely").all()
    assert (images.loc[~large, "status"] == "ok").all()


def test_identical_copies_merge_when_asked(openclipart_sample, sample):
    # education/ and special/ hold two files of one drawing with byte-identical PNGs.
    merged = read_openclipart(openclipart_sample, OpenclipartConfig(merge_identical_copies=True))
    keep, copy = "education/logaritmic_diagram_01", "special/logaritmic_diagram_01"
    assert len(merged.photos) == len(sample.photos) - 1
    assert copy not in set(merged.photos["photo_id"])
    tags = merged.photo_tags[merged.photo_tags["photo_id"] == keep]["raw_tag"]
    assert sorted(tags) == ["education", "hash", "technical"]  # the union, "technical" once
    groups = merged.photo_groups[merged.photo_groups["photo_id"] == keep]["group_id"]
    assert groups.tolist() == ["education", "special"]
    assert merged.skips.values.tolist() == [
        [f"{copy}.svg", f"merged into {keep}: identical PNG, same owner"]
    ]


# --- the full corpus ------------------------------------------------------------------------------


def _full_corpus() -> Path | None:
    for home in (DataHome.from_env().root, REPO / "data"):
        root = home / "sources" / "openclipart" / "usr" / "share" / "openclipart"
        if (root / "svg").is_dir() and (root / "png").is_dir():
            return root
    return None


@pytest.mark.slow
def test_full_corpus_counts():
    root = _full_corpus()
    if root is None:
        pytest.skip("the openclipart corpus is not unpacked (bash scripts/setup_system.sh)")
    tables = read_openclipart(root)
    posts = tables.photos[tables.photos["photo_id"].isin(tables.photo_tags["photo_id"])]
    # DESIGN.md: about 7,300 posts with a user and tags, 514 users, 2,072 tags.
    assert 7_200 <= len(posts) <= 7_400
    assert posts["owner"].nunique() == 514
    assert 2_000 <= tables.photo_tags["raw_tag"].nunique() <= 2_100
    multi = tables.photo_groups.groupby("photo_id").size()
    assert (multi > 1).sum() >= 400  # the 663 symlinks
    assert set(tables.skips["reason"].str.split(" ").str[0]) <= {"no", "symlink"}
    assert (tables.images["status"] == "ok").mean() > 0.99


def test_an_oversized_file_is_broken_without_being_read(tmp_path):
    """A 100 MB file named like an image is refused on its size (the default cap is 64 MiB),
    before a byte is read: it is never held in memory to be hashed or decoded."""
    from tagrec_models.sources.openclipart import MAX_FILE_BYTES, check_image

    big = tmp_path / "p2.png"
    with big.open("wb") as handle:
        handle.truncate(100 * 1024 * 1024)  # sparse: costs no disk
    row = check_image(big)
    assert row["status"] == "broken" and row["sha256"] is None
    assert row["reason"] == f"file too large: {100 * 1024 * 1024:,} bytes > max_file_bytes {MAX_FILE_BYTES:,}"
