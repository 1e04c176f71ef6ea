"""Preprocessing recipes: the paper-1 dataset rules as typed, frozen configs, and the presets.

Paper 1 (Nguyen et al., *Personalized Deep Learning for Tag Recommendation*, section 4.1)
builds its two datasets with the same handful of rules:

* NUS-WIDE: keep images annotated with the 100 most popular tags, sample 1,000 users, refine
  to the 10-core of users and tags ("each user or tag occurs at least in 10 posts", after
  Jaeschke et al. [6]), and remove the tags a user put on more than 50 percent of their images;
  2 test posts per user.
* Flickr-PTR: map every tag to WordNet, refine to the 40-core of users and the 400-core of
  tags, sample 500 users, remove the 50-percent tags; 20 percent of each user's posts for test.

A ``Recipe`` holds those rules as fields so that one recipe applies to any source. The order
in which ``preprocess`` applies them is fixed and documented there (WordNet -> top-N tags ->
user sample -> tag-share rule -> p-core to a fixed point), because the paper's prose lists
them in different orders for its two datasets and only one order guarantees the core property
of the result.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Literal


class RecipeError(ValueError):
    """A recipe whose fields contradict each other or lie out of range; names the field."""


@dataclass(frozen=True)
class Recipe:
    """One preprocessing + splitting recipe (paper 1, section 4.1).

    Filtering (applied by ``tagrec_models.preprocess.filtering.preprocess``):

    * ``name``: shown in errors, notes and metadata.
    * ``wordnet``: replace each tag by its WordNet form from a mapping relation (paper 1,
      Flickr-PTR: "mapping all tags to WordNet [13]"); the mapping comes from the vocabulary
      stage, column ``wordnet_column`` (``"lemma"`` by default, ``"synset"`` also works).
    * ``wordnet_column``: which column of the mapping holds the WordNet form.
    * ``keep_unmapped``: with ``wordnet``, keep a tag WordNet does not know under its cleaned
      form (True) or drop it (False, the paper's "all tags mapped to WordNet").
    * ``top_n_tags``: keep only the N most popular tags, popularity = number of posts carrying
      the tag (ties broken by tag, ascending), counted before the user sample, as the paper
      ("images annotated by the 100 most popular tags" of the whole collection). ``None``: all.
    * ``n_users``: a seeded sample of this many users (``None``: all users). The sample is the
      ``n_users`` users with the smallest ``md5(f"{seed}:{user_id}")``, so it is the same on
      every run, machine and DuckDB version.
    * ``sample_eligible_only``: sample only among users who, after the top-N step, have at least
      ``core_users`` posts. The p-core can only remove posts, so a user with fewer can never
      survive it; sampling such users would only shrink the result (paper 1's NUS-WIDE keeps
      exactly the 1,000 sampled users in its Table 1, which suggests the same).
    * ``max_user_tag_share``: drop a (user, tag) pair, i.e. the tag from every post of that
      user, where the tag is on *more than* this share of the user's images (paper 1: 0.5, "to
      avoid the case that users tag all their images by the same words"). ``None``: off.
    * ``core_users``: a user keeps at least this many distinct posts (paper 1: 10 / 40).
    * ``core_tags``: a tag occurs in at least this many posts (paper 1: 10 / 400; as the
      paper's "each user or tag occurs at least in k posts"; posts are deduplicated, so this
      is also the tag's number of assignments). 1 and 1 mean no core.
    * ``min_users`` / ``min_tags``: when the p-core leaves fewer users or tags than this (or
      nothing), the core sizes are scaled down (see ``core_levels``) and a note says so.
    * ``scale_down``: allow that scaling; False makes an empty core an error instead.
    * ``scale_step``: each scaling level multiplies both core sizes by this (rounded up).
    * ``min_core``: the smallest core size scaling goes down to.

    Splitting (``tagrec_models.preprocess.splits``):

    * ``split``: ``"per_user"`` (leave-posts-out per user, paper 1 section 4.1 after [11]) or
      ``"predefined"`` (a source's own test list, e.g. Corel5k's 499 test images).
    * ``test_posts`` / ``test_fraction``: per user, this many posts or this share of posts go
      to test (exactly one of them for ``per_user``). Paper 1: 2 (NUS-WIDE), 0.2 (Flickr-PTR).
    * ``val_posts`` / ``val_fraction``: validation, carved the same way from each user's train
      posts left after test (for ``predefined``: ``val_fraction`` of the train images). At most
      one; neither means no validation part.
    * ``fraction_rounding``: how a share becomes a post count per user: ``"floor"`` (default;
      paper 1's Flickr-PTR has 19.6 percent test posts, which floor reproduces and rounding
      overshoots) or ``"round"`` (half up, so a user with 3 posts still gets one test post at
      0.2).
    * ``seed``: drives the user sample and the splits.
    * ``duplicate_grouping``: keep duplicate images in one part (issue 15; see
      ``tagrec_models.preprocess.duplicates``): ``"none"`` (default; the split as above),
      ``"sha256"`` (byte-identical files) or ``"dhash"`` (a perceptual difference hash that
      survives resizing and re-encoding). A duplicate group the split spread over several parts
      goes whole to train (a predefined test part stays as published).
    """

    name: str = "custom"
    wordnet: bool = False
    wordnet_column: str = "lemma"
    keep_unmapped: bool = True
    top_n_tags: int | None = None
    n_users: int | None = None
    sample_eligible_only: bool = True
    max_user_tag_share: float | None = None
    core_users: int = 1
    core_tags: int = 1
    min_users: int = 10
    min_tags: int = 10
    scale_down: bool = True
    scale_step: float = 0.5
    min_core: int = 2
    split: Literal["per_user", "predefined"] = "per_user"
    test_posts: int | None = None
    test_fraction: float | None = None
    val_posts: int | None = None
    val_fraction: float | None = None
    fraction_rounding: Literal["floor", "round"] = "floor"
    seed: int = 0
    duplicate_grouping: Literal["none", "sha256", "dhash"] = "none"

    def __post_init__(self) -> None:
        def fail(field_name: str, why: str) -> None:
            raise RecipeError(
                f"recipe {self.name!r}: {field_name}={getattr(self, field_name)!r} {why}"
            )

        for name in ("top_n_tags", "n_users"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                fail(name, "must be a positive integer or None")
        for name in ("core_users", "core_tags", "min_core"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                fail(name, "must be an integer >= 1")
        for name in ("min_users", "min_tags"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                fail(name, "must be an integer >= 0")
        if self.max_user_tag_share is not None and not 0 < self.max_user_tag_share <= 1:
            fail("max_user_tag_share", "must lie in (0, 1] or be None")
        if not 0 < self.scale_step < 1:
            fail("scale_step", "must lie in (0, 1)")
        if self.split not in ("per_user", "predefined"):
            fail("split", "must be 'per_user' or 'predefined'")
        if self.fraction_rounding not in ("floor", "round"):
            fail("fraction_rounding", "must be 'floor' or 'round'")
        for name in ("test_posts", "val_posts"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 0):
                fail(name, "must be an integer >= 0 or None")
        for name in ("test_fraction", "val_fraction"):
            value = getattr(self, name)
            if value is not None and not 0 < value < 1:
                fail(name, "must lie in (0, 1) or be None")
        if self.val_posts is not None and self.val_fraction is not None:
            fail("val_posts", "and val_fraction are both set; choose one")
        if self.split == "per_user":
            if (self.test_posts is None) == (self.test_fraction is None):
                fail("test_posts", "and test_fraction: a per-user split needs exactly one")
        else:
            if self.test_posts is not None or self.test_fraction is not None:
                fail("test_posts", "and test_fraction must be None for a predefined split")
            if self.val_posts is not None:
                fail("val_posts", "is per user; a predefined split takes val_fraction")
        if not self.wordnet_column:
            fail("wordnet_column", "must name a column")
        if self.duplicate_grouping not in ("none", "sha256", "dhash"):
            fail("duplicate_grouping", "must be 'none', 'sha256' or 'dhash'")

    # -- derived ----------------------------------------------------------------------------
    @property
    def has_core(self) -> bool:
        return self.core_users > 1 or self.core_tags > 1

    @property
    def needs_users(self) -> bool:
        """Whether filtering looks at users at all (a source without users cannot use it)."""
        return (
            self.n_users is not None
            or self.max_user_tag_share is not None
            or self.core_users > 1
        )

    def core_levels(self) -> list[tuple[int, int]]:
        """The (users, tags) core sizes tried in order: the recipe's own, then each scaled by
        ``scale_step`` (rounded up, never under ``min_core``), until both reach ``min_core``.

        Both sizes shrink by the same factor, so a 40/400 recipe keeps its 1:10 ratio
        (40/400 -> 20/200 -> 10/100 -> 5/50 -> 3/25 -> ...). A size already at or under
        ``min_core`` stays as it is.
        """
        levels = [(self.core_users, self.core_tags)]
        if not self.scale_down:
            return levels
        factor = 1.0
        while True:
            factor *= self.scale_step
            users = _scaled(self.core_users, factor, self.min_core)
            tags = _scaled(self.core_tags, factor, self.min_core)
            if (users, tags) == levels[-1]:
                break
            levels.append((users, tags))
        return levels

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _scaled(size: int, factor: float, floor: int) -> int:
    if size <= floor:
        return size
    # ceil without float noise: 40 * 0.25 must give 10, not 11.
    scaled = -(-round(size * factor * 1e9) // int(1e9))
    return max(floor, int(scaled))


PROFILES: dict[str, Recipe] = {
    # Paper 1, NUS-WIDE: 100 most popular tags, 1,000 users, 10-core users and tags, the 50%
    # rule, 2 test posts per user. Validation mirrors the test rule (2 posts per user, carved
    # from train); the paper tunes on no separate part, we never tune on test.
    "nuswide": Recipe(
        name="nuswide",
        top_n_tags=100,
        n_users=1000,
        max_user_tag_share=0.5,
        core_users=10,
        core_tags=10,
        test_posts=2,
        val_posts=2,
    ),
    # Paper 1, Flickr-PTR: WordNet mapping (unmapped tags dropped), 500 users, the 50% rule,
    # 40-core users / 400-core tags, 20% of each user's posts for test; validation 20% of the
    # remaining train posts (mirrors the test rule).
    "flickr_ptr": Recipe(
        name="flickr_ptr",
        wordnet=True,
        keep_unmapped=False,
        n_users=500,
        max_user_tag_share=0.5,
        core_users=40,
        core_tags=400,
        test_fraction=0.2,
        val_fraction=0.2,
    ),
    # The embedded default (openclipart): paper-1 rules without a top-N cut or a user sample,
    # a 5-core (the corpus is far smaller than NUS-WIDE), 2 test and 2 validation posts per
    # user.
    "openclipart_default": Recipe(
        name="openclipart_default",
        max_user_tag_share=0.5,
        core_users=5,
        core_tags=5,
        test_posts=2,
        val_posts=2,
    ),
    # Corel5k: no filtering (the benchmark's 260 words and 4,500 / 499 images as published),
    # the predefined test list, validation = 10% of the train images (seeded).
    "corel5k_standard": Recipe(
        name="corel5k_standard",
        split="predefined",
        val_fraction=0.1,
        min_users=0,
        min_tags=0,
    ),
}


def recipe_for(profile: str, **overrides: Any) -> Recipe:
    """The preset ``profile`` with ``overrides`` applied (e.g. a dataset's own seed)."""
    if profile not in PROFILES:
        raise RecipeError(f"unknown recipe profile {profile!r}; known: {sorted(PROFILES)}")
    known = {f.name for f in fields(Recipe)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise RecipeError(
            f"recipe {profile!r}: unknown field(s) {unknown}; fields: {sorted(known)}"
        )
    return replace(PROFILES[profile], **overrides)
