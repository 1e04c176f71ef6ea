"""Image feature assets (DESIGN.md step 5; issue 3): patches, CH-64, CM-225, the pretrained CNN
embedding and conv-stage descriptors in one pass over the images, then VLAD codes.

Every array is a file the asset writes under ``<data home>/datasets/<dataset>/features/``; the
asset returns an ``ArrayFile`` handle (path, shape, photo id of each row) and reports shapes,
time and images/s as metadata. Checks: no NaN/inf, one row per image of the splits, and VLAD
codebooks fitted on training images only.
"""

from pathlib import Path
from typing import Optional

import dagster as dg
import numpy as np
import pandas as pd
from pydantic import Field

from assets.common import key, md_table, progress
from assets.datasets import DatasetSpec
from assets.resources import DataHomeResource
from tagrec_models.artifacts import ArrayFile
from tagrec_models.bundle import build_bundle
from tagrec_models.features.device import DeviceConfig
from tagrec_models.features.images import LoadConfig
from tagrec_models.features.extraction import (
    DEFAULT_STAGES,
    ExtractionConfig,
    extract_features,
    load_local_descriptors,
)
from tagrec_models.features.vlad import LeakageError, VladConfig, codebook_file, codes_name, search_stages
from tagrec_models.features.single import write_extraction_settings
from tagrec_models.storage.atomic import write_npy

FEATURE_OUTPUTS = {
    "patches": "Three d x d patches per image (top-left, centre, bottom-right after resizing the "
    "short side to d, aspect kept; paper 1, section 4.1), uint8 [n, 3, d, d, 3].",
    "ch64": "CH-64: 64-bin colour histogram in CIELAB (4 x 4 x 4), as NUS-WIDE's CH baseline (paper 1).",
    "cm225": "CM-225: colour moments (mean, std, skewness of L, a, b) on a 5 x 5 grid, NUS-WIDE's CM55 (paper 1).",
    "cnn_embedding": "Pretrained CNN embedding (EfficientNet-Lite0 ImageNet, 1280-d pooled): the "
    "deep visual feature paper 3's autoencoder reduces, and PT-PerMLP's input.",
    "conv_maps": "Local descriptors of each convolutional stage (paper 2's 'layers'), average-pooled "
    "to a bounded grid, float16 [n, positions, channels] per stage.",
}


class FeatureSettings(dg.Config):
    backbone: str = Field(default="efficientnet_lite0", description="Pretrained backbone by name (swappable).")
    image_size: Optional[int] = Field(default=None, description="CNN input side; None: the backbone's own (224).")
    cnn_resize: str = Field(default="squash", description="'squash' the whole image to a square or 'centre_crop'.")
    stages: list[str] = Field(default_factory=lambda: list(DEFAULT_STAGES), description="Conv stages whose local descriptors are kept (paper 2 picks one by validation MAP).")
    grid: int = Field(default=7, description="Each stage's map is average-pooled to at most grid x grid positions.")
    flip: bool = Field(default=False, description="Average the CNN embedding over the image and its horizontal mirror (twice the CNN cost; see benchmarks/representations_corel5k.py).")
    embedding_stages: list[str] = Field(default_factory=list, description="Stages whose global mean is concatenated to the pooled embedding (blocks L2-normalised; signed, so not for the kl distance). Empty: the pooled embedding alone.")
    patch_size: int = Field(default=75, description="Patch side d: 75 (NUS-WIDE recipe) or 50 (Flickr-PTR recipe).")
    max_side: int = Field(default=320, description="Images are decoded and downscaled so the longer side is at most this before every feature (CNN input 224, patches 75, colour statistics); bounds the cost of the few huge drawings. 0: full size.")
    device: str = Field(default="auto", description="'auto' (CUDA when present), 'cpu' or 'cuda'.")
    batch_size: Optional[int] = Field(default=None, description="None: 256 on CUDA, 32 on CPU.")


def _split_images(train, val, test, images: pd.DataFrame):
    bundle = build_bundle(train, val, test)
    ids = list(bundle.vocab.images)
    paths = images.drop_duplicates("photo_id").set_index("photo_id")["path"]
    missing = [p for p in ids if p not in paths.index]
    if missing:
        raise dg.Failure(f"{len(missing)} photos of the splits have no image row, e.g. {missing[:3]}")
    return bundle, ids, [str(paths[p]) for p in ids]


def _array_checks(asset_key: dg.AssetKey, array: np.ndarray, n_images: int) -> list[dg.AssetCheckResult]:
    finite = bool(np.isfinite(np.asarray(array, dtype=np.float32)).all()) if array.dtype.kind == "f" else True
    return [
        dg.AssetCheckResult(asset_key=asset_key, check_name="finite", passed=finite,
                            metadata={"dtype": str(array.dtype)}),
        dg.AssetCheckResult(asset_key=asset_key, check_name="one_row_per_image",
                            passed=int(array.shape[0]) == n_images,
                            metadata={"rows": int(array.shape[0]), "images": n_images}),
    ]


def feature_assets(spec: DatasetSpec) -> list[dg.AssetsDefinition]:
    split_ins = {p: dg.AssetIn(key(spec, p)) for p in ("train", "val", "test")}
    checked = ("patches", "ch64", "cm225", "cnn_embedding")

    @dg.multi_asset(
        name=f"{spec.name}__features",
        outs={
            name: dg.AssetOut(key=key(spec, name), group_name=spec.name,
                              description=text, kinds={"pytorch", "numpy"})
            for name, text in FEATURE_OUTPUTS.items()
        },
        ins={**split_ins, "images": dg.AssetIn(key(spec, "images"))},
        check_specs=[
            dg.AssetCheckSpec(check, asset=key(spec, name), blocking=True)
            for name in checked
            for check in ("finite", "one_row_per_image")
        ],
        pool="gpu",
    )
    def features(
        context: dg.AssetExecutionContext,
        config: FeatureSettings,
        data_home: DataHomeResource,
        train: pd.DataFrame,
        val: pd.DataFrame,
        test: pd.DataFrame,
        images: pd.DataFrame,
    ):
        """One pass over the images of the splits: decode (in parallel with compute), patches,
        CH-64, CM-225, the CNN forward (CUDA with bf16 autocast when present, CPU otherwise,
        channels_last) and the stage descriptors."""
        _, ids, paths = _split_images(train, val, test, images)
        out_dir = data_home.home.dataset_dir(spec.name) / "features"
        extraction = ExtractionConfig(
            backbone=config.backbone,
            image_size=config.image_size,
            cnn_resize=config.cnn_resize,
            stages=tuple(config.stages),
            grid=config.grid,
            flip=config.flip,
            embedding_stages=tuple(config.embedding_stages),
            patch_sizes=(config.patch_size,),
            device=DeviceConfig(device=config.device, batch_size=config.batch_size),
            load=LoadConfig(max_side=config.max_side),
        )
        result = extract_features(paths, out_dir, extraction, log=progress(context))
        write_extraction_settings(extraction, out_dir)  # new photos get the same features (tagrec suggest)
        broken = result.index[result.index["status"] == "broken"]
        common = {
            **result.metadata(),
            "broken_images": md_table(broken[["path", "reason"]].head(10)) if len(broken) else "none",
        }
        files = {
            "patches": ("patches_" + str(config.patch_size), "patches"),
            "ch64": ("ch64", "ch64"),
            "cm225": ("cm225", "cm225"),
            "cnn_embedding": ("cnn", "cnn"),
        }
        for output, (file_key, name) in files.items():
            array = np.load(result.files[file_key], mmap_mode="r")
            handle = ArrayFile.describe(name, result.files[file_key], ids, array)
            yield dg.Output(handle, output_name=output, metadata={
                **common, "shape": list(handle.shape), "dtype": handle.dtype,
                "path": dg.MetadataValue.path(handle.path)})
            yield from _array_checks(key(spec, output), array, len(ids))
        stage_files = {
            stage: ArrayFile.describe(f"local_{stage}", result.files[f"local_{stage}"], ids,
                                      load_local_descriptors(out_dir, stage))
            for stage in config.stages
        }
        yield dg.Output(stage_files, output_name="conv_maps", metadata={
            **common, **{f"shape_{s}": list(f.shape) for s, f in stage_files.items()}})

    class VladSettings(dg.Config):
        n_words: int = Field(default=100, description="K visual words per stage (paper 2: 100).")
        stages: list[str] = Field(default_factory=list, description="Stages to compare; empty: every stage of conv_maps.")
        retrieval_k: int = Field(default=15, description="Neighbour-retrieval MAP@k used to choose the stage on validation.")
        max_fit_descriptors: int = Field(default=200_000, description="Training descriptors sampled (seeded) for k-means.")
        seed: int = Field(default=0, description="Seed of the k-means codebooks.")

    vlad_key = key(spec, "vlad")

    @dg.asset(
        key=vlad_key,
        group_name=spec.name,
        ins={"conv_maps": dg.AssetIn(key(spec, "conv_maps")), **split_ins},
        check_specs=[
            dg.AssetCheckSpec("finite", asset=vlad_key, blocking=True),
            dg.AssetCheckSpec("one_row_per_image", asset=vlad_key, blocking=True),
            dg.AssetCheckSpec("codebook_fitted_on_train_only", asset=vlad_key, blocking=True,
                              description="No validation or test image contributed to any k-means codebook."),
        ],
        kinds={"scikitlearn", "numpy"},
    )
    def vlad(
        context: dg.AssetExecutionContext,
        config: VladSettings,
        data_home: DataHomeResource,
        conv_maps: dict,
        train: pd.DataFrame,
        val: pd.DataFrame,
        test: pd.DataFrame,
    ):
        """VLAD codes (paper 2, section 3.5): per stage, L2-normalised local descriptors, a K=100
        k-means codebook fitted on training images only, residuals aggregated per visual word,
        signed-sqrt power and L2 normalisation. The stage is chosen by validation-to-training
        neighbour-retrieval MAP (section 5.1); its codes for every image are the output."""
        bundle = build_bundle(train, val, test)
        ids = list(bundle.vocab.images)
        stages = config.stages or list(conv_maps)
        unknown = [s for s in stages if s not in conv_maps]
        if unknown:
            raise dg.Failure(f"stages {unknown} are not in conv_maps (have {list(conv_maps)})")
        descriptors = {s: conv_maps[s].load(mmap=True) for s in stages}
        for s, handle in conv_maps.items():
            if list(handle.photo_ids) != ids:
                raise dg.Failure(f"conv_maps[{s}] rows do not match the current splits: rematerialise features")
        train_images = bundle.train_images()
        val_images = np.unique(bundle.val.image)
        held_out = np.setdiff1d(np.arange(len(ids)), train_images)
        image_tags = _image_tag_matrix(bundle)
        search = search_stages(
            descriptors, image_tags, train_images=train_images, val_images=val_images,
            held_out_images=held_out,
            config=VladConfig(n_words=config.n_words, seed=config.seed,
                              max_fit_descriptors=config.max_fit_descriptors),
            k=config.retrieval_k, log=progress(context),
        )
        best = search.selection.best
        codebook = search.codebooks[best]
        codes = codebook.encode(descriptors[best], log=progress(context))
        out_dir = data_home.home.dataset_dir(spec.name) / "features"
        path = write_npy(codes.astype(np.float32), out_dir / "vlad.npy")
        codebook.save(codebook_file(path, best))
        handle = ArrayFile.describe(codes_name(best), path, ids, codes)
        maps = pd.DataFrame({"stage": list(search.selection.map_by_stage),
                             f"val_map@{config.retrieval_k}": list(search.selection.map_by_stage.values())})
        yield dg.Output(handle, metadata={
            "best_stage": best, "shape": list(codes.shape),
            "stage_selection": md_table(maps), "validation_queries": search.selection.n_queries})
        yield from _array_checks(vlad_key, codes, len(ids))
        try:
            for cb in search.codebooks.values():
                cb.check_no_leakage(held_out)
            leak = (True, "")
        except LeakageError as error:
            leak = (False, str(error))
        yield dg.AssetCheckResult(asset_key=vlad_key, check_name="codebook_fitted_on_train_only",
                                  passed=leak[0], metadata={"error": leak[1] or "none"})

    return [features, vlad]


def _image_tag_matrix(bundle):
    """Binary image x tag matrix from every part's posts (tags of validation images are needed
    as relevance labels of the stage-selection queries; test posts are included only for shape
    and are never queried)."""
    from scipy import sparse

    rows, cols = [], []
    for posts in (bundle.train, bundle.val):
        coo = posts.tags.tocoo()
        rows.append(posts.image[coo.row])
        cols.append(coo.col)
    rows, cols = np.concatenate(rows), np.concatenate(cols)
    matrix = sparse.csr_matrix((np.ones(len(rows), dtype=np.float32), (rows, cols)),
                               shape=(bundle.vocab.n_images, bundle.vocab.n_tags))
    matrix.data[:] = 1.0
    return matrix
