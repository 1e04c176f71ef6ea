"""The ingest tables every source produces (DESIGN.md, "Data flow and contracts", step 1).

* ``photos``: photo_id, owner, title, date_uploaded (UTC timestamp), url, license, source
* ``photo_tags``: photo_id, raw_tag (as the source gave it), tag (cleaned, see
  ``tagrec_models.vocabulary.cleaning``)
* ``photo_groups``: photo_id, group_id, group_name
* ``images``: photo_id, path (absolute), sha256, width, height, status (``ok`` or ``broken``),
  reason (why an image is broken; empty when ok)

``owner`` is null where a source has no users (Corel5k). Every id is a string.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

PHOTOS_COLUMNS = {
    "photo_id": "string",
    "owner": "string",
    "title": "string",
    "date_uploaded": "datetime64[ns, UTC]",
    "url": "string",
    "license": "string",
    "source": "string",
}
PHOTO_TAGS_COLUMNS = {"photo_id": "string", "raw_tag": "string", "tag": "string"}
PHOTO_GROUPS_COLUMNS = {"photo_id": "string", "group_id": "string", "group_name": "string"}
IMAGES_COLUMNS = {
    "photo_id": "string",
    "path": "string",
    "sha256": "string",
    "width": "Int64",
    "height": "Int64",
    "status": "string",
    "reason": "string",
}
IMAGE_OK = "ok"
IMAGE_BROKEN = "broken"


class IngestError(ValueError):
    """Input that a source cannot turn into ingest tables; the message names the input."""


def conform(frame: pd.DataFrame, columns: dict[str, str], table: str) -> pd.DataFrame:
    """Return ``frame`` with exactly ``columns`` in order and dtype; a missing column is an
    ``IngestError`` that names the table and the column."""
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise IngestError(f"table {table!r} lacks column(s) {missing}; has {list(frame.columns)}")
    out = frame[list(columns)].copy()
    for column, dtype in columns.items():
        if dtype.startswith("datetime64"):
            out[column] = pd.to_datetime(out[column], utc=True)
        else:
            out[column] = out[column].astype(dtype)
    return out.reset_index(drop=True)


@dataclass(frozen=True)
class IngestTables:
    photos: pd.DataFrame
    photo_tags: pd.DataFrame
    photo_groups: pd.DataFrame
    images: pd.DataFrame

    def __post_init__(self) -> None:
        object.__setattr__(self, "photos", conform(self.photos, PHOTOS_COLUMNS, "photos"))
        object.__setattr__(
            self, "photo_tags", conform(self.photo_tags, PHOTO_TAGS_COLUMNS, "photo_tags")
        )
        object.__setattr__(
            self, "photo_groups", conform(self.photo_groups, PHOTO_GROUPS_COLUMNS, "photo_groups")
        )
        object.__setattr__(self, "images", conform(self.images, IMAGES_COLUMNS, "images"))
        if self.photos["photo_id"].duplicated().any():
            dupes = self.photos.loc[self.photos["photo_id"].duplicated(), "photo_id"].head(5)
            raise IngestError(f"photos has duplicate photo_id values, e.g. {list(dupes)}")

    @staticmethod
    def empty_frame(columns: dict[str, str]) -> pd.DataFrame:
        return conform(pd.DataFrame({c: [] for c in columns}), columns, "empty")
