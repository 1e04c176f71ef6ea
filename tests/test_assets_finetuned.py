"""The fine-tuned embedding end to end on real Corel5k files: the asset materialises from the
splits with tiny settings, its blocking checks pass (no validation or test image trained the
network), and ``tagrec suggest``'s featuriser re-embeds a stored photo as the asset did."""

from __future__ import annotations

import shutil
from pathlib import Path

import dagster as dg
import numpy as np
import pytest
import scipy.io

from assets.datasets import COREL5K
from assets.factory import dataset_assets
from assets.io_manager import TagrecIOManager
from assets.resources import DataHomeResource, FlickrResource
from tagrec_models.features.extraction import ExtractionConfig
from tagrec_models.features.finetune import load_network
from tagrec_models.features.finetuned import NETWORK_FILE
from tagrec_models.features.images import LoadConfig
from tagrec_models.features.single import NewImageFeatures, agreement

TINY = {"backbone": "efficientnet_lite0", "epochs": 1, "train_size": 64, "batch_size": 8, "device": "cpu",
        "max_side": 96}


def small_corel5k(root: Path, source: Path, n_train: int, n_test: int) -> Path:
    """The real layout cut down to the first ``n_train`` / ``n_test`` images of each part."""
    root.mkdir()
    shutil.copyfile(source / "corel5k_words.txt", root / "corel5k_words.txt")
    for part, key, n in (("train", "annot1", n_train), ("test", "annot2", n_test)):
        ids = (source / f"corel5k_{part}_list.txt").read_text().split()[:n]
        (root / f"corel5k_{part}_list.txt").write_text("\n".join(ids) + "\n")
        lines = (source / f"corel5k_{part}_tags.tsv").read_text().splitlines()[: n + 1]
        (root / f"corel5k_{part}_tags.tsv").write_text("\n".join(lines) + "\n")
        scipy.io.savemat(root / f"corel5k_{part}_annot.mat",
                         {key: scipy.io.loadmat(source / f"corel5k_{part}_annot.mat")[key][:n]})
        for pid in ids:
            (root / pid).parent.mkdir(exist_ok=True)
            shutil.copyfile(source / f"{pid}.jpeg", root / f"{pid}.jpeg")
    return root


@pytest.fixture(scope="module")
def materialised(tmp_path_factory, corel5k_dir):
    base = tmp_path_factory.mktemp("finetuned")
    folder = small_corel5k(base / "corel5k", corel5k_dir, n_train=40, n_test=8)
    home = base / "home"
    target = dg.AssetKey(["corel5k", "cnn_finetuned"])
    result = dg.materialize(
        dataset_assets(COREL5K),
        selection=dg.AssetSelection.assets(target).upstream().required_multi_asset_neighbors(),
        resources={"io_manager": TagrecIOManager(root=str(home)), "data_home": DataHomeResource(root=str(home)),
                   "flickr": FlickrResource()},
        run_config={"ops": {"corel5k__ingest": {"config": {"folder": str(folder)}},
                            "corel5k__cnn_finetuned": {"config": TINY}}},
    )
    return result, target


def test_the_asset_materialises_and_its_blocking_checks_pass(materialised):
    result, target = materialised
    assert result.success
    checks = {e.check_name: e for e in result.get_asset_check_evaluations() if e.asset_key == target}
    assert set(checks) == {"finite", "one_row_per_image", "labels_from_train_only"}
    assert all(check.passed for check in checks.values())
    leak = checks["labels_from_train_only"].metadata
    assert leak["held_out_images_trained_on"].value == 0
    assert 0 < leak["trained_images"].value < 40  # validation was carved out of the 40 train images
    handle = result.output_for_node("corel5k__cnn_finetuned")
    assert handle.shape == (48, 1280 + 112 + 192)
    assert Path(handle.path).with_name(NETWORK_FILE).exists()


def test_suggest_reembeds_a_stored_photo_as_the_asset_did(materialised):
    _, _ = materialised
    handle = materialised[0].output_for_node("corel5k__cnn_finetuned")
    stored = np.load(handle.path)
    network, config, max_side = load_network(Path(handle.path).with_name(NETWORK_FILE))
    assert (config.backbone, config.epochs, max_side) == ("efficientnet_lite0", 1, 96)
    images = materialised[0].output_for_node("corel5k__ingest", "images").drop_duplicates("photo_id")
    path = images.set_index("photo_id").loc[handle.photo_ids[0], "path"]
    # the features run's settings (Lite2 on Corel5k): the featuriser decodes for the tuned Lite0 instead
    featuriser = NewImageFeatures(ExtractionConfig(backbone="efficientnet_lite2", load=LoadConfig(max_side=320)),
                                  ["cnn_finetuned"], finetuned=network.backbone, finetuned_max_side=max_side)
    row = featuriser.compute([path]).features["cnn_finetuned"][0]
    assert agreement("cnn_finetuned", row, stored[0]) > 0.999
