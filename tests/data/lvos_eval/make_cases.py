#!/usr/bin/env python
"""Lay out the LVOS evaluation fixtures (``gt/``, ``cases/``: both are rebuilt) and store what the official tool
outputs for them.

    python make_cases.py --official /path/to/lvos-evaluation --official-python /path/to/venv/bin/python

Ground truth is built from davis-mini's real masks (``--davis``, default: the repository's copy), downscaled 2×
(nearest neighbour) to 427×240 and laid out as LVOS: the k-th selected DAVIS frame becomes annotated frame
``5·k`` (``%08d.png``), one ``<set>_meta.json`` per split with ``videos.<vid>.objects.<id>.frame_range``. Each case
folder gets ``case.json``, ``pred/`` and ``expected/``: the two CSVs the official
``evaluation_method.py`` wrote when run unchanged (``--mp_nums 1``, working directory = its checkout, so that it reads
its own ``unseen_videos.txt``), its stdout without the timing line, and ``values.json``: the unrounded values, taken by
importing the official modules in the official interpreter (the script's globals after ``runpy``, and its
``_evaluate_semisupervised`` per video for the per-frame values). No code of the official tool is in this file.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import runpy
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
DAVIS = HERE.parent / "davis_eval" / "data" / "davis-mini"
SIZE = (427, 240)  # (width, height) after the 2× downscale
STEP = 5  # LVOS annotates every 5th frame
ENV = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}  # leave the official checkout untouched
PALETTE = [0, 0, 0, 128, 0, 0, 0, 128, 0, 128, 128, 0, 0, 0, 128, 128, 0, 128, 0, 128, 128, 128, 128, 128]


# ----------------------------------------------------------------------------------------------------------------
# Pictures


def davis_frames(davis: Path, seq: str, stride: int, count: int) -> list[np.ndarray]:
    """``count`` label maps of a davis-mini sequence (every ``stride``-th frame), 427×240, ``uint8`` [row, col]."""
    out = []
    for t in range(0, stride * count, stride):
        with Image.open(davis / "Annotations" / "480p" / seq / f"{t:05d}.png") as img:
            out.append(np.asarray(img.resize(SIZE, Image.NEAREST)).copy())
    return out


def write_png(path: Path, labels: np.ndarray, mode: str = "P") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    labels = np.ascontiguousarray(labels, dtype=np.uint8)
    img = Image.fromarray(labels)
    if mode == "P":
        img = Image.frombytes("P", img.size, labels.tobytes())
        img.putpalette(PALETTE + [255] * (768 - len(PALETTE)))
    elif mode == "RGB":
        img = img.convert("RGB")
    img.save(path, optimize=True)


def frame_name(k: int) -> str:
    return f"{STEP * k:08d}"


def keep_only(labels: list[np.ndarray], obj: int, ks: range) -> list[np.ndarray]:
    """Remove object ``obj`` from every frame index outside ``ks``."""
    out = []
    for k, lab in enumerate(labels):
        lab = lab.copy()
        if k not in ks:
            lab[lab == obj] = 0
        out.append(lab)
    return out


def relabel(labels: list[np.ndarray], mapping: dict[int, int]) -> list[np.ndarray]:
    lut = np.arange(256, dtype=np.uint8)
    for old, new in mapping.items():
        lut[old] = new
    return [lut[lab] for lab in labels]


def obj_range(labels: list[np.ndarray], obj: int, number: type) -> dict:
    """``frame_range`` of ``obj``: first and last annotated frame where it is present (as ``number``: LVOS metas
    hold strings or ints, the official tool calls ``int`` on them), and their count (every 5th frame)."""
    ks = [k for k, lab in enumerate(labels) if (lab == obj).any()]
    return {"start": number(STEP * ks[0]), "end": number(STEP * ks[-1]), "frame_nums": ks[-1] - ks[0] + 1}


# ----------------------------------------------------------------------------------------------------------------
# Ground truth


def build_mini(davis: Path) -> dict[str, list[np.ndarray]]:
    """Videos of ``gt/lvos-mini``: two seen, two unseen (names from the official unseen list)."""
    kite = davis_frames(davis, "kite-surf", 2, 14)
    kite = keep_only(kite, 3, range(4, 14))  # object 3 starts at frame 20
    kite = keep_only(kite, 1, range(10))  # object 1 ends at frame 45
    moto = relabel(davis_frames(davis, "motocross-jump", 2, 12), {2: 3})  # ids 1 and 3
    moto = keep_only(moto, 3, range(5, 8))  # object 3 on 3 annotated frames only (one scored frame)
    return {"blackswan": davis_frames(davis, "blackswan", 3, 12), "kite-surf": kite,
            "R3UJGYwy": moto, "K3OUeINk": davis_frames(davis, "car-shadow", 3, 12)}


def build_short(davis: Path) -> dict[str, list[np.ndarray]]:
    """Videos of ``gt/lvos-short``: an object on 2 annotated frames (nothing scored) and a normal unseen video."""
    kite = keep_only(davis_frames(davis, "kite-surf", 2, 6), 2, range(2, 4))
    return {"FiRTBMg2": davis_frames(davis, "blackswan", 4, 6), "shortobj": kite}


def write_root(root: Path, videos: dict[str, list[np.ndarray]], metas: dict[str, dict[str, list[int]]],
               overrides: dict | None = None, number: type = str) -> None:
    """Annotations of every video and one ``<set>_meta.json`` per set (``metas[set][video]`` = object order)."""
    if root.exists():
        shutil.rmtree(root)
    for vid, labels in videos.items():
        for k, lab in enumerate(labels):
            write_png(root / "Annotations" / vid / f"{frame_name(k)}.png", lab)
    for set_name, videos_objects in metas.items():
        meta = {"videos": {}}
        for vid, objects in videos_objects.items():
            ranges = {str(o): {"frame_range": obj_range(videos[vid], o, number)} for o in objects}
            meta["videos"][vid] = {"objects": ranges}
        for (vid, obj), frame_range in (overrides or {}).items():
            meta["videos"][vid]["objects"][str(obj)]["frame_range"].update(frame_range)
        (root / f"{set_name}_meta.json").write_text(json.dumps(meta, indent=1) + "\n")


# ----------------------------------------------------------------------------------------------------------------
# Predictions


def shift(mask: np.ndarray, dy: int, dx: int) -> np.ndarray:
    out = np.zeros_like(mask)
    h, w = mask.shape
    out[max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = mask[max(-dy, 0):h - max(dy, 0),
                                                                     max(-dx, 0):w - max(dx, 0)]
    return out


def morph(mask: np.ndarray, grow: int) -> np.ndarray:
    """Dilate (``grow`` > 0) or erode (< 0) a ``bool`` mask with a 3×3 square, ``|grow|`` times."""
    import cv2

    op = cv2.dilate if grow > 0 else cv2.erode
    return op(mask.astype(np.uint8), np.ones((3, 3), np.uint8), iterations=abs(grow)).astype(bool)


def paint(labels: np.ndarray, edits: dict[int, np.ndarray]) -> np.ndarray:
    """Label map with each object's mask replaced (objects painted in ascending id order)."""
    out = labels.copy()
    for obj in edits:
        out[out == obj] = 0
    for obj in sorted(edits):
        out[edits[obj]] = obj
    return out


def perturbed_mini(gt: dict[str, list[np.ndarray]], davis: Path) -> dict[str, list[np.ndarray]]:
    """Eroded / dilated / shifted masks, swapped ids, false positives on absent frames, objects predicted outside
    their range (never scored), garbage on frames nobody scores."""
    pred = {}
    pred["blackswan"] = [paint(lab, {1: morph(lab == 1, 2 if k % 2 else -2)}) for k, lab in enumerate(gt["blackswan"])]
    kite_full = davis_frames(davis, "kite-surf", 2, 14)
    kite = []
    for k, lab in enumerate(gt["kite-surf"]):
        edits = {1: shift(lab == 1, 2, 4), 3: kite_full[k] == 3}  # object 3 also before its start
        if k in (8, 10):
            edits[2] = np.zeros_like(lab, bool)
            edits[2][100:130, 200:260] = True  # false positive where object 2 is absent
        if k == 6:
            edits[1], edits[3] = lab == 3, lab == 1  # ids swapped on one frame
        kite.append(paint(lab, edits))
    pred["kite-surf"] = kite
    moto_full = relabel(davis_frames(davis, "motocross-jump", 2, 12), {2: 3})
    pred["R3UJGYwy"] = [paint(lab, {1: morph(lab == 1, 3), 3: shift(moto_full[k] == 3, -3, 5)})
                        for k, lab in enumerate(gt["R3UJGYwy"])]
    car = [lab.copy() for lab in gt["K3OUeINk"]]
    for k in (3, 4):
        car[k][:] = 0  # lost for two frames
    car[0][:] = 1  # first and last frame are never scored
    car[-1][:] = 0
    pred["K3OUeINk"] = car
    return pred


def perturbed_short(gt: dict[str, list[np.ndarray]]) -> dict[str, list[np.ndarray]]:
    return {vid: [paint(lab, {o: morph(lab == o, 1 + (k + o) % 2) for o in (1, 2, 3)})
                  for k, lab in enumerate(labels)] for vid, labels in gt.items()}


def write_pred(folder: Path, pred: dict[str, list[np.ndarray]], mode: str = "P") -> None:
    for vid, labels in pred.items():
        for k, lab in enumerate(labels):
            write_png(folder / vid / f"{frame_name(k)}.png", lab, mode)


def scored_frames(meta: dict, vid: str) -> set[str]:
    """Frame names the official rule reads for ``vid`` (a consistent meta: every 5th, inner frames of each object)."""
    names = set()
    for obj in meta["videos"][vid]["objects"].values():
        r = obj["frame_range"]
        names |= {f"{f:08d}" for f in range(int(r["start"]) + STEP, int(r["end"]), STEP)}
    return names


# ----------------------------------------------------------------------------------------------------------------
# Cases


def lay_out(davis: Path) -> list[Path]:
    mini, short = HERE / "gt" / "lvos-mini", HERE / "gt" / "lvos-short"
    gt = build_mini(davis)
    order = {"blackswan": [1], "kite-surf": [3, 1, 2], "R3UJGYwy": [1, 3], "K3OUeINk": [1]}
    write_root(mini, gt, {"valid": order, "test": {v: order[v] for v in ("blackswan", "kite-surf")}})
    gts = build_short(davis)
    # object 3 of shortobj: frame_nums larger than its range yields -> two slots the official tool leaves at 0
    write_root(short, gts, {"valid": {"FiRTBMg2": [1], "shortobj": [1, 2, 3]}},
               overrides={("shortobj", 3): {"frame_nums": 8}}, number=int)
    meta = json.loads((mini / "valid_meta.json").read_text())
    cases_dir = HERE / "cases"
    if cases_dir.exists():
        shutil.rmtree(cases_dir)
    made = []

    def case(name: str, description: str, pred: dict, set_name: str = "valid", root: str = "lvos-mini",
             mode: str = "P", vos: str = "ok", vos_error: str = "", edit=None) -> None:
        folder = cases_dir / name
        write_pred(folder / "pred", pred, mode)
        if edit is not None:
            edit(folder / "pred")
        spec = {"description": description, "gt_root": f"../../gt/{root}", "set": set_name, "vos_outcome": vos}
        if vos_error:
            spec["vos_error"] = vos_error
        (folder / "case.json").write_text(json.dumps(spec, indent=1) + "\n")
        made.append(folder)

    perturbed = perturbed_mini(gt, davis)
    case("perfect", "predictions equal to the ground truth", gt)
    case("perturbed", "eroded/dilated/shifted masks, swapped ids, false positives on absent frames, objects "
         "predicted outside their range, a video lost for two frames", perturbed)
    case("perturbed_test", "the perturbed predictions on the 'test' split, which has no unseen video (NaN unseen "
         "means and global means)", perturbed, set_name="test")
    case("empty_pred", "every prediction empty", {v: [np.zeros_like(lab) for lab in labs] for v, labs in gt.items()})

    def drop_unscored(folder: Path) -> None:
        for vid in gt:
            for png in (folder / vid).glob("*.png"):
                if png.stem not in scored_frames(meta, vid):
                    png.unlink()

    case("unscored_missing", "perfect predictions without the PNGs no object scores (each object's first and "
         "last annotated frame, unless another object scores it)", gt, edit=drop_unscored)
    case("short_objects", "an object on 2 annotated frames (no frame scored: NaN), a meta whose frame_nums exceeds "
         "the frames its range yields (zero slots), an unseen video", perturbed_short(gts), root="lvos-short")

    unknown = {v: [lab.copy() for lab in labs] for v, labs in gt.items()}
    unknown["kite-surf"][5][10:20, 10:30] = 7
    case("unknown_id", "object id 7 in a scored frame of kite-surf (the official tool ignores it; vos rejects it)",
         unknown, vos="rejected", vos_error="kite-surf/00000025.png contains object id 7")
    case("missing_frame", "a scored prediction frame is missing", gt, vos="rejected",
         vos_error="R3UJGYwy/00000030.png",
         edit=lambda p: (p / "R3UJGYwy" / "00000030.png").unlink())
    case("missing_video", "a whole prediction video is missing", gt, vos="rejected", vos_error="K3OUeINk",
         edit=lambda p: shutil.rmtree(p / "K3OUeINk"))

    def resize_one(folder: Path) -> None:
        path = folder / "blackswan" / "00000020.png"
        with Image.open(path) as img:
            small = img.resize((SIZE[0] - 1, SIZE[1]), Image.NEAREST)
        small.save(path)

    case("wrong_size", "one prediction is 426x240 instead of 427x240", gt, vos="rejected",
         vos_error="blackswan/00000020.png is 426x240", edit=resize_one)
    case("rgb_pred", "RGB predictions", gt, mode="RGB", vos="rejected",
         vos_error="K3OUeINk/00000005.png is a mode-RGB image")
    return made


# ----------------------------------------------------------------------------------------------------------------
# Running the official tool


def run_official(case: Path, official: Path, python: str) -> None:
    spec = json.loads((case / "case.json").read_text())
    gt_root = (case / spec["gt_root"]).resolve()
    expected = case / "expected"
    if expected.exists():
        shutil.rmtree(expected)
    expected.mkdir()
    with tempfile.TemporaryDirectory() as tmp:
        results = Path(tmp) / "results"
        shutil.copytree(case / "pred", results)
        cmd = [python, "evaluation_method.py", "--lvos_path", str(gt_root), "--set", spec["set"],
               "--results_path", str(results), "--mp_nums", "1"]
        done = subprocess.run(cmd, check=False, cwd=official, capture_output=True, text=True, timeout=1800, env=ENV)
        stdout = "".join(line for line in done.stdout.splitlines(True) if not line.startswith("Total time:"))
        csvs = sorted(results.glob("*.csv"))
        for path in csvs:
            shutil.copy(path, expected / path.name)
        if csvs and done.returncode == 0:
            outcome, message = "ok", ""
        else:
            outcome = "exit0_no_output" if done.returncode == 0 else "crashed"
            message = [line for line in stdout.splitlines() if "not found" in line]
            message += [line for line in done.stderr.replace("\r", "\n").splitlines()
                        if line.strip() and "%|" not in line][-1:]  # the error, not a progress bar
        (expected / "stdout.txt").write_text(stdout.replace(str(results), "<results>"))
        if outcome == "ok":
            results2 = Path(tmp) / "results2"
            shutil.copytree(case / "pred", results2)
            subprocess.run([python, str(Path(__file__).resolve()), "_dump", str(gt_root), spec["set"],
                            str(results2), str(expected / "values.json")], cwd=official, check=True, env=ENV,
                           capture_output=True, text=True, timeout=1800)
    spec.update(official_outcome=outcome, official_returncode=done.returncode)
    if message:
        spec["official_message"] = [m.replace(str(results), "<results>") for m in message]
    (case / "case.json").write_text(json.dumps(spec, indent=1) + "\n")
    print(f"{case.name}: official {outcome} (exit {done.returncode})")


def _number(value) -> float | None:
    value = float(value)
    return None if math.isnan(value) else value


def dump(gt_root: str, set_name: str, results: str, out: str) -> None:
    """Runs inside the official interpreter, working directory = the official checkout."""
    sys.path.insert(0, os.getcwd())
    sys.argv = ["evaluation_method.py", "--lvos_path", gt_root, "--set", set_name, "--results_path", results,
                "--mp_nums", "1"]
    g = runpy.run_path("evaluation_method.py", run_name="__main__")
    from lvos.results import Results  # the official module, imported from its checkout

    seen, unseen = g["metrics_res_seen"], g["metrics_res_unseen"]
    objects = []
    ev = g["dataset_eval"]
    for vid in ev.dataset.get_sequences():
        seq = ev.dataset.get_sequence(vid)
        j, f = ev._evaluate_semisupervised(seq, Results(root_dir=results), None, ("J", "F", "V"))
        for index, obj in enumerate(seq[vid]):
            row = f"{vid}_{index + 1}"
            objects.append({"row": row, "video": vid, "id": obj, "unseen": row in unseen["J"]["M_per_object"],
                            "J": [float(v) for v in j[str(obj)][0]], "F": [float(v) for v in f[str(obj)][0]],
                            "J_mean": _number(g["J"]["M_per_object"][row]),
                            "F_mean": _number(g["F"]["M_per_object"][row]),
                            "V": _number(g["V"]["M_per_object"][row])})
    assert len(objects) == len(g["J"]["M_per_object"]), "per-object rows"
    values = {"global": {name: _number(v) for name, v in zip(g["g_measures"], g["g_res"][0])},
              "seen_rows": list(seen["J"]["M_per_object"]), "unseen_rows": list(unseen["J"]["M_per_object"]),
              "objects": objects}
    Path(out).write_text(json.dumps(values, indent=1) + "\n")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_dump":
        dump(*sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--davis", type=Path, default=DAVIS, help="davis-mini root (Annotations/480p)")
    parser.add_argument("--official", type=Path, required=True,
                        help="checkout of LingyiHongfd/lvos-evaluation (never modified)")
    parser.add_argument("--official-python", default=sys.executable,
                        help="interpreter of the official tool's venv (numpy 1.26)")
    args = parser.parse_args()
    for case in lay_out(args.davis):
        run_official(case, args.official.resolve(), args.official_python)


if __name__ == "__main__":
    main()
