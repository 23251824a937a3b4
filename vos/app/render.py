"""What the page shows: the first frame with its objects and prompts, the object list, messages, the progress bar.

Images are RGB ``uint8 H×W×3``; coordinates are pixels in ``(x, y)`` order.
"""
from __future__ import annotations

import html
from typing import Optional, Tuple

import cv2
import numpy as np

from vos.app.session import AppObject, Objects
from vos.io import DAVIS_PALETTE, draw_overlay
from vos.io.writers import draw_notes
from vos.runs import FrameEvent
from vos.trackers.result import finding

_POSITIVE, _NEGATIVE, _WHITE, _BORDER = (40, 220, 60), (235, 40, 40), (255, 255, 255), (128, 128, 128)


def _colour(obj_id: int) -> Tuple[int, int, int]:
    return tuple(int(c) for c in DAVIS_PALETTE[obj_id])


def _scale(frame: np.ndarray) -> int:
    """Marker size in pixels for this frame (about 1/100 of its larger side, at least 4)."""
    return max(4, max(frame.shape[:2]) // 100)


def _interior_point(mask: np.ndarray) -> Tuple[int, int]:
    """``(x, y)`` of the mask pixel farthest from the mask's border (where its id is written)."""
    distance = cv2.distanceTransform(np.pad(mask, 1).astype(np.uint8), cv2.DIST_L2, 3)[1:-1, 1:-1]
    y, x = np.unravel_index(int(distance.argmax()), distance.shape)
    return int(x), int(y)


def _draw_id(image: np.ndarray, obj_id: int, labels: np.ndarray) -> None:
    mask = labels == obj_id
    if not mask.any():
        return
    x, y = _interior_point(mask)
    size = _scale(image) / 8
    text, font = str(obj_id), cv2.FONT_HERSHEY_SIMPLEX
    (w, h), _ = cv2.getTextSize(text, font, size, 2)
    origin = (x - w // 2, y + h // 2)
    cv2.putText(image, text, origin, font, size, (0, 0, 0), max(3, int(size * 4)), cv2.LINE_AA)
    cv2.putText(image, text, origin, font, size, _WHITE, max(1, int(size * 2)), cv2.LINE_AA)


def _draw_prompts(image: np.ndarray, obj: AppObject) -> None:
    r = _scale(image)
    if obj.box is not None:
        x0, y0, x1, y1 = (int(round(v)) for v in obj.box)
        cv2.rectangle(image, (x0, y0), (x1 - 1, y1 - 1), _colour(obj.obj_id), max(2, r // 3))
    for x, y, label in obj.points:
        centre = (int(round(x)), int(round(y)))
        cv2.circle(image, centre, r, _WHITE, -1, cv2.LINE_AA)
        cv2.circle(image, centre, r - 2, _POSITIVE if label == 1 else _NEGATIVE, -1, cv2.LINE_AA)


def margin(size: Tuple[int, int]) -> int:
    """Width in pixels of the grey border around the first frame of ``size`` = ``(height, width)`` (a click there is
    outside the frame, which the page reports; the browser ignores clicks beside a picture)."""
    return max(8, max(size) // 50)


def frame_point(index: Tuple[float, float], size: Tuple[int, int]) -> Tuple[float, float]:
    """First-frame ``(x, y)`` of a click at ``index`` = ``(x, y)`` on :func:`first_frame_view`'s picture."""
    m = margin(size)
    return float(index[0]) - m, float(index[1]) - m


def first_frame_view(frame: np.ndarray, labels: Optional[np.ndarray], objects: Objects,
                     corner: Optional[Tuple[float, float]]) -> np.ndarray:
    """The first frame with each object in its DAVIS colour and id (:func:`vos.io.draw_overlay`), its points
    (green: object, red: background), its box, and the first corner of a box being drawn; inside a grey border of
    :func:`margin` pixels."""
    image = frame.copy() if labels is None else draw_overlay(frame, labels)
    for obj in objects.items:
        if labels is not None:
            _draw_id(image, obj.obj_id, labels)
        _draw_prompts(image, obj)
    if corner is not None:
        x, y, r = int(round(corner[0])), int(round(corner[1])), 2 * _scale(image)
        cv2.drawMarker(image, (x, y), _WHITE, cv2.MARKER_CROSS, r, max(2, r // 6))
    m = margin(frame.shape[:2])
    return cv2.copyMakeBorder(image, m, m, m, m, cv2.BORDER_CONSTANT, value=_BORDER)


def track_view(event: FrameEvent) -> np.ndarray:
    """A tracked frame as in the overlay video, with each object's state where the run has objects to find."""
    image = draw_overlay(event.frame, event.label_map)
    if event.result is not None and finding(event.result.states):
        image = draw_notes(image, [(i, f"{i}: {s.note}") for i, s in event.result.states.items()])
    return image


def states_line(event: FrameEvent) -> str:
    """``object 1 searching 0.12 · object 2 tracking`` of a frame whose run has objects to find (else empty)."""
    if event.result is None or not finding(event.result.states):
        return ""
    return " · ".join(f"object {i} {s.note}" for i, s in event.result.states.items())


def object_list(objects: Objects, empty: str = "click on the first frame") -> str:
    """HTML: one line per object (colour swatch, ``object N``, its prompts), and where the next click goes."""
    lines = [f'<li data-object-id="{o.obj_id}"><span class="vos-swatch" style="background:rgb{_colour(o.obj_id)}">'
             f'</span>object {o.obj_id}: {html.escape(o.describe())}</li>' for o in objects.items]
    target = (f"object {objects.current}" if objects.get(objects.current) is not None
              else f"a new object ({objects.next_id() if len(objects.items) < 255 else 'none free'})")
    body = "".join(lines) or f"<li>no object yet: {html.escape(empty)}</li>"
    return f'<ul class="vos-objects">{body}</ul><p class="vos-target">Clicks go to {html.escape(target)}.</p>'


def object_choices(objects: Objects) -> Tuple[list, str]:
    """``(choices, value)`` of the object selector: ``new`` and each id."""
    choices = [("new object", "new")] + [(f"object {i}", str(i)) for i in objects.ids]
    current = objects.current if objects.get(objects.current) is not None else None
    return choices, "new" if current is None else str(current)


def message(text: str = "", error: bool = False) -> str:
    """HTML of the message line (an error in red)."""
    if not text:
        return '<div class="vos-message"></div>'
    kind = "vos-error" if error else "vos-info"
    return f'<div class="vos-message {kind}" role="{"alert" if error else "status"}">{html.escape(text)}</div>'


def progress(done: int, total: Optional[int], note: str = "", seconds: Optional[float] = None) -> str:
    """HTML progress bar: ``done`` frames of ``total`` (an indeterminate bar when unknown), the last frame's time."""
    bar = f'<progress max="{total}" value="{done}"></progress>' if total else "<progress></progress>"
    text = f"{done} / {total} frames" if total else f"{done} frames"
    if seconds is not None:
        text += f" · {seconds:.2f} s/frame"
    if note:
        text += f" · {note}"
    return f'<div class="vos-progress" data-done="{done}">{bar} <span>{html.escape(text)}</span></div>'
