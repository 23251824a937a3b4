"""Frame-streaming multi-object tracking: the paper's video mode of PerSAM / PerSAM-F, and SAM 2.1."""
from vos.trackers.result import FrameResult, ObjectOutput
from vos.trackers.state import ObjectManager
from vos.trackers.tracker import Tracker, TrackerOptions

__all__ = ["Tracker", "TrackerOptions", "FrameResult", "ObjectOutput", "ObjectManager"]
