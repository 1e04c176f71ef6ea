"""The Definitions that ``dagster dev`` loads (``workspace.yaml``): every dataset's assets,
the resources, one job per dataset, the Flickr re-crawl schedule (off by default) and the
``pool_watch`` sensor (dead runs' pool slots freed, waiting steps told why)."""

from __future__ import annotations

import os
import warnings

import dagster as dg

from assets.datasets import DATASETS, FLICKR
from assets.factory import dataset_assets
from assets.ingest import FLICKR_QUERIES
from assets.io_manager import TagrecIOManager
from assets.resources import DataHomeResource, FlickrResource
from pipelines import shutdown
from pipelines.monitoring import pool_watch
from tagrec_models.paths import default_home


def dataset_selection(name: str) -> dg.AssetSelection:
    """Every asset of a dataset but the per-query crawl partitions, which run as their own runs
    (a backfill, the schedule below): a job's assets share one partitions definition."""
    return dg.AssetSelection.groups(name) - dg.AssetSelection.assets(QUERY_CRAWL)


def dataset_job(name: str) -> dg.UnresolvedAssetJobDefinition:
    return dg.define_asset_job(
        name=f"{name}_all",
        selection=dataset_selection(name),
        description=f"Materialise every asset of the {name} dataset.",
        # Two cores: steps run one at a time in one process, which also keeps the DuckDB
        # writer single and avoids loading torch in several processes.
        executor_def=dg.in_process_executor,
    )


flickr_recrawl_job = dg.define_asset_job(
    name="flickr_recrawl",
    selection=dg.AssetSelection.assets(dg.AssetKey([FLICKR.name, "crawl"])).downstream(),
    description="Re-crawl Flickr (photos uploaded since the cursor) and rebuild everything downstream.",
    executor_def=dg.in_process_executor,
    config={"ops": {"flickr__crawl": {"config": {"mode": "recrawl"}}}},
)

flickr_recrawl_schedule = dg.ScheduleDefinition(
    name="flickr_recrawl_daily",
    job=flickr_recrawl_job,
    cron_schedule="0 3 * * *",
    default_status=dg.DefaultScheduleStatus.STOPPED,
    description="Daily re-crawl at 03:00: adds only photos uploaded since the last crawl's cursor. Off by default.",
)


QUERY_CRAWL = dg.AssetKey([FLICKR.name, "crawl_by_query"])
flickr_query_recrawl_job = dg.define_asset_job(
    name="flickr_query_recrawl",
    selection=dg.AssetSelection.assets(QUERY_CRAWL),
    description="Re-crawl one Flickr query partition (photos uploaded since its cursor).",
    executor_def=dg.in_process_executor,
    config={"ops": {"flickr__crawl_by_query": {"config": {"mode": "recrawl"}}}},
)


@dg.schedule(job=flickr_query_recrawl_job, cron_schedule="30 3 * * *",
             default_status=dg.DefaultScheduleStatus.STOPPED)
def flickr_query_recrawl_daily(context: dg.ScheduleEvaluationContext):
    """Daily at 03:30: one re-crawl run per Flickr query partition, every partition there is
    when it fires (a partition added today is covered tomorrow); the `flickr` pool runs them
    one at a time. Off by default; then materialise flickr/photos and what follows."""
    for query in context.instance.get_dynamic_partitions(FLICKR_QUERIES.name):
        yield dg.RunRequest(run_key=f"{query}@{context.scheduled_execution_time:%Y-%m-%d}", partition_key=query)


def with_code_references(definitions: list) -> list:
    """Assets with a link to their code; standalone asset checks stay as they are (Dagster would
    rebuild them as assets)."""
    checks = [d for d in definitions if isinstance(d, dg.AssetChecksDefinition)]
    assets = [d for d in definitions if not isinstance(d, dg.AssetChecksDefinition)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.BetaWarning)  # code references are beta in Dagster 1.13
        return [*dg.with_source_code_references(assets), *checks]


def all_assets() -> list:
    """Every dataset's assets and checks, each linked to its code."""
    return with_code_references([a for spec in DATASETS for a in dataset_assets(spec)])


def shared_resources(home: str) -> dict:
    """The resources every variant of the definitions shares (local, Celery, Kubernetes)."""
    return {
        "io_manager": TagrecIOManager(root=home),
        "data_home": DataHomeResource(root=home),
        "flickr": FlickrResource(
            api_key=dg.EnvVar("FLICKR_API_KEY"),
            api_secret=dg.EnvVar("FLICKR_API_SECRET"),
            rest_url=os.environ.get("FLICKR_REST_URL", ""),
            # Overrides for a local test server (the soak, the kill tests); Flickr's own
            # limit is 3,600 calls an hour per key.
            calls_per_hour=int(os.environ.get("FLICKR_CALLS_PER_HOUR", "3600")),
            retry_base_delay_s=float(os.environ.get("FLICKR_RETRY_BASE_DELAY_S", "1.0")),
        ),
    }


def build_definitions() -> dg.Definitions:
    home = str(default_home())
    return dg.Definitions(
        # Every asset links to the code that defines it; a model asset also to its recommender.
        assets=all_assets(),
        jobs=[*(dataset_job(spec.name) for spec in DATASETS), flickr_recrawl_job, flickr_query_recrawl_job],
        schedules=[flickr_recrawl_schedule, flickr_query_recrawl_daily],
        sensors=[pool_watch],
        resources=shared_resources(home),
    )


defs = build_definitions()
# Every process that loads these definitions and runs them (make demo, dagster dev's run
# workers) would otherwise end with ~40 lines of nanobind "leaked instances" from DuckDB.
shutdown.register()
