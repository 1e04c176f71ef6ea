"""Guards the paper-3 models on real Corel5k images (fixture ``corel5k_dir``): on the images of
a few CD folders, with real colour histograms (fast) and the real CNN embedding (slow), every
model must clearly beat the most-popular baseline, and DCCA's common space must generalise."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from tagrec_models.crossmodal.ccs import ccs_curve
from tagrec_models.data import Posts, SideInfo, TrainingData, Vocabulary
from tagrec_models.evaluation.metrics import metrics_at_k
from tagrec_models.features.lowlevel import ch64
from tagrec_models.recommenders import get_recommender

CDS = ("1000", "101000", "108000", "113000", "119000", "12000")


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """Small tensors: on a shared 2-core machine thread hand-offs cost more than the arithmetic."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def subset(root: Path) -> tuple[TrainingData, Posts, Vocabulary]:
    """The train and test images of six CD folders, as posts of one pseudo-user."""
    frames = []
    for part in ("train", "test"):
        tsv = pd.read_csv(root / f"corel5k_{part}_tags.tsv", sep="\t", dtype=str, keep_default_na=False)
        tsv = tsv[tsv["image"].str.split("/").str[0].isin(CDS)]
        rows = [(img, tag) for img, words in zip(tsv["image"], tsv["tags"]) for tag in words.split()]
        frames.append(pd.DataFrame(rows, columns=["photo_id", "tag"]).assign(user_id="corel5k"))
    vocab = Vocabulary.from_assignments(*frames)
    train, test = (Posts.from_assignments(f, vocab) for f in frames)
    return TrainingData(train=train), test, vocab


def images(root: Path, vocab: Vocabulary) -> list[Image.Image]:
    return [Image.open(root / f"{photo}.jpeg").convert("RGB") for photo in vocab.images]


def f1_at_5(model, test: Posts, side: SideInfo) -> float:
    return float(metrics_at_k(model.score(test, side), test.tags, 5).f1[4])


FAST = {
    "jec": {"features": ("ch64",), "distances": ("l1", "kl")},
    "two_pknn": {"features": ("ch64",), "distances": ("l1", "kl"), "k1": 3, "beta": 2.0},
    "tagprop": {"features": ("ch64",), "distances": ("l1", "kl"), "k": 30, "steps": 40},
}


def test_models_beat_most_popular_on_real_colour_histograms(corel5k_dir):
    data, test, vocab = subset(corel5k_dir)
    assert data.train.n_posts > 450 and test.n_posts > 45
    side = SideInfo(features={"ch64": np.stack([ch64(im) for im in images(corel5k_dir, vocab)])})
    data = TrainingData(train=data.train, side=side)
    baseline = f1_at_5(get_recommender("mp")().fit(data), test, side)
    for name, overrides in FAST.items():
        cls = get_recommender(name)
        score = f1_at_5(cls(cls.Config(**overrides)).fit(data), test, side)
        assert score > baseline + 0.05, f"{name}: F1@5 {score:.3f} against MP {baseline:.3f}"


SLOW = {
    "cca": {"ae_epochs": 30, "n_words": 40, "k": 20, "temperature": 0.1},
    "kcca": {"ae_epochs": 30, "n_words": 40, "k": 20, "temperature": 0.1, "n_landmarks": 500, "n_components": 30},
    "dcca": {"ae_epochs": 30, "n_words": 40, "k": 20, "temperature": 0.1, "hidden_v": (256,), "hidden_s": (256,),
             "out_dim": 20, "dcca_epochs": 40, "dcca_batch_size": 400},
    "cca_knn": {"k": 20, "temperature": 0.1, "pca_dim": 128},
    "jec": {},
    "two_pknn": {},
    "tagprop": {"k": 100, "steps": 150},
}


@pytest.mark.slow
def test_every_model_on_the_real_cnn_embedding(corel5k_dir):
    from tagrec_models.features.backbone import load_backbone
    from tagrec_models.features.extraction import cnn_input

    data, test, vocab = subset(corel5k_dir)
    backbone = load_backbone("efficientnet_lite0")
    pixels = np.stack([cnn_input(im, 224) for im in images(corel5k_dir, vocab)])
    with torch.no_grad():
        cnn = torch.cat([backbone(torch.from_numpy(pixels[s : s + 32])).embedding for s in range(0, len(pixels), 32)])
    side = SideInfo(features={"cnn": cnn.numpy().astype(np.float32)})
    data = TrainingData(train=data.train, side=side)
    baseline = f1_at_5(get_recommender("mp")().fit(data), test, side)
    for name, overrides in SLOW.items():
        cls = get_recommender(name)
        model = cls(cls.Config(**overrides)).fit(data)
        score = f1_at_5(model, test, side)
        assert score > baseline + 0.15, f"{name}: F1@5 {score:.3f} against MP {baseline:.3f}"
        if name == "dcca":
            images_z, annotations_z = model.common_space(test, side)
            assert ccs_curve(images_z, annotations_z)[0] > 0.5
