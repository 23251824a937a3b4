"""Run the official MOSEv2 ``score.py`` (imported unchanged from ``--official``) and dump its unrounded values.

Runs ``score.main()`` with the given arguments while recording the per-chunk results its process pool returns, then
merges them per object with the official ``merge_chunk_results`` and writes ``--values`` (JSON):

    {"videos": [Annotations/ listing order], "objects": {"<vid>_<id>": {"frame_indices", "frames", "J", "F_new", "F",
     "empty_gt", "merged": [j, f_new, f, disappear_j, disappear_f, reappear_j, reappear_f]}},
     "global": {"J", "F_new", "F", "disappear_J", "disappear_F_new", "reappear_J", "reappear_F_new"}}

``global`` holds the unrounded means over objects that the official ``main`` rounds into ``scores.txt``.
Run it with the official tool's python. Called by ``make_cases.py``.
"""
import argparse
import json
import os
import sys

import numpy as np


def as_float(value):
    return None if value is None else float(value)


def mean_of(values):
    kept = [v for v in values if v is not None]
    return float(np.mean(kept)) if kept else float("nan")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--official", required=True)
    parser.add_argument("--values", required=True)
    parser.add_argument("--meta", required=True)
    parser.add_argument("--ann", required=True)
    parser.add_argument("--pred", required=True)
    parser.add_argument("--output", required=True)
    args = parser.parse_args()

    sys.path.insert(0, args.official)
    import score

    captured = []
    official_track = score.track_progress_rich

    def recording_track(*a, **k):
        results = official_track(*a, **k)
        captured.extend(results)
        return results

    score.track_progress_rich = recording_track
    sys.argv = ["score.py", "--meta", args.meta, "--ann", args.ann, "--pred", args.pred, "--output", args.output]
    score.main()

    pred_dir = args.pred  # the official rule: a single non-hidden entry that is a folder is descended into
    entries = [x for x in os.listdir(pred_dir) if not x.startswith(".")]
    if len(entries) == 1 and os.path.isdir(os.path.join(pred_dir, entries[0])):
        pred_dir = os.path.join(pred_dir, entries[0])

    with open(args.meta) as fp:
        meta = json.load(fp)["videos"]
    videos = list(os.listdir(args.ann))
    objects = {}
    for vid in videos:
        folder = os.path.join(pred_dir, vid)
        names = []
        if os.path.isdir(folder):
            names = sorted((x for x in os.listdir(folder) if not x.startswith(".") and x.endswith(".png")),
                           key=lambda x: int(x.split(".")[0]))
        for anno_id in meta[vid]["objects"]:
            chunks = sorted((r for r in captured if r["vid_name"] == vid and r["anno_id"] == anno_id),
                            key=lambda r: r["chunk_start"])
            indices = [i for r in chunks for i in range(r["chunk_start"], r["chunk_end"])]
            entry = {"frame_indices": indices,
                     "frames": [names[i].split(".")[0] for i in indices] if names else [],
                     "J": [x for r in chunks for x in r["j_list"]],
                     "F_new": [x for r in chunks for x in r["f_list"]],
                     "F": [x for r in chunks for x in r["f_list_"]],
                     "empty_gt": [bool(x) for r in chunks for x in r["empty_gt"]],
                     "errors": [r["error"] for r in chunks if r["error"] is not None],
                     "merged": [as_float(v) for v in score.merge_chunk_results(captured, vid, anno_id)]}
            objects[f"{vid}_{anno_id}"] = entry
    merged = [o["merged"] for o in objects.values()]
    glob = {"J": mean_of([m[0] for m in merged]), "F_new": mean_of([m[1] for m in merged]),
            "F": mean_of([m[2] for m in merged]), "disappear_J": mean_of([m[3] for m in merged]),
            "disappear_F_new": mean_of([m[4] for m in merged]), "reappear_J": mean_of([m[5] for m in merged]),
            "reappear_F_new": mean_of([m[6] for m in merged])}
    with open(args.values, "w") as fp:
        json.dump({"videos": videos, "objects": objects, "global": glob}, fp, indent=1)
        fp.write("\n")


if __name__ == "__main__":
    main()
