"""Frame-streaming multi-object tracking (paper video mode of PerSAM / PerSAM-F)."""
from vos.trackers.state import ObjectManager, ObjectState
from vos.trackers.tracker import FrameResult, Tracker

__all__ = ["Tracker", "FrameResult", "ObjectState", "ObjectManager"]
