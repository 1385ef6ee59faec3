"""The analysts' DuckDB warehouse over the Parquet lake."""

from fbk_tasks.warehouse.build import build_warehouse

__all__ = ["build_warehouse"]
