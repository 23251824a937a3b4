"""Many videos: job lists (DAVIS / YouTube-VOS layouts, CSV manifests), the local engine, the Ray engine, the
summary. Each job goes through the run layer (:func:`vos.runs.track`)."""
from vos.batch.jobs import Job, csv_jobs, davis_jobs, youtube_vos_jobs
from vos.batch.run import BatchRun, JobResult, Summary, pending, run_job, run_local

__all__ = ["BatchRun", "Job", "JobResult", "Summary", "csv_jobs", "davis_jobs", "pending", "run_job", "run_local",
           "youtube_vos_jobs"]
