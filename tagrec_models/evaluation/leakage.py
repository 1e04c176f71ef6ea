"""Leakage guards (issue 15): how much of a held-out result the groups or near-duplicate images
give away before any model is trained.

* **Groups that spell the answer.** Paper 2 (Liu Zheng et al. 2020, section 4.1.2, eq. 4)
  scores neighbours by the Jaccard overlap of their user groups, assuming groups a user picks
  at upload (its Flickr pools, section 5). Where a group is a folder a curator derived from the
  tags (openclipart's category paths, ``education/books`` for a drawing tagged ``book``), a
  held-out post's group names its tags outright, which is closer to a label than to side
  information. ``groups_spell_tags`` finds every held-out (validation and test) tag assignment
  whose tag, or its WordNet lemma, is a token of one of the post's group ids or names (tokens:
  runs of letters, lower-cased; a token matches the word itself or its plural/singular).
* **Near-duplicate images across parts.** A held-out image that is a resized or re-exported copy
  of a training image lets any content model copy the training image's tags.
  ``nearest_training_images`` finds each validation/test image's nearest training image by
  cosine distance of L2-normalised CNN embeddings; ``contact_sheet`` renders the closest pairs
  side by side so a reader can see what the threshold calls a duplicate.

Nothing here knows about Dagster or about recommenders; the asset checks in ``assets/leakage.py``
and the leaderboard read these.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from tagrec_models.bundle import ANONYMOUS_USER, SplitBundle

HELD_OUT_PARTS = ("val", "test")

# Calibrated by eye (issue 15) on contact sheets of each held-out image and its nearest training
# image, in distance bands, with the features asset's embedding (EfficientNet-Lite0, squash 224):
# * copies made on purpose: a 264 px drawing resized to 60 or 90 percent (PNG) sits at 0.015 to
#   0.021 from its original, saved as JPEG q85 at 90 percent at 0.024 (at 60 percent JPEG
#   ringing on thin lines moves it to 0.068); unrelated drawings are 0.67 to 0.78 apart;
# * openclipart (132 val + 132 test images): the 7 pairs at or below 0.03 are all one drawing
#   (identical symbol, icon, flower, clock; a mirrored corner ornament, one card in two suits);
#   of the 11 in (0.03, 0.05] seven are one drawing redrawn, recoloured or retouched (the US
#   flag, two people, an LED, a bee, an apple with a worm added, a mirrored ornament) and four
#   are one template with other content (three pairs of tricolour flags, two road signs); above
#   0.05 such template pairs are most of them (flags, road signs, hazard signs), with a few
#   recolours up to 0.09;
# * Corel5k (499 test images against the 4,500 training ones): no pair at or below 0.05 (the
#   closest, 0.050, is two different sunsets); from 0.057 to 0.085 frames of one shoot (the same
#   horses or tiger a moment later) and look-alike sunsets, which are not copies.
# So 0.05: nearly everything it flags is the same picture (14 of 18 openclipart pairs, the rest
# look-alike flags and signs), and it misses only heavily re-encoded copies and a few recolours.
# The sheets per band: scripts/near_duplicate_bands.py.
NEAR_DUPLICATE_DISTANCE = 0.05

_NON_LETTERS = re.compile(r"[^a-z]+")


# -- groups that spell the tags ---------------------------------------------------------------
def tokens(text: str) -> list[str]:
    """Lower-cased runs of letters: ``"Signs and symbols / Flags"`` -> signs, and, symbols,
    flags; ``"computer/icons/etiquette-theme"`` -> computer, icons, etiquette, theme."""
    return [t for t in _NON_LETTERS.split(str(text).lower()) if t]


def number_forms(word: str) -> set[str]:
    """The word with its English plural or singular: ``book`` -> book, books, bookes;
    ``berry`` -> berry, berries; ``boxes`` -> boxes, boxe, box. Generous on purpose: a spurious
    form only matters if a group token happens to equal it."""
    forms = {word, word + "s", word + "es"}
    if word.endswith("y"):
        forms.add(word[:-1] + "ies")
    if word.endswith("ies"):
        forms.add(word[:-3] + "y")
    if word.endswith("es"):
        forms.add(word[:-2])
    if word.endswith("s") and len(word) > 1:
        forms.add(word[:-1])
    return forms


def tag_lemmas(tag_mapping: pd.DataFrame | None) -> dict[str, set[str]]:
    """Tag -> the other WordNet spellings it stands for, from the vocabulary's ``tag_mapping``
    (``tag``, ``lemma``): a cleaned tag gets its lemma (``activities`` -> activity), and a lemma
    (the split tag under a WordNet recipe) the cleaned tags mapped to it."""
    if tag_mapping is None or tag_mapping.empty or "lemma" not in tag_mapping.columns:
        return {}
    pairs = tag_mapping[["tag", "lemma"]].dropna().astype(str).drop_duplicates()
    pairs = pairs[pairs["tag"] != pairs["lemma"]]
    out: dict[str, set[str]] = {}
    for tag, lemma in pairs.itertuples(index=False):
        out.setdefault(tag, set()).add(lemma)
        out.setdefault(lemma, set()).add(tag)
    return out


def spelling_token(tag: str, group_tokens: Sequence[str], lemmas: Mapping[str, set[str]]) -> str | None:
    """The spelling of ``tag`` (itself or a lemma, in singular or plural) that ``group_tokens``
    contain, or None. A tag of several words (``new york``) must occur as consecutive tokens."""
    present = set(group_tokens)
    joined = " " + " ".join(group_tokens) + " "
    for spelling in (tag, *sorted(lemmas.get(tag, ()))):
        words = tokens(spelling)
        if not words:
            continue
        if len(words) == 1:
            hit = number_forms(words[0]) & present
            if hit:
                return sorted(hit)[0]
        else:
            for last in sorted(number_forms(words[-1])):
                phrase = " ".join([*words[:-1], last])
                if f" {phrase} " in joined:
                    return phrase
    return None


@dataclass(frozen=True)
class GroupSpelling:
    """The held-out assignments and whether their post's groups spell the tag.

    ``assignments``: ``part, user_id, photo_id, tag, spelled, group_id, token`` (the first group
    of the post, by id, whose id or name spells the tag, and the token that does; empty when
    none does). ``memberships``: ``photo_id, group_id`` of the held-out photos."""

    assignments: pd.DataFrame
    memberships: pd.DataFrame

    def summary(self) -> pd.DataFrame:
        """One row per held-out part (and ``held_out``, both together): tag assignments, how many
        are spelled and the share; posts, how many have at least one spelled tag, and the share."""
        rows = []
        frames = [(part, self.assignments[self.assignments["part"] == part]) for part in HELD_OUT_PARTS]
        for part, frame in [*frames, ("held_out", self.assignments)]:
            posts = frame.groupby(["user_id", "photo_id"])["spelled"].any() if len(frame) else pd.Series(dtype=bool)
            rows.append({
                "part": part,
                "assignments": int(len(frame)),
                "spelled_assignments": int(frame["spelled"].sum()),
                "assignment_share": float(frame["spelled"].mean()) if len(frame) else 0.0,
                "posts": int(len(posts)),
                "posts_with_a_spelled_tag": int(posts.sum()),
                "post_share": float(posts.mean()) if len(posts) else 0.0,
            })
        return pd.DataFrame(rows)

    def share(self, part: str = "held_out") -> float:
        row = self.summary().set_index("part").loc[part]
        return float(row["assignment_share"])

    def examples(self, n: int = 8) -> pd.DataFrame:
        """The first ``n`` spelled held-out assignments (test first) with the spelling group."""
        spelled = self.assignments[self.assignments["spelled"]]
        spelled = spelled.sort_values(["part", "photo_id", "tag"], ascending=[False, True, True])
        return spelled[["part", "photo_id", "tag", "group_id", "token"]].head(n).reset_index(drop=True)

    def worst_groups(self, n: int = 10) -> pd.DataFrame:
        """Per group: the held-out tag assignments of its photos, how many of them a token of
        this group spells, and the share; the groups that spell the most first."""
        joined = self.assignments.merge(self.memberships, on="photo_id", suffixes=("_spelling", ""))
        if joined.empty:
            return pd.DataFrame(columns=["group_id", "held_out_assignments", "spelled_by_group", "share"])
        joined["by_this_group"] = joined["spelled"] & (joined["group_id_spelling"] == joined["group_id"])
        table = joined.groupby("group_id").agg(
            held_out_assignments=("tag", "size"), spelled_by_group=("by_this_group", "sum"))
        table["share"] = table["spelled_by_group"] / table["held_out_assignments"]
        table = table.reset_index().sort_values(
            ["spelled_by_group", "share", "group_id"], ascending=[False, False, True])
        return table.head(n).reset_index(drop=True)

    def spelled_posts(self, part: str = "test") -> set[tuple[str, str]]:
        """(user_id, photo_id) of the posts of ``part`` with at least one spelled tag (a null
        user is ``bundle.ANONYMOUS_USER``, as in the bundle)."""
        frame = self.assignments[(self.assignments["part"] == part) & self.assignments["spelled"]]
        users = frame["user_id"].astype("object").where(frame["user_id"].notna(), ANONYMOUS_USER)
        return set(zip(users.astype(str), frame["photo_id"].astype(str)))


def unspelled_test_rows(bundle: SplitBundle, spelling: GroupSpelling) -> np.ndarray:
    """Rows of ``bundle.test`` whose post has no tag its groups spell: the posts on which a
    group-aware model cannot simply read the answer off the group names."""
    spelled = spelling.spelled_posts("test")
    users, images = bundle.vocab.users, bundle.vocab.images
    keep = [(users[u], images[i]) not in spelled for u, i in zip(bundle.test.user, bundle.test.image)]
    return np.flatnonzero(np.asarray(keep, dtype=bool))


def groups_spell_tags(
    parts: Mapping[str, pd.DataFrame],
    photo_groups: pd.DataFrame,
    tag_mapping: pd.DataFrame | None = None,
) -> GroupSpelling:
    """For every validation and test assignment (``parts["val"]``, ``parts["test"]``: ``user_id,
    photo_id, tag``), whether one of the photo's groups (``photo_groups``: ``photo_id,
    group_id[, group_name]``) spells the tag (see ``spelling_token``; ``tag_mapping`` adds the
    WordNet lemma, see ``tag_lemmas``)."""
    lemmas = tag_lemmas(tag_mapping)
    held_out = pd.concat(
        [parts[p][["user_id", "photo_id", "tag"]].assign(part=p) for p in HELD_OUT_PARTS if p in parts],
        ignore_index=True,
    )
    held_out = held_out.astype({"photo_id": str, "tag": str})
    groups = photo_groups.astype({"photo_id": str, "group_id": str})
    groups = groups[groups["photo_id"].isin(set(held_out["photo_id"]))]
    names = groups["group_name"].fillna("").astype(str) if "group_name" in groups else ""
    groups = groups.assign(group_tokens=[tokens(g) + [" "] + tokens(n) for g, n in
                                          zip(groups["group_id"], names if len(groups) else [])])
    by_photo: dict[str, list[tuple[str, list[str]]]] = {}
    for photo, group, toks in sorted(zip(groups["photo_id"], groups["group_id"], groups["group_tokens"])):
        # The " " separator keeps a phrase from running across the id and the name.
        by_photo.setdefault(photo, []).append((group, toks))
    spelled, spelling_group, spelling = [], [], []
    for photo, tag in zip(held_out["photo_id"], held_out["tag"]):
        found = ("", "")
        for group, toks in by_photo.get(photo, ()):
            token = spelling_token(tag, toks, lemmas)
            if token is not None:
                found = (group, token)
                break
        spelled.append(bool(found[0]))
        spelling_group.append(found[0])
        spelling.append(found[1])
    held_out = held_out.assign(spelled=spelled, group_id=spelling_group, token=spelling)
    held_out = held_out[["part", "user_id", "photo_id", "tag", "spelled", "group_id", "token"]]
    return GroupSpelling(assignments=held_out.reset_index(drop=True),
                         memberships=groups[["photo_id", "group_id"]].drop_duplicates().reset_index(drop=True))


# -- near-duplicate images across parts ---------------------------------------------------------
@dataclass(frozen=True)
class NearDuplicates:
    """Each held-out image's nearest training image.

    ``nearest``: ``part, photo_id, train_photo_id, distance`` (cosine distance of the
    L2-normalised embeddings, 0 = same direction), closest first; ``threshold``: the distance
    at or below which a pair counts as a near duplicate."""

    nearest: pd.DataFrame
    threshold: float

    @property
    def flagged(self) -> pd.DataFrame:
        return self.nearest[self.nearest["distance"] <= self.threshold].reset_index(drop=True)

    def summary(self) -> pd.DataFrame:
        """Per held-out part (and ``held_out``): images, near duplicates of a training image, share."""
        rows = []
        frames = [(part, self.nearest[self.nearest["part"] == part]) for part in HELD_OUT_PARTS]
        for part, frame in [*frames, ("held_out", self.nearest)]:
            near = int((frame["distance"] <= self.threshold).sum())
            rows.append({"part": part, "images": int(len(frame)), "near_duplicates": near,
                         "share": near / len(frame) if len(frame) else 0.0})
        return pd.DataFrame(rows)

    def share(self, part: str = "held_out") -> float:
        return float(self.summary().set_index("part").loc[part, "share"])

    def count(self, part: str = "held_out") -> int:
        return int(self.summary().set_index("part").loc[part, "near_duplicates"])


def l2_normalised(embeddings: np.ndarray) -> np.ndarray:
    array = np.asarray(embeddings, dtype=np.float32)
    norms = np.linalg.norm(array, axis=1, keepdims=True)
    return array / np.maximum(norms, 1e-12)


def nearest_training_images(
    embeddings: np.ndarray,
    photo_ids: Sequence[str],
    parts: Mapping[str, Iterable[str]],
    threshold: float = NEAR_DUPLICATE_DISTANCE,
) -> NearDuplicates:
    """The nearest training image (cosine distance of L2-normalised ``embeddings``, row i =
    ``photo_ids[i]``) of every validation and test image (``parts``: part -> photo ids, with
    ``"train"``). A held-out photo that is itself a training photo (another user's post of the
    same image: paper 1's "all posts" scenario, measured apart by "new images") is not its own
    neighbour. Photos without an embedding row are left out."""
    row_of = {str(p): i for i, p in enumerate(photo_ids)}
    train = sorted({str(p) for p in parts.get("train", ()) if str(p) in row_of})
    columns = ["part", "photo_id", "train_photo_id", "distance"]
    held = [(part, sorted({str(p) for p in parts.get(part, ()) if str(p) in row_of})) for part in HELD_OUT_PARTS]
    if not train or not any(ids for _, ids in held):
        return NearDuplicates(pd.DataFrame(columns=columns).astype({"distance": float}), threshold)
    normalised = l2_normalised(embeddings)
    train_rows = np.array([row_of[p] for p in train])
    train_vectors = normalised[train_rows]
    train_index = {p: j for j, p in enumerate(train)}
    frames = []
    for part, ids in held:
        if not ids:
            continue
        similarity = normalised[[row_of[p] for p in ids]] @ train_vectors.T
        for i, p in enumerate(ids):
            if p in train_index:
                similarity[i, train_index[p]] = -np.inf
        best = np.argmax(similarity, axis=1)
        distance = 1.0 - similarity[np.arange(len(ids)), best]
        frames.append(pd.DataFrame({"part": part, "photo_id": ids,
                                    "train_photo_id": [train[j] for j in best],
                                    "distance": np.clip(distance.astype(np.float64), 0.0, 2.0)}))
    nearest = pd.concat(frames, ignore_index=True).sort_values(["distance", "photo_id"], kind="stable")
    return NearDuplicates(nearest.reset_index(drop=True)[columns], threshold)


def _thumbnail(path: str, side: int):
    from PIL import Image

    try:
        with Image.open(path) as image:
            image.draft("RGB", (side, side))  # JPEG decodes at a reduced scale: cheap on big photos
            image = image.convert("RGBA")
            background = Image.new("RGBA", image.size, (255, 255, 255, 255))
            image = Image.alpha_composite(background, image).convert("RGB")
            image.thumbnail((side, side))
            return image
    except (OSError, ValueError):
        return Image.new("RGB", (side, side), (200, 200, 200))  # unreadable: a grey square


def contact_sheet(
    pairs: pd.DataFrame,
    path_of: Mapping[str, str],
    side: int = 112,
    caption: str = "held-out | nearest training image, cosine distance",
) -> bytes:
    """A PNG with one row per pair (``photo_id``, ``train_photo_id``, ``distance``): the held-out
    image, its nearest training image, and the distance, thumbnails ``side`` pixels at most."""
    from PIL import Image, ImageDraw

    label_width, caption_height, gap = 150, 18, 6
    rows = list(pairs[["photo_id", "train_photo_id", "distance"]].itertuples(index=False))
    width = 2 * side + 3 * gap + label_width
    height = caption_height + max(1, len(rows)) * (side + gap) + gap
    sheet = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    draw.text((gap, 3), caption, fill=(0, 0, 0))
    if not rows:
        draw.text((gap, caption_height + gap), "no pair", fill=(0, 0, 0))
    for r, (held, train, distance) in enumerate(rows):
        top = caption_height + gap + r * (side + gap)
        for c, photo in enumerate((held, train)):
            thumb = _thumbnail(path_of.get(str(photo), ""), side)
            left = gap + c * (side + gap)
            sheet.paste(thumb, (left + (side - thumb.width) // 2, top + (side - thumb.height) // 2))
            draw.rectangle([left - 1, top - 1, left + side, top + side], outline=(180, 180, 180))
        text_left = 2 * side + 3 * gap
        draw.text((text_left, top + 4), f"d = {distance:.3f}", fill=(0, 0, 0))
        draw.text((text_left, top + 20), str(held)[-22:], fill=(90, 90, 90))
        draw.text((text_left, top + 34), str(train)[-22:], fill=(90, 90, 90))
    buffer = io.BytesIO()
    sheet.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()
