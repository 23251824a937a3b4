#!/usr/bin/env python
"""Latency of the browser app as a user sees it, in headless Chromium (Debian's /usr/bin/chromium, driven by
Playwright): from a click on the demo video's apple to its mask shown, and from pressing Track to the first
streamed frame. Each model gets its own ``tools/app.py`` on a free loopback port; each run is a fresh page that
opens the demo video and waits until the page has encoded the first frame (what it does on opening a video), so a
click costs the prompt decoder and the drawing only. Prints the CPU model and medians.

    python tools/bench_app.py                      # tiny test model and vit_b with random weights, 3 runs each
    python tools/bench_app.py --models vit_b --runs 5 --method persam
"""
from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Dict, List

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TINY = ["--model", "tiny", "--checkpoint", str(ROOT / "tests/data/persam_ref/weights/tiny_sam_public.pt"),
        "--encoder", "stock", "--device", "cpu"]
MODELS = {"tiny": TINY, "vit_b": ["--model", "vit_b", "--random-weights", "--device", "cpu"]}
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
MSG = "#vos-message .vos-message"
APPLE = (480, 291)        # (x, y) on the apple of the demo's first frame (1296×720)


def start_server(args: List[str], out: Path) -> tuple:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, str(ROOT / "tools" / "app.py"), *args, "--port", str(port), "--out",
                             str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            urllib.request.urlopen(url, timeout=2)
            return proc, url
        except OSError:
            time.sleep(0.3)
    stop_server(proc)
    raise SystemExit(f"the app did not start: {' '.join(args)}")


def stop_server(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def wait_text(page, needle: str, timeout_ms: float) -> None:
    page.wait_for_function("([s, t]) => (document.querySelector(s)?.innerText || '').includes(t)",
                           arg=[MSG, needle], timeout=timeout_ms)


def click_apple(page) -> None:
    from vos.app.render import margin

    img = page.locator("#vos-frame img")
    box = img.bounding_box()
    natural_w, natural_h = img.evaluate("e => [e.naturalWidth, e.naturalHeight]")
    scale, m = min(box["width"] / natural_w, box["height"] / natural_h, 1), margin((720, 1296))
    img.click(position={"x": (APPLE[0] + m) * scale, "y": (APPLE[1] + m) * scale})


def one_run(browser, url: str, method_label: str, timeout_ms: float) -> Dict[str, float]:
    """Seconds: opening the demo until ready, a click until its mask is shown, Track until the first frame."""
    context = browser.new_context(viewport={"width": 1400, "height": 1200})
    page = context.new_page()
    try:
        page.goto(url)
        t0 = time.perf_counter()
        page.click("#vos-demo")
        wait_text(page, "click on an object", timeout_ms)
        ready = time.perf_counter() - t0
        page.locator("#vos-method input").click()
        page.get_by_role("option", name=method_label).click()
        old = page.evaluate("() => document.querySelector('#vos-frame img').src")
        t0 = time.perf_counter()
        click_apple(page)
        page.wait_for_function("s => { const i = document.querySelector('#vos-frame img');"
                               " return i.src !== s && i.complete && i.naturalWidth > 0 }", arg=old,
                               timeout=timeout_ms)
        click = time.perf_counter() - t0
        t0 = time.perf_counter()
        page.click("#vos-track")
        page.wait_for_function("() => document.querySelector('#vos-preview img')?.complete", timeout=timeout_ms)
        first = time.perf_counter() - t0
        page.click("#vos-stop")
        wait_text(page, "complete in", timeout_ms)
        return {"open → ready": ready, "click → mask": click, "Track → first frame": first}
    finally:
        context.close()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="tiny,vit_b", help=f"comma-separated, of {', '.join(MODELS)}")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--method", choices=("persam_f", "persam"), default="persam_f",
                   help="tracking method (default: %(default)s, the page's default on SAM models)")
    p.add_argument("--out", default="/tmp/vos-bench-app", help="run folders (default: %(default)s)")
    p.add_argument("--timeout", type=float, default=600, help="seconds one step may take")
    args = p.parse_args()
    from playwright.sync_api import sync_playwright

    label = {"persam_f": "PerSAM-F", "persam": "PerSAM (training-free)"}[args.method]
    from vos.machine import cpu_info

    print(f"{cpu_info().line()}, load average {os.getloadavg()[0]:.1f}; "
          f"method {args.method}; {args.runs} runs, median")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        try:
            for name in args.models.split(","):
                proc, url = start_server(MODELS[name], Path(args.out) / name)
                try:
                    runs = [one_run(browser, url, label, args.timeout * 1000) for _ in range(args.runs)]
                finally:
                    stop_server(proc)
                cells = ", ".join(f"{k} {statistics.median(r[k] for r in runs):.2f} s "
                                  f"(runs: {' '.join(f'{r[k]:.2f}' for r in runs)})" for k in runs[0])
                print(f"{name}: {cells}", flush=True)
        finally:
            browser.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
