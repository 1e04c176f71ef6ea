"""One pass over a dataset's image files: patches, CH-64, CM-225, the CNN embedding and the
per-stage local descriptors, written as ``.npy`` arrays plus an index table (issue 3).

Decoding overlaps compute: a torch ``DataLoader`` with worker processes reads, decodes and
sanitises each file (``images.load_rgb``), cuts the patches, computes the low-level features
and resizes the CNN input, ``prefetch_factor`` batches ahead, while the main process runs the
backbone on the previous batch. On CUDA the batch is pinned, copied asynchronously and run
under bfloat16 autocast; on the CPU in float32 with channels_last (``device.py``).

Files written in ``out_dir`` (each atomically, see ``storage.atomic``; rows follow ``paths``):

=========================  =========================================  ===========================
file                        array                                      SideInfo name
=========================  =========================================  ===========================
``index.parquet``           row, path, status, reason, width, height
``cnn.npy``                 float32 [n, embedding_dim] (pooled)        ``features["cnn"]``
``cnn_stages.npy``          float32 [n, embedding_dim + stage widths]  ``features["cnn_stages"]``
``ch64.npy``                float32 [n, 64]                            ``features["ch64"]``
``cm225.npy``               float32 [n, 225]                           ``features["cm225"]``
``patches_<d>.npy``         uint8 [n, 3, d, d, 3]                      ``patches``
``local_<stage>.npy``       float16 [n, g*g, C] (row-major positions)  input of ``vlad.py``
=========================  =========================================  ===========================

Local descriptors: a stage map is ``C x h x w`` (h = 112 for EfficientNet's stage 1 at 224
px). Storing every stage at full resolution for thousands of images would take tens of GB, so
each map larger than ``grid x grid`` is adaptive-average-pooled to ``grid x grid`` on the
device (a descriptor then summarises a (h/grid)^2 neighbourhood, like a larger receptive
field) and stored as float16. With ``grid = 7`` and the 7 stages of EfficientNet-Lite0
(784 channels in all) that is about 77 KB per image. Paper 2 keeps AlexNet's native
13 x 13 to 55 x 55 maps; ``grid`` is the config field that trades fidelity for space.

``cnn_stages.npy`` is written only with ``embedding_stages``: the pooled embedding followed by
the global mean of each of those stages (``backbone.compose_embedding``).

Broken images (``status == 'broken'``, see ``images.py``) keep their row, so every array has
exactly one row per path; their feature rows are all zeros and the index table says why.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from tagrec_models.features.backbone import BackboneOutput, FeatureBackbone, get_backbone_spec, load_backbone
from tagrec_models.features.device import DeviceConfig, Runtime, resolve_runtime
from tagrec_models.features.images import STATUS_BROKEN, STATUSES, LoadConfig, load_rgb, resample_filter
from tagrec_models.features.lowlevel import LowLevelConfig, lowlevel_features
from tagrec_models.features.patches import POSITIONS, PatchConfig, extract_patches
from tagrec_models.storage.atomic import atomic_path, write_parquet

Log = Callable[[str], None]

DEFAULT_STAGES = tuple(f"stage{i}" for i in range(1, 8))
RESIZE_MODES = ("squash", "centre_crop")


@dataclass(frozen=True)
class ExtractionConfig:
    """What one extraction pass computes and how.

    ``cnn_resize``: ``squash`` resizes the whole image to ``image_size x image_size`` (aspect
    not kept, nothing cut off: a tag can be about any part of the image); ``centre_crop``
    resizes the shorter side to ``image_size / crop_fraction`` and cuts the centre square
    (timm's ImageNet evaluation recipe; loses the borders of non-square images).
    """

    backbone: str = "efficientnet_lite0"
    cnn: bool = True
    """Compute the pooled embedding (``cnn.npy``), the stage descriptors and, with
    ``embedding_stages``, the multi-stage embedding (``cnn_stages.npy``)."""
    image_size: int | None = None
    """CNN input side in pixels; None: the backbone's native size (224)."""
    cnn_resize: str = "squash"
    crop_fraction: float = 0.875
    stages: tuple[str, ...] = DEFAULT_STAGES
    """Stages whose local descriptors are stored (``local_<stage>.npy``); may include ``head``."""
    grid: int = 7
    grid_pool: str = "avg"
    flip: bool = False
    """Average the embedding over the image and its horizontal mirror (test-time augmentation,
    twice the CNN cost; ``backbone.FeatureBackbone``). Measured on Corel5k validation by
    ``benchmarks/representations_corel5k.py``."""
    embedding_stages: tuple[str, ...] = ()
    """Stages whose globally averaged maps are concatenated to the pooled embedding in a second
    array, ``cnn_stages.npy`` (each block L2-normalised; signed, so not for the ``kl``
    distance); ``cnn.npy`` stays the pooled embedding. Empty: no ``cnn_stages.npy``."""
    lowlevel: bool = True
    lowlevel_config: LowLevelConfig = LowLevelConfig()
    patch_sizes: tuple[int, ...] = (75,)
    """Patch sides d (paper 1: 75 for NUS-WIDE, 50 for Flickr-PTR); empty for no patches."""
    patch_positions: tuple[str, ...] = POSITIONS
    resample: str = "bicubic"
    load: LoadConfig = LoadConfig()
    device: DeviceConfig = DeviceConfig()
    log_every_s: float = 15.0

    def __post_init__(self) -> None:
        spec = get_backbone_spec(self.backbone)
        for stage in self.stages + self.embedding_stages:
            spec.channels(stage)
        if "head" in self.embedding_stages:
            raise ValueError("ExtractionConfig.embedding_stages: 'head' is the pooled embedding already")
        if self.cnn_resize not in RESIZE_MODES:
            raise ValueError(f"ExtractionConfig.cnn_resize must be one of {RESIZE_MODES}, got {self.cnn_resize!r}")
        if not 0.0 < self.crop_fraction <= 1.0:
            raise ValueError(f"ExtractionConfig.crop_fraction must be in (0, 1], got {self.crop_fraction}")
        if self.image_size is not None and self.image_size < 32:
            raise ValueError(f"ExtractionConfig.image_size must be at least 32, got {self.image_size}")
        if self.grid < 1:
            raise ValueError(f"ExtractionConfig.grid must be positive, got {self.grid}")
        for size in self.patch_sizes:
            PatchConfig(size=size, positions=self.patch_positions, resample=self.resample)
        if len(set(self.patch_sizes)) != len(self.patch_sizes):
            raise ValueError(f"ExtractionConfig.patch_sizes has duplicates: {self.patch_sizes}")
        if not (self.cnn or self.lowlevel or self.patch_sizes):
            raise ValueError("ExtractionConfig computes nothing: enable cnn, lowlevel or patch_sizes")
        resample_filter(self.resample)

    @property
    def input_size(self) -> int:
        return self.image_size or get_backbone_spec(self.backbone).input_size


def cnn_input(image: Image.Image, size: int, mode: str = "squash", crop_fraction: float = 0.875, resample: str = "bicubic") -> np.ndarray:
    """The CNN's input pixels for an RGB image: uint8 ``[3, size, size]`` (see ``cnn_resize``)."""
    filt = resample_filter(resample)
    if mode == "squash":
        resized = image.resize((size, size), filt, reducing_gap=3.0)
    elif mode == "centre_crop":
        short = max(size, round(size / crop_fraction))
        scale = short / min(image.size)
        w, h = max(short, round(image.size[0] * scale)), max(short, round(image.size[1] * scale))
        resized = image.resize((w, h), filt, reducing_gap=3.0)
        left, top = (w - size) // 2, (h - size) // 2
        resized = resized.crop((left, top, left + size, top + size))
    else:
        raise ValueError(f"unknown cnn_resize {mode!r}; choose from {RESIZE_MODES}")
    return np.ascontiguousarray(np.asarray(resized).transpose(2, 0, 1))


class ImageFiles(Dataset):
    """Decodes one file per item into everything the features need (runs in the workers)."""

    def __init__(self, paths: Sequence[str], config: ExtractionConfig) -> None:
        self.paths = [str(p) for p in paths]
        self.config = config
        self.size = config.input_size
        self.patch_configs = [PatchConfig(size=d, positions=config.patch_positions, resample=config.resample) for d in config.patch_sizes]

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict:
        config = self.config
        loaded = load_rgb(self.paths[index], config.load)
        item = {
            "index": index,
            "status": loaded.status,
            "reason": loaded.reason,
            "width": loaded.width,
            "height": loaded.height,
            "pixels": np.zeros((3, self.size, self.size), dtype=np.uint8),
            "ch64": np.zeros(config.lowlevel_config.histogram_dim, dtype=np.float32),
            "cm225": np.zeros(config.lowlevel_config.moments_dim, dtype=np.float32),
            "patches": [np.zeros((len(config.patch_positions), p.size, p.size, 3), dtype=np.uint8) for p in self.patch_configs],
        }
        if not loaded.ok:
            return item
        image = loaded.image
        if config.cnn:
            item["pixels"] = cnn_input(image, self.size, config.cnn_resize, config.crop_fraction, config.resample)
        for i, patch_config in enumerate(self.patch_configs):
            item["patches"][i] = extract_patches(image, patch_config)
        if config.lowlevel:
            item["ch64"], item["cm225"] = lowlevel_features(image, config.lowlevel_config)
        return item


def collate(items: list[dict]) -> dict:
    """Stack a list of items; pixels become one uint8 tensor (pinned by the loader on CUDA)."""
    return {
        "index": np.array([it["index"] for it in items], dtype=np.int64),
        "status": [it["status"] for it in items],
        "reason": [it["reason"] for it in items],
        "width": [it["width"] for it in items],
        "height": [it["height"] for it in items],
        "pixels": torch.from_numpy(np.stack([it["pixels"] for it in items])),
        "ch64": np.stack([it["ch64"] for it in items]),
        "cm225": np.stack([it["cm225"] for it in items]),
        "patches": [np.stack([it["patches"][i] for it in items]) for i in range(len(items[0]["patches"]))],
    }


def make_loader(paths: Sequence[str], config: ExtractionConfig, runtime: Runtime) -> DataLoader:
    """The prefetching loader (workers decode while the model computes)."""
    workers = runtime.num_workers
    return DataLoader(
        ImageFiles(paths, config),
        batch_size=runtime.batch_size,
        shuffle=False,
        num_workers=workers,
        collate_fn=collate,
        pin_memory=runtime.is_cuda,
        prefetch_factor=runtime.prefetch_factor if workers > 0 else None,
        persistent_workers=False,
    )


@dataclass(frozen=True)
class ExtractionResult:
    """What ``extract_features`` wrote: ``files`` maps an output name (``cnn``, ``ch64``,
    ``cm225``, ``patches_75``, ``local_stage5``, ``index``) to its path; ``index`` is the
    per-image table (row, path, status, reason, width, height)."""

    out_dir: Path
    files: dict[str, Path]
    shapes: dict[str, tuple[int, ...]]
    dtypes: dict[str, str]
    index: pd.DataFrame
    seconds: float
    images_per_second: float
    runtime: str
    config: ExtractionConfig = field(repr=False)

    @property
    def n_images(self) -> int:
        return len(self.index)

    def status_counts(self) -> dict[str, int]:
        counts = self.index["status"].value_counts()
        return {s: int(counts.get(s, 0)) for s in STATUSES}

    def metadata(self) -> dict[str, object]:
        """Plain values for asset metadata: shapes, dtypes, time, throughput, statuses."""
        return {
            "n_images": self.n_images,
            "seconds": round(self.seconds, 3),
            "images_per_second": round(self.images_per_second, 2),
            "runtime": self.runtime,
            **{f"shape_{k}": list(v) for k, v in self.shapes.items()},
            **{f"dtype_{k}": v for k, v in self.dtypes.items()},
            **{f"n_{k}": v for k, v in self.status_counts().items()},
        }


# The CNN embeddings a pass can store, by SideInfo name: the pooled embedding, and it with the
# ``embedding_stages`` means appended (the pooled one itself where there are none).
CNN_EMBEDDINGS = {"cnn": lambda out: out.pooled, "cnn_stages": lambda out: out.embedding}


def cnn_rows(out: BackboneOutput, names: Sequence[str], broken: np.ndarray) -> dict[str, np.ndarray]:
    """float32 host rows of each of ``names`` (keys of ``CNN_EMBEDDINGS``) from one forward
    pass; broken images' rows are zeros."""
    rows = {}
    for name in names:
        rows[name] = CNN_EMBEDDINGS[name](out).float().cpu().numpy()
        rows[name][broken] = 0.0
    return rows


def _stage_rows(fmap: torch.Tensor) -> np.ndarray:
    """[B, C, h, w] -> float16 [B, h*w, C] (positions row-major) on the host."""
    return fmap.flatten(2).transpose(1, 2).to(torch.float16).cpu().numpy()


def extract_features(
    paths: Sequence[str | Path],
    out_dir: str | Path,
    config: ExtractionConfig = ExtractionConfig(),
    log: Log | None = None,
) -> ExtractionResult:
    """Compute every configured feature for ``paths`` (row i = ``paths[i]``) into ``out_dir``.

    Never raises for a bad image (it gets a ``broken`` row); raises for bad arguments (no
    paths, an unknown backbone or stage, CUDA asked for where there is none). All arrays are
    written atomically: after a crash ``out_dir`` holds either the old or the new files.
    """
    paths = [str(p) for p in paths]
    if not paths:
        raise ValueError("extract_features got no image paths")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    log = log or (lambda message: None)
    runtime = resolve_runtime(config.device)
    n = len(paths)
    spec = get_backbone_spec(config.backbone)
    backbone: FeatureBackbone | None = None
    if config.cnn:
        backbone = runtime.prepare(load_backbone(config.backbone, stages=config.stages, grid=config.grid, pool=config.grid_pool,
                                                 flip=config.flip, embedding_stages=config.embedding_stages))
    log(f"features: {n} images on {runtime.describe()}; backbone {spec.name if config.cnn else '-'}")

    plan: dict[str, tuple[tuple[int, ...], np.dtype]] = {}
    if config.cnn:
        plan["cnn"] = ((n, spec.embedding_dim), np.dtype(np.float32))
        if config.embedding_stages:
            plan["cnn_stages"] = ((n, backbone.embedding_dim), np.dtype(np.float32))
    if config.lowlevel:
        plan["ch64"] = ((n, config.lowlevel_config.histogram_dim), np.dtype(np.float32))
        plan["cm225"] = ((n, config.lowlevel_config.moments_dim), np.dtype(np.float32))
    for d in config.patch_sizes:
        plan[f"patches_{d}"] = ((n, len(config.patch_positions), d, d, 3), np.dtype(np.uint8))

    statuses: list[str] = [""] * n
    reasons: list[str] = [""] * n
    widths = np.zeros(n, dtype=np.int64)
    heights = np.zeros(n, dtype=np.int64)
    files: dict[str, Path] = {}
    start = time.perf_counter()
    last_log = start
    done = 0
    with contextlib.ExitStack() as stack:
        arrays: dict[str, np.ndarray] = {}

        def allocate(name: str, shape: tuple[int, ...], dtype: np.dtype) -> None:
            # Each array is written into a temporary file beside its real name and moved into
            # place only when the whole pass has succeeded (atomic_path).
            plan[name] = (shape, dtype)
            files[name] = out_dir / f"{name}.npy"
            tmp = stack.enter_context(atomic_path(files[name]))
            arrays[name] = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=shape)

        for name, (shape, dtype) in list(plan.items()):
            allocate(name, shape, dtype)
        with torch.inference_mode():
            for batch in make_loader(paths, config, runtime):
                rows = batch["index"]
                broken = np.array([s == STATUS_BROKEN for s in batch["status"]])
                if backbone is not None:
                    with runtime.autocast():
                        out = backbone(runtime.to_device(batch["pixels"]))
                    for name, values in cnn_rows(out, [n for n in CNN_EMBEDDINGS if n in arrays], broken).items():
                        arrays[name][rows] = values
                    for stage, fmap in out.stages.items():
                        local = _stage_rows(fmap)
                        if f"local_{stage}" not in arrays:  # the grid size is known after one batch
                            allocate(f"local_{stage}", (n,) + local.shape[1:], np.dtype(np.float16))
                        local[broken] = 0.0
                        arrays[f"local_{stage}"][rows] = local
                if config.lowlevel:
                    arrays["ch64"][rows] = batch["ch64"]
                    arrays["cm225"][rows] = batch["cm225"]
                for d, patches in zip(config.patch_sizes, batch["patches"]):
                    arrays[f"patches_{d}"][rows] = patches
                for j, row in enumerate(rows):
                    statuses[row], reasons[row] = batch["status"][j], batch["reason"][j]
                    widths[row], heights[row] = batch["width"][j], batch["height"][j]
                done += len(rows)
                now = time.perf_counter()
                if now - last_log >= config.log_every_s:
                    log(f"features: {done}/{n} images, {done / (now - start):.1f} images/s")
                    last_log = now
        for name, array in arrays.items():
            if array.dtype.kind == "f" and not np.isfinite(array).all():
                bad = int((~np.isfinite(array).reshape(n, -1).all(axis=1)).sum())
                raise FloatingPointError(f"features: {name} has non-finite values in {bad} image rows")
            array.flush()
        del arrays
        index = pd.DataFrame(
            {
                "row": np.arange(n, dtype=np.int64),
                "path": paths,
                "status": statuses,
                "reason": reasons,
                "width": widths,
                "height": heights,
            }
        )
        files["index"] = write_parquet(index, out_dir / "index.parquet")
    seconds = time.perf_counter() - start
    result = ExtractionResult(
        out_dir=out_dir,
        files=files,
        shapes={name: shape for name, (shape, _) in plan.items()},
        dtypes={name: str(dtype) for name, (_, dtype) in plan.items()},
        index=index,
        seconds=seconds,
        images_per_second=n / seconds,
        runtime=runtime.describe(),
        config=config,
    )
    counts = result.status_counts()
    log(f"features: {n} images in {seconds:.1f} s ({n / seconds:.1f} images/s); {counts}")
    return result


FEATURE_FILES = {"cnn": "cnn.npy", "ch64": "ch64.npy", "cm225": "cm225.npy"}


def load_features(out_dir: str | Path, names: Sequence[str] = ("cnn", "ch64", "cm225"), mmap: bool = False) -> dict[str, np.ndarray]:
    """The ``SideInfo.features`` arrays written by ``extract_features`` (only those present
    among ``names``; a name never written is a ``FileNotFoundError`` naming the file)."""
    out = {}
    for name in names:
        path = Path(out_dir) / FEATURE_FILES.get(name, f"{name}.npy")
        if not path.exists():
            raise FileNotFoundError(f"feature {name!r}: {path} does not exist (was it extracted?)")
        out[name] = np.load(path, mmap_mode="r" if mmap else None)
    return out


def load_local_descriptors(out_dir: str | Path, stage: str, mmap: bool = True) -> np.ndarray:
    """float16 ``[n, positions, C]`` descriptors of one stage (memory-mapped by default)."""
    path = Path(out_dir) / f"local_{stage}.npy"
    if not path.exists():
        raise FileNotFoundError(f"local descriptors of stage {stage!r}: {path} does not exist")
    return np.load(path, mmap_mode="r" if mmap else None)


def load_patches(out_dir: str | Path, size: int = 75, mmap: bool = True) -> np.ndarray:
    path = Path(out_dir) / f"patches_{size}.npy"
    if not path.exists():
        raise FileNotFoundError(f"patches of size {size}: {path} does not exist")
    return np.load(path, mmap_mode="r" if mmap else None)


def load_index(out_dir: str | Path) -> pd.DataFrame:
    path = Path(out_dir) / "index.parquet"
    if not path.exists():
        raise FileNotFoundError(f"feature index {path} does not exist")
    return pd.read_parquet(path)
