"""Evaluation metrics and reports (DAVIS J&F, image IoU metrics)."""
from vos.eval.davis import DavisResult, evaluate_davis, write_csvs  # noqa: F401
from vos.eval.episodic import PooledMeter, fold_mean  # noqa: F401
from vos.eval.iou import PooledIoU, boundary_band, boundary_iou  # noqa: F401
