"""Lay out the MOSEv2 evaluation fixtures and record what the official ``score.py`` makes of them.

Ground truth comes from the real DAVIS masks of davis-mini (nearest-neighbour downscaled, frames renamed ``%05d``,
objects hidden on some frames so that they leave and come back); predictions are geometric edits of it. With
``--official DIR`` (the ``MOSEv2/sam2_rcms/tools`` folder of ``henghuiding/MOSE-api``) and ``--python`` (a venv with
numpy, opencv, pillow, tqdm, scikit-image) the official tool is run UNCHANGED on every case, and its outputs
(``scores.txt``, ``metrics.json``, stdout, exit status, last stderr line) are stored under ``<case>/expected/``;
``dump_official.py`` (run in the same venv) stores the official unrounded per-frame and per-object values in
``values.json``.

    python tests/data/mosev2_eval/make_cases.py --official /path/to/MOSE-api/MOSEv2/sam2_rcms/tools \
        --python /path/to/venv/bin/python

Without ``--official`` only the inputs are (re)written. Nothing here is code of the official tool.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
DAVIS = HERE.parents[1] / "data" / "davis_eval" / "data" / "davis-mini" / "Annotations" / "480p"
SRC_SIZE = (480, 854)


# ----------------------------------------------------------------------------------------------------------------
# Ground truth


@dataclass
class VideoSpec:
    """A GT video cut from a davis-mini sequence: frames ``start .. start+n-1`` resized to ``size`` (H, W);
    ``hide[id]`` = frame indices (0-based, in the new video) where object ``id`` is erased from the GT;
    ``ids`` = the meta's objects (may list an id that never appears)."""

    src: str
    start: int
    n: int
    size: tuple
    ids: Sequence[int]
    hide: dict[int, Sequence[int]] = field(default_factory=dict)
    null_size: bool = False


MAIN = {
    # 3 small/medium objects at 240x427 (0.008*diag = 3.92: disk of 9x9); object 2 is in frame 0, gone at the first
    # scored frame (its disappearance there is dropped) and comes and goes (OSVOS pseudo-GT); object 3 is hidden on
    # frames 20-25 (disappears, reappears).
    "kite": VideoSpec("kite-surf", 13, 32, (240, 427), (1, 2, 3), {3: range(20, 26)}),
    # 200x356 (0.008*diag = 3.27: an even 8x8 disk); object 2 first appears at frame 7 (a late first appearance);
    # object 1 disappears at frame 18 and never comes back.
    "moto": VideoSpec("motocross-jump", 0, 24, (200, 356), (1, 2), {2: range(7), 1: range(18, 24)}),
    # one large object, hidden twice.
    "swan": VideoSpec("blackswan", 0, 20, (240, 427), (1,), {1: (5, 6, 7, 8, 12, 13)}),
    # 120x214 (0.008*diag = 1.96); 34 scored frames = 3 chunks of the official tool; object 2 is in the meta but
    # never in the GT (empty GT on every frame).
    "car": VideoSpec("car-shadow", 0, 36, (120, 214), (1, 2)),
}
SMALL = {
    "s_kite": VideoSpec("kite-surf", 30, 6, (240, 427), (1, 2, 3), {1: (3,)}),
    "s_three": VideoSpec("car-shadow", 10, 3, (120, 214), (1,), null_size=True),  # one scored frame; h/w null
    "s_two": VideoSpec("blackswan", 40, 2, (120, 214), (1,)),  # no scored frame
}


def source_maps(spec: VideoSpec) -> list[np.ndarray]:
    """The unhidden label maps (``uint8`` H×W) of the video, resized with nearest neighbour."""
    h, w = spec.size
    out = []
    for t in range(spec.start, spec.start + spec.n):
        labels = np.asarray(Image.open(DAVIS / spec.src / f"{t:05d}.png"))
        out.append(cv2.resize(labels, (w, h), interpolation=cv2.INTER_NEAREST))
    return out


def gt_maps(spec: VideoSpec) -> list[np.ndarray]:
    maps = [m.copy() for m in source_maps(spec)]
    for obj, frames in spec.hide.items():
        for t in frames:
            maps[t][maps[t] == obj] = 0
    return maps


PALETTE = Image.open(DAVIS / "kite-surf" / "00000.png").getpalette()


def save_png(path: Path, labels: np.ndarray, mode: str = "P") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(labels.astype(np.uint8), "L")
    if mode == "P":
        img = img.convert("P")
        img.putpalette(PALETTE)
    elif mode == "RGB":
        img = img.convert("RGB")
    img.save(path, optimize=True)


def write_gt(root: Path, videos: dict[str, VideoSpec], meta: bool = True, length_delta: int = 0) -> None:
    videos_meta = {}
    for name, spec in videos.items():
        for t, labels in enumerate(gt_maps(spec)):
            save_png(root / "Annotations" / name / f"{t:05d}.png", labels)
        h, w = (None, None) if spec.null_size else spec.size
        videos_meta[name] = {"length": spec.n + length_delta, "height": h, "width": w,
                             "objects": {str(k): {"category": spec.src} for k in spec.ids}}
    if meta:
        (root / "meta.json").write_text(json.dumps({"videos": videos_meta}, indent=2) + "\n")


# ----------------------------------------------------------------------------------------------------------------
# Prediction edits (each takes the GT maps of one video and returns the predicted maps)


def shift(mask: np.ndarray, dy: int, dx: int) -> np.ndarray:
    out = np.zeros_like(mask)
    h, w = mask.shape
    out[max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = mask[max(-dy, 0):h - max(dy, 0),
                                                                     max(-dx, 0):w - max(dx, 0)]
    return out


def morph(mask: np.ndarray, k: int) -> np.ndarray:
    """Dilate (k > 0) or erode (k < 0) a bool mask with a (2|k|+1)² square."""
    if k == 0:
        return mask
    kernel = np.ones((2 * abs(k) + 1,) * 2, np.uint8)
    op = cv2.dilate if k > 0 else cv2.erode
    return op(mask.astype(np.uint8), kernel).astype(bool)


def paint(objects: dict[int, np.ndarray], shape) -> np.ndarray:
    """Label map from per-object bool masks, later ids over earlier ones."""
    out = np.zeros(shape, np.uint8)
    for k, m in objects.items():
        out[m] = k
    return out


def edit(spec: VideoSpec, seed: int, *, fp_hidden: dict[int, bool], redetect_delay: dict[int, int | None],
         jitter: int = 2, extra: Callable[[int, dict[int, np.ndarray]], None] | None = None) -> list[np.ndarray]:
    """Perturb each object (random shift ≤ ``jitter``, erode/dilate ≤ 2 px). On frames where an object is absent from
    the GT, ``fp_hidden[id]`` predicts a false positive: its real mask where the GT hides it, else its last mask seen;
    after each absence the prediction stays empty for ``redetect_delay[id]`` frames (None: never re-detected)."""
    rng = np.random.default_rng(seed)
    src, gt = source_maps(spec), gt_maps(spec)
    lost_until: dict[int, float] = {}
    last_seen: dict[int, np.ndarray] = {}
    out = []
    for t in range(spec.n):
        objects = {}
        for k in spec.ids:
            mask = gt[t] == k
            if mask.any():
                last_seen[k] = mask
                if t < lost_until.get(k, -1):
                    mask = np.zeros_like(mask)
            else:
                if fp_hidden.get(k, False):
                    real = src[t] == k
                    mask = real if real.any() else last_seen.get(k, mask)
                delay = redetect_delay.get(k, 0)
                lost_until[k] = np.inf if delay is None else t + 1 + delay
            dy, dx = rng.integers(-jitter, jitter + 1, size=2)
            objects[k] = morph(shift(mask, int(dy), int(dx)), int(rng.integers(-2, 3)))
        if extra is not None:
            extra(t, objects)
        out.append(paint(objects, gt[t].shape))
    return out


def ghost(video_ids: Sequence[int], frames: Sequence[int], box) -> Callable[[int, dict[int, np.ndarray]], None]:
    """A false-positive square ``box`` = (y0, y1, x0, x1) for object ``video_ids[0]`` on ``frames``."""
    def add(t: int, objects: dict[int, np.ndarray]) -> None:
        if t in frames:
            y0, y1, x0, x1 = box
            objects[video_ids[0]][y0:y1, x0:x1] = True
    return add


def swap(a: int, b: int, frames: Sequence[int]) -> Callable[[int, dict[int, np.ndarray]], None]:
    def apply(t: int, objects: dict[int, np.ndarray]) -> None:
        if t in frames:
            objects[a], objects[b] = objects[b], objects[a]
    return apply


def write_pred(root: Path, name: str, maps: list[np.ndarray], mode: str = "P") -> None:
    for t, labels in enumerate(maps):
        save_png(root / name / f"{t:05d}.png", labels, mode)


def pred_fp(name: str) -> list[np.ndarray]:
    """False positives where the GT hides an object, late re-detection."""
    spec = MAIN.get(name) or SMALL[name]
    if name == "car":
        return edit(spec, 11, fp_hidden={}, redetect_delay={}, extra=ghost((2,), range(4, 12), (10, 18, 20, 30)))
    return edit(spec, sum(map(ord, name)), fp_hidden=dict.fromkeys(spec.ids, True),
                redetect_delay=dict.fromkeys(spec.ids, 2))


def pred_clean(name: str) -> list[np.ndarray]:
    """Absences correctly emptied; some objects re-detected at once, others never; an id swap."""
    spec = MAIN.get(name) or SMALL[name]
    never = {"swan": {1: None}, "moto": {2: None}, "kite": {3: 0}}.get(name, {})
    extra = swap(1, 3, range(3, 6)) if name == "kite" else None
    return edit(spec, 7 + sum(map(ord, name)), fp_hidden={}, redetect_delay=never, jitter=1, extra=extra)


def pred_exact(name: str) -> list[np.ndarray]:
    return gt_maps(MAIN.get(name) or SMALL[name])


# ----------------------------------------------------------------------------------------------------------------
# Cases


@dataclass
class Case:
    name: str
    gt: str
    description: str
    build: Callable[[Path], None]  # writes the prediction folder
    vos: dict  # {"outcome": "ok"} or {"outcome": "error", "error": class name, "names": path relative to case}


def preds(videos: dict[str, VideoSpec], make: Callable[[str], list[np.ndarray]], skip=()) -> Callable[[Path], None]:
    def build(pred: Path) -> None:
        for name in videos:
            if name not in skip:
                write_pred(pred, name, make(name))
    return build


def then(build: Callable[[Path], None], change: Callable[[Path], None]) -> Callable[[Path], None]:
    def both(pred: Path) -> None:
        build(pred)
        change(pred)
    return both


def remove(*rel: str) -> Callable[[Path], None]:
    def run(pred: Path) -> None:
        for r in rel:
            (pred / r).unlink()
    return run


def wrapped(videos, make, skip=()) -> Callable[[Path], None]:
    def build(pred: Path) -> None:
        preds(videos, make, skip)(pred / "submission")
    return build


def resize_one(rel: str, size) -> Callable[[Path], None]:
    def run(pred: Path) -> None:
        labels = np.asarray(Image.open(pred / rel))
        save_png(pred / rel, cv2.resize(labels, (size[1], size[0]), interpolation=cv2.INTER_NEAREST))
    return run


def set_pixels(rel: str, value: int) -> Callable[[Path], None]:
    def run(pred: Path) -> None:
        labels = np.asarray(Image.open(pred / rel)).copy()
        labels[5:9, 5:9] = value
        save_png(pred / rel, labels)
    return run


def add_files(files: dict[str, str | None]) -> Callable[[Path], None]:
    """``files[rel]`` = an existing prediction to copy there, or None for a small text file."""
    def run(pred: Path) -> None:
        for rel, source in files.items():
            if source is None:
                (pred / rel).write_text("not a mask\n")
            else:
                shutil.copyfile(pred / source, pred / rel)
    return run


def rgb(videos, make, only: str) -> Callable[[Path], None]:
    def build(pred: Path) -> None:
        for name in videos:
            write_pred(pred, name, make(name), mode="RGB" if name == only else "P")
    return build


OK = {"outcome": "ok"}


def error(cls: str, names: str) -> dict:
    return {"outcome": "error", "error": cls, "names": names}


CASES = [
    Case("main_fp_late_redetect", "main", "MAIN; predictions keep a false positive where the GT hides an object and "
         "re-detect 2 frames late; car: a ghost of the never-present object 2", preds(MAIN, pred_fp), OK),
    Case("main_clean_never_redetect", "main", "MAIN; absences correctly emptied; swan never re-detected after its "
         "first absence, moto object 2 never detected, kite objects 1/3 swapped on frames 3-5",
         preds(MAIN, pred_clean), OK),
    Case("main_exact", "main", "MAIN; the prediction is the GT itself", preds(MAIN, pred_exact), OK),
    Case("main_wrapped_missing_video", "main", "MAIN; predictions inside a single top folder 'submission/' (the "
         "official tool descends into it) and no 'swan' folder (the official tool scores its objects 0)",
         wrapped(MAIN, pred_fp, skip=("swan",)), OK),
    Case("small_ok", "small", "SMALL (6-, 3- and 2-frame videos; s_three has null height/width in the meta)",
         preds(SMALL, pred_fp), OK),
    Case("small_extra_files", "small", "SMALL; s_kite lacks its last frame, has an extra frame 00009.png after the "
         "end, a hidden .00003.png and a notes.txt: the scored frames are unchanged",
         then(preds(SMALL, pred_fp), then(remove("s_kite/00005.png"),
                                           add_files({"s_kite/00009.png": "s_kite/00001.png",
                                                      "s_kite/.00003.png": "s_kite/00004.png",
                                                      "s_kite/notes.txt": None}))), OK),
    Case("reject_missing_frame", "small", "SMALL; s_kite/00002.png missing: the official tool shifts the frames it "
         "scores (exit 0); vos rejects", then(preds(SMALL, pred_fp), remove("s_kite/00002.png")),
         error("EvaluationError", "pred/s_kite/00002.png")),
    Case("reject_too_few_frames", "small", "SMALL; s_kite/00001.png and 00002.png missing: fewer files than scored "
         "frames (official: AssertionError)",
         then(preds(SMALL, pred_fp), remove("s_kite/00001.png", "s_kite/00002.png")),
         error("EvaluationError", "pred/s_kite/00001.png")),
    Case("reject_wrong_size", "small", "SMALL; s_kite/00003.png is 120x213 (official: ValueError)",
         then(preds(SMALL, pred_fp), resize_one("s_kite/00003.png", (120, 213))),
         error("EvaluationError", "pred/s_kite/00003.png")),
    Case("reject_unknown_id", "small", "SMALL; s_kite/00002.png contains id 7, not an object of the meta (the "
         "official tool ignores it, exit 0); vos rejects",
         then(preds(SMALL, pred_fp), set_pixels("s_kite/00002.png", 7)),
         error("EvaluationError", "pred/s_kite/00002.png")),
    Case("reject_bad_name", "small", "SMALL; an extra s_kite/final.png (official: ValueError in int())",
         then(preds(SMALL, pred_fp), add_files({"s_kite/final.png": "s_kite/00001.png"})),
         error("EvaluationError", "pred/s_kite/final.png")),
    Case("reject_rgb", "small", "SMALL with s_kite as RGB PNGs (the official tool converts them to its web palette "
         "and scores the indices, exit 0); vos rejects", rgb(SMALL, pred_exact, "s_kite"),
         error("EvaluationError", "pred/s_kite/00001.png")),
    Case("reject_missing_meta", "nometa", "SMALL's Annotations without meta.json (official: FileNotFoundError)",
         preds(SMALL, pred_exact), error("DatasetError", "../../gt/nometa/meta.json")),
    Case("reject_length_mismatch", "badlength", "SMALL with every meta length one more than the number of "
         "annotation files (official: 'Server-side error')", preds(SMALL, pred_exact),
         error("DatasetError", "../../gt/badlength/Annotations")),
]


def write_inputs(out: Path) -> None:
    gt = out / "gt"
    shutil.rmtree(gt, ignore_errors=True)
    write_gt(gt / "main", MAIN)
    write_gt(gt / "small", SMALL)
    write_gt(gt / "nometa", SMALL, meta=False)
    write_gt(gt / "badlength", SMALL, length_delta=1)
    for case in CASES:
        folder = out / "cases" / case.name
        shutil.rmtree(folder, ignore_errors=True)
        case.build(folder / "pred")
        spec = {"description": case.description, "gt_root": f"../../gt/{case.gt}", "vos": case.vos}
        (folder / "case.json").write_text(json.dumps(spec, indent=2) + "\n")


# ----------------------------------------------------------------------------------------------------------------
# Running the official tool


def run_official(out: Path, official: Path, python: str) -> None:
    probe = ("import numpy, cv2, PIL, skimage, tqdm, sys; print(sys.version.split()[0], numpy.__version__, "
             "cv2.__version__, PIL.__version__, skimage.__version__, tqdm.__version__)")
    versions = subprocess.run([python, "-c", probe], capture_output=True, text=True, check=True).stdout.split()
    for case in CASES:
        folder = out / "cases" / case.name
        gt = (folder / json.loads((folder / "case.json").read_text())["gt_root"]).resolve()
        expected = folder / "expected"
        shutil.rmtree(expected, ignore_errors=True)
        expected.mkdir()
        with tempfile.TemporaryDirectory() as tmp:
            args = ["--meta", str(gt / "meta.json"), "--ann", str(gt / "Annotations"), "--pred", str(folder / "pred"),
                    "--output", str(Path(tmp) / "out")]
            done = subprocess.run([python, str(official / "score.py"), *args], check=False,
                                  capture_output=True, text=True, cwd=tmp)
            for name in ("scores.txt", "metrics.json"):
                if (Path(tmp) / "out" / name).is_file():
                    shutil.copyfile(Path(tmp) / "out" / name, expected / name)
            if done.returncode == 0:
                (expected / "stdout.txt").write_text(done.stdout)
                dump = subprocess.run([python, str(HERE / "dump_official.py"), "--official", str(official),
                                       "--values", str(expected / "values.json"), *args[:6],
                                       "--output", str(Path(tmp) / "dump")],
                                      check=False, capture_output=True, text=True, cwd=tmp)
                if dump.returncode != 0:
                    sys.exit(f"{case.name}: dump_official.py failed:\n{dump.stderr}")
        stderr = [line for line in done.stderr.splitlines() if line.strip() and "it/s]" not in line
                  and "s/it]" not in line]
        record = {"exit_code": done.returncode, "last_stderr_line": stderr[-1] if done.returncode else "",
                  "annotations_listdir": os.listdir(gt / "Annotations") if (gt / "Annotations").is_dir() else [],
                  "python": versions[0], "numpy": versions[1], "opencv": versions[2], "pillow": versions[3],
                  "scikit-image": versions[4], "tqdm": versions[5]}
        (expected / "official.json").write_text(json.dumps(record, indent=2) + "\n")
        print(f"{case.name}: exit {done.returncode} {record['last_stderr_line']}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE, help="fixture root (default: this folder)")
    parser.add_argument("--official", type=Path, help="MOSE-api's MOSEv2/sam2_rcms/tools folder")
    parser.add_argument("--python", default=sys.executable, help="python of the official tool's venv")
    args = parser.parse_args(argv)
    write_inputs(args.out)
    if args.official is not None:
        run_official(args.out, args.official.resolve(), args.python)


if __name__ == "__main__":
    main()
