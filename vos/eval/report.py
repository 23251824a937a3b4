"""Result files of the image benchmarks: a JSON document and a markdown table, both recording the protocol;
prediction PNGs.

Every file is written atomically (temporary file in the same folder + rename), so an interrupted run never leaves
a truncated result.
"""
from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
from PIL import Image

from vos.errors import OutputError
from vos.io.atomic import atomic_write


def atomic_write_bytes(path: Union[str, Path], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically, creating the folder."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(f"{path}: cannot write ({err})") from err
    atomic_write(path, lambda handle: handle.write(data))


def _fmt(value: Any, digits: int) -> str:
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], digits: int = 2) -> str:
    """A GitHub markdown table; floats with ``digits`` decimals."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(_fmt(v, digits) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def settings_table(protocol: Mapping[str, Any]) -> str:
    """Two-column markdown table of every protocol setting."""
    return markdown_table(["setting", "value"], [(k, json.dumps(v) if isinstance(v, (list, dict)) else str(v))
                                                 for k, v in protocol.items()])


def write_report(out_dir: Union[str, Path], stem: str, title: str, protocol: Mapping[str, Any],
                 summary: Mapping[str, Any], headers: Sequence[str], rows: Sequence[Sequence[Any]],
                 notes: Sequence[str] = (), extra: Optional[Mapping[str, Any]] = None) -> Tuple[Path, Path]:
    """Write ``<out_dir>/<stem>.json`` and ``<out_dir>/<stem>.md``; return both paths.

    JSON: ``{"title", "protocol", "summary", "columns", "rows", "notes", **extra}`` (numbers at full precision).
    Markdown: title, the summary and protocol tables, the per-row table (2 decimals), notes.
    """
    out_dir = Path(out_dir)
    doc: Dict[str, Any] = {"title": title, "protocol": dict(protocol), "summary": dict(summary),
                           "columns": list(headers), "rows": [list(r) for r in rows], "notes": list(notes)}
    doc.update(extra or {})
    json_path, md_path = out_dir / f"{stem}.json", out_dir / f"{stem}.md"
    atomic_write_bytes(json_path, (json.dumps(doc, indent=1, ensure_ascii=False) + "\n").encode("utf-8"))
    parts: List[str] = [f"# {title}", "", markdown_table(list(summary.keys()), [list(summary.values())]), "",
                        "## Protocol", "", settings_table(protocol), "", "## Results", "",
                        markdown_table(headers, rows)]
    if notes:
        parts += ["", "## Notes", ""] + [f"- {n}" for n in notes]
    atomic_write_bytes(md_path, ("\n".join(parts) + "\n").encode("utf-8"))
    return json_path, md_path


def write_mask_png(path: Union[str, Path], mask: np.ndarray, color: Tuple[int, int, int] = (255, 255, 255)) -> None:
    """Write a ``bool H×W`` mask atomically as an RGB PNG: ``color`` on the object, black elsewhere.

    PerSeg predictions use PerSAM's dark red ``(128, 0, 0)``; any colour is foreground under the luminance rule.
    """
    rgb = np.zeros((*mask.shape, 3), dtype=np.uint8)
    rgb[np.asarray(mask, dtype=bool)] = color
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())
