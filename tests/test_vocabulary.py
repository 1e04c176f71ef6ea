"""Guards tag cleaning, the offline WordNet 3.0 install (library and setup script) and the
tag -> WordNet mapping, against cases worked out by hand."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from tagrec_models.paths import DataHome, nltk_data_home
from tagrec_models.vocabulary.cleaning import CleaningConfig, clean_tag, clean_tags
from tagrec_models.vocabulary.wordnet import (
    LEXNAMES_30,
    LEXNAMES_MAN,
    REQUIRED_FILES,
    WORDNET_SOURCE,
    MappingConfig,
    WordNetSetupError,
    apply_mapping,
    install_wordnet,
    lexnames_from_man,
    lexnames_text,
    load_wordnet,
    map_tags,
)

REPO = Path(__file__).resolve().parents[1]
needs_wordnet = pytest.mark.skipif(
    not (WORDNET_SOURCE / "data.noun").is_file(),
    reason=f"WordNet is not installed at {WORDNET_SOURCE}: run "
    "`bash scripts/setup_system.sh --wordnet-only` (Debian wordnet-base, wordnet-sense-index)",
)


# --- cleaning ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Dog", "dog"),
        ("  Sunset  ", "sunset"),
        ("#sunset", "sunset"),
        ('"dog".', "dog"),
        ("ice_cream", "ice cream"),
        ("Ice   Cream", "ice cream"),
        ("ice__cream", "ice cream"),
        ("_under_score_", "under score"),
        ("t-shirt", "t-shirt"),
        ("rock'n'roll", "rock'n'roll"),
        ("c++", "c++"),
        ("ｄｏｇ", "dog"),  # full-width letters, NFKC
        ("ﬁsh", "fish"),  # the fi ligature, NFKC
        ("&eacute;toile", "étoile"),  # an HTML entity as openclipart has it
        ("Straße", "straße"),  # lower(), not casefold()
        ("3D", "3d"),
        ("tv", "tv"),
        ("2007", None),
        ("2007-01-02", None),
        (":-)", None),
        ("x", None),
        ("   ", None),
        ("", None),
        ("a" * 41, None),
        ("a" * 40, "a" * 40),
    ],
)
def test_clean_tag_rules(raw, expected):
    assert clean_tag(raw) == expected


def test_clean_tag_lengths_are_config():
    assert clean_tag("x", CleaningConfig(min_length=1)) == "x"
    assert clean_tag("abcdef", CleaningConfig(max_length=5)) is None
    with pytest.raises(ValueError, match="min_length"):
        CleaningConfig(min_length=0)
    with pytest.raises(ValueError, match="max_length"):
        CleaningConfig(min_length=5, max_length=3)


def test_clean_tag_rejects_non_strings_by_value():
    with pytest.raises(TypeError, match="None"):
        clean_tag(None)  # type: ignore[arg-type]


def test_clean_tags_keeps_index_and_marks_dropped_as_na():
    raw = pd.Series(["Dogs", None, "2007", "Dogs", "ice_cream"], index=[10, 11, 12, 13, 14])
    out = clean_tags(raw)
    assert str(out.dtype) == "string"
    assert list(out.index) == [10, 11, 12, 13, 14]
    assert out.tolist() == ["dogs", pd.NA, pd.NA, "dogs", "ice cream"]
    with pytest.raises(TypeError, match="Series"):
        clean_tags(["dog"])  # type: ignore[arg-type]


# --- WordNet install ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def nltk_data(tmp_path_factory) -> Path:
    if not (WORDNET_SOURCE / "data.noun").is_file():
        pytest.skip(f"WordNet is not installed at {WORDNET_SOURCE} (run scripts/setup_system.sh)")
    folder = tmp_path_factory.mktemp("nltk") / "nltk_data"
    install_wordnet(folder)
    return folder


@needs_wordnet
def test_install_wordnet_gives_wordnet_30_with_real_copies(nltk_data):
    folder = nltk_data / "corpora" / "wordnet"
    for name in REQUIRED_FILES + ("lexnames",):
        assert (folder / name).is_file() and not (folder / name).is_symlink(), name
    wn = load_wordnet(nltk_data)
    assert wn.get_version() == "3.0"
    assert wn.synset("dog.n.01").offset() == 2084071
    assert wn.synset("dog.n.01").lexname() == "noun.animal"


@needs_wordnet
def test_install_wordnet_again_rewrites_nothing(nltk_data):
    messages: list[str] = []
    install_wordnet(nltk_data, log=messages.append)
    assert messages[0].startswith("WordNet: 0 file(s) written"), messages


@needs_wordnet
def test_install_wordnet_repairs_a_damaged_copy(tmp_path, nltk_data):
    folder = tmp_path / "nltk_data"
    shutil.copytree(nltk_data, folder)
    (folder / "corpora" / "wordnet" / "lexnames").write_text("garbage\n")
    (folder / "corpora" / "wordnet" / "noun.exc").unlink()
    messages: list[str] = []
    install_wordnet(folder, log=messages.append)
    assert messages[0].startswith("WordNet: 2 file(s) written"), messages
    assert load_wordnet(folder).morphy("geese", "n") == "goose"  # noun.exc is back


def test_install_wordnet_names_a_missing_source(tmp_path):
    with pytest.raises(WordNetSetupError, match=str(tmp_path / "nowhere")):
        install_wordnet(tmp_path / "nltk_data", source=tmp_path / "nowhere")


@needs_wordnet
def test_install_wordnet_names_missing_files(tmp_path):
    source = tmp_path / "wordnet"
    shutil.copytree(WORDNET_SOURCE, source)
    (source / "index.sense").unlink()
    with pytest.raises(WordNetSetupError, match="index.sense"):
        install_wordnet(tmp_path / "nltk_data", source=source)


def test_load_wordnet_without_debian_files_names_the_command_that_fixes_it(tmp_path):
    with pytest.raises(WordNetSetupError) as raised:
        load_wordnet(tmp_path / "nltk_data", source=tmp_path / "no_debian_wordnet")
    message = str(raised.value)
    assert "apt-get install -y --no-install-recommends wordnet-base wordnet-sense-index" in message
    assert str(tmp_path / "nltk_data") in message
    assert "DATA_HOME" not in message and "make setup" not in message


@needs_wordnet
def test_load_wordnet_installs_it_on_first_need(tmp_path):
    messages: list[str] = []
    wn = load_wordnet(tmp_path / "nltk_data", log=messages.append)
    assert wn.synset("dog.n.01").offset() == 2084071
    assert messages[0].startswith("WordNet: first use, installing it for nltk into")
    assert (tmp_path / "nltk_data" / "corpora" / "wordnet" / "lexnames").is_file()


def test_wordnet_lives_on_nltks_search_path_not_in_the_data_home(tmp_path, monkeypatch):
    import nltk.data

    folder = nltk_data_home()
    assert str(folder) in {str(Path(p).expanduser().resolve()) for p in nltk.data.path}
    assert DataHome(tmp_path / "one").nltk_data == DataHome(tmp_path / "two").nltk_data == folder
    installed = tmp_path / "installed"
    (installed / "corpora" / "wordnet").mkdir(parents=True)
    (installed / "corpora" / "wordnet" / "lexnames").write_text("")
    # A folder earlier on nltk's path that already holds WordNet wins over a writable one.
    monkeypatch.setattr(nltk.data, "path", [str(tmp_path / "empty"), str(installed)])
    assert nltk_data_home() == installed
    monkeypatch.setattr(nltk.data, "path", [str(tmp_path / "empty"), str(tmp_path / "other")])
    assert nltk_data_home() == tmp_path / "empty"


def test_lexnames_text_has_wordnet_layout():
    text = lexnames_text(LEXNAMES_30)
    lines = text.splitlines()
    assert len(lines) == 45
    assert lines[0] == "00\tadj.all\t3"
    assert lines[5] == "05\tnoun.animal\t1"
    assert lines[44] == "44\tadj.ppl\t3"
    with pytest.raises(WordNetSetupError, match="bogus"):
        lexnames_text(["bogus.name"])


@pytest.mark.skipif(not LEXNAMES_MAN.is_file(), reason=f"{LEXNAMES_MAN} is not installed")
def test_lexnames_from_debian_man_page_match_wordnet_30():
    assert tuple(lexnames_from_man(LEXNAMES_MAN)) == LEXNAMES_30


def test_setup_script_rejects_unknown_options():
    result = subprocess.run(
        ["bash", str(REPO / "scripts" / "setup_system.sh"), "--bogus"],
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0
    assert "unknown option '--bogus'" in result.stderr


@pytest.mark.slow
@needs_wordnet
def test_setup_script_wordnet_only_is_idempotent(tmp_path):
    home = tmp_path / "home"
    command = ["bash", str(REPO / "scripts" / "setup_system.sh"), "--wordnet-only", str(home)]
    # NLTK_DATA heads nltk's search path: the machine-wide folder, moved into tmp_path here.
    env = {"PATH": "/usr/bin:/bin:/usr/sbin:/sbin", "PYTHON": sys.executable, "NLTK_DATA": str(tmp_path / "nltk")}
    first = subprocess.run(command, capture_output=True, text=True, env=env)
    assert first.returncode == 0, first.stderr
    assert "verified" in first.stdout
    second = subprocess.run(command, capture_output=True, text=True, env=env)
    assert second.returncode == 0, second.stderr
    assert "WordNet: 0 file(s) written" in second.stdout
    assert not (home / "sources" / "openclipart").exists()  # --wordnet-only fetches no corpus
    assert not (home / "nltk_data").exists()  # WordNet is machine-wide, not in the data home
    assert load_wordnet(tmp_path / "nltk").synset("dog.n.01").offset() == 2084071


# --- mapping --------------------------------------------------------------------------------------


@needs_wordnet
def test_map_tags_hand_checked(nltk_data):
    raw = ["dogs", "Dogs", "geese", "ran", "running", "Ice_Cream", "New York", "quickly",
           "happy", "2007", "xyzzyq", "dogs"]  # fmt: skip
    table = map_tags(raw, nltk_data)
    assert list(table.columns) == ["raw_tag", "tag", "lemma", "synset"]
    assert table["raw_tag"].tolist() == sorted(set(raw))  # one row per distinct raw tag
    rows = {r.raw_tag: (r.tag, r.lemma, r.synset) for r in table.itertuples()}
    na = pd.NA
    assert rows["dogs"] == ("dogs", "dog", "dog.n.01")
    assert rows["Dogs"] == ("dogs", "dog", "dog.n.01")
    assert rows["geese"] == ("geese", "goose", "goose.n.01")  # noun.exc
    assert rows["ran"] == ("ran", "run", "run.v.01")  # not a noun: the verb exception list
    # Nouns first: "running" is itself a noun whose first sense is the act of running, a
    # synset WordNet names after its first lemma "run".
    assert rows["running"] == ("running", "running", "run.n.05")
    assert rows["Ice_Cream"] == ("ice cream", "ice cream", "ice_cream.n.01")
    assert rows["New York"] == ("new york", "new york", "new_york.n.01")
    assert rows["quickly"] == ("quickly", "quickly", "quickly.r.01")
    assert rows["happy"] == ("happy", "happy", "happy.a.01")
    assert rows["2007"] == (na, na, na)  # dropped by cleaning
    assert rows["xyzzyq"] == ("xyzzyq", na, na)  # not in WordNet


@needs_wordnet
def test_map_tags_pos_order_is_config(nltk_data):
    table = map_tags(["running"], nltk_data, MappingConfig(pos_order=("v", "n", "a", "r")))
    assert table.iloc[0][["lemma", "synset"]].tolist() == ["run", "run.v.01"]
    with pytest.raises(ValueError, match="pos_order"):
        MappingConfig(pos_order=("x",))


@needs_wordnet
def test_map_tags_hyphenated_forms(nltk_data):
    rows = map_tags(["e-mail", "T-Shirt"], nltk_data).set_index("raw_tag")
    assert rows.loc["e-mail", "synset"] == "electronic_mail.n.01"
    assert rows.loc["T-Shirt", "lemma"] == "t-shirt"


@needs_wordnet
def test_map_tags_rejects_missing_values(nltk_data):
    with pytest.raises(ValueError, match="missing"):
        map_tags(["dog", None], nltk_data)


MAPPING = pd.DataFrame(
    {
        "raw_tag": ["Dogs", "dog", "auto", "car", "xyzzyq", "2007"],
        "tag": ["dogs", "dog", "auto", "car", "xyzzyq", None],
        "lemma": ["dog", "dog", "auto", "car", None, None],
        "synset": ["dog.n.01", "dog.n.01", "car.n.01", "car.n.01", None, None],
    }
)
PHOTO_TAGS = pd.DataFrame(
    {
        "photo_id": ["p1", "p1", "p1", "p2", "p2", "p2"],
        "raw_tag": ["Dogs", "dog", "xyzzyq", "auto", "car", "2007"],
        "tag": ["dogs", "dog", "xyzzyq", "auto", "car", None],
    }
)


def _pairs(frame: pd.DataFrame) -> list[tuple[str, str]]:
    return list(zip(frame["photo_id"], frame["tag"]))


def test_apply_mapping_lemma_keep():
    out = apply_mapping(PHOTO_TAGS, MAPPING, MappingConfig(target="lemma", unmapped="keep"))
    # p1: Dogs and dog merge into one "dog" row (the first raw tag in order wins), xyzzyq kept.
    assert _pairs(out) == [("p1", "dog"), ("p1", "xyzzyq"), ("p2", "auto"), ("p2", "car")]
    assert out.loc[0, "raw_tag"] == "Dogs"


def test_apply_mapping_synset_drop():
    out = apply_mapping(PHOTO_TAGS, MAPPING, MappingConfig(target="synset", unmapped="drop"))
    assert _pairs(out) == [("p1", "dog.n.01"), ("p2", "car.n.01")]


def test_apply_mapping_tag_target_keeps_cleaned_tags():
    out = apply_mapping(PHOTO_TAGS, MAPPING, MappingConfig(target="tag", unmapped="drop"))
    # Sorted by raw tag: "Dogs" sorts before "dog".
    assert _pairs(out) == [("p1", "dogs"), ("p1", "dog"), ("p2", "auto"), ("p2", "car")]


def test_apply_mapping_names_raw_tags_missing_from_the_mapping():
    extra = pd.concat(
        [PHOTO_TAGS, pd.DataFrame({"photo_id": ["p3"], "raw_tag": ["zebra"], "tag": ["zebra"]})]
    )
    with pytest.raises(ValueError, match="zebra"):
        apply_mapping(extra, MAPPING)
    with pytest.raises(ValueError, match="unmapped"):
        MappingConfig(unmapped="maybe")  # type: ignore[arg-type]
