"""Streaming I/O around the tracker: lazy video readers and live sources, label-map files, per-frame writers."""
from vos.errors import StreamError
from vos.io.images import read_rgb
from vos.io.live import LIVE_SCHEMES, FrameInfo, LiveOptions, LiveReader, LiveStats, RetryEvent, is_live_source
from vos.io.masks import (DAVIS_PALETTE, MAX_LABEL_LEVELS, as_label_map, load_label_map, save_palette_png,
                          validate_first_mask)
from vos.io.video import BACKENDS, IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, VideoReader, image_files, natural_key, read_video
from vos.io.writers import (DEFAULT_FPS, ObjectMaskWriter, OverlayWriter, PaletteWriter, RleWriter, StatesWriter,
                            draw_overlay)

__all__ = [
    "BACKENDS", "DAVIS_PALETTE", "DEFAULT_FPS", "IMAGE_EXTENSIONS", "LIVE_SCHEMES", "MAX_LABEL_LEVELS",
    "VIDEO_EXTENSIONS", "FrameInfo", "LiveOptions", "LiveReader", "LiveStats", "ObjectMaskWriter", "OverlayWriter",
    "PaletteWriter", "RetryEvent", "RleWriter", "StatesWriter", "StreamError", "VideoReader", "as_label_map",
    "draw_overlay", "image_files", "is_live_source", "load_label_map", "natural_key", "read_rgb", "read_video",
    "save_palette_png", "validate_first_mask",
]
