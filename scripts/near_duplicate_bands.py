"""Contact sheets of held-out images and their nearest training image, one per cosine-distance
band: how ``NEAR_DUPLICATE_DISTANCE`` (``tagrec_models/evaluation/leakage.py``) was calibrated
(issue 15), repeatable on any dataset whose splits, images and ``cnn_embedding`` are
materialised in the data home.

    TAGREC_HOME=$PWD/data .venv/bin/python scripts/near_duplicate_bands.py openclipart [OUT_DIR]

Writes ``band_<lo>_<hi>.png`` (up to 10 pairs spread over each band) and prints how many
held-out images fall at or below each distance. Reads only.
"""

from __future__ import annotations

import pickle
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from tagrec_models.evaluation.leakage import contact_sheet, nearest_training_images
from tagrec_models.paths import DataHome

BANDS = ((0.0, 0.03), (0.03, 0.06), (0.06, 0.09), (0.09, 0.12), (0.12, 0.16), (0.16, 0.22))
CUTS = (0.01, 0.02, 0.03, 0.05, 0.07, 0.1, 0.15, 0.2)


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__)
        return 2
    dataset = argv[0]
    folder = DataHome.from_env().dataset_dir(dataset)
    out = Path(argv[1]) if len(argv) > 1 else Path(f"near_duplicate_bands_{dataset}")
    out.mkdir(parents=True, exist_ok=True)
    with (folder / "objects" / "cnn_embedding.pkl").open("rb") as handle:
        embedding = pickle.load(handle)
    parts = {p: pd.read_parquet(folder / "tables" / f"{p}.parquet")["photo_id"] for p in ("train", "val", "test")}
    images = pd.read_parquet(folder / "tables" / "images.parquet")
    path_of = dict(zip(images["photo_id"].astype(str), images["path"].astype(str)))
    nearest = nearest_training_images(embedding.load(mmap=True), list(embedding.photo_ids), parts).nearest
    print(f"{dataset}: {len(nearest)} held-out images; at or below each distance:")
    for cut in CUTS:
        print(f"  {cut:.2f}: {int((nearest['distance'] <= cut).sum())}")
    for low, high in BANDS:
        band = nearest[(nearest["distance"] > low) & (nearest["distance"] <= high)]
        shown = band.iloc[np.linspace(0, len(band) - 1, min(10, len(band))).astype(int)] if len(band) else band
        (out / f"band_{low:.2f}_{high:.2f}.png").write_bytes(contact_sheet(shown, path_of))
    print(f"contact sheets in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
