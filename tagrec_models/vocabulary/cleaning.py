"""Tag cleaning: one function that every source and every split uses, so train and test tags are
cleaned the same way (DESIGN.md, "Evaluation protocol": tags lower-cased and cleaned the same way
in train and test).

The papers say only that tags are lower-cased (paper 1, section 4.1 works on Flickr tags "as
users typed them"; the Flickr-PTR and NUS-WIDE recipes it follows lower-case and drop noise).
The rules below are the careful choice for user tags from Flickr and openclipart, applied in
this order:

1. HTML entities are decoded (openclipart has ``&eacute;toile``; Flickr's ``raw`` tags can hold
   ``&amp;``), then the text is Unicode-normalised with NFKC (full-width letters, ligatures and
   compatibility forms become their plain equivalents, so ``ｄｏｇ`` and ``dog`` are one tag).
2. Lower-cased (``str.lower``, not ``casefold``: ``casefold`` turns ``ß`` into ``ss`` and would
   merge words a German user keeps apart).
3. Runs of whitespace and underscores inside the tag become one space (``ice_cream``,
   ``ice  cream`` and ``ice cream`` are one tag; the WordNet mapping turns the space back into
   WordNet's underscore).
4. Punctuation (Unicode categories ``P*``), whitespace and control characters are stripped at
   both ends (``#sunset``, ``"dog"`` and ``sky.`` become ``sunset``, ``dog``, ``sky``); inside the
   tag they stay (``t-shirt``, ``rock'n'roll``). Symbols (``S*``) stay, so ``c++`` survives.
5. Dropped (``None``): an empty result, a tag without any letter (pure numbers such as ``2007``,
   dates such as ``2007-01-02``, ``:-)``), a tag shorter than ``min_length`` characters (one
   letter carries no meaning as a tag) and a tag longer than ``max_length`` characters (such
   "tags" are sentences or pasted junk, not labels).
"""

from __future__ import annotations

import html
import re
import unicodedata
from dataclasses import dataclass

import pandas as pd

_INNER_SPACE = re.compile(r"[\s_]+")


@dataclass(frozen=True)
class CleaningConfig:
    """The cleaning thresholds. ``min_length``/``max_length`` count characters after cleaning;
    the defaults keep every real word (two letters: ``tv``, ``uk``) and drop sentences (Flickr
    allows very long tags; 40 characters hold any real multi-word label we saw)."""

    min_length: int = 2
    max_length: int = 40

    def __post_init__(self) -> None:
        if self.min_length < 1:
            raise ValueError(f"CleaningConfig.min_length must be >= 1, got {self.min_length}")
        if self.max_length < self.min_length:
            raise ValueError(
                f"CleaningConfig.max_length ({self.max_length}) must be >= min_length "
                f"({self.min_length})"
            )


DEFAULT_CLEANING = CleaningConfig()


def _is_edge_junk(char: str) -> bool:
    category = unicodedata.category(char)
    return category[0] in "PZ" or category == "Cc" or char.isspace()


def clean_tag(raw: str, config: CleaningConfig = DEFAULT_CLEANING) -> str | None:
    """Clean one raw tag by the rules of this module's docstring; ``None`` when it is dropped.

    ``raw`` must be a string: anything else (``None``, a number) is a ``TypeError`` naming the
    value, because a non-string here means a source produced a malformed tag column.
    """
    if not isinstance(raw, str):
        raise TypeError(f"clean_tag expects a str, got {type(raw).__name__}: {raw!r}")
    text = unicodedata.normalize("NFKC", html.unescape(raw)).lower()
    text = _INNER_SPACE.sub(" ", text)
    start, end = 0, len(text)
    while start < end and _is_edge_junk(text[start]):
        start += 1
    while end > start and _is_edge_junk(text[end - 1]):
        end -= 1
    text = text[start:end]
    if not any(ch.isalpha() for ch in text):
        return None
    if len(text) < config.min_length or len(text) > config.max_length:
        return None
    return text


def clean_tags(raw: pd.Series, config: CleaningConfig = DEFAULT_CLEANING) -> pd.Series:
    """``clean_tag`` over a Series of raw tags; returns a ``string`` Series (``<NA>`` where a tag
    is dropped or the input is missing) with the same index.

    Tags repeat heavily (a few thousand distinct tags over millions of assignments), so each
    distinct value is cleaned once and the result mapped back.
    """
    if not isinstance(raw, pd.Series):
        raise TypeError(f"clean_tags expects a pandas Series, got {type(raw).__name__}")
    values = raw.astype("string")
    distinct = values.dropna().unique()
    cleaned = {value: clean_tag(str(value), config) for value in distinct}
    return values.map(cleaned, na_action="ignore").astype("string")
