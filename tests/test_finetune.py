"""Fine-tuning the backbone on training labels (tagrec_models.features.finetune, issue 13)."""

import numpy as np
import pytest
import torch

from tagrec_models.features.backbone import load_backbone
from tagrec_models.features.finetune import FineTuneConfig, embed, fine_tune, random_resized_crops

SMALL = dict(backbone="efficientnet_lite0", embedding_stages=("stage5", "stage6"), train_size=64,
             batch_size=8, device="cpu")


def colour_images(n: int, side: int = 64, seed: int = 0) -> tuple[torch.Tensor, np.ndarray]:
    """Noisy images, half mostly red (tag 0), half mostly blue (tag 1)."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 80, size=(n, 3, side, side), dtype=np.uint8)
    labels = np.zeros((n, 2), dtype=np.float32)
    for i in range(n):
        channel = 0 if i % 2 == 0 else 2
        pixels[i, channel] += 170
        labels[i, i % 2] = 1.0
    return torch.from_numpy(pixels), labels


def test_training_learns_which_colour_carries_which_tag():
    pixels, labels = colour_images(32)
    model, history = fine_tune(pixels, labels, FineTuneConfig(**SMALL, epochs=6, lr=0.05, frozen_stages=5))
    assert history[-1] < history[0]
    _, logits = embed(model, pixels, device="cpu")
    red, blue = labels[:, 0] == 1, labels[:, 1] == 1
    assert logits[red, 0].mean() > logits[blue, 0].mean()
    assert logits[blue, 1].mean() > logits[red, 1].mean()


def test_frozen_stages_and_batch_norm_statistics_keep_imagenet_values():
    pixels, labels = colour_images(16)
    model, _ = fine_tune(pixels, labels, FineTuneConfig(**SMALL, epochs=1, frozen_stages=3))
    fresh = load_backbone("efficientnet_lite0").model.state_dict()
    tuned = model.backbone.model.state_dict()
    for name, value in tuned.items():
        if name.startswith(("conv_stem", "bn1", "blocks.0.", "blocks.1.", "blocks.2.")) or "running_" in name:
            assert torch.equal(value, fresh[name]), name
    changed = [n for n in tuned if n.startswith("blocks.6.") and not torch.equal(tuned[n], fresh[n])]
    assert changed, "the last stage did not train"


def test_with_the_pretrained_layers_at_rate_zero_the_embedding_is_the_features_asset_one():
    pixels, labels = colour_images(8)
    model, _ = fine_tune(pixels, labels, FineTuneConfig(**SMALL, epochs=1, backbone_lr=0.0))
    embedding, logits = embed(model, pixels, device="cpu")
    frozen = load_backbone("efficientnet_lite0", embedding_stages=("stage5", "stage6"))
    with torch.no_grad():
        expected = frozen(pixels).embedding.numpy()
    assert embedding.shape == (8, 1280 + 112 + 192) and logits.shape == (8, 2)
    np.testing.assert_allclose(embedding, expected, atol=1e-5)


def test_each_epoch_logs_its_loss_time_and_throughput():
    pixels, labels = colour_images(8)
    lines: list[str] = []
    _, history = fine_tune(pixels, labels, FineTuneConfig(**SMALL, epochs=2), log=lines.append)
    epochs = [line for line in lines if "images/s" in line]
    assert [line.split(":")[0] for line in epochs] == ["fine-tune epoch 1/2", "fine-tune epoch 2/2"]
    assert all("(cpu, float32)" in line for line in epochs)
    assert f"mean loss {history[1]:.3f}" in epochs[1]


def test_the_same_seed_gives_the_same_network():
    pixels, labels = colour_images(8)
    config = FineTuneConfig(**SMALL, epochs=1, seed=3)
    first = embed(fine_tune(pixels, labels, config)[0], pixels, device="cpu")[0]
    second = embed(fine_tune(pixels, labels, config)[0], pixels, device="cpu")[0]
    np.testing.assert_allclose(first, second, atol=1e-6)


def test_random_resized_crops_are_seeded():
    pixels, _ = colour_images(4, side=40)
    crops = random_resized_crops(pixels, 24, (0.3, 0.6), torch.Generator().manual_seed(0))
    again = random_resized_crops(pixels, 24, (0.3, 0.6), torch.Generator().manual_seed(0))
    other = random_resized_crops(pixels, 24, (0.3, 0.6), torch.Generator().manual_seed(1))
    assert crops.shape == (4, 3, 24, 24) and crops.dtype == torch.uint8
    assert torch.equal(crops, again) and not torch.equal(crops, other)


@pytest.mark.parametrize("field, value", [("epochs", 0), ("frozen_stages", 8), ("crop_scale", (0.5, 0.2)),
                                          ("dropout", 1.0), ("train_size", 16)])
def test_a_bad_setting_is_named(field, value):
    with pytest.raises(ValueError, match=field):
        FineTuneConfig(**{**SMALL, field: value})


def test_an_unknown_stage_or_backbone_is_refused():
    with pytest.raises(KeyError, match="stage9"):
        FineTuneConfig(**{**SMALL, "embedding_stages": ("stage9",)})
    with pytest.raises(KeyError):
        FineTuneConfig(**{**SMALL, "backbone": "resnet_9000"})


def test_bad_training_input_is_refused_with_its_name():
    pixels, labels = colour_images(4)
    with pytest.raises(ValueError, match="uint8"):
        fine_tune(pixels.float(), labels, FineTuneConfig(**SMALL))
    with pytest.raises(ValueError, match="4 images but 3 label rows"):
        fine_tune(pixels, labels[:3], FineTuneConfig(**SMALL))
    with pytest.raises(ValueError, match="no training image carries a tag"):
        fine_tune(pixels, np.zeros_like(labels), FineTuneConfig(**SMALL))


def test_the_dataset_embedding_skips_broken_and_untagged_images_and_saves_the_network(tmp_path):
    from PIL import Image
    from scipy import sparse

    from tagrec_models.features.finetune import load_network
    from tagrec_models.features.finetuned import fine_tuned_embedding

    pixels, labels = colour_images(6)
    paths = []
    for i, image in enumerate(pixels.permute(0, 2, 3, 1).numpy()):
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(image).save(paths[-1])
    paths[1].write_bytes(b"not an image")  # broken
    labels[2] = 0.0  # no tag
    config = FineTuneConfig(**SMALL, epochs=1)
    result = fine_tuned_embedding([str(p) for p in paths], sparse.csr_matrix(labels), np.array([0, 1, 2, 3, 4]),
                                  config, tmp_path / "out", max_side=64)
    assert result.trained_rows.tolist() == [0, 3, 4]  # 5 is not a training image
    assert result.broken_rows.tolist() == [1]
    embedding = np.load(result.embedding_path)
    assert embedding.shape == (6, 1280 + 112 + 192) and not embedding[1].any() and embedding[5].any()
    network, saved, max_side = load_network(result.network_path)
    assert saved == config and max_side == 64
    again, _ = embed(network, pixels[[0]], device="cpu")
    assert again.shape == (1, embedding.shape[1])


def test_the_dataset_embedding_names_a_dataset_with_nothing_to_train_on(tmp_path):
    from scipy import sparse

    from tagrec_models.features.finetuned import fine_tuned_embedding

    (tmp_path / "a.png").write_bytes(b"broken")
    with pytest.raises(ValueError, match="no training image with a tag decodes"):
        fine_tuned_embedding([str(tmp_path / "a.png")], sparse.csr_matrix(np.ones((1, 2))), np.array([0]),
                             FineTuneConfig(**SMALL, epochs=1), tmp_path / "out", max_side=64)
