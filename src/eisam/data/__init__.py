"""Data layer: atomic/synthetic datasets -> catalogue, leakage-free splits, item statistics."""
from eisam.data.item_stats import ItemStats, compute_item_stats
from eisam.data.load import load_rec_data
from eisam.data.types import DataError, RecData, Sample

__all__ = ["Sample", "RecData", "ItemStats", "DataError", "load_rec_data", "compute_item_stats"]
