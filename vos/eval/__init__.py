"""Evaluation metrics and reports (DAVIS J&F, image IoU metrics)."""
from vos.eval.davis import DavisResult, evaluate_davis, write_csvs  # noqa: F401
