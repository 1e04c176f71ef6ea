"""Image feature assets (DESIGN.md step 5; issues 3 and 14): patches, CH-64, CM-225, the
pretrained CNN embedding and conv-stage descriptors in one pass over the images of each shard
(``feature_shards``, partitioned: a backfill spreads shards over workers, a new crawl batch
extracts only its own photos), gathered into one array per feature (``patches``, ``ch64``,
``cm225``, ``cnn_embedding``, ``cnn_stages``, ``conv_maps``: every shard), then VLAD codes.

Every array is a file the asset writes under ``<data home>/datasets/<dataset>/features/``; the
asset returns an ``ArrayFile`` handle (path, shape, photo id of each row) and reports shapes,
time and images/s as metadata. Checks: no NaN/inf, one row per image of the splits, and VLAD
codebooks fitted on training images only.
"""

import os
import socket
from typing import Optional

import dagster as dg
import numpy as np
import pandas as pd
from pydantic import Field, create_model

from assets.common import GPU_STEP_TAGS, key, md_table, progress
from assets.datasets import DatasetSpec
from assets.resources import DataHomeResource
from tagrec_models.artifacts import ArrayFile
from tagrec_models.bundle import build_bundle
from tagrec_models.features.device import DeviceConfig
from tagrec_models.features.images import LoadConfig
from tagrec_models.features.extraction import DEFAULT_STAGES, ExtractionConfig, load_local_descriptors
from tagrec_models.features.shards import assemble_shards, extract_shard, shard_members, shard_names
from tagrec_models.features.vlad import LeakageError, VladConfig, codebook_file, codes_name, search_stages
from tagrec_models.storage.atomic import write_npy

FEATURE_OUTPUTS = {
    "patches": "Three d x d patches per image (top-left, centre, bottom-right after resizing the "
    "short side to d, aspect kept; paper 1, section 4.1), uint8 [n, 3, d, d, 3].",
    "ch64": "CH-64: 64-bin colour histogram in CIELAB (4 x 4 x 4), as NUS-WIDE's CH baseline (paper 1).",
    "cm225": "CM-225: colour moments (mean, std, skewness of L, a, b) on a 5 x 5 grid, NUS-WIDE's CM55 (paper 1).",
    "cnn_embedding": "Pretrained CNN embedding (the backbone setting's pooled output, 1280-d: EfficientNet-Lite0 "
    "ImageNet by default, Lite2 on Corel5k): the "
    "deep visual feature paper 3's autoencoder reduces, and PT-PerMLP's input.",
    "cnn_stages": "The multi-stage embedding: the pooled CNN embedding followed by the global mean of "
    "each of the features settings' embedding_stages, each block L2-normalised and divided by "
    "sqrt(blocks) (signed: cosine distances, not kl). Corel5k: Lite2 + stage5/6 means, which "
    "validation prefers for the probe and the blend; with no embedding_stages, the pooled embedding.",
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
    embedding_stages: list[str] = Field(default_factory=list, description="Stages whose global mean is appended to the pooled embedding in the cnn_stages asset (blocks L2-normalised; signed, so for cosine distances, not kl); cnn_embedding stays the pooled embedding. Empty: cnn_stages is the pooled embedding.")
    patch_size: int = Field(default=75, description="Patch side d: 75 (NUS-WIDE recipe) or 50 (Flickr-PTR recipe).")
    max_side: int = Field(default=320, description="Images are decoded and downscaled so the longer side is at most this before every feature (CNN input 224, patches 75, colour statistics); bounds the cost of the few huge drawings. 0: full size.")
    device: str = Field(default="auto", description="'auto' (CUDA when present), 'cpu' or 'cuda'.")
    batch_size: Optional[int] = Field(default=None, description="None: 256 on CUDA, 32 on CPU.")


def split_images(train, val, test, images: pd.DataFrame):
    bundle = build_bundle(train, val, test)
    ids = list(bundle.vocab.images)
    paths = images.drop_duplicates("photo_id").set_index("photo_id")["path"]
    missing = [p for p in ids if p not in paths.index]
    if missing:
        raise dg.Failure(f"{len(missing)} photos of the splits have no image row, e.g. {missing[:3]}")
    return bundle, ids, [str(paths[p]) for p in ids]


def array_checks(asset_key: dg.AssetKey, array: np.ndarray, n_images: int) -> list[dg.AssetCheckResult]:
    finite = bool(np.isfinite(np.asarray(array, dtype=np.float32)).all()) if array.dtype.kind == "f" else True
    return [
        dg.AssetCheckResult(asset_key=asset_key, check_name="finite", passed=finite,
                            metadata={"dtype": str(array.dtype)}),
        dg.AssetCheckResult(asset_key=asset_key, check_name="one_row_per_image",
                            passed=int(array.shape[0]) == n_images,
                            metadata={"rows": int(array.shape[0]), "images": n_images}),
    ]


def feature_settings(spec: DatasetSpec) -> type[FeatureSettings]:
    """``FeatureSettings`` with the dataset's own defaults (``DatasetSpec.feature_defaults``:
    field -> (value, why)), so the launchpad shows them and a run without config uses them."""
    if not spec.feature_defaults:
        return FeatureSettings
    fields = {}
    for name, (value, why) in spec.feature_defaults.items():
        info = FeatureSettings.model_fields[name]
        fields[name] = (info.annotation, Field(default=value, description=f"{info.description} {spec.name}: {value!r}; {why}."))
    return create_model(f"{spec.name.capitalize()}FeatureSettings", __base__=FeatureSettings, **fields)


def extraction_config(config: FeatureSettings) -> ExtractionConfig:
    """The library's extraction settings from the launchpad's."""
    return ExtractionConfig(
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


def shard_partitions(spec: DatasetSpec) -> dg.StaticPartitionsDefinition:
    return dg.StaticPartitionsDefinition(shard_names(spec.feature_shards))


def all_shards_tags(spec: DatasetSpec) -> dict[str, str]:
    """Run tags that make one run materialise every feature shard in one step (``make demo``,
    the tests): the partition range from the first shard to the last."""
    names = shard_names(spec.feature_shards)
    return {"dagster/asset_partition_range_start": names[0], "dagster/asset_partition_range_end": names[-1]}


def feature_assets(spec: DatasetSpec) -> list[dg.AssetsDefinition]:
    split_ins = {p: dg.AssetIn(key(spec, p)) for p in ("train", "val", "test")}
    checked = ("patches", "ch64", "cm225", "cnn_embedding", "cnn_stages")
    shards_key = key(spec, "feature_shards")
    Settings = feature_settings(spec)

    @dg.multi_asset(
        name=f"{spec.name}__features",  # the launchpad's feature settings keep their op name
        outs={"feature_shards": dg.AssetOut(
            key=shards_key, group_name=spec.name, kinds={"pytorch", "numpy"},
            description="Every feature of the photos of one shard (a hash of the photo id), in "
            "<data home>/datasets/<dataset>/features/shards/<shard>/.")},
        ins={**split_ins, "images": dg.AssetIn(key(spec, "images"))},
        partitions_def=shard_partitions(spec),
        # A backfill runs one shard per run (the run launcher spreads them over workers or
        # pods); one run over the whole range (make demo) still runs them in one step.
        backfill_policy=dg.BackfillPolicy.multi_run(max_partitions_per_run=1),
        pool="gpu",
        op_tags=GPU_STEP_TAGS,
    )
    def feature_shards(
        context: dg.AssetExecutionContext,
        config: Settings,
        data_home: DataHomeResource,
        train: pd.DataFrame,
        val: pd.DataFrame,
        test: pd.DataFrame,
        images: pd.DataFrame,
    ):
        """Patches, CH-64, CM-225, the CNN embedding and the stage descriptors of the photos of
        the splits in each shard (a hash of the photo id; ``tagrec_models.features.shards``).
        One pass per shard: decode (in parallel with compute), the CNN forward (CUDA with bf16
        autocast when present, CPU otherwise, channels_last). Photos a shard already holds,
        extracted with the same settings, are reused: a new crawl batch extracts only itself."""
        _, ids, paths = split_images(train, val, test, images)
        root = data_home.home.dataset_dir(spec.name) / "features" / "shards"
        extraction = extraction_config(config)
        shards = {}
        for shard in context.partition_keys:
            rows = shard_members(ids, spec.feature_shards, shard)
            if not rows:
                raise dg.Failure(f"{shard} holds no photo of the splits; use fewer shards for {spec.name}")
            shards[shard] = extract_shard(shard, [ids[i] for i in rows], [paths[i] for i in rows],
                                          root / shard, extraction, log=progress(context))
        frame = pd.DataFrame([s.metadata() for s in shards.values()])
        return dg.Output(shards, output_name="feature_shards", metadata={
            "shards": md_table(frame), "n_images": int(frame["n_images"].sum()),
            "n_extracted": int(frame["n_extracted"].sum()), "n_reused": int(frame["n_reused"].sum()),
            "pid": os.getpid(), "host": socket.gethostname()})

    @dg.multi_asset(
        name=f"{spec.name}__feature_arrays",
        outs={
            name: dg.AssetOut(key=key(spec, name), group_name=spec.name,
                              description=text, kinds={"pytorch", "numpy"})
            for name, text in FEATURE_OUTPUTS.items()
        },
        ins={**split_ins, "images": dg.AssetIn(key(spec, "images")), "feature_shards": dg.AssetIn(shards_key)},
        check_specs=[
            dg.AssetCheckSpec(check, asset=key(spec, name), blocking=True)
            for name in checked
            for check in ("finite", "one_row_per_image")
        ],
    )
    def features(
        context: dg.AssetExecutionContext,
        data_home: DataHomeResource,
        train: pd.DataFrame,
        val: pd.DataFrame,
        test: pd.DataFrame,
        images: pd.DataFrame,
        feature_shards: dict,
    ):
        """Every shard's rows gathered into one array per feature, in the order of the splits'
        images (reads all partitions of feature_shards; memory-mapped, never all in memory)."""
        _, ids, _ = split_images(train, val, test, images)
        out_dir = data_home.home.dataset_dir(spec.name) / "features"
        try:
            written = assemble_shards([feature_shards[s] for s in sorted(feature_shards)], ids, out_dir)
        except ValueError as error:
            raise dg.Failure(str(error)) from error
        index = pd.read_parquet(written["index"])
        broken = index[index["status"] == "broken"]
        common = {
            "n_images": len(ids), "n_shards": len(feature_shards),
            **{f"n_{k}": int(v) for k, v in index["status"].value_counts().items()},
            "broken_images": md_table(broken[["path", "reason"]].head(10)) if len(broken) else "none",
        }
        patch_file = next(name for name in written if name.startswith("patches_"))
        files = {"patches": (patch_file, "patches"), "ch64": ("ch64", "ch64"),
                 "cm225": ("cm225", "cm225"), "cnn_embedding": ("cnn", "cnn"),
                 # with no embedding_stages the multi-stage embedding is the pooled one: same file
                 "cnn_stages": ("cnn_stages" if "cnn_stages" in written else "cnn", "cnn_stages")}
        for output, (file_key, name) in files.items():
            array = np.load(written[file_key], mmap_mode="r")
            handle = ArrayFile.describe(name, written[file_key], ids, array)
            yield dg.Output(handle, output_name=output, metadata={
                **common, "shape": list(handle.shape), "dtype": handle.dtype,
                "path": dg.MetadataValue.path(handle.path)})
            yield from array_checks(key(spec, output), array, len(ids))
        stages = sorted(name[len("local_"):] for name in written if name.startswith("local_"))
        stage_files = {
            stage: ArrayFile.describe(f"local_{stage}", written[f"local_{stage}"], ids,
                                      load_local_descriptors(out_dir, stage))
            for stage in stages
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
        yield from array_checks(vlad_key, codes, len(ids))
        try:
            for cb in search.codebooks.values():
                cb.check_no_leakage(held_out)
            leak = (True, "")
        except LeakageError as error:
            leak = (False, str(error))
        yield dg.AssetCheckResult(asset_key=vlad_key, check_name="codebook_fitted_on_train_only",
                                  passed=leak[0], metadata={"error": leak[1] or "none"})

    return [feature_shards, features, vlad]


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
