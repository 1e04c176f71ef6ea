"""Guards the pretrained backbone: the packaged EfficientNet-Lite0 (and Lite2) weights load into
timm's tf_efficientnet_lite0 (lite2) and classify real Corel5k photos sensibly, the embedding is
the pooled head map (flip-averaged or concatenated with stage means when asked), stages have the documented shapes, backbones are swappable by name, CPU and CUDA
agree (when CUDA is present), and the device plan refuses CUDA where there is none."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from tagrec_models.features.backbone import (
    EFFICIENTNET_LITE0,
    BackboneSpec,
    available_backbones,
    get_backbone_spec,
    load_backbone,
    load_state_dict_by_order,
    register_backbone,
)
from tagrec_models.features.device import DeviceConfig, resolve_runtime
from tagrec_models.features.extraction import ExtractionConfig, cnn_input, extract_features, load_features

# Corel5k photo -> ImageNet classes any sensible classifier puts first (their tags in brackets).
COREL_CLASSES = {
    "108000/108000": {"tiger, Panthera tigris", "tiger cat"},  # water reflection cat tiger
    "100000/100000": {"ice bear, polar bear, Ursus Maritimus, Thalarctos maritimus"},  # bear polar snow
    "173000/173067": {"killer whale, killer, orca, grampus, sea wolf, Orcinus orca", "grey whale, gray whale, devilfish, Eschrichtius gibbosus, Eschrichtius robustus"},  # water whales
    "21000/21000": {"racer, race car, racing car", "sports car, sport car", "go-kart"},  # cars tracks formula
    "182000/182001": {"steam locomotive", "electric locomotive", "passenger car, coach, carriage"},  # train tracks locomotive
    "130000/130038": {"zebra"},  # grass plane herd zebra
    "12000/12013": {"coral reef"},  # coral fish ocean reefs
    "10000/10002": {"warplane, military plane", "airliner", "wing"},  # jet plane runway
}


@pytest.fixture(scope="module")
def lite0():
    return load_backbone("efficientnet_lite0", stages=("stage1", "stage4", "stage7", "head"), grid=7).eval()


def test_packaged_weights_classify_corel_photos(lite0, corel5k_dir):
    import timm

    info = timm.data.ImageNetInfo()
    pixels = [cnn_input(Image.open(corel5k_dir / f"{image}.jpeg").convert("RGB"), 224) for image in COREL_CLASSES]
    with torch.inference_mode():
        probabilities = lite0(torch.from_numpy(np.stack(pixels)), with_logits=True).logits.softmax(dim=-1)
    top1 = [info.index_to_description(int(i)) for i in probabilities.argmax(dim=-1)]
    for (image, expected), got, p in zip(COREL_CLASSES.items(), top1, probabilities.max(dim=-1).values):
        assert got in expected, f"{image}: top-1 {got!r} ({float(p):.2f}), expected one of {expected}"


def test_logits_equal_the_plain_timm_forward_and_embedding_is_the_pooled_head(lite0):
    # one small image keeps this cheap: at 128 px stage 1 is 64 x 64 (pooled to the 7 x 7
    # grid) and the head is 4 x 4 (smaller than the grid: kept, never upsampled)
    x = torch.randint(0, 256, (1, 3, 128, 128), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        out = lite0(x, with_logits=True)
        plain = lite0.model(x.float() / 127.5 - 1.0)  # mean = std = 0.5
    torch.testing.assert_close(out.logits, plain, rtol=1e-4, atol=1e-4)
    assert out.embedding.shape == (1, 1280)
    torch.testing.assert_close(out.stages["head"].mean(dim=(2, 3)), out.embedding, rtol=1e-5, atol=1e-5)
    assert {k: tuple(v.shape) for k, v in out.stages.items()} == {
        "stage1": (1, 16, 7, 7),
        "stage4": (1, 80, 7, 7),
        "stage7": (1, 320, 4, 4),
        "head": (1, 1280, 4, 4),
    }


def test_weights_that_do_not_fit_are_refused():
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    good = {f"x{i}": v.clone() for i, v in enumerate(model.state_dict().values())}
    load_state_dict_by_order(model, good, source="good")
    bad = dict(good)
    bad["x2"] = torch.zeros(3, 4)
    with pytest.raises(ValueError, match=r"x2 \(3, 4\) does not fit 1.weight \(2, 4\)"):
        load_state_dict_by_order(model, bad, source="bad.pth")
    with pytest.raises(ValueError, match="3 tensors but the model has 4"):
        load_state_dict_by_order(model, dict(list(good.items())[:3]), source="short.pth")


def test_unknown_names_are_clear_errors():
    with pytest.raises(KeyError, match="efficientnet_lite0"):
        get_backbone_spec("alexnet")
    with pytest.raises(KeyError, match="no stage 'conv5'"):
        EFFICIENTNET_LITE0.channels("conv5")
    with pytest.raises(KeyError, match="no stage"):
        ExtractionConfig(stages=("conv5",))


def _seeded_resnet10t() -> torch.nn.Module:
    import timm

    torch.manual_seed(0)
    return timm.create_model("resnet10t", pretrained=False).eval()


def test_a_second_backbone_is_swappable_by_name(tmp_path):
    spec = register_backbone(
        BackboneSpec(
            name="test_resnet10t_random",
            build=_seeded_resnet10t,
            stages=("s1", "s2", "s3", "s4", "s5"),
            stage_channels=(64, 64, 128, 256, 512),
            embedding_dim=512,
            input_size=64,
            mean=(0.485, 0.456, 0.406),
            std=(0.229, 0.224, 0.225),
            description="random-init ResNet-10t, for tests only",
        ),
        replace=True,
    )
    assert "test_resnet10t_random" in available_backbones()
    paths = []
    for i, colour in enumerate([(200, 10, 10), (10, 200, 10), (10, 10, 200)]):
        paths.append(tmp_path / f"{i}.png")
        Image.new("RGB", (50, 40), colour).save(paths[-1])
    config = ExtractionConfig(
        backbone=spec.name, stages=("s3", "s5"), grid=4, lowlevel=False, patch_sizes=(), device=DeviceConfig(device="cpu", num_workers=0)
    )
    result = extract_features(paths, tmp_path / "out", config)
    # at 64 px: s3 is 8 x 8, pooled to 4 x 4; s5 is 2 x 2, kept (never upsampled)
    assert result.shapes == {"cnn": (3, 512), "local_s3": (3, 16, 128), "local_s5": (3, 4, 512)}
    cnn = load_features(tmp_path / "out", ["cnn"])["cnn"]
    np.testing.assert_allclose(cnn, np.load(result.files["local_s5"]).astype(np.float32).mean(axis=1), rtol=2e-3, atol=2e-3)


def test_cuda_is_refused_where_there_is_none():
    if torch.cuda.is_available():
        pytest.skip("CUDA is present")
    with pytest.raises(RuntimeError, match="CUDA is not available"):
        resolve_runtime(DeviceConfig(device="cuda"))
    runtime = resolve_runtime(DeviceConfig())
    assert runtime.device.type == "cpu" and runtime.amp_dtype is None and runtime.batch_size == 32


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cpu_and_cuda_features_agree(tmp_path, openclipart_sample):
    paths = sorted((openclipart_sample / "png").rglob("*.png"))[:24]
    results = {}
    for device in ("cpu", "cuda"):
        config = ExtractionConfig(stages=("stage4", "stage7"), patch_sizes=(50,), device=DeviceConfig(device=device, batch_size=8))
        results[device] = extract_features(paths, tmp_path / device, config)
    cpu, gpu = (r.files for r in (results["cpu"], results["cuda"]))
    for name in ("ch64", "cm225", "patches_50"):  # computed by the same CPU code in the workers
        np.testing.assert_array_equal(np.load(cpu[name]), np.load(gpu[name]))
    a, b = np.load(cpu["cnn"]), np.load(gpu["cnn"])  # float32 against bfloat16 autocast
    cosine = (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    assert cosine.min() > 0.99, cosine.min()
    for name in ("local_stage4", "local_stage7"):
        x, y = np.load(cpu[name]).astype(np.float32), np.load(gpu[name]).astype(np.float32)
        assert np.linalg.norm(x - y) / np.linalg.norm(x) < 0.05, name


# -- issue 13: Lite2, flip averaging, multi-stage embedding ----------------------------------------
@pytest.mark.parametrize("name, size, channels", [
    ("efficientnet_lite1", 240, (16, 24, 40, 80, 112, 192, 320)),
    ("efficientnet_lite2", 260, (16, 24, 48, 88, 120, 208, 352)),
])
def test_larger_lite_loads_its_weights_and_classifies_a_tiger(corel5k_dir, name, size, channels):
    spec = get_backbone_spec(name)
    assert spec.input_size == size and spec.stage_channels == channels
    from timm.data import ImageNetInfo

    backbone = load_backbone(name).eval()
    # every stage map has the declared channel count (a wrong spec would mislabel VLAD inputs)
    with torch.inference_mode():
        shapes = load_backbone(name, stages=spec.stages, grid=1)(torch.zeros(1, 3, size, size, dtype=torch.uint8)).stages
    assert tuple(shapes[s].shape[1] for s in spec.stages) == channels
    image = Image.open(corel5k_dir / "108000/108000.jpeg").convert("RGB")
    x = torch.from_numpy(cnn_input(image, spec.input_size))[None]
    with torch.inference_mode():
        logits = backbone(x, with_logits=True).logits
    top = ImageNetInfo().index_to_description(int(logits.argmax()))
    assert top in COREL_CLASSES["108000/108000"]


def test_flip_averages_the_two_views_and_a_mirror_symmetric_image_is_unchanged():
    plain = load_backbone("efficientnet_lite0").eval()
    flipped = load_backbone("efficientnet_lite0", flip=True).eval()
    rng = np.random.default_rng(0)
    half = rng.integers(0, 256, size=(1, 3, 224, 112), dtype=np.uint8)
    symmetric = torch.from_numpy(np.concatenate([half, half[..., ::-1]], axis=-1).copy())
    asymmetric = torch.from_numpy(rng.integers(0, 256, size=(1, 3, 224, 224), dtype=np.uint8))
    with torch.inference_mode():
        torch.testing.assert_close(flipped(symmetric).embedding, plain(symmetric).embedding, rtol=1e-4, atol=1e-4)
        both = (plain(asymmetric).embedding + plain(torch.flip(asymmetric, dims=(-1,))).embedding) / 2
        torch.testing.assert_close(flipped(asymmetric).embedding, both, rtol=1e-4, atol=1e-4)


def test_multi_stage_embedding_is_unit_blocks_of_pooled_and_stage_means():
    backbone = load_backbone("efficientnet_lite0", stages=("stage6",), grid=1, embedding_stages=("stage6",)).eval()
    assert backbone.embedding_dim == 1280 + 192
    x = torch.from_numpy(np.random.default_rng(1).integers(0, 256, size=(2, 3, 224, 224), dtype=np.uint8))
    with torch.inference_mode():
        out = backbone(x)
    head, mid = out.embedding[:, :1280], out.embedding[:, 1280:]
    # each block is the L2-normalised part divided by sqrt(2 blocks)
    torch.testing.assert_close(head.norm(dim=1), torch.full((2,), 2 ** -0.5), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(head * 2 ** 0.5, torch.nn.functional.normalize(out.pooled, dim=1), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(mid * 2 ** 0.5, torch.nn.functional.normalize(out.stages["stage6"].flatten(1), dim=1), rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="head"):
        ExtractionConfig(embedding_stages=("head",))
