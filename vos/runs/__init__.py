"""The run layer: typed options, the run-folder guard, resumable outputs and progress, for every entry point (the
command line, the browser app and the batch runner call these functions; none holds tracking logic of its own)."""
from vos.runs.folder import RUN_FILE, RunFolder, settings_changes
from vos.runs.options import ModelOptions, ReferencePhoto, TrackRun
from vos.runs.track import (COMPLETE_FILE, STATE_FILE, STATES_FILE, FrameEvent, ObjectHistory, RunSummary, StopControl,
                            completed_frames, is_complete, track)

__all__ = ["COMPLETE_FILE", "RUN_FILE", "STATE_FILE", "STATES_FILE", "FrameEvent", "ModelOptions", "ObjectHistory",
           "ReferencePhoto", "RunFolder", "RunSummary", "StopControl", "TrackRun", "completed_frames", "is_complete",
           "settings_changes", "track"]
