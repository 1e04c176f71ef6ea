"""Features of images outside a dataset (a new photo to tag), computed exactly as the feature
assets computed them for the dataset's own images (issue 7, "tag suggestions for a new photo").

A model scores an image through the rows of ``SideInfo`` (``data.py``), so a new photo needs
the very features the model was trained on: same decoding and downscaling (``images.load_rgb``
with the asset's ``LoadConfig``), same patches, CH-64 and CM-225, same backbone, input size
and resize mode, and for VLAD the same stage map pooled to the same grid, encoded with the
saved codebook of the stage chosen on validation. ``NewImageFeatures`` reuses the extraction
pass's own per-image code (``extraction.ImageFiles``, ``extraction._stage_rows``) and
``VladCodebook.encode``, so nothing is re-implemented here.

The settings of a features run are recorded beside its arrays (``extraction_settings.json``,
``write_extraction_settings``; the features asset writes it). Feature folders written before
that file existed fall back to ``LEGACY_ASSET_SETTINGS`` plus what the stored arrays' shapes
tell (patch side, grid), and ``verify_against_stored`` recomputes a stored image to prove the
guess right before any new image is scored with it.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Collection, Mapping, Sequence

import numpy as np
import torch

from tagrec_models.features.device import DeviceConfig, Runtime, resolve_runtime
from tagrec_models.features.extraction import CNN_EMBEDDINGS, ExtractionConfig, ImageFiles, _stage_rows, cnn_rows, collate
from tagrec_models.features.backbone import FeatureBackbone, load_backbone
from tagrec_models.features.images import STATUS_BROKEN, LoadConfig
from tagrec_models.features.lowlevel import LowLevelConfig
from tagrec_models.features.vlad import VladCodebook
from tagrec_models.storage.atomic import write_bytes

SETTINGS_FILE = "extraction_settings.json"
PIXEL_FEATURES = ("ch64", "cm225", "cnn", "cnn_stages", "vlad", "patches", "cnn_finetuned")
"""What ``NewImageFeatures`` can compute: the ``SideInfo`` feature names and ``patches``."""

LEGACY_ASSET_SETTINGS = ExtractionConfig(load=LoadConfig(max_side=320))
"""What the features asset ran with before it recorded its settings: ``FeatureSettings``'
defaults (EfficientNet-Lite0 at its own 224 px, ``squash`` resize, images downscaled to 320 px
on the longer side first); the patch side and the grid come from the stored arrays' shapes.
Only used for feature folders without ``extraction_settings.json``, and only after
``verify_against_stored`` reproduced a stored image with it."""


class FeatureSettingsError(RuntimeError):
    """The settings of stored features cannot be recovered or do not reproduce them."""


# -- the settings sidecar -------------------------------------------------------------------------
def _plain(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _tuples(value: Any) -> Any:
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


def settings_to_dict(config: ExtractionConfig) -> dict[str, Any]:
    """The config as plain JSON values (nested configs as objects)."""
    return _plain(dataclasses.asdict(config))


def settings_from_dict(values: Mapping[str, Any]) -> ExtractionConfig:
    """Inverse of ``settings_to_dict``; fields a later version added keep their defaults, and
    fields this version does not know are an error naming them (they could change features)."""
    nested = {"lowlevel_config": LowLevelConfig, "load": LoadConfig, "device": DeviceConfig}
    known = {f.name for f in dataclasses.fields(ExtractionConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise FeatureSettingsError(f"extraction settings have unknown field(s) {unknown}")
    kwargs: dict[str, Any] = {}
    for name, value in values.items():
        if name in nested:
            inner = {k: _tuples(v) for k, v in dict(value).items()}
            kwargs[name] = nested[name](**inner)
        else:
            kwargs[name] = _tuples(value)
    return ExtractionConfig(**kwargs)


def write_extraction_settings(config: ExtractionConfig, out_dir: str | Path) -> Path:
    """Record the settings of a features run beside its arrays (atomically)."""
    text = json.dumps(settings_to_dict(config), indent=2, sort_keys=True)
    return write_bytes(Path(out_dir) / SETTINGS_FILE, text.encode("utf-8"))


def read_extraction_settings(out_dir: str | Path) -> ExtractionConfig | None:
    """The recorded settings of the features in ``out_dir``, or None if none were recorded."""
    path = Path(out_dir) / SETTINGS_FILE
    if not path.exists():
        return None
    try:
        return settings_from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (ValueError, TypeError) as error:
        raise FeatureSettingsError(f"{path} is not a valid extraction settings file: {error}") from error


def legacy_settings(patch_shape: Sequence[int] | None, local_shape: Sequence[int] | None) -> ExtractionConfig:
    """``LEGACY_ASSET_SETTINGS`` with the patch side (``[n, Q, d, d, 3]``) and the stage grid
    (``[n, g * g, C]``) read from stored arrays' shapes."""
    changes: dict[str, Any] = {}
    if patch_shape is not None:
        changes["patch_sizes"] = (int(patch_shape[2]),)
    if local_shape is not None:
        grid = int(round(np.sqrt(int(local_shape[1]))))
        if grid * grid != int(local_shape[1]):
            raise FeatureSettingsError(f"stored stage descriptors have {local_shape[1]} positions, not a square grid")
        changes["grid"] = grid
    return dataclasses.replace(LEGACY_ASSET_SETTINGS, **changes)


# -- computing features of new images ---------------------------------------------------------
@dataclass(frozen=True)
class NewImageBatch:
    """Features of ``paths`` (row ``i`` = ``paths[i]``): ``features`` maps a ``SideInfo``
    feature name to float32 ``[n, dim]``; ``patches`` is uint8 ``[n, Q, d, d, 3]`` or None;
    ``status``/``reason`` say per image whether it decoded (``broken`` rows are all zero)."""

    paths: tuple[str, ...]
    features: dict[str, np.ndarray]
    patches: np.ndarray | None
    status: tuple[str, ...]
    reason: tuple[str, ...]

    @property
    def ok(self) -> np.ndarray:
        return np.array([s != STATUS_BROKEN for s in self.status], dtype=bool)


class NewImageFeatures:
    """Computes ``wanted`` (a subset of ``PIXEL_FEATURES``) for image files with the settings
    of a dataset's features run. The backbone is loaded once, here; ``compute`` batches."""

    def __init__(
        self,
        settings: ExtractionConfig,
        wanted: Collection[str],
        codebook: VladCodebook | None = None,
        device: DeviceConfig = DeviceConfig(device="cpu", num_workers=0),
        finetuned: FeatureBackbone | None = None,
        finetuned_max_side: int = 0,
    ) -> None:
        """``finetuned``: the backbone of the dataset's fine-tuned network and the ``max_side``
        its images were decoded with (``finetune.load_network``), for ``cnn_finetuned``."""
        wanted = tuple(sorted(set(wanted)))
        unknown = [w for w in wanted if w not in PIXEL_FEATURES]
        if unknown:
            raise ValueError(f"cannot compute {unknown} for a new image; can compute {list(PIXEL_FEATURES)}")
        if not wanted:
            raise ValueError("NewImageFeatures: nothing to compute")
        if "vlad" in wanted and codebook is None:
            raise ValueError("VLAD codes of a new image need the dataset's saved codebook")
        if "cnn_finetuned" in wanted and finetuned is None:
            raise ValueError("the fine-tuned embedding of a new image needs the dataset's fine-tuned network")
        if "patches" in wanted and len(settings.patch_sizes) != 1:
            raise FeatureSettingsError(
                f"the features run stored patches of sides {settings.patch_sizes}; expected exactly one")
        stages = (codebook.stage,) if "vlad" in wanted else ()
        use_cnn = bool({*CNN_EMBEDDINGS, "vlad"} & set(wanted))
        if "cnn_finetuned" in wanted:
            settings = _input_for(settings, finetuned.spec.name, finetuned_max_side, use_cnn)
        self.wanted = wanted
        self.codebook = codebook
        self.config = dataclasses.replace(
            settings,
            cnn=use_cnn or "cnn_finetuned" in wanted,
            stages=stages,
            lowlevel="ch64" in wanted or "cm225" in wanted,
            patch_sizes=settings.patch_sizes if "patches" in wanted else (),
            device=device,
        )
        self.runtime: Runtime = resolve_runtime(device)
        self.backbone: FeatureBackbone | None = None
        if use_cnn:
            self.backbone = self.runtime.prepare(
                load_backbone(self.config.backbone, stages=stages, grid=self.config.grid, pool=self.config.grid_pool,
                              flip=self.config.flip, embedding_stages=self.config.embedding_stages))
        self.finetuned = self.runtime.prepare(finetuned.eval()) if "cnn_finetuned" in wanted else None

    def compute(self, paths: Sequence[str | Path]) -> NewImageBatch:
        """Decode every path (a bad file becomes a ``broken`` row with its reason, never an
        exception) and compute the wanted features, ``runtime.batch_size`` images at a time."""
        paths = tuple(str(p) for p in paths)
        files = ImageFiles(paths, self.config)
        features: dict[str, list[np.ndarray]] = {name: [] for name in self.wanted if name != "patches"}
        patches: list[np.ndarray] = []
        status: list[str] = []
        reason: list[str] = []
        for start in range(0, len(paths), self.runtime.batch_size):
            batch = collate([files[i] for i in range(start, min(start + self.runtime.batch_size, len(paths)))])
            broken = np.array([s == STATUS_BROKEN for s in batch["status"]])
            status.extend(batch["status"])
            reason.extend(batch["reason"])
            if self.backbone is not None:
                with torch.inference_mode(), self.runtime.autocast():
                    out = self.backbone(self.runtime.to_device(batch["pixels"]))
                for name, values in cnn_rows(out, [n for n in CNN_EMBEDDINGS if n in features], broken).items():
                    features[name].append(values)
                if "vlad" in features:
                    local = _stage_rows(out.stages[self.codebook.stage])  # float16, as stored
                    local[broken] = 0.0
                    features["vlad"].append(self.codebook.encode(local).astype(np.float32))
            if self.finetuned is not None:
                with torch.inference_mode():  # float32, as the asset embeds
                    embedding = self.finetuned(self.runtime.to_device(batch["pixels"])).embedding.float().cpu().numpy()
                embedding[broken] = 0.0
                features["cnn_finetuned"].append(embedding)
            for name in ("ch64", "cm225"):
                if name in features:
                    features[name].append(np.asarray(batch[name], dtype=np.float32))
            if "patches" in self.wanted:
                patches.append(batch["patches"][0])
        return NewImageBatch(
            paths=paths,
            features={name: np.concatenate(rows) for name, rows in features.items()},
            patches=np.concatenate(patches) if patches else None,
            status=tuple(status),
            reason=tuple(reason),
        )


def _input_for(settings: ExtractionConfig, backbone: str, max_side: int, frozen_too: bool) -> ExtractionConfig:
    """The decoding of the fine-tuned embedding (``features.finetuned.decode``): ``backbone``'s
    own input side, squashed, the longer side bounded by ``max_side`` first. A frozen CNN feature
    wanted too must have been decoded the same way."""
    tuned = dataclasses.replace(settings, backbone=backbone, image_size=None, cnn_resize="squash",
                                load=dataclasses.replace(settings.load, max_side=max_side))
    if frozen_too and (tuned.input_size, tuned.cnn_resize, tuned.load) != (
            settings.input_size, settings.cnn_resize, settings.load):
        raise FeatureSettingsError(
            f"the fine-tuned network ({backbone}) reads {tuned.input_size} px squashed images (max side {max_side}) "
            f"but the features run's {settings.backbone} read {settings.input_size} px {settings.cnn_resize} "
            f"(max side {settings.load.max_side}); a model cannot read both")
    return settings if frozen_too else tuned


def agreement(name: str, computed: np.ndarray, stored: np.ndarray) -> float:
    """How well a recomputed row matches the stored one: the cosine similarity (1 = same
    direction; scale-free, so the CUDA bf16 forward of the asset and the CPU float32 forward
    here agree to about 1e-3), for patches one minus the mean absolute pixel difference / 255."""
    a = np.asarray(computed, dtype=np.float64).ravel()
    b = np.asarray(stored, dtype=np.float64).ravel()
    if name == "patches":
        return 1.0 - float(np.abs(a - b).mean()) / 255.0
    norm = np.linalg.norm(a) * np.linalg.norm(b)
    if norm == 0:
        return 1.0 if not a.any() and not b.any() else 0.0
    return float(a @ b / norm)


MIN_AGREEMENT = {"ch64": 0.999, "cm225": 0.999, "cnn": 0.99, "cnn_stages": 0.99, "vlad": 0.95, "patches": 0.99,
                 "cnn_finetuned": 0.99}
"""``agreement`` a recomputed stored image must reach per feature (CH-64 and CM-225 are exact
up to float rounding; the CNN and VLAD allow the bf16 forward of a CUDA features run)."""


def verify_against_stored(
    computer: NewImageFeatures, path: str, stored: Mapping[str, np.ndarray]
) -> dict[str, float]:
    """Recompute the stored image at ``path`` and compare with its stored rows (``stored``:
    name -> row); a feature below ``MIN_AGREEMENT`` raises ``FeatureSettingsError``."""
    batch = computer.compute([path])
    if not batch.ok[0]:
        raise FeatureSettingsError(f"cannot verify the feature settings: {path} does not decode ({batch.reason[0]})")
    scores = {}
    for name, row in stored.items():
        computed = batch.patches[0] if name == "patches" else batch.features[name][0]
        scores[name] = agreement(name, computed, row)
    bad = {n: round(s, 4) for n, s in scores.items() if s < MIN_AGREEMENT[n]}
    if bad:
        raise FeatureSettingsError(
            f"recomputing stored image {path} does not reproduce its stored features {bad} "
            f"(agreement; needed {({n: MIN_AGREEMENT[n] for n in bad})})")
    return scores
