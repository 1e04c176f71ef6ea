"""Guards the bring-your-own-dataset folder reader: a folder of real openclipart images and a
posts file becomes the ingest tables, every row that does not fit is a skipped row with its
reason, bad folders and files fail naming them, and discovery registers folders by name."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from tagrec_models.catalog import discover_datasets
from tagrec_models.sources.folder import (
    DEFAULT_RECIPE,
    FolderDatasetError,
    discover_folder_datasets,
    read_folder,
    split_multi_values,
)
from tagrec_models.sources.openclipart import read_openclipart
from tagrec_models.sources.tables import IMAGE_OK, IngestError

BROKEN_PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 40  # a PNG signature and no image in it


def real_posts(openclipart_sample: Path, limit: int | None = None) -> list[dict]:
    """Posts taken from the real openclipart sample: photo_id, owner, tags, groups and title
    from its SVG metadata, and the PNG file that shows it (key ``source_image``)."""
    corpus = read_openclipart(openclipart_sample)
    image_of = corpus.images.set_index("photo_id")["path"]
    tags_of = corpus.photo_tags.groupby("photo_id")["raw_tag"].agg(list)
    groups_of = corpus.photo_groups.groupby("photo_id")["group_id"].agg(list)
    posts = []
    for photo in corpus.photos.sort_values("photo_id").itertuples():
        posts.append(
            {
                "photo_id": photo.photo_id,
                "owner": photo.owner,
                "tags": list(tags_of.get(photo.photo_id, [])),
                "groups": list(groups_of.get(photo.photo_id, [])),
                "title": "" if pd.isna(photo.title) else photo.title,
                "source_image": Path(image_of[photo.photo_id]),
            }
        )
    return posts[:limit] if limit else posts


def build_byo_folder(folder: Path, posts: list[dict], problem_rows: list[dict] = ()) -> Path:
    """Write ``folder/posts.csv`` (tags and groups ``|``-separated) and copy each post's image
    to ``images/<photo_id>.png`` (or to ``images/<image>`` where the post names one).
    ``problem_rows`` are appended as they are (their ``image`` cell, if any, is not copied)."""
    images = folder / "images"
    images.mkdir(parents=True, exist_ok=True)
    rows = []
    for post in posts:
        target = images / (post.get("image") or f"{post['photo_id']}.png")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(post["source_image"], target)
        rows.append(
            {
                "photo_id": post["photo_id"],
                "owner": post["owner"],
                "tags": "|".join(post["tags"]),
                "groups": "|".join(post["groups"]),
                "title": post["title"],
                "upload_date": post.get("upload_date", ""),
                "image": post.get("image", ""),
            }
        )
    rows.extend({column: row.get(column, "") for column in rows[0]} for row in problem_rows)
    pd.DataFrame(rows).to_csv(folder / "posts.csv", index=False)
    return folder


@pytest.fixture(scope="module")
def six_posts(openclipart_sample) -> list[dict]:
    return real_posts(openclipart_sample, limit=6)


@pytest.fixture()
def byo_folder(tmp_path, six_posts) -> Path:
    """Six real posts (one with its image under another name, one with a date and messy tag
    separators) and one row for every kind of skip."""
    posts = [dict(p) for p in six_posts]
    posts[1]["image"] = "renamed/second.png"
    posts[2]["upload_date"] = "2021-06-30T14:05:00+02:00"
    posts[3]["tags"] = [" sunset ", "new york", "sunset", ""]
    folder = tmp_path / "mine"
    first = posts[0]["photo_id"]
    build_byo_folder(
        folder,
        posts,
        [
            {"photo_id": "", "owner": "ann", "tags": "a"},
            {"photo_id": first, "owner": "ann", "tags": "a"},
            {"photo_id": "no_owner", "owner": "", "tags": "a"},
            {"photo_id": "bad_date", "owner": "ann", "tags": "a", "upload_date": "30/06/2021"},
            {"photo_id": "no_file", "owner": "ann", "tags": "a"},
            {"photo_id": "elsewhere", "owner": "ann", "tags": "a", "image": "../posts.csv"},
            {"photo_id": "twice", "owner": "ann", "tags": "a"},
            {"photo_id": "broken", "owner": "ann", "tags": "a"},
        ],
    )
    shutil.copyfile(posts[0]["source_image"], folder / "images" / "twice.png")
    shutil.copyfile(posts[0]["source_image"], folder / "images" / "twice.gif")
    (folder / "images" / "broken.png").write_bytes(BROKEN_PNG)
    return folder


def test_posts_and_images_become_the_ingest_tables(byo_folder, six_posts):
    tables = read_folder(byo_folder)
    ids = [p["photo_id"] for p in six_posts]
    assert list(tables.photos["photo_id"]) == ids
    assert list(tables.photos["owner"]) == [p["owner"] for p in six_posts]
    assert set(tables.photos["source"]) == {"folder"}
    dated = tables.photos.set_index("photo_id").loc[ids[2], "date_uploaded"]
    assert dated == pd.Timestamp("2021-06-30T12:05:00", tz="UTC")
    assert tables.photos["date_uploaded"].isna().sum() == 5

    tags = tables.photo_tags.groupby("photo_id", sort=False)["raw_tag"].agg(list)
    assert tags[ids[3]] == ["sunset", "new york"]  # stripped, repeat and empty piece dropped
    for post in six_posts[:3]:
        assert tags.get(post["photo_id"], []) == post["tags"]
    cleaned = tables.photo_tags.set_index("raw_tag")["tag"]
    assert cleaned["new york"] == "new york"

    groups = tables.photo_groups.groupby("photo_id")["group_id"].agg(list)
    for post in six_posts:
        assert groups.get(post["photo_id"], []) == post["groups"]
    assert (tables.photo_groups["group_id"] == tables.photo_groups["group_name"]).all()

    images = tables.images.set_index("photo_id")
    assert set(images["status"]) == {IMAGE_OK}
    renamed = byo_folder / "images" / "renamed" / "second.png"
    assert images.loc[ids[1], "path"] == str(renamed.resolve())
    for post in six_posts:
        row = images.loc[post["photo_id"]]
        data = post["source_image"].read_bytes()
        assert row["sha256"] == hashlib.sha256(data).hexdigest()
        with Image.open(post["source_image"]) as image:
            assert (row["width"], row["height"]) == image.size
    assert tables.photos.set_index("photo_id").loc[ids[1], "url"] == renamed.resolve().as_uri()


def test_every_row_that_does_not_fit_is_a_skipped_row_with_its_reason(byo_folder, six_posts):
    tables = read_folder(byo_folder)
    skipped = tables.skipped_rows.set_index("row")
    first = six_posts[0]["photo_id"]
    expected = {
        7: ("", "empty photo_id"),
        8: (first, f"duplicate photo_id {first} (first on row 1)"),
        9: ("no_owner", "empty owner"),
        10: ("bad_date", "upload_date 30/06/2021 is not an ISO 8601 date"),
        11: ("no_file", "no image file images/no_file.<ext>"),
        12: ("elsewhere", "image '../posts.csv' lies outside images/"),
        13: ("twice", "several image files for photo_id 'twice'"),
        14: ("broken", "image images/broken.png: does not decode"),
    }
    assert sorted(skipped.index) == sorted(expected)
    for row, (photo_id, reason) in expected.items():
        assert skipped.loc[row, "photo_id"] == photo_id
        assert reason in skipped.loc[row, "reason"], skipped.loc[row, "reason"]
    rows = len(pd.read_csv(byo_folder / "posts.csv"))
    assert len(tables.photos) + len(tables.skipped_rows) == rows


def test_parquet_with_list_columns_reads_like_the_csv(byo_folder):
    from_csv = read_folder(byo_folder)
    frame = pd.read_csv(byo_folder / "posts.csv", dtype=str, keep_default_na=False)
    frame["tags"] = frame["tags"].str.split("|")
    frame["groups"] = frame["groups"].map(lambda cell: cell.split("|") if cell else [])
    (byo_folder / "posts.csv").unlink()
    frame.to_parquet(byo_folder / "posts.parquet")
    from_parquet = read_folder(byo_folder)
    for name in ("photos", "photo_tags", "photo_groups", "images", "skipped_rows"):
        pd.testing.assert_frame_equal(getattr(from_parquet, name), getattr(from_csv, name))


def test_a_cell_splits_on_the_bar_only():
    pairs = split_multi_values(pd.Series(["a|b c| a", "", "x,y"], index=[1, 2, 3]))
    assert pairs.values.tolist() == [[1, "a"], [1, "b c"], [3, "x,y"]]


def test_a_csv_saved_with_a_byte_order_mark_reads(tmp_path, six_posts):
    folder = build_byo_folder(tmp_path / "mine", six_posts[:1])
    posts = folder / "posts.csv"
    posts.write_text(posts.read_text(encoding="utf-8"), encoding="utf-8-sig")
    assert posts.read_bytes().startswith(b"\xef\xbb\xbf")
    assert list(read_folder(folder).photos["photo_id"]) == [six_posts[0]["photo_id"]]


def test_a_trailing_comma_on_every_row_does_not_shift_the_columns(tmp_path, six_posts):
    folder = build_byo_folder(tmp_path / "mine", six_posts[:2])
    posts = folder / "posts.csv"
    lines = posts.read_text(encoding="utf-8").splitlines()
    for with_header in (False, True):
        rows = [lines[0] + ("," if with_header else "")] + [line + "," for line in lines[1:]]
        posts.write_text("\n".join(rows) + "\n", encoding="utf-8")
        tables = read_folder(folder)
        assert list(tables.photos["photo_id"]) == [p["photo_id"] for p in six_posts[:2]], with_header
        assert list(tables.photos["owner"]) == [p["owner"] for p in six_posts[:2]]
        assert tables.skipped_rows.empty


def test_a_nul_byte_in_a_cell_is_an_error_naming_the_line_not_a_silent_cut(tmp_path, six_posts):
    folder = build_byo_folder(tmp_path / "mine", six_posts[:2])
    posts = folder / "posts.csv"
    data = posts.read_bytes()
    owner = six_posts[1]["owner"].encode()
    posts.write_bytes(data.replace(owner, owner[:2] + b"\x00" + owner[2:]))
    with pytest.raises(IngestError) as error:
        read_folder(folder)
    assert str(posts) in str(error.value) and "NUL byte on line 3" in str(error.value)


def test_a_symlink_under_images_to_a_file_outside_is_skipped(tmp_path, six_posts):
    """With no image column the row's image is images/<photo_id>.<ext>; a link there to a file
    outside the folder must not be read (nor its path recorded)."""
    folder = build_byo_folder(tmp_path / "mine", six_posts[:2])
    outside = tmp_path / "secret.png"
    shutil.copyfile(six_posts[1]["source_image"], outside)
    linked = folder / "images" / f"{six_posts[1]['photo_id']}.png"
    linked.unlink()
    linked.symlink_to(outside)
    tables = read_folder(folder)
    assert list(tables.photos["photo_id"]) == [six_posts[0]["photo_id"]]
    assert not tables.images["path"].str.contains("secret").any()
    (reason,) = tables.skipped_rows["reason"]
    rel = linked.relative_to(folder / "images").as_posix()
    assert reason == f"image images/{rel} is a link to a file outside images/"


def test_an_image_file_over_the_size_cap_is_skipped_unread_naming_the_cap(tmp_path, six_posts):
    from tagrec_models.sources.folder import FolderConfig

    folder = build_byo_folder(tmp_path / "mine", six_posts[:2])
    sizes = {p["photo_id"]: p["source_image"].stat().st_size for p in six_posts[:2]}
    big, small = sorted(sizes, key=sizes.get, reverse=True)
    limit = sizes[big] - 1
    assert sizes[small] <= limit
    tables = read_folder(folder, FolderConfig(max_file_bytes=limit))
    assert list(tables.photos["photo_id"]) == [small]
    (reason,) = tables.skipped_rows["reason"]
    assert reason.endswith(f"file too large: {sizes[big]:,} bytes > max_file_bytes {limit:,}")


def test_missing_required_columns_name_the_file_and_the_columns_found(tmp_path):
    folder = tmp_path / "mine"
    (folder / "images").mkdir(parents=True)
    pd.DataFrame({"photo_id": ["1"], "tag": ["a"]}).to_csv(folder / "posts.csv", index=False)
    with pytest.raises(IngestError) as error:
        read_folder(folder)
    message = str(error.value)
    assert str(folder / "posts.csv") in message
    assert "['owner', 'tags']" in message and "found columns ['photo_id', 'tag']" in message


def test_an_unknown_column_is_an_error_not_silently_dropped(tmp_path):
    folder = tmp_path / "mine"
    (folder / "images").mkdir(parents=True)
    pd.DataFrame({"photo_id": ["1"], "owner": ["ann"], "tags": ["a"], "group": ["g"]}).to_csv(
        folder / "posts.csv", index=False
    )
    with pytest.raises(IngestError, match=r"unknown column\(s\) \['group'\]"):
        read_folder(folder)


def test_folder_level_problems_name_the_path(tmp_path):
    folder = tmp_path / "mine"
    with pytest.raises(IngestError, match=f"{folder} does not exist"):
        read_folder(folder)
    folder.mkdir()
    with pytest.raises(IngestError, match="has no images/ folder"):
        read_folder(folder)
    (folder / "images").mkdir()
    with pytest.raises(IngestError, match=f"{folder} has no posts.csv or posts.parquet"):
        read_folder(folder)
    pd.DataFrame({"photo_id": [], "owner": [], "tags": []}).to_csv(folder / "posts.csv", index=False)
    with pytest.raises(IngestError, match="posts.csv has no rows"):
        read_folder(folder)
    pd.DataFrame({"photo_id": ["1"]}).to_parquet(folder / "posts.parquet")
    with pytest.raises(IngestError, match="has both posts.csv and posts.parquet"):
        read_folder(folder)


def test_nothing_usable_is_an_error_listing_why(tmp_path, six_posts):
    folder = tmp_path / "mine"
    (folder / "images").mkdir(parents=True)
    (folder / "images" / "broken.png").write_bytes(BROKEN_PNG)
    pd.DataFrame(
        {"photo_id": ["broken", "gone"], "owner": ["ann", "ann"], "tags": ["a", "b"]}
    ).to_csv(folder / "posts.csv", index=False)
    with pytest.raises(IngestError) as error:
        read_folder(folder)
    message = str(error.value)
    assert "none of its 2 rows is usable" in message
    assert "row 1: image images/broken.png: does not decode" in message
    assert "row 2: no image file images/gone.<ext>" in message


# -- discovery --------------------------------------------------------------------------------
def test_folders_under_byo_and_in_the_environment_are_found(tmp_path, six_posts):
    home = tmp_path / "home"
    build_byo_folder(home / "byo" / "mine", six_posts[:2])
    (home / "byo" / "not_a_dataset").mkdir()  # no posts file: not a dataset
    elsewhere = tmp_path / "elsewhere"
    build_byo_folder(elsewhere, six_posts[2:4])
    # has_groups comes from the header alone: this file has no groups column.
    no_groups = pd.read_csv(elsewhere / "posts.csv", dtype=str, keep_default_na=False)
    no_groups.drop(columns=["groups"]).to_csv(elsewhere / "posts.csv", index=False)
    (elsewhere / "dataset.json").write_text(
        json.dumps({"recipe": "nuswide", "description": "two posts", "recipe_overrides": {"core_users": 1}})
    )
    found = discover_folder_datasets(home, f" theirs={elsewhere} ,", builtin=["openclipart"])
    assert [d.name for d in found] == ["mine", "theirs"]
    mine, theirs = found
    assert mine.folder == (home / "byo" / "mine").resolve()
    assert (mine.recipe, mine.has_groups) == (DEFAULT_RECIPE, True)
    assert (theirs.recipe, theirs.description) == ("nuswide", "two posts")
    assert theirs.recipe_overrides == {"core_users": 1}
    assert theirs.has_groups is False
    # The same folder named twice is one dataset.
    again = discover_folder_datasets(home, f"mine={home / 'byo' / 'mine'}")
    assert [d.name for d in again] == ["mine"]


UNREADABLE_POSTS = {
    "latin1": "photo_id,owner,tags\n1,Jos\xe9,caf\xe9\n".encode("latin-1"),
    "utf16": "photo_id,owner,tags\n1,ann,sky\n".encode("utf-16"),
    "empty": b"",
    "unbalanced_quotes": b'"photo_id,owner,tags\n1,ann,sky\n',
}


@pytest.mark.parametrize("kind", sorted(UNREADABLE_POSTS))
def test_an_unreadable_posts_file_does_not_stop_discovery_and_fails_its_own_read(tmp_path, six_posts, kind):
    home = tmp_path / "home"
    build_byo_folder(home / "byo" / "good", six_posts[:2])
    bad = build_byo_folder(home / "byo" / "bad", six_posts[:1])
    (bad / "posts.csv").write_bytes(UNREADABLE_POSTS[kind])
    found = {d.name: d for d in discover_folder_datasets(home)}
    assert sorted(found) == ["bad", "good"] and found["good"].has_groups
    with pytest.raises(IngestError) as error:
        read_folder(bad)
    assert str(bad / "posts.csv") in str(error.value)


def _one_post_folder(folder: Path, six_posts) -> Path:
    return build_byo_folder(folder, six_posts[:1])


@pytest.mark.parametrize(
    ("env", "manifest", "message"),
    [
        ("openclipart={folder}", None, "'openclipart' is a built-in dataset"),
        ("My-Set={folder}", None, "dataset name 'My-Set' must be lower-case"),
        ("a__b={folder}", None, "dataset name 'a__b' must be"),
        ("mine", None, "entry 'mine' is not name=/path/to/folder"),
        ("mine={folder}/nowhere", None, "nowhere does not exist"),
        ("mine={folder}/images", None, "has no posts.csv or posts.parquet"),
        ("mine={folder}", {"recipe": "nope"}, "recipe 'nope' is not one of"),
        ("mine={folder}", {"recpie": "nuswide"}, "unknown key(s) ['recpie']"),
        ("mine={folder}", {"recipe_overrides": {"core_user": 2}}, "unknown field(s) ['core_user']"),
        ("mine={folder}", "{not json", "is not readable JSON"),
    ],
)
def test_bad_registrations_are_errors_naming_what_is_wrong(tmp_path, six_posts, env, manifest, message):
    folder = _one_post_folder(tmp_path / "data", six_posts)
    if manifest is not None:
        text = manifest if isinstance(manifest, str) else json.dumps(manifest)
        (folder / "dataset.json").write_text(text)
    with pytest.raises(FolderDatasetError) as error:
        discover_datasets(tmp_path / "home", env.format(folder=folder), builtin=["openclipart"])
    assert message in str(error.value)


def test_one_name_for_two_folders_is_an_error(tmp_path, six_posts):
    home = tmp_path / "home"
    _one_post_folder(home / "byo" / "mine", six_posts)
    other = _one_post_folder(tmp_path / "other", six_posts)
    with pytest.raises(FolderDatasetError, match="'mine' is given twice for different folders"):
        discover_folder_datasets(home, f"mine={other}")


def test_the_sources_never_import_the_preprocessing():
    """The import arrows point one way (preprocess -> sources): a fresh interpreter that
    imports every source module has loaded no tagrec_models.preprocess module."""
    import subprocess
    import sys

    script = (
        "import sys, pkgutil, importlib, tagrec_models.sources as s\n"
        "for m in pkgutil.walk_packages(s.__path__, 'tagrec_models.sources.'): importlib.import_module(m.name)\n"
        "print(sorted(n for n in sys.modules if n.startswith('tagrec_models.preprocess')))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"
