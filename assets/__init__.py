"""Dagster assets, checks and their configs, grouped by pipeline stage (one module a stage).

Every dataset gets the same graph from ``assets.factory.dataset_assets(spec)``, under its own
key prefix and asset group, so lineage is per dataset.
"""
