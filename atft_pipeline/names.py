"""Names of the assets that are not a raw source or a feature family, and of the models.

Raw source assets are named in ``jquants.sources.RAW_SOURCES`` and feature-family assets in the
feature catalog; every other asset name, and the model names that predictions, trackers and the
report use, live here.
"""

CALENDAR_ASSET = "raw_trading_calendar"
TARGETS_ASSET = "targets"
DATASET_ASSET = "ml_dataset"
STATS_ASSET = "normalization_stats"
MODEL_ASSET = "atft_model"
LIGHTGBM_ASSET = "lightgbm_baseline"
PREDICTIONS_ASSET = "validation_predictions"
REPORT_ASSET = "evaluation_report"
LATEST_ASSET = "latest_predictions"
# Trained on the stored dataset as a whole (no partitions), in this order.
MODEL_ASSETS = (MODEL_ASSET, LIGHTGBM_ASSET, PREDICTIONS_ASSET, REPORT_ASSET)

# The model name in predictions, in MLflow (experiment) and under ATFT_HOME/models.
ATFT_MODEL = "atft_gat_fan"
