"""From ingest tables to tag assignments, the input of preprocessing.

An assignment is one ``(user_id, photo_id, tag)``: the photo's owner, the photo, and one of
its cleaned tags (``photo_tags.tag``; rows whose tag cleaning dropped are left out). A photo
whose image is broken is left out too, because every model of the three papers needs pixels.
Sources without owners (Corel5k) give a null ``user_id``.
"""

from __future__ import annotations

import duckdb
import pandas as pd

from tagrec_models.sources.tables import IMAGE_OK, IngestError


def assignments_from_ingest(
    photos: pd.DataFrame,
    photo_tags: pd.DataFrame,
    images: pd.DataFrame | None = None,
    require_image: bool = True,
) -> pd.DataFrame:
    """``user_id, photo_id, tag`` rows, deduplicated and sorted, computed in DuckDB SQL."""
    for name, frame, columns in (
        ("photos", photos, ("photo_id", "owner")),
        ("photo_tags", photo_tags, ("photo_id", "tag")),
    ):
        missing = [c for c in columns if c not in frame.columns]
        if missing:
            raise IngestError(f"{name} lacks column(s) {missing}")
    con = duckdb.connect()
    try:
        con.register("photos_in", photos[["photo_id", "owner"]])
        con.register("tags_in", photo_tags[["photo_id", "tag"]])
        image_filter = ""
        if require_image:
            if images is None:
                raise IngestError("assignments need the images table when require_image is set")
            con.register("images_in", images[["photo_id", "status"]])
            image_filter = (
                "SEMI JOIN (SELECT photo_id FROM images_in WHERE status = "
                f"'{IMAGE_OK}') AS ok USING (photo_id)"
            )
        frame = con.execute(
            f"""
            SELECT DISTINCT CAST(p.owner AS VARCHAR) AS user_id,
                   CAST(t.photo_id AS VARCHAR) AS photo_id,
                   CAST(t.tag AS VARCHAR) AS tag
            FROM tags_in AS t
            JOIN photos_in AS p USING (photo_id)
            {image_filter}
            WHERE t.tag IS NOT NULL AND t.tag <> ''
            ORDER BY ALL
            """
        ).df()
    finally:
        con.close()
    return frame.astype("string")
