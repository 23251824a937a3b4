"""Frame-streaming multi-object tracking: the paper's video mode of PerSAM / PerSAM-F, and SAM 2.1; objects given by
a mask, or by reference photos and found, lost and found again (:mod:`vos.trackers.redetect`). Names are imported on
first use (the options need no torch)."""
from vos.lazy import lazy_attributes

_LAZY = {"Tracker": "vos.trackers.tracker", "TrackerOptions": "vos.trackers.options",
         "FindOptions": "vos.trackers.options", "FrameResult": "vos.trackers.result",
         "ObjectOutput": "vos.trackers.result", "ObjectStatus": "vos.trackers.result",
         "ObjectManager": "vos.trackers.state"}
__all__ = list(_LAZY)

__getattr__, __dir__ = lazy_attributes(__name__, _LAZY)
