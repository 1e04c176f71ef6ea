"""WordNet 3.0 for nltk, installed offline, and the tag -> WordNet mapping.

Paper 1 (Nguyen et al., section 4.1) preprocesses Flickr-PTR "by mapping all tags to WordNet
[13]" and says no more. The careful reading, following the Flickr-PTR collection it cites
(McParlane et al. 2014), is: reduce each tag to its WordNet base form (lemma) and keep the tags
WordNet knows. Here that is split in two steps:

* ``map_tags`` builds the mapping table (``raw_tag, tag, lemma, synset``), one row per distinct
  raw tag: ``tag`` is the cleaned tag (``vocabulary.cleaning``), ``lemma`` its WordNet base form
  found by ``morphy`` (``dogs`` -> ``dog``, ``ran`` -> ``run``) and ``synset`` the first, most
  frequent, sense of that lemma in the first part of speech that knows it (``dog.n.01``).
* ``apply_mapping`` rewrites a ``photo_tags`` table through the mapping under a
  ``MappingConfig``: which form becomes the tag (lemma by default), and whether tags WordNet
  does not know are kept or dropped (the Flickr-PTR recipe drops them).

The nltk downloader cannot reach its host here, so ``install_wordnet`` builds
``<nltk_data>/corpora/wordnet`` from Debian's ``wordnet-base`` + ``wordnet-sense-index``
(``/usr/share/wordnet``): nltk refuses symlinks that leave its data folder, so the files are
real copies, and the ``lexnames`` file nltk reads at start (Debian does not ship it) is
generated from the ``lexnames(5WN)`` man page, or written from the WordNet 3.0 list below when
the man page is absent.

WordNet is one install for the whole machine, not one per data home: ``<nltk_data>`` defaults to
``paths.nltk_data_home()`` (the first writable folder on nltk's search path, ``~/nltk_data`` for
most users), and ``load_wordnet`` installs it there on first need when the Debian files are
present, so a fresh data home maps tags with no setup step. When they are missing, the error
names the one command that fixes it (``apt-get install ... wordnet-base wordnet-sense-index``).

Command line (used by ``scripts/setup_system.sh``)::

    python -m tagrec_models.vocabulary.wordnet [--nltk-data FOLDER]
"""

from __future__ import annotations

import argparse
import gzip
import os
import re
import shutil
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Literal

import pandas as pd

from tagrec_models.paths import nltk_data_home
from tagrec_models.storage.atomic import atomic_path
from tagrec_models.vocabulary.cleaning import DEFAULT_CLEANING, CleaningConfig, clean_tag

WORDNET_SOURCE = Path("/usr/share/wordnet")
LEXNAMES_MAN = Path("/usr/share/man/man5/lexnames.5WN.gz")
WORDNET_VERSION = "3.0"
# The check ENVIRONMENT.md names: the offset of dog.n.01 in WordNet 3.0's data.noun.
DOG_N_01_OFFSET = 2084071

# The files nltk's WordNetCorpusReader opens (all but lexnames come from Debian).
REQUIRED_FILES = (
    "data.adj",
    "data.adv",
    "data.noun",
    "data.verb",
    "index.adj",
    "index.adv",
    "index.noun",
    "index.verb",
    "adj.exc",
    "adv.exc",
    "noun.exc",
    "verb.exc",
    "index.sense",
)
OPTIONAL_FILES = ("cntlist.rev", "cntlist", "frames.vrb", "sentidx.vrb", "sents.vrb")

# WordNet 3.0's 45 lexicographer files, in file-number order (lexnames(5WN)); used when the man
# page is not installed. The syntactic category (1 noun, 2 verb, 3 adjective, 4 adverb) follows
# from the prefix.
LEXNAMES_30 = (
    "adj.all", "adj.pert", "adv.all", "noun.Tops", "noun.act", "noun.animal", "noun.artifact",
    "noun.attribute", "noun.body", "noun.cognition", "noun.communication", "noun.event",
    "noun.feeling", "noun.food", "noun.group", "noun.location", "noun.motive", "noun.object",
    "noun.person", "noun.phenomenon", "noun.plant", "noun.possession", "noun.process",
    "noun.quantity", "noun.relation", "noun.shape", "noun.state", "noun.substance",
    "noun.time", "verb.body", "verb.change", "verb.cognition", "verb.communication",
    "verb.competition", "verb.consumption", "verb.contact", "verb.creation", "verb.emotion",
    "verb.motion", "verb.perception", "verb.possession", "verb.social", "verb.stative",
    "verb.weather", "adj.ppl",
)  # fmt: skip
_LEX_CATEGORY = {"noun": 1, "verb": 2, "adj": 3, "adv": 4}
_LEXNAME_LINE = re.compile(r"^(\d{2})\t(\w+\.\w+)\s*\t")

MAPPING_COLUMNS = {"raw_tag": "string", "tag": "string", "lemma": "string", "synset": "string"}
POS_CODES = ("n", "v", "a", "r")


WORDNET_PACKAGES = ("wordnet-base", "wordnet-sense-index")


class WordNetSetupError(RuntimeError):
    """WordNet cannot be installed or loaded; the message names the path and the fix."""


def install_command() -> str:
    """The command that installs Debian's WordNet files, as this user types it."""
    command = "apt-get install -y --no-install-recommends " + " ".join(WORDNET_PACKAGES)
    return command if os.geteuid() == 0 else f"sudo {command}"


def _wordnet_dir(nltk_data: Path) -> Path:
    return Path(nltk_data) / "corpora" / "wordnet"


def lexnames_from_man(man_page: Path) -> list[str]:
    """The lexicographer file names, in file-number order, read from the gzipped
    ``lexnames(5WN)`` man page (its table lines are ``NN<TAB>name<TAB>contents``)."""
    names: dict[int, str] = {}
    with gzip.open(man_page, "rt", encoding="utf-8", errors="replace") as handle:
        for line in handle:
            match = _LEXNAME_LINE.match(line)
            if match:
                names[int(match.group(1))] = match.group(2)
    if sorted(names) != list(range(len(names))) or not names:
        raise WordNetSetupError(
            f"{man_page} does not hold a numbered lexnames table (found numbers {sorted(names)})"
        )
    return [names[i] for i in range(len(names))]


def lexnames_text(names: Iterable[str]) -> str:
    """The ``lexnames`` file as WordNet ships it: ``NN<TAB>name<TAB>category`` per line."""
    lines = []
    for number, name in enumerate(names):
        prefix = name.split(".", 1)[0]
        if prefix not in _LEX_CATEGORY:
            raise WordNetSetupError(f"lexicographer file name {name!r} has no known category")
        lines.append(f"{number:02d}\t{name}\t{_LEX_CATEGORY[prefix]}\n")
    return "".join(lines)


def _same_file(source: Path, target: Path) -> bool:
    if not target.is_file() or target.is_symlink() or target.stat().st_mode & 0o777 != 0o644:
        return False
    if source.stat().st_size != target.stat().st_size:
        return False
    with source.open("rb") as a, target.open("rb") as b:
        while True:
            chunk_a, chunk_b = a.read(1 << 20), b.read(1 << 20)
            if chunk_a != chunk_b:
                return False
            if not chunk_a:
                return True


def install_wordnet(
    nltk_data: Path,
    source: Path = WORDNET_SOURCE,
    lexnames_man: Path | None = LEXNAMES_MAN,
    log: Callable[[str], None] | None = None,
) -> Path:
    """Install WordNet 3.0 for nltk into ``<nltk_data>/corpora/wordnet`` and verify it.

    ``source`` is a WordNet database folder (Debian's ``/usr/share/wordnet``). Files are copied
    (real copies: nltk refuses symlinks that leave ``nltk_data``), each atomically and only when
    missing or different, so re-running is cheap and an interrupted run leaves no half file.
    ``lexnames`` is generated from ``lexnames_man`` when that man page exists, else written from
    ``LEXNAMES_30``. Returns the wordnet folder; raises ``WordNetSetupError`` naming the path
    when the source is incomplete or the installed copy fails the check (``dog.n.01`` at offset
    2084071, version 3.0).
    """
    say = log or (lambda _msg: None)
    source = Path(source)
    if not source.is_dir():
        raise WordNetSetupError(
            f"WordNet source folder {source} does not exist: install Debian's WordNet files with "
            f"`{install_command()}`"
        )
    missing = [name for name in REQUIRED_FILES if not (source / name).is_file()]
    if missing:
        raise WordNetSetupError(
            f"WordNet source folder {source} lacks {missing} (index.sense comes from the Debian "
            f"package wordnet-sense-index): `{install_command()}`"
        )
    target = _wordnet_dir(nltk_data)
    target.mkdir(parents=True, exist_ok=True)
    copied = 0
    for name in REQUIRED_FILES + OPTIONAL_FILES:
        src = source / name
        if not src.is_file():
            continue
        dst = target / name
        if dst.is_symlink():
            dst.unlink()
        if _same_file(src.resolve(), dst):
            continue
        with atomic_path(dst) as tmp:
            shutil.copyfile(src.resolve(), tmp)
            tmp.chmod(0o644)  # mkstemp makes 0600; other users' processes read WordNet too
        copied += 1
    if lexnames_man is not None and Path(lexnames_man).is_file():
        names = lexnames_from_man(Path(lexnames_man))
        origin = str(lexnames_man)
    else:
        names = list(LEXNAMES_30)
        origin = "the built-in WordNet 3.0 list"
    text = lexnames_text(names)
    lexnames = target / "lexnames"
    stale = not lexnames.is_file() or lexnames.is_symlink()
    if stale or lexnames.read_text() != text or lexnames.stat().st_mode & 0o777 != 0o644:
        with atomic_path(lexnames) as tmp:
            tmp.write_text(text)
            tmp.chmod(0o644)
        copied += 1
    say(f"WordNet: {copied} file(s) written to {target}; lexnames from {origin}")
    if copied:
        # A reader loaded before this install holds the old files' contents.
        _READERS.pop(str(Path(nltk_data).resolve()), None)
    verify_wordnet(nltk_data)
    say(f"WordNet: verified {target} (version {WORDNET_VERSION}, dog.n.01 offset ok)")
    return target


_READERS: dict[str, object] = {}


def _load(nltk_data: str):
    if nltk_data in _READERS:
        return _READERS[nltk_data]
    import nltk.data
    from nltk.corpus.reader.wordnet import WordNetCorpusReader

    # nltk 3.10 opens corpus files only under its data path (nltk.pathsec): authorise this
    # one data folder, the way nltk documents (appending to nltk.data.path), rather than
    # relaxing the check.
    if nltk_data not in nltk.data.path:
        nltk.data.path.append(nltk_data)
    with warnings.catch_warnings():
        # Without the Open Multilingual WordNet nltk warns that multilingual functions are
        # unavailable; only English lemmas are used here.
        warnings.filterwarnings("ignore", message=".*multilingual.*", category=UserWarning)
        reader = WordNetCorpusReader(str(_wordnet_dir(Path(nltk_data))), omw_reader=None)
    _READERS[nltk_data] = reader
    return reader


def _missing_files(nltk_data: Path) -> list[str]:
    folder = _wordnet_dir(nltk_data)
    return [name for name in REQUIRED_FILES + ("lexnames",) if not (folder / name).is_file()]


def load_wordnet(
    nltk_data: Path | None = None,
    source: Path = WORDNET_SOURCE,
    log: Callable[[str], None] | None = None,
):
    """nltk's ``WordNetCorpusReader`` over ``<nltk_data>/corpora/wordnet`` (cached per folder,
    loading takes a few seconds); ``nltk_data`` defaults to the machine-wide
    ``paths.nltk_data_home()``. A folder without WordNet gets it on first need from Debian's
    files in ``source`` (``install_wordnet``); without those files the ``WordNetSetupError``
    names the command that installs them. Reads the folder directly rather than through
    ``nltk.corpus.wordnet`` (whose lazy loader needs the multilingual corpus too); the folder
    is appended to ``nltk.data.path``, which nltk requires before it opens files there."""
    nltk_data = Path(nltk_data) if nltk_data is not None else nltk_data_home()
    missing = _missing_files(nltk_data)
    if missing:
        if not (Path(source) / "data.noun").is_file():
            raise WordNetSetupError(
                f"WordNet for nltk is not installed at {_wordnet_dir(nltk_data)} (missing {missing}), "
                f"and Debian's WordNet files it is built from are not at {source}. Install them: "
                f"`{install_command()}`; tagrec then copies them into {nltk_data} on first need "
                "(one install for the machine, shared by every data home)"
            )
        if log is not None:
            log(f"WordNet: first use, installing it for nltk into {nltk_data} (machine-wide)")
        install_wordnet(nltk_data, source, log=log)
    return _load(str(Path(nltk_data).resolve()))


def verify_wordnet(nltk_data: Path) -> None:
    """Raise ``WordNetSetupError`` unless the installed WordNet is 3.0 with ``dog.n.01`` at
    offset 2084071 (ENVIRONMENT.md's check)."""
    wn = load_wordnet(nltk_data)
    version = wn.get_version()
    offset = wn.synset("dog.n.01").offset()
    if version != WORDNET_VERSION or offset != DOG_N_01_OFFSET:
        raise WordNetSetupError(
            f"WordNet at {_wordnet_dir(nltk_data)} is version {version!r} with dog.n.01 at "
            f"offset {offset}; expected {WORDNET_VERSION!r} and {DOG_N_01_OFFSET}"
        )


@dataclass(frozen=True)
class MappingConfig:
    """How tags are mapped to WordNet and how the mapping is applied.

    * ``pos_order``: parts of speech tried in turn (``n`` noun, ``v`` verb, ``a`` adjective,
      ``r`` adverb); the first that knows the tag wins. Nouns first because image tags name
      what is in the picture; so ``running`` maps to ``running.n.01`` (the act), not
      ``run.v.01``; put ``v`` first to prefer verbs.
    * ``target``: what ``apply_mapping`` writes as the tag of a mapped tag: the ``lemma``
      (default: ``dogs`` and ``dog`` become one tag), the ``synset`` name (synonyms merge too:
      ``auto`` and ``car`` -> ``car.n.01``) or the cleaned ``tag`` unchanged.
    * ``unmapped``: ``keep`` a tag WordNet does not know under its cleaned form, or ``drop`` it
      (Flickr-PTR, paper 1 section 4.1, keeps only tags in WordNet).
    * ``cleaning``: the tag cleaning applied before mapping.
    """

    pos_order: tuple[str, ...] = POS_CODES
    target: Literal["lemma", "synset", "tag"] = "lemma"
    unmapped: Literal["keep", "drop"] = "keep"
    cleaning: CleaningConfig = DEFAULT_CLEANING

    def __post_init__(self) -> None:
        bad = [p for p in self.pos_order if p not in POS_CODES]
        if bad or not self.pos_order or len(set(self.pos_order)) != len(self.pos_order):
            raise ValueError(
                f"MappingConfig.pos_order must be distinct codes from {POS_CODES}, "
                f"got {self.pos_order}"
            )
        if self.target not in ("lemma", "synset", "tag"):
            raise ValueError(
                f"MappingConfig.target must be 'lemma', 'synset' or 'tag', got {self.target!r}"
            )
        if self.unmapped not in ("keep", "drop"):
            raise ValueError(
                f"MappingConfig.unmapped must be 'keep' or 'drop', got {self.unmapped!r}"
            )


def _candidate_forms(tag: str) -> list[str]:
    """WordNet spellings to try for a cleaned tag: words joined by ``_`` (WordNet's collocation
    form, ``ice cream`` -> ``ice_cream``), then, for hyphenated tags that WordNet does not list
    with the hyphen, the hyphen as a word break and the closed compound."""
    form = tag.replace(" ", "_")
    forms = [form]
    if "-" in form:
        forms += [form.replace("-", "_"), form.replace("-", "")]
    return list(dict.fromkeys(forms))


def lookup(wn, tag: str, pos_order: tuple[str, ...] = POS_CODES) -> tuple[str, str] | None:
    """``(lemma, synset name)`` for a cleaned tag, or ``None`` when WordNet does not know it.

    For each part of speech in ``pos_order`` and each candidate spelling, ``morphy`` gives the
    base form (exception lists first, then the detachment rules of WordNet's morphy(7WN)); the
    synset is the first sense of that lemma in that part of speech, which WordNet orders by
    tagged frequency in the sense-tagged corpora. The lemma is returned with spaces in place of
    WordNet's underscores, the tag convention of ``vocabulary.cleaning``.
    """
    for pos in pos_order:
        for form in _candidate_forms(tag):
            lemma = wn.morphy(form, pos)
            if lemma is None:
                continue
            synsets = wn.synsets(lemma, pos)
            # synsets() runs morphy again and may add senses of other base forms; the first
            # sense that lists this lemma is the lemma's most frequent one.
            for synset in synsets:
                if lemma in {name.lower() for name in synset.lemma_names()}:
                    return lemma.replace("_", " "), synset.name()
    return None


def map_tags(
    tags: Iterable[str],
    nltk_data: Path | None = None,
    config: MappingConfig = MappingConfig(),
    log: Callable[[str], None] | None = None,
) -> pd.DataFrame:
    """The WordNet mapping table for ``tags`` (raw tags as sources give them).

    One row per distinct raw tag, sorted by it, with columns ``raw_tag`` (as given), ``tag``
    (``clean_tag`` under ``config.cleaning``; null when cleaning drops the tag), ``lemma`` and
    ``synset`` (WordNet 3.0 base form and synset name such as ``dog.n.01``; null when WordNet
    does not know the tag). See ``lookup`` for the rules. A missing value among ``tags`` is a
    ``ValueError``. ``nltk_data``: where WordNet is (default: the machine-wide install, made on
    first need; see ``load_wordnet``).
    """
    say = log or (lambda _msg: None)
    raw = pd.Series(list(tags), dtype="object")
    if raw.isna().any():
        raise ValueError(f"map_tags: tags holds {int(raw.isna().sum())} missing value(s)")
    distinct = sorted(set(raw.astype(str)))
    wn = load_wordnet(nltk_data, log=say)
    rows = []
    by_tag: dict[str, tuple[str, str] | None] = {}
    for i, raw_tag in enumerate(distinct):
        tag = clean_tag(raw_tag, config.cleaning)
        found = None
        if tag is not None:
            if tag not in by_tag:
                by_tag[tag] = lookup(wn, tag, config.pos_order)
            found = by_tag[tag]
        rows.append((raw_tag, tag, *(found if found else (None, None))))
        if (i + 1) % 10_000 == 0:
            say(f"WordNet mapping: {i + 1:,}/{len(distinct):,} raw tags")
    frame = pd.DataFrame(rows, columns=list(MAPPING_COLUMNS))
    frame = frame.astype(MAPPING_COLUMNS)
    say(
        f"WordNet mapping: {len(frame):,} raw tags, {int(frame['tag'].notna().sum()):,} kept by "
        f"cleaning, {int(frame['synset'].notna().sum()):,} mapped to a synset"
    )
    return frame


def apply_mapping(
    photo_tags: pd.DataFrame, mapping: pd.DataFrame, config: MappingConfig = MappingConfig()
) -> pd.DataFrame:
    """Rewrite ``photo_tags`` (``photo_id, raw_tag, tag``) through a ``map_tags`` table.

    Each row's ``tag`` becomes ``config.target`` of its raw tag (the lemma, the synset name or the
    cleaned tag); a tag that WordNet does not know keeps its cleaned form when
    ``config.unmapped == 'keep'`` and is removed when ``'drop'``; rows whose tag cleaning
    dropped are removed. Two raw tags of one photo that map to one tag (``dog``, ``Dogs``) give
    one row, the first in raw-tag order. A raw tag absent from ``mapping`` is a ``ValueError``
    naming it, since it means the mapping is older than the tags.
    """
    for name, frame, columns in (
        ("photo_tags", photo_tags, ("photo_id", "raw_tag")),
        ("mapping", mapping, tuple(MAPPING_COLUMNS)),
    ):
        lacking = [c for c in columns if c not in frame.columns]
        if lacking:
            raise ValueError(f"apply_mapping: {name} lacks column(s) {lacking}")
    table = mapping.drop_duplicates("raw_tag").set_index("raw_tag")
    unknown = pd.Index(photo_tags["raw_tag"].dropna().unique()).difference(table.index)
    if len(unknown):
        raise ValueError(
            f"apply_mapping: {len(unknown)} raw tag(s) are not in the mapping, e.g. "
            f"{list(unknown[:5])}; rebuild the mapping from these tags"
        )
    out = photo_tags[["photo_id", "raw_tag"]].copy()
    cleaned = out["raw_tag"].map(table["tag"])
    mapped = out["raw_tag"].map(table[config.target]) if config.target != "tag" else cleaned
    synset = out["raw_tag"].map(table["synset"])
    if config.unmapped == "keep":
        final = mapped.where(synset.notna(), cleaned)
    else:
        final = mapped.where(synset.notna())
    out["tag"] = final.astype("string")
    out = out[out["tag"].notna()].sort_values(["photo_id", "raw_tag"], kind="stable")
    out = out.drop_duplicates(["photo_id", "tag"], keep="first")
    return out.astype({"photo_id": "string", "raw_tag": "string"}).reset_index(drop=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Install WordNet 3.0 for nltk (offline), machine-wide.")
    parser.add_argument("--nltk-data", type=Path, default=None,
                        help="the nltk data folder (default: the machine-wide one, paths.nltk_data_home())")
    parser.add_argument("--source", type=Path, default=WORDNET_SOURCE, help="WordNet database")
    parser.add_argument("--lexnames-man", type=Path, default=LEXNAMES_MAN)
    args = parser.parse_args(argv)
    try:
        nltk_data = args.nltk_data if args.nltk_data is not None else nltk_data_home()
        install_wordnet(nltk_data, args.source, args.lexnames_man, log=print)
    except (WordNetSetupError, PermissionError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
