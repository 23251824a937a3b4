"""Lay out the SA-V evaluation cases and store what the official SA-V evaluator produces on them.

    python tests/data/sav_eval/make_cases.py --official /path/to/sam2/sav_dataset --python /path/to/venv/bin/python

``--official`` is the official ``sav_dataset`` folder of facebookresearch/sam2 (never part of this repository); it
is run unchanged. ``--python`` is the interpreter of a venv holding its requirements (numpy, opencv-python,
scikit-image, pillow, tqdm). For every case folder under ``cases/`` this script writes:

    gt/<video>/<object>/<frame>.png      ground truth in the SA-V val/test layout (built from davis-mini's real masks)
    pred/<video>/<object>/<frame>.png    predictions in the same layout
    case.json                            what the case is, what vos must do, what the official tool did
    expected/results.csv                 the official ``results.csv`` (cases the official tool accepts)
    expected/stdout.txt, stderr.txt      the official console output (time and progress lines removed)
    expected/values.json                 the official unrounded values: global J, F, J&F, per-object J and F means
                                         and per-frame J and F, obtained by importing the official module (``--dump``)

The official command is ``python sav_evaluator.py --gt_root <case>/gt --pred_root <copy of pred> -n 1`` run in the
``--official`` folder (the tool writes ``results.csv`` into the prediction root, so it runs on a copy); the
missing-video case is also run with ``--strict``. Frames are named like SA-V's 6 fps annotations (``00000``,
``00004``, ...: every 4th frame of a 24 fps video), taking every 3rd davis-mini frame.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
CASES = HERE / "cases"
DAVIS = HERE.parents[1] / "data" / "davis_eval" / "data" / "davis-mini" / "Annotations" / "480p"


# ----------------------------------------------------------------------------------------------------------------
# Masks (numpy, PIL and cv2 of the interpreter running the layout step)


def davis_labels(seq: str, scale: int, count: int, step: int = 3):
    """Every ``step``-th label map of a davis-mini sequence (``count`` of them), downscaled by ``scale`` (nearest)."""
    import numpy as np
    from PIL import Image

    files = sorted((DAVIS / seq).glob("*.png"))[::step][:count]
    maps = []
    for f in files:
        img = Image.open(f)
        img = img.resize((img.width // scale, img.height // scale), Image.NEAREST)
        maps.append(np.asarray(img).copy())
    return maps


def frame_name(k: int) -> str:
    """SA-V name of the k-th annotated frame (6 fps annotations of a 24 fps video)."""
    return f"{4 * k:05d}.png"


def save(path: Path, mask, style: str = "L255") -> None:
    """Write a binary mask as ``L`` 0/255 (L255), ``L`` 0/1 (L1), ``L`` 0/v (L<v>), palette 0/1 (P) or mode ``1``."""
    import numpy as np
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    m = np.asarray(mask, dtype=bool)
    if style == "P":
        img = Image.fromarray(m.astype(np.uint8), mode="L").convert("P")
        img.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    elif style == "1":
        img = Image.fromarray(m).convert("1")
    else:
        value = 255 if style == "L255" else int(style[1:])
        img = Image.fromarray(m.astype(np.uint8) * np.uint8(value), mode="L")
    img.save(path)


def dilate(mask, px: int):
    import cv2
    import numpy as np

    return cv2.dilate(np.asarray(mask, np.uint8), np.ones((2 * px + 1, 2 * px + 1), np.uint8)).astype(bool)


def erode(mask, px: int):
    import cv2
    import numpy as np

    return cv2.erode(np.asarray(mask, np.uint8), np.ones((2 * px + 1, 2 * px + 1), np.uint8)).astype(bool)


def shift(mask, dy: int, dx: int):
    """``mask`` moved by (dy rows, dx cols), zeros shifted in."""
    import numpy as np

    out = np.zeros_like(mask, dtype=bool)
    h, w = mask.shape
    out[max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = \
        mask[max(-dy, 0):h - max(dy, 0), max(-dx, 0):w - max(dx, 0)]
    return out


def empty_like(mask):
    import numpy as np

    return np.zeros(mask.shape, bool)


def write_object(root: Path, video: str, obj: str, masks, style: str = "L255", skip=()) -> None:
    """``root/<video>/<obj>/<frame>.png`` for every mask (frame k named ``frame_name(k)``), except indices ``skip``."""
    for k, m in enumerate(masks):
        if k not in skip:
            save(root / video / obj / frame_name(k), m, style)


# ----------------------------------------------------------------------------------------------------------------
# Cases


def video_kite(gt: Path, pred: Path, name: str) -> None:
    """kite-surf at 427x240, 17 frames: 3 DAVIS objects plus an overlapping union object; 24 fps predictions."""
    import numpy as np

    maps = davis_labels("kite-surf", 2, 17)
    surfer = [m == 1 for m in maps]
    kite = [m == 2 for m in maps]  # absent on several frames (pseudo ground truth)
    board = [m == 3 for m in maps]
    union = [a | b for a, b in zip(surfer, kite)]  # overlaps objects 000 and 001, as SA-V's nested masklets do
    for obj, masks in (("000", surfer), ("001", kite), ("002", board), ("003", union)):
        write_object(gt, name, obj, masks)
    write_object(pred, name, "000", [dilate(m, 2) for m in surfer])
    blob = np.zeros_like(kite[0])
    blob[20:50, 300:360] = True
    write_object(pred, name, "001", [shift(m, 0, 3) if m.any() else blob for m in kite])  # FPs where absent
    write_object(pred, name, "002", [erode(m, 2) for m in board])  # small object: erosion may empty it
    write_object(pred, name, "003", union)
    for k, m in enumerate(surfer):  # the 24 fps frames between annotations: ignored by the evaluator
        for i in (1, 2, 3):
            save(pred / name / "000" / f"{4 * k + i:05d}.png", shift(m, 1, 1))
    write_object(pred, name, "009", surfer)  # an object folder the ground truth does not have: ignored


def video_moto(gt: Path, pred: Path, name: str) -> None:
    """motocross-jump at 213x120, 14 frames: an object appearing late, one leaving, one present on 3 frames."""
    maps = davis_labels("motocross-jump", 4, 14)
    rider = [m == 1 if k >= 5 else empty_like(m) for k, m in enumerate(maps)]  # appears at frame 5
    bike = [m == 2 if k <= 8 else empty_like(m) for k, m in enumerate(maps)]  # leaves after frame 8
    brief = [erode(m == 1, 1) if k in (6, 7, 8) else empty_like(m) for k, m in enumerate(maps)]
    for obj, masks in (("000", rider), ("001", bike), ("002", brief)):
        write_object(gt, name, obj, masks)
    # rider: a false positive 2 frames before it appears starts the count early
    write_object(pred, name, "000", [shift(maps[5] == 1, 2, -2) if k in (3, 4) else shift(m, 2, -2)
                                     for k, m in enumerate(rider)], style="L1")
    # bike: one frame of false positive after it left, then empty (both empty: J = F = 1)
    write_object(pred, name, "001", [maps[8] == 2 if k == 9 else dilate(m, 1) for k, m in enumerate(bike)],
                 style="P")
    write_object(pred, name, "002", [empty_like(m) if k == 7 else m for k, m in enumerate(brief)], style="1")


def video_swan(gt: Path, pred: Path, name: str) -> None:
    """blackswan at 213x120, 12 frames: first/last prediction missing (not scored); an object on 1 scored frame."""
    maps = davis_labels("blackswan", 4, 12)
    swan = [m == 1 for m in maps]
    late = [m == 1 if k == 10 else empty_like(m) for k, m in enumerate(maps)]  # only on the last scored frame
    write_object(gt, name, "000", swan, style="P")
    write_object(gt, name, "001", late)
    write_object(pred, name, "000", [shift(m, -1, 4) for m in swan], skip=(0, len(swan) - 1))
    write_object(pred, name, "001", [empty_like(m) for m in late], style="L7")


def video_car(gt: Path, pred: Path, name: str) -> None:
    """car-shadow at 427x240, 12 frames: an empty prediction, an object absent on some frames, full-frame masks."""
    import numpy as np

    maps = davis_labels("car-shadow", 2, 12)
    car = [m == 1 for m in maps]
    gone = [m == 1 if k < 3 or k > 7 else empty_like(m) for k, m in enumerate(maps)]  # absent on frames 3..7
    whole = [np.ones_like(m, bool) if k % 3 else ~(m == 1) for k, m in enumerate(maps)]  # no boundary when full
    for obj, masks in (("000", car), ("001", gone), ("002", whole)):
        write_object(gt, name, obj, masks)
    write_object(pred, name, "000", [empty_like(m) for m in car])
    write_object(pred, name, "001", [erode(m, 1) for m in gone], style="L200")
    write_object(pred, name, "002", [np.ones_like(m, bool) if k % 2 else ~dilate(m == 1, 3)
                                     for k, m in enumerate(maps)])


def small_video(gt: Path | None, pred: Path | None, name: str, objects=("000", "001")) -> None:
    """A small valid video (motocross-jump at 213x120, 6 frames): exact and dilated predictions (None: not written)."""
    maps = davis_labels("motocross-jump", 4, 6)
    for i, obj in enumerate(objects):
        masks = [m == i + 1 for m in maps]
        if gt is not None:
            write_object(gt, name, obj, masks)
        if pred is not None:
            write_object(pred, name, obj, [dilate(m, i) for m in masks])


def case_main(gt: Path, pred: Path) -> dict:
    video_kite(gt, pred, "sav_000101")
    video_moto(gt, pred, "sav_000202")
    video_swan(gt, pred, "sav_000303_long_video_name")
    video_car(gt, pred, "sav_000404")
    small_video(None, pred, "sav_999999")  # a predicted video the ground truth does not have: ignored
    return {"description": "4 videos (kite-surf, motocross-jump, blackswan, car-shadow) with 2-4 objects each: "
                           "overlapping objects, late appearance, leaving, an object on 3 frames and one on a single "
                           "scored frame, false positives where absent, empty prediction, full-frame masks, "
                           "dilated/eroded/shifted predictions, 0/255, 0/1, 0/7, 0/200, palette and 1-bit PNGs, "
                           "24 fps prediction frames, an extra predicted object folder and an extra predicted video",
            "vos": "ok"}


def case_odd_names(gt: Path, pred: Path) -> dict:
    small_video(gt, pred, "v1", objects=("7", "1234"))
    return {"description": "one short-named video whose object folders are not 3-digit names ('7', '1234'): the "
                           "official CSV formats them with Python's '03' string format ('700', '1234')",
            "vos": "ok"}


def case_empty_video(gt: Path, pred: Path) -> dict:
    small_video(gt, pred, "sav_1")
    (gt / "sav_0_empty_folder_name").mkdir(parents=True)
    (pred / "sav_0_empty_folder_name").mkdir(parents=True)
    return {"description": "an empty ground-truth video folder (no object) next to a valid video: it adds no row "
                           "but its name widens the first column",
            "vos": "ok"}


def reject(gt: Path, pred: Path, edit) -> None:
    small_video(gt, pred, "sav_r")
    edit(pred / "sav_r")


def case_missing_frame(gt: Path, pred: Path) -> dict:
    reject(gt, pred, lambda v: (v / "001" / frame_name(2)).unlink())
    return {"description": "a scored prediction frame is missing", "vos": "EvaluationError",
            "names": ["sav_r", "001", frame_name(2)]}


def case_missing_object(gt: Path, pred: Path) -> dict:
    reject(gt, pred, lambda v: shutil.rmtree(v / "001"))
    return {"description": "a predicted object folder is missing", "vos": "EvaluationError", "names": ["sav_r", "001"]}


def case_missing_video(gt: Path, pred: Path) -> dict:
    small_video(gt, pred, "sav_a")
    small_video(gt, None, "sav_b")  # ground truth only
    return {"description": "a ground-truth video has no prediction folder: the official tool drops it silently "
                           "(without --strict) or exits 1 (--strict); vos rejects it",
            "vos": "EvaluationError", "names": ["sav_b"], "strict": True}


def case_wrong_size(gt: Path, pred: Path) -> dict:
    import numpy as np

    def edit(video: Path) -> None:
        save(video / "000" / frame_name(3), np.ones((60, 106), bool))
    reject(gt, pred, edit)
    return {"description": "a scored prediction frame has the wrong size", "vos": "EvaluationError",
            "names": ["sav_r", "000", frame_name(3), "106x60"]}


def case_non_binary(gt: Path, pred: Path) -> dict:
    import numpy as np
    from PIL import Image

    def edit(video: Path) -> None:
        labels = np.zeros((120, 213), np.uint8)
        labels[10:40, 10:40], labels[50:80, 50:80] = 1, 2
        Image.fromarray(labels, mode="L").save(video / "000" / frame_name(2))
    reject(gt, pred, edit)
    return {"description": "a prediction PNG with 3 distinct values (0, 1, 2)", "vos": "EvaluationError",
            "names": ["sav_r", "000", frame_name(2)]}


def case_rgb(gt: Path, pred: Path) -> dict:
    import numpy as np
    from PIL import Image

    def edit(video: Path) -> None:
        rgb = np.zeros((120, 213, 3), np.uint8)
        rgb[10:40, 10:40] = 255
        Image.fromarray(rgb, mode="RGB").save(video / "000" / frame_name(1))
    reject(gt, pred, edit)
    return {"description": "an RGB prediction PNG (shape H x W x 3)", "vos": "EvaluationError",
            "names": ["sav_r", "000", frame_name(1)]}


def case_gt_never_present(gt: Path, pred: Path) -> dict:
    maps = davis_labels("motocross-jump", 4, 6)
    small_video(gt, pred, "sav_r", objects=("000",))
    first_only = [m == 2 if k == 0 else empty_like(m) for k, m in enumerate(maps)]
    write_object(gt, "sav_r", "001", first_only)
    write_object(pred, "sav_r", "001", [m == 2 for m in maps])
    return {"description": "a ground-truth object present only on the first (unscored) frame: no ground truth on "
                           "any scored frame", "vos": "DatasetError", "names": ["sav_r", "001"]}


CASE_BUILDERS = {"main": case_main, "odd_names": case_odd_names, "empty_video": case_empty_video,
                 "reject_missing_frame": case_missing_frame, "reject_missing_object": case_missing_object,
                 "reject_missing_video": case_missing_video, "reject_wrong_size": case_wrong_size,
                 "reject_non_binary": case_non_binary, "reject_rgb": case_rgb,
                 "reject_gt_never_present": case_gt_never_present}


# ----------------------------------------------------------------------------------------------------------------
# Running the official tool


def clean_output(text: str, tmp: Path, case: Path) -> str:
    """Drop timing and progress-bar lines, replace temporary paths and keep only file names in tracebacks, so the
    stored text is reproducible and names no machine path."""
    text = re.sub(r'File "(?:[^"]*/)?([^"/]+)"', r'File "\1"', text.replace(str(tmp), "<pred_root>"))
    lines = [line for line in text.replace(str(case), "<case>").splitlines()
             if not line.startswith("Time taken") and "it/s]" not in line and "s/it]" not in line]
    return "\n".join(lines) + ("\n" if lines else "")


def run_official(official: Path, python: str, case: Path, strict: bool) -> dict:
    """Run the official CLI on a copy of ``pred``; store its results.csv and console output; return its outcome."""
    expected = case / "expected"
    suffix = "_strict" if strict else ""
    with tempfile.TemporaryDirectory() as tmp:
        pred = Path(tmp) / "pred"
        shutil.copytree(case / "pred", pred)
        cmd = [python, "sav_evaluator.py", "--gt_root", str(case / "gt"), "--pred_root", str(pred), "-n", "1"]
        cmd += ["--strict"] if strict else []
        proc = subprocess.run(cmd, check=False, cwd=official, capture_output=True, text=True, timeout=600)
        (expected / f"stdout{suffix}.txt").write_text(clean_output(proc.stdout, Path(tmp), case))
        (expected / f"stderr{suffix}.txt").write_text(clean_output(proc.stderr, Path(tmp), case))
        wrote = (pred / "results.csv").is_file()
        if wrote:
            shutil.copyfile(pred / "results.csv", expected / f"results{suffix}.csv")
    errors = [line for line in proc.stderr.splitlines() if re.match(r"\w+Error", line)]
    return {"returncode": proc.returncode, "wrote_results_csv": wrote,
            "message": clean_output(errors[-1], Path(tmp), case).strip() if errors else ""}


def dump_values(official: Path, gt: Path, pred: Path) -> dict:
    """(Run by the official interpreter.) The official unrounded values, from its own module.

    Global and per-object values come from ``benchmark()``; per-frame values from feeding the official
    ``Evaluator`` the frames ``VideoEvaluator`` reads (as its ``__call__`` does), checked against ``benchmark()``.
    """
    sys.path.insert(0, str(official))
    import numpy as np
    from utils.sav_benchmark import Evaluator, VideoEvaluator, benchmark

    with contextlib.redirect_stdout(sys.stderr):  # it prints where it saved results.csv
        (g_jf,), (g_j,), (g_f,), (objects,) = benchmark([str(gt)], [str(pred)], False, 1, verbose=False)
    videos = {}
    for video, (iou, boundary) in objects.items():
        reader = VideoEvaluator(str(gt), str(pred))
        to_evaluate, is_sav = reader.scan_vid_folder(video)
        entries = {}
        if not is_sav:  # an empty video folder (the official DAVIS-layout branch): no object
            assert not iou, video
            to_evaluate = []
        for frames, obj, gt_path, pred_path in to_evaluate:
            scored = frames[1:-1]
            evaluator = Evaluator(name=video, obj_id=obj)
            for frame in scored:
                gt_mask, pred_mask = reader.get_gt_and_pred(gt_path, pred_path, frame, True)
                evaluator.feed_frame(mask=pred_mask, gt=gt_mask)
            js, fs = evaluator.object_iou[True], evaluator.boundary_f[True]
            assert np.mean(js) * 100 == iou[obj] and np.mean(fs) * 100 == boundary[obj], (video, obj)
            entries[obj] = {"J": float(iou[obj]), "F": float(boundary[obj]),
                            "frames": list(scored[len(scored) - len(js):]),
                            "J_frames": [float(v) for v in js], "F_frames": [float(v) for v in fs]}
        assert list(entries) == list(iou), video
        videos[video] = entries
    return {"global": {"J&F": float(g_jf), "J": float(g_j), "F": float(g_f)}, "videos": videos}


def build(official: Path, python: str, only: list[str]) -> None:
    for name, builder in CASE_BUILDERS.items():
        if only and name not in only:
            continue
        case = CASES / name
        shutil.rmtree(case, ignore_errors=True)
        (case / "expected").mkdir(parents=True)
        spec = builder(case / "gt", case / "pred")
        (case / "pred").mkdir(exist_ok=True)
        spec["official"] = run_official(official, python, case, strict=False)
        if spec.get("strict"):
            spec["official_strict"] = run_official(official, python, case, strict=True)
        if spec["official"]["wrote_results_csv"] and spec["vos"] == "ok":
            with tempfile.TemporaryDirectory() as tmp:
                shutil.copytree(case / "pred", Path(tmp) / "pred")
                out = subprocess.run([python, __file__, "--official", str(official), "--dump", str(case / "gt"),
                                      str(Path(tmp) / "pred")], capture_output=True, text=True, check=True)
            (case / "expected" / "values.json").write_text(out.stdout)
        (case / "case.json").write_text(json.dumps(spec, indent=1) + "\n")
        print(name, spec["official"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--official", type=Path, required=True, help="the official sav_dataset folder")
    parser.add_argument("--python", default=sys.executable, help="interpreter of the official tool's venv")
    parser.add_argument("--dump", nargs=2, type=Path, metavar=("GT", "PRED"), help=argparse.SUPPRESS)
    parser.add_argument("cases", nargs="*", help="build only these cases")
    args = parser.parse_args()
    if args.dump:
        print(json.dumps(dump_values(args.official.resolve(), *args.dump), indent=1))
    else:
        build(args.official.resolve(), args.python, args.cases)


if __name__ == "__main__":
    main()
