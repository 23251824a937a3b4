"""One browser session's state: the source and its first frame, the objects put on the first frame and on a
reference photo (clicks and boxes for the model's prompt decoder, or uploaded masks) with undo, each image's cached
features, the session's folder and run.

Coordinates are pixels of the image clicked on in ``(x, y)`` order (x = column, y = row); a box is
``(x0, y0, x1, y1)``.
"""
from __future__ import annotations

import secrets
import shutil
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, List, Optional, Tuple

import numpy as np
import torch.nn as nn

from vos.errors import InputError, MaskError, VideoError, VosError
from vos.io import load_label_map, read_rgb, read_video
from vos.prompts import Box, ObjectPrompt, masks_from_prompts
from vos.runs import ModelOptions

#: ``(options, model)`` of the page's current model, loaded only when a prompt needs it.
ModelSource = Callable[[], Tuple[ModelOptions, nn.Module]]


@dataclass(frozen=True)
class Source:
    """An opened source: ``video`` (what :func:`vos.io.read_video` opens: a path, URL or camera), ``name`` (shown
    in the page), ``frame`` (its first frame, RGB ``uint8 H×W×3``), ``frames`` (the count, None when unknown) and
    ``live`` (a stream or camera: tracking starts on the frame received then, not on this one)."""

    video: str
    name: str
    frame: np.ndarray = field(repr=False)
    frames: Optional[int]
    live: bool

    @property
    def size(self) -> Tuple[int, int]:
        """``(height, width)``."""
        return self.frame.shape[0], self.frame.shape[1]


def open_source(video: str, name: Optional[str] = None) -> Source:
    """Open ``video`` and read its first frame (a :class:`VideoError` naming ``name`` when it is not a video)."""
    name = name or video
    try:
        reader = read_video(video)
        try:
            frame = next(iter(reader), None)
            frames, live = reader.num_frames, reader.live
        finally:
            reader.close()
    except VideoError as err:
        raise VideoError(str(err).replace(str(video), name)) from None
    if frame is None:
        raise VideoError(f"{name}: no frame could be read")
    return Source(str(video), name, frame, frames, live)


@dataclass(frozen=True)
class AppObject:
    """One first-frame object ``obj_id``: ``points`` ``((x, y, label), …)`` and a ``box`` for the prompt decoder,
    or ``mask`` (``bool H×W``) from an uploaded PNG."""

    obj_id: int
    points: Tuple[Tuple[float, float, int], ...] = ()
    box: Optional[Box] = None
    mask: Optional[np.ndarray] = field(default=None, repr=False, compare=False)

    @property
    def prompt(self) -> Optional[ObjectPrompt]:
        """Its prompts (None for an uploaded mask)."""
        return None if self.mask is not None else ObjectPrompt(self.obj_id, self.points, self.box)

    def describe(self) -> str:
        if self.mask is not None:
            return "uploaded mask"
        positive = sum(label == 1 for _, _, label in self.points)
        parts = [f"{positive} point(s)"] if positive else []
        parts += [f"{len(self.points) - positive} background point(s)"] if len(self.points) > positive else []
        return ", ".join(parts + (["a box"] if self.box is not None else []))


@dataclass(frozen=True)
class Objects:
    """The first frame's objects and ``current``, the id the next click refines (None: it starts a new object)."""

    items: Tuple[AppObject, ...] = ()
    current: Optional[int] = None

    @property
    def ids(self) -> List[int]:
        return [o.obj_id for o in self.items]

    def get(self, obj_id: Optional[int]) -> Optional[AppObject]:
        return next((o for o in self.items if o.obj_id == obj_id), None)

    def next_id(self) -> int:
        """The lowest free id (ids are palette indices 1..255)."""
        free = next((i for i in range(1, 256) if i not in self.ids), None)
        if free is None:
            raise InputError("255 objects already: remove one before adding another")
        return free

    def put(self, obj: AppObject, current: Optional[int]) -> "Objects":
        """With ``obj`` added or replacing the object of its id."""
        items = tuple(o for o in self.items if o.obj_id != obj.obj_id) + (obj,)
        return Objects(tuple(sorted(items, key=lambda o: o.obj_id)), current)

    def without(self, obj_id: int) -> "Objects":
        if self.get(obj_id) is None:
            raise InputError(f"there is no object {obj_id} to remove")
        return Objects(tuple(o for o in self.items if o.obj_id != obj_id), None)


def first_frame_labels(objects: Objects, frame: np.ndarray, decode: Callable[[List[ObjectPrompt]], np.ndarray]
                       ) -> Optional[np.ndarray]:
    """The first frame's label map (``uint8 H×W``; None without objects): the prompt objects through ``decode``
    (:func:`vos.prompts.masks_from_prompts`), the uploaded masks painted over them."""
    if not objects.items:
        return None
    prompts = [o.prompt for o in objects.items if o.mask is None]
    labels = decode(prompts) if prompts else np.zeros(frame.shape[:2], np.uint8)
    for obj in objects.items:
        if obj.mask is not None:
            labels[obj.mask] = obj.obj_id
    hidden = [i for i in objects.ids if not (labels == i).any()]
    if hidden:
        raise MaskError(f"object {hidden[0]} has no pixel left on the first frame: an uploaded mask covers it "
                        f"(remove one of the two)")
    return labels


class Canvas:
    """An image that objects are put on, by clicks and boxes (through the model's prompt decoder) or uploaded masks,
    with undo: the first frame of the source, or a reference photo. ``what`` names it in messages."""

    def __init__(self, image: np.ndarray, what: str) -> None:
        self.image, self.what = image, what
        self.objects = Objects()
        self.labels: Optional[np.ndarray] = None
        self.corner: Optional[Tuple[float, float]] = None   # the first corner of a box being drawn
        self._history: List[Objects] = []
        self._features: Optional[Tuple[ModelOptions, Any]] = None
        self._lock = threading.Lock()

    @property
    def size(self) -> Tuple[int, int]:
        """``(height, width)``."""
        return self.image.shape[0], self.image.shape[1]

    # -- features and masks -----------------------------------------------------------------------------------
    def features(self, options: ModelOptions, model: nn.Module):
        """The image's features under ``model`` (computed once per image and model)."""
        from vos.models.backend import backend_for

        with self._lock:
            if self._features is None or self._features[0] != options:
                self._features = (options, backend_for(model).encode(self.image))
            return self._features[1]

    def known(self, options: ModelOptions) -> Optional[Tuple[np.ndarray, Any]]:
        """``(image, features)`` when the image is already encoded with the model of ``options``, else None."""
        with self._lock:
            if self._features is None or self._features[0] != options:
                return None
            return self.image, self._features[1]

    def _labels(self, objects: Objects, model: ModelSource) -> Optional[np.ndarray]:
        def decode(prompts: List[ObjectPrompt]) -> np.ndarray:
            options, net = model()
            return masks_from_prompts(net, self.image, prompts, self.features(options, net))

        return first_frame_labels(objects, self.image, decode)

    def _apply(self, objects: Objects, model: ModelSource) -> None:
        """Make ``objects`` current if their masks can be computed (else the error, nothing changed)."""
        labels = self._labels(objects, model)
        self._history.append(self.objects)
        self.objects, self.labels, self.corner = objects, labels, None

    def refresh(self, model: ModelSource) -> None:
        """Recompute the masks (another model was chosen)."""
        self.labels = self._labels(self.objects, model)

    # -- edits ------------------------------------------------------------------------------------------------
    def _check_inside(self, x: float, y: float) -> None:
        height, width = self.size
        if not (0 <= x < width and 0 <= y < height):
            raise InputError(f"the click ({x:g}, {y:g}) is outside the {self.what} ({width}×{height}, W×H): click "
                             f"on the picture")

    def _target(self) -> AppObject:
        """The object the next prompt goes to (a new one when none is chosen)."""
        obj = self.objects.get(self.objects.current)
        if obj is None:
            return AppObject(self.objects.next_id())
        if obj.mask is not None:
            raise InputError(f"object {obj.obj_id} comes from an uploaded mask: choose 'new object' to add clicks")
        return obj

    def add_point(self, x: float, y: float, label: int, model: ModelSource) -> None:
        """A click on ``(x, y)``: on the object (``label`` 1) or the background (0) of the current object."""
        self._check_inside(x, y)
        obj = self._target()
        self._apply(self.objects.put(replace(obj, points=obj.points + ((float(x), float(y), int(label)),)),
                                     obj.obj_id), model)

    def add_corner(self, x: float, y: float, model: ModelSource) -> bool:
        """A box corner: the first click is remembered, the second sets the current object's box. True when the
        box is complete."""
        self._check_inside(x, y)
        if self.corner is None:
            self._target()
            self.corner = (float(x), float(y))
            return False
        (x0, y0), obj = self.corner, self._target()
        box = (min(x0, x), min(y0, y), max(x0, x) + 1, max(y0, y) + 1)
        self._apply(self.objects.put(replace(obj, box=box), obj.obj_id), model)
        return True

    def add_mask(self, path: Path, name: str, model: ModelSource) -> List[int]:
        """Each object of an uploaded mask PNG (palette index = id; binary = one object) as a new object;
        returns the new ids."""
        try:
            mask = load_label_map(path)
        except VosError as err:
            raise type(err)(str(err).replace(str(path), name)) from None
        if mask.shape != self.size:
            raise MaskError(f"{name}: the mask is {mask.shape[1]}×{mask.shape[0]} (W×H) but the {self.what} is "
                            f"{self.size[1]}×{self.size[0]}: upload a mask of the {self.what}'s size")
        values = [int(v) for v in np.unique(mask) if v != 0]
        if not values:
            raise MaskError(f"{name}: no object in the mask (every pixel is background, 0)")
        objects, ids = self.objects, []
        for value in values:
            ids.append(objects.next_id())
            objects = objects.put(AppObject(ids[-1], mask=mask == value), None)
        self._apply(objects, model)
        return ids

    def remove(self, obj_id: int, model: ModelSource) -> None:
        self._apply(self.objects.without(obj_id), model)

    def choose(self, obj_id: Optional[int]) -> None:
        """Direct the next clicks to ``obj_id`` (None: a new object)."""
        if obj_id is not None and self.objects.get(obj_id) is None:
            raise InputError(f"there is no object {obj_id}")
        self.objects, self.corner = replace(self.objects, current=obj_id), None

    def undo(self, model: ModelSource) -> None:
        """Take back the last prompt, mask or removal (a box's first corner first)."""
        if self.corner is not None:
            self.corner = None
            return
        if not self._history:
            raise InputError("nothing to undo")
        objects = self._history[-1]
        self.labels = self._labels(objects, model)
        self.objects = objects
        self._history.pop()


class Session:
    """The state of one browser session (a ``gr.State``: Gradio deep-copies the initial value for each browser
    session, and that copy is a new, empty session): the source and its first frame's :class:`Canvas`, a reference
    photo's :class:`Canvas` (objects to find), the session's folder and its latest run."""

    def __init__(self) -> None:
        self.source: Optional[Source] = None
        self.first: Optional[Canvas] = None
        self.reference: Optional[Canvas] = None
        self.reference_file: Optional[Path] = None
        self.folder: Optional[Path] = None
        self.job: Any = None                                # the latest run (vos.app.runner.RunJob)
        #: Held by each event that reads or changes the session (Gradio may run two events of a page at once).
        self.busy = threading.RLock()

    def __deepcopy__(self, memo) -> "Session":
        return Session()

    def open(self, source: Source) -> None:
        """Start over on ``source``: no objects on its first frame, no history (the reference photo stays)."""
        self.source, self.first = source, Canvas(source.frame, "frame")

    def open_reference(self, photo: Path, name: str, out: Path) -> None:
        """A reference photo (kept in the session folder: the run settings name it), with no objects yet."""
        image = read_rgb(photo, f"reference photo {name}")
        self.reference_file = self.keep_upload(photo, out)
        self.reference = Canvas(image, "reference photo")

    def canvas(self, which: str) -> Canvas:
        """``"first"`` (the first frame) or ``"reference"`` (the reference photo)."""
        if which == "reference":
            if self.reference is None:
                raise InputError("upload a reference photo first")
            return self.reference
        self.require_source()
        return self.first

    def session_folder(self, out: Path) -> Path:
        """This session's folder under ``out`` (created on first use)."""
        if self.folder is None:
            stamp = time.strftime("%Y%m%d-%H%M%S")
            self.folder = Path(out) / f"session-{stamp}-{secrets.token_hex(3)}"
            self.folder.mkdir(parents=True, exist_ok=True)
        return self.folder

    def keep_upload(self, upload: Path, out: Path) -> Path:
        """A copy of an uploaded file in the session folder (the run settings name it; resuming needs it)."""
        folder = self.session_folder(out) / "uploads"
        folder.mkdir(exist_ok=True)
        target = folder / f"{secrets.token_hex(3)}-{upload.name}"
        shutil.copyfile(upload, target)
        return target

    def require_source(self) -> Source:
        if self.source is None:
            raise InputError("open a video first: upload one, give a path or stream, or take the demo video")
        return self.source
