"""Errors a user can cause. The CLI prints ``str(error)`` as one line and exits with status 2."""


class VosError(Exception):
    """Base class: bad input or environment, with a message naming the input and the problem."""


class InputError(VosError):
    """An input file or argument is missing, unreadable, or does not fit (sizes, values)."""


class MaskError(InputError):
    """A mask is empty, too small for the reference features, or has ids out of range."""


class VideoError(InputError):
    """A video cannot be opened or decoded (``frame`` is the 0-based index of the failing frame, if known)."""

    def __init__(self, message: str, frame: "int | None" = None):
        super().__init__(message)
        self.frame = frame


class StreamError(VideoError):
    """A live source cannot be opened, stalled past the read time-out, or lost its connection for good."""


class CheckpointError(VosError):
    """A checkpoint is missing, cannot be downloaded, fails its hash, or does not fit the architecture."""


class DatasetError(InputError):
    """A dataset folder does not have the expected layout."""


class UnsafePickleError(DatasetError):
    """A pickle holds something other than plain data and numpy arrays."""


class EvaluationError(VosError):
    """A prediction set is rejected by the evaluation (missing frames, unknown ids, size mismatch)."""


class OutputError(VosError):
    """An output location holds another run or cannot be written."""


class ClusterError(VosError):
    """The Ray extra is missing, or the cluster cannot be reached, is too small, or loses the workers at start."""


class BatchFailed(VosError):
    """Some videos of a batch could not be tracked (the others were)."""
