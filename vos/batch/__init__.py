"""Many videos: job lists (DAVIS / YouTube-VOS layouts, CSV manifests), the local engine, the Ray engine, the
summary. Each job goes through the run layer (:func:`vos.runs.track`).

Names are imported on first use (PEP 562), so a command that only parses its options imports no torch.
"""
from vos.lazy import lazy_attributes

#: The batch engines: ``local`` (:func:`run_local`) and ``ray`` (:func:`vos.batch.ray.run_ray`).
ENGINES = ("local", "ray")

_LAZY = {"Job": "vos.batch.jobs", "csv_jobs": "vos.batch.jobs", "davis_jobs": "vos.batch.jobs",
         "youtube_vos_jobs": "vos.batch.jobs", "video_jobs": "vos.batch.jobs", "JobSource": "vos.batch.sources",
         "BatchRun": "vos.batch.run",
         "JobResult": "vos.batch.run",
         "Summary": "vos.batch.run", "pending": "vos.batch.run", "run_engine": "vos.batch.engines",
         "run_job": "vos.batch.run", "run_local": "vos.batch.run"}
__all__ = ["ENGINES", *sorted(_LAZY)]

__getattr__, __dir__ = lazy_attributes(__name__, _LAZY)
