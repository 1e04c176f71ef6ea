"""Keep duplicate images in one part of a split (issue 15; recipe field ``duplicate_grouping``).

A held-out image that is a copy of a training image lets a content model copy the training
image's tags, which inflates every content-based result (openclipart: merging byte-identical
copies moved a plain content kNN from 0.383 to 0.281 F1@5). The split runs before any feature
exists, so duplicates are found from the image files themselves:

* ``sha256``: byte-identical files (the ``images`` table's hash; free).
* ``dhash``: a 64-bit difference hash (Krawetz's dHash: the image in grey, resized to 9 x 8,
  one bit per horizontally adjacent pair saying whether brightness rises). Resizing,
  re-encoding and small colour changes keep the hash; different pictures almost never share
  it. An image with almost no horizontal structure (fewer than 8 or more than 56 of the 64
  bits set: a blank drawing, a flag of horizontal stripes) has a degenerate hash that unrelated
  images share, so it is never grouped. It decodes every image once (openclipart's 3,364
  drawings: under two minutes on two busy cores).

Photos sharing a key form a duplicate group. ``keep_duplicates_together`` moves every post of
a group that a split spread over several parts to train: moving a post to train never takes a
tag away from train, so the split's guarantee (every held-out user and tag occurs in train)
still holds. Under a predefined split (a benchmark's test list) test posts never move; a group
spanning train and test is then left as it is and counted in the notes.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Callable, Mapping

import numpy as np
import pandas as pd

from tagrec_models.preprocess.recipes import Recipe
from tagrec_models.preprocess.splits import PARTS, SplitResult

DUPLICATE_GROUPINGS = ("none", "sha256", "dhash")
MIN_SET_BITS = 8  # of 64: a hash with fewer (or fewer unset) bits is degenerate
Log = Callable[[str], None]


def difference_hash(path: str, size: int = 8) -> str:
    """dHash of the image at ``path`` as 16 hex digits ('' when the file does not decode).
    Transparent pixels count as white, as the features asset composites them."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            image.draft("L", (size * 8, size * 8))  # JPEG: decode at a reduced scale
            image = image.convert("RGBA")
            white = Image.new("RGBA", image.size, (255, 255, 255, 255))
            grey = Image.alpha_composite(white, image).convert("L")
            small = np.asarray(grey.resize((size + 1, size), Image.Resampling.LANCZOS), dtype=np.int16)
    except (OSError, ValueError):
        return ""
    bits = (small[:, 1:] > small[:, :-1]).ravel()
    if not MIN_SET_BITS * bits.size // 64 <= int(bits.sum()) <= bits.size - MIN_SET_BITS * bits.size // 64:
        return ""  # degenerate: no horizontal structure to tell images apart
    return f"{int(''.join('1' if b else '0' for b in bits), 2):0{size * size // 4}x}"


def duplicate_keys(images: pd.DataFrame, method: str, photo_ids=None, log: Log | None = None) -> dict[str, str]:
    """photo_id -> duplicate key (``method``: ``sha256`` or ``dhash``) for the ``images`` rows
    (``photo_id, path, sha256``) of ``photo_ids`` (all when None); photos without a key (no
    image, undecodable) get none and are never grouped."""
    say = log or (lambda message: None)
    if method not in DUPLICATE_GROUPINGS or method == "none":
        raise ValueError(f"duplicate grouping must be one of {DUPLICATE_GROUPINGS[1:]}, got {method!r}")
    rows = images.drop_duplicates("photo_id").astype({"photo_id": str})
    if photo_ids is not None:
        rows = rows[rows["photo_id"].isin({str(p) for p in photo_ids})]
    if method == "sha256":
        keys = dict(zip(rows["photo_id"], rows["sha256"].fillna("").astype(str)))
    else:
        say(f"duplicate grouping: dHash of {len(rows)} images")
        # Threads: PIL releases the GIL while it decodes, so this uses every core.
        with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
            hashes = list(pool.map(difference_hash, rows["path"].astype(str)))
        keys = dict(zip(rows["photo_id"], hashes))
    return {photo: key for photo, key in keys.items() if key}


def _stats(parts: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for part in PARTS:
        frame = parts[parts["part"] == part]
        rows.append({"part": part, "users": frame["user_id"].nunique(), "photos": frame["photo_id"].nunique(),
                     "posts": len(frame[["user_id", "photo_id"]].drop_duplicates()),
                     "tags": frame["tag"].nunique(), "assignments": len(frame)})
    return pd.DataFrame(rows).astype({c: "int64" for c in ("users", "photos", "posts", "tags", "assignments")})


def keep_duplicates_together(
    result: SplitResult, keys: Mapping[str, str], fixed_test: bool = False, log: Log | None = None,
) -> SplitResult:
    """``result`` with every duplicate group (photos sharing a key in ``keys``) in one part: a
    group spread over several parts goes whole to train (see the module docstring);
    ``fixed_test`` keeps test posts where they are (a predefined split)."""
    say = log or (lambda message: None)
    parts = result.parts.copy()
    parts["_key"] = parts["photo_id"].astype(str).map(keys)
    keyed = parts[parts["_key"].notna()]
    spread = keyed.groupby("_key")["part"].nunique()
    spread = set(spread[spread > 1].index)
    movable = parts["_key"].isin(spread) & (parts["part"] != "train")
    if fixed_test:
        movable &= parts["part"] != "test"
    moved_posts = len(parts.loc[movable, ["user_id", "photo_id"]].drop_duplicates())
    parts.loc[movable, "part"] = "train"
    still = parts[parts["_key"].isin(spread)].groupby("_key")["part"].nunique()
    left = int((still > 1).sum())
    notes = list(result.notes)
    notes.append(f"duplicate grouping: {len(spread)} duplicate group(s) spanned several parts; "
                 f"{moved_posts} held-out post(s) moved to train"
                 + (f"; {left} group(s) still span train and the predefined test part" if left else ""))
    say(notes[-1])
    order = {"train": 0, "val": 1, "test": 2}
    parts = parts.drop(columns="_key")
    parts = parts.assign(_o=parts["part"].map(order)).sort_values(
        ["_o", "user_id", "photo_id", "tag"], kind="stable").drop(columns="_o").reset_index(drop=True)
    return replace(result, parts=parts, stats=_stats(parts), notes=tuple(notes),
                   moved_to_train=result.moved_to_train + moved_posts)


def apply_duplicate_grouping(result: SplitResult, images: pd.DataFrame, recipe: Recipe,
                             log: Log | None = None) -> SplitResult:
    """The recipe's ``duplicate_grouping`` applied to a split (``result`` itself for ``none``)."""
    if recipe.duplicate_grouping == "none":
        return result
    keys = duplicate_keys(images, recipe.duplicate_grouping, result.parts["photo_id"].unique(), log=log)
    return keep_duplicates_together(result, keys, fixed_test=recipe.split == "predefined", log=log)
