"""vos: one-shot video object segmentation and tracking with Segment Anything (PerSAM, PerSAM-F, SAM 2.1).

Public names are imported on first use (PEP 562), so ``import vos.eval.davis`` does not import torch: the DAVIS
evaluation also runs where torch is not installed.
"""
from vos.errors import VosError
from vos.lazy import lazy_attributes

__version__ = "0.1.0"
_LAZY = {"read_video": "vos.io", "load_sam": "vos.models", "load_model": "vos.models", "PerSAM": "vos.persam",
         "PerSAMF": "vos.persam", "PerSAMResult": "vos.persam", "Tracker": "vos.trackers",
         "TrackerOptions": "vos.trackers", "FrameResult": "vos.trackers", "TrackRun": "vos.runs", "track": "vos.runs"}
__all__ = ["Tracker", "TrackerOptions", "FrameResult", "PerSAM", "PerSAMF", "PerSAMResult", "TrackRun", "track",
           "load_model", "load_sam", "read_video", "VosError", "__version__"]

__getattr__, __dir__ = lazy_attributes(__name__, _LAZY)
