"""vos.io: video readers (PyAV, decord, OpenCV, image folders), label-map files, streaming writers."""
import json
import os
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from vos.errors import InputError, MaskError, OutputError, VideoError
from vos.io import (DAVIS_PALETTE, OverlayWriter, PaletteWriter, RleWriter, draw_overlay, load_label_map, read_video,
                    save_palette_png, validate_first_mask)

DATA = Path(__file__).parent / "data"
DEMO = Path(__file__).resolve().parents[1] / "demo"
APPLE = DEMO / "apple.mp4"
APPLE_MASK = DEMO / "apple_first_frame_mask.png"
APPLE_SOFT = DEMO / "apple_mask_soft.png"
DAVIS = DATA / "davis_frames"
KITE_FRAMES = DAVIS / "JPEGImages" / "480p" / "kite-surf"
KITE_MASKS = DAVIS / "Annotations" / "480p" / "kite-surf"
ROTATED = DATA / "rotated" / "rotated_cw90.mp4"
ROTATED_REF = DATA / "rotated" / "rotated_cw90_frame0_ffmpeg.png"


def mean_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


def block_pattern(height: int = 48, width: int = 64) -> np.ndarray:
    """An RGB image whose orientation is unambiguous: white top-left, red top-right, green bottom-left, blue
    bottom-right (16 px blocks, so H.264 chroma subsampling keeps them clean)."""
    image = np.zeros((height, width, 3), np.uint8)
    image[:16, :16] = 255
    image[:16, -16:] = (255, 0, 0)
    image[-16:, :16] = (0, 255, 0)
    image[-16:, -16:] = (0, 0, 255)
    return image


def encode_video(path: Path, frames, rotation=None, hflip=False, vflip=False) -> None:
    """Lossless-ish H.264 mp4 of ``frames`` (RGB uint8), optionally with a display matrix."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=5, options={"crf": "0"})
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = "yuv420p"
        if rotation is not None:
            stream.set_display_rotation(rotation, hflip=hflip, vflip=vflip)
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)


def faststart_copy(src: Path, dst: Path) -> None:
    """Remux ``src`` with the index (moov) before the data, as streaming-friendly MP4s are stored."""
    with av.open(str(src)) as inp, av.open(str(dst), "w", options={"movflags": "faststart"}) as out:
        in_stream = inp.streams.video[0]
        out_stream = out.add_stream_from_template(in_stream)
        for packet in inp.demux(in_stream):
            if packet.dts is None:
                continue
            packet.stream = out_stream
            out.mux(packet)


def truncated_copy(src: Path, dst: Path, fraction: float) -> None:
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * fraction)])


# ---------------------------------------------------------------------------------------------------------- readers

def test_backends_agree_on_mp4():
    readers = [read_video(APPLE, backend) for backend in ("pyav", "decord", "opencv")]
    for reader in readers:
        assert (reader.size, reader.fps, reader.num_frames) == ((720, 1296), 10.0, 50)
    assert [reader.backend for reader in readers] == ["pyav", "decord", "opencv"]
    count = 0
    for pyav_frame, decord_frame, opencv_frame in zip(*readers, strict=True):
        assert pyav_frame.shape == (720, 1296, 3) and pyav_frame.dtype == np.uint8
        assert pyav_frame.flags["C_CONTIGUOUS"]
        assert mean_abs_diff(pyav_frame, decord_frame) < 2
        assert mean_abs_diff(pyav_frame, opencv_frame) < 2
        count += 1
    assert count == 50


def test_default_backend_is_pyav_and_reiteration_decodes_again():
    with read_video(APPLE) as reader:
        assert reader.backend == "pyav"
        first_pass = [frame[::97, ::97].copy() for frame in reader]
        second_pass = [frame[::97, ::97].copy() for frame in reader]
    assert len(first_pass) == len(second_pass) == 50
    assert all(np.array_equal(a, b) for a, b in zip(first_pass, second_pass))


def test_image_folder_reads_back_pyav_frames_exactly(tmp_path):
    originals = []
    for index, frame in enumerate(read_video(APPLE)):
        if index == 11:
            break
        Image.fromarray(frame).save(tmp_path / f"img{index}.png", compress_level=1)  # img10 must sort after img9
        originals.append(frame)
    reader = read_video(tmp_path)
    assert (reader.backend, reader.size, reader.fps, reader.num_frames) == ("images", (720, 1296), None, 11)
    frames = list(reader)
    assert len(frames) == 11
    assert all(np.array_equal(a, b) for a, b in zip(frames, originals))


def test_image_folder_natural_order_ignores_hidden_and_other_files(tmp_path):
    for name, value in [("frame10.png", 10), ("frame2.png", 2), ("frame1.jpg", 1), ("Frame3.PNG", 3)]:
        Image.fromarray(np.full((8, 6), value * 20, np.uint8)).save(tmp_path / name, quality=100)
    Image.fromarray(np.full((8, 6), 250, np.uint8)).save(tmp_path / ".frame0.png")  # hidden
    (tmp_path / "notes.txt").write_text("not a frame")
    (tmp_path / "frame5.png.bak").write_bytes(b"")
    (tmp_path / "sub.png").mkdir()
    values = [int(round(frame.mean())) // 20 for frame in read_video(tmp_path)]
    assert values == [1, 2, 3, 10]


def test_image_modes_become_rgb(tmp_path):
    rgb = np.zeros((4, 5, 3), np.uint8)
    rgb[0, 0] = (10, 20, 30)
    gray = np.full((4, 5), 77, np.uint8)
    Image.fromarray(gray).save(tmp_path / "0.png")  # L
    Image.fromarray(np.dstack([rgb, np.full((4, 5), 9, np.uint8)])).save(tmp_path / "1.png")  # RGBA
    palette_image = Image.fromarray(np.full((4, 5), 2, np.uint8))
    palette_image.putpalette(DAVIS_PALETTE.tobytes())
    palette_image.save(tmp_path / "2.png")  # P
    Image.fromarray(np.eye(4, 5, dtype=bool)).save(tmp_path / "3.png")  # 1-bit
    frames = list(read_video(tmp_path))
    assert all(frame.shape == (4, 5, 3) and frame.dtype == np.uint8 for frame in frames)
    assert (frames[0] == 77).all()
    assert np.array_equal(frames[1], rgb)
    assert (frames[2] == (0, 128, 0)).all()
    assert np.array_equal(frames[3][..., 0], np.eye(4, 5, dtype=np.uint8) * 255)


def test_image_folder_with_an_odd_size_names_the_first_odd_file(tmp_path):
    for index, width in enumerate([6, 6, 7, 5]):
        Image.fromarray(np.zeros((4, width), np.uint8)).save(tmp_path / f"{index:03d}.png")
    with pytest.raises(VideoError) as info:
        read_video(tmp_path)
    assert "002.png" in str(info.value) and "7x4" in str(info.value) and "6x4" in str(info.value)
    assert info.value.frame == 2


def test_image_folder_undecodable_frame_fails_when_reached(tmp_path):
    for index in range(4):
        Image.fromarray(np.full((16, 16, 3), index, np.uint8)).save(tmp_path / f"{index:05d}.png")
    broken = tmp_path / "00002.png"
    broken.write_bytes(broken.read_bytes()[:40])
    reader = read_video(tmp_path)
    seen = []
    with pytest.raises(VideoError) as info:
        for frame in reader:
            seen.append(int(frame[0, 0, 0]))
    assert seen == [0, 1]
    assert info.value.frame == 2 and "00002.png" in str(info.value) and "frame 2" in str(info.value)


def test_empty_image_folder(tmp_path):
    (tmp_path / "readme.txt").write_text("no frames here")
    with pytest.raises(VideoError, match="no JPEG/PNG images"):
        read_video(tmp_path)


def test_rotation_matches_ffmpeg_rendering():
    reference = np.asarray(Image.open(ROTATED_REF).convert("RGB"))
    assert reference.shape == (64, 48, 3)  # displayed portrait
    for backend in ("pyav", "opencv"):
        reader = read_video(ROTATED, backend)
        assert reader.size == (64, 48)
        frames = list(reader)
        assert len(frames) == 3
        assert mean_abs_diff(frames[0], reference) < 1, backend
        assert (frames[0][:16, -16:] > 240).all()  # the stored top-left white block is now top-right
    with pytest.raises(VideoError, match="use backend 'pyav'"):
        read_video(ROTATED, "decord")


@pytest.mark.parametrize("rotation,hflip,vflip", [
    (90, False, False), (180, False, False), (-90, False, False),
    (0, True, False), (0, False, True), (90, True, False), (-90, False, True)])
def test_display_matrix_rotation_and_mirroring(tmp_path, rotation, hflip, vflip):
    pattern = block_pattern()
    path = tmp_path / "oriented.mp4"
    encode_video(path, [pattern, pattern], rotation, hflip, vflip)
    expected = np.rot90(pattern, rotation // 90)  # the display matrix rotates counter-clockwise, then mirrors
    if hflip:
        expected = expected[:, ::-1]
    if vflip:
        expected = expected[::-1]
    reader = read_video(path)
    assert reader.size == expected.shape[:2]
    frames = list(reader)
    assert len(frames) == 2
    assert mean_abs_diff(frames[0], expected) < 3


def test_truncated_mp4_yields_intact_frames_then_reports_the_damaged_frame(tmp_path):
    faststart = tmp_path / "faststart.mp4"
    faststart_copy(APPLE, faststart)
    truncated = tmp_path / "truncated.mp4"
    truncated_copy(faststart, truncated, 0.4)
    reader = read_video(truncated)
    assert reader.num_frames == 50  # the index survived, the data did not
    yielded = 0
    with pytest.raises(VideoError) as info:
        for frame, original in zip(reader, read_video(APPLE)):
            assert np.array_equal(frame, original)
            yielded += 1
    assert 0 < yielded < 50
    assert info.value.frame == yielded
    assert "truncated.mp4" in str(info.value) and f"frame {yielded}" in str(info.value)


@pytest.mark.parametrize("backend", ["opencv", "decord"])
def test_truncated_mp4_other_backends_report_where_the_video_stopped(tmp_path, backend):
    faststart = tmp_path / "faststart.mp4"
    faststart_copy(APPLE, faststart)
    truncated = tmp_path / "truncated.mp4"
    truncated_copy(faststart, truncated, 0.4)
    yielded = 0
    with pytest.raises(VideoError) as info:
        for _ in read_video(truncated, backend):
            yielded += 1
    assert 0 < yielded < 50
    assert info.value.frame == yielded and "truncated.mp4" in str(info.value)
    if backend == "opencv":  # OpenCV cannot see the damage: the announced frame count reveals it
        assert "ended early" in str(info.value) and "50 frames" in str(info.value)


def test_truncated_mp4_without_its_index_cannot_be_opened(tmp_path):
    truncated = tmp_path / "no_index.mp4"
    truncated_copy(APPLE, truncated, 0.4)  # this file stores its index (moov) at the end
    with pytest.raises(VideoError) as info:
        read_video(truncated)
    assert "no_index.mp4" in str(info.value) and "pyav" in str(info.value) and "opencv" in str(info.value)


def test_unreadable_inputs(tmp_path):
    with pytest.raises(VideoError, match="no such video file"):
        read_video(tmp_path / "missing.mp4")
    fake = tmp_path / "notes.mp4"
    fake.write_text("this is not a video\n" * 50)
    with pytest.raises(VideoError, match="notes.mp4"):
        read_video(fake)
    for backend in ("pyav", "decord", "opencv"):
        with pytest.raises(VideoError, match=f"notes.mp4.*{backend}"):
            read_video(fake, backend)
    with pytest.raises(VideoError, match="unsupported video extension '.png'"):
        read_video(APPLE_MASK)
    with pytest.raises(VideoError, match="unknown video backend"):
        read_video(APPLE, "ffmpeg")


# ------------------------------------------------------------------------------------------------------------ masks

def test_davis_palette():
    assert DAVIS_PALETTE.shape == (256, 3) and DAVIS_PALETTE.dtype == np.uint8
    assert DAVIS_PALETTE[0].tolist() == [0, 0, 0]
    assert DAVIS_PALETTE[1].tolist() == [128, 0, 0]
    assert DAVIS_PALETTE[2].tolist() == [0, 128, 0]
    assert DAVIS_PALETTE[255].tolist() == [224, 224, 192]
    assert len({tuple(colour) for colour in DAVIS_PALETTE.tolist()}) == 256
    official = np.array(Image.open(KITE_MASKS / "00000.png").getpalette()[:768], np.uint8).reshape(-1, 3)
    assert np.array_equal(official, DAVIS_PALETTE[: len(official)])


def test_palette_png_round_trip_is_atomic(tmp_path):
    rng = np.random.default_rng(0)
    label_map = rng.integers(0, 4, size=(37, 53)).astype(np.uint8)
    label_map[0, :3] = (7, 128, 255)
    target = tmp_path / "00000.png"
    save_palette_png(target, label_map)
    save_palette_png(target, label_map)  # overwriting is fine
    assert sorted(os.listdir(tmp_path)) == ["00000.png"]
    image = Image.open(target)
    assert image.mode == "P"
    assert np.array_equal(np.array(image.getpalette(), np.uint8).reshape(-1, 3), DAVIS_PALETTE)
    assert np.array_equal(np.asarray(image), label_map)
    assert np.array_equal(load_label_map(target), label_map)


def test_save_palette_png_failure_leaves_no_temporary_file(tmp_path):
    (tmp_path / "taken.png").mkdir()  # a folder where the PNG should go: the final rename fails
    with pytest.raises(OutputError, match="taken.png"):
        save_palette_png(tmp_path / "taken.png", np.ones((4, 4), np.uint8))
    assert os.listdir(tmp_path) == ["taken.png"] and os.listdir(tmp_path / "taken.png") == []
    with pytest.raises(MaskError, match="id 300"):
        save_palette_png(tmp_path / "big.png", np.full((4, 4), 300, np.int32))
    assert os.listdir(tmp_path) == ["taken.png"]


def test_load_palette_annotation_keeps_ids():
    label_map = load_label_map(KITE_MASKS / "00000.png")
    assert label_map.dtype == np.uint8 and label_map.shape == (480, 854)
    assert np.unique(label_map).tolist() == [0, 1, 2, 3]
    assert np.array_equal(label_map, np.asarray(Image.open(KITE_MASKS / "00000.png")))


def test_load_grayscale_label_map_and_binary_masks(tmp_path):
    ids = np.zeros((6, 8), np.uint8)
    ids[1, 1], ids[2, 2], ids[3, 3] = 1, 2, 7
    Image.fromarray(ids).save(tmp_path / "ids.png")
    assert np.array_equal(load_label_map(tmp_path / "ids.png"), ids)

    binary = (ids > 0).astype(np.uint8)
    Image.fromarray(binary * 255).save(tmp_path / "white.png")  # 0/255 -> object 1
    assert np.array_equal(load_label_map(tmp_path / "white.png"), binary)
    Image.fromarray(binary * 3).save(tmp_path / "three.png")  # a single id that is not 255 stays as given
    assert np.array_equal(load_label_map(tmp_path / "three.png"), binary * 3)
    Image.fromarray(binary.astype(bool)).save(tmp_path / "bits.png")  # mode "1"
    assert np.array_equal(load_label_map(tmp_path / "bits.png"), binary)
    Image.fromarray(np.dstack([binary * 255] * 3)).save(tmp_path / "white_rgb.png")
    assert np.array_equal(load_label_map(tmp_path / "white_rgb.png"), binary)
    Image.fromarray(np.dstack([binary * 255, binary * 255, binary * 0, binary * 255])).save(tmp_path / "rgba.png")
    assert np.array_equal(load_label_map(tmp_path / "rgba.png"), binary)  # one non-black colour -> object 1


def test_load_rgb_rendering_of_a_davis_annotation(tmp_path):
    label_map = load_label_map(KITE_MASKS / "00000.png")
    Image.fromarray(DAVIS_PALETTE[label_map]).save(tmp_path / "rgb.png")  # colours -> palette indices
    assert np.array_equal(load_label_map(tmp_path / "rgb.png"), label_map)


def test_load_soft_mask_refused_unless_thresholded():
    with pytest.raises(MaskError) as info:
        load_label_map(APPLE_SOFT)
    assert "apple_mask_soft.png" in str(info.value) and "soft mask" in str(info.value)
    assert "threshold" in str(info.value)
    assert np.array_equal(load_label_map(APPLE_SOFT, threshold=128), load_label_map(APPLE_MASK))


def test_load_refuses_ambiguous_and_unreadable_files(tmp_path):
    colours = np.zeros((4, 4, 3), np.uint8)
    colours[0, 0], colours[1, 1] = (255, 255, 255), (10, 200, 30)
    Image.fromarray(colours).save(tmp_path / "colours.png")
    with pytest.raises(MaskError, match="colours.png.*not DAVIS palette"):
        load_label_map(tmp_path / "colours.png")
    with pytest.raises(MaskError, match="not found"):
        load_label_map(tmp_path / "missing.png")
    (tmp_path / "text.png").write_text("not an image")
    with pytest.raises(MaskError, match="text.png.*cannot read"):
        load_label_map(tmp_path / "text.png")


def test_load_16_bit_label_maps(tmp_path):
    ids = np.zeros((5, 5), np.uint16)
    ids[0, 0], ids[1, 1] = 1, 2
    Image.fromarray(ids).save(tmp_path / "small.png")
    assert np.array_equal(load_label_map(tmp_path / "small.png"), ids.astype(np.uint8))
    ids[2, 2] = 300
    Image.fromarray(ids).save(tmp_path / "big.png")
    with pytest.raises(MaskError, match="big.png.*id 300"):
        load_label_map(tmp_path / "big.png")
    Image.fromarray((ids > 0).astype(np.uint16) * 65535).save(tmp_path / "binary16.png")
    assert np.array_equal(load_label_map(tmp_path / "binary16.png"), (ids > 0).astype(np.uint8))


def test_validate_first_mask():
    label_map = load_label_map(KITE_MASKS / "00000.png")
    assert validate_first_mask(label_map, (480, 854), "m.png") is not None
    with pytest.raises(MaskError) as info:
        validate_first_mask(label_map, (240, 427), "m.png")
    message = str(info.value)
    assert "m.png" in message and "854x480" in message and "427x240" in message and "--resize-mask" in message
    resized = validate_first_mask(label_map, (240, 427), "m.png", resize=True)
    assert resized.shape == (240, 427) and resized.dtype == np.uint8
    assert np.unique(resized).tolist() == [0, 1, 2, 3]
    assert np.array_equal(resized, label_map[1::2, 1::2])  # nearest pixel centre: destination x samples 2x + 1

    with pytest.raises(MaskError, match="no object"):
        validate_first_mask(np.zeros((4, 4), np.uint8), (4, 4), "empty.png")
    tiny = np.zeros((40, 40), np.uint8)
    tiny[:20] = 1
    tiny[30, 30] = 2
    with pytest.raises(MaskError, match=r"id\(s\) \[2\] vanished"):
        validate_first_mask(tiny, (4, 4), "tiny.png", resize=True)
    with pytest.raises(MaskError, match="object 2 covers 1 pixel"):
        validate_first_mask(tiny, (40, 40), "tiny.png", min_pixels=10)
    with pytest.raises(MaskError, match="id 256"):
        validate_first_mask(np.full((4, 4), 256, np.int64), (4, 4), "wide.png")


# ---------------------------------------------------------------------------------------------------------- writers

def davis_sequence(count: int = 6):
    for index in range(count):
        frame = np.asarray(Image.open(KITE_FRAMES / f"{index:05d}.jpg").convert("RGB"))
        yield index, frame, load_label_map(KITE_MASKS / f"{index:05d}.png")


def test_palette_writer(tmp_path):
    out = tmp_path / "results" / "kite-surf"
    with PaletteWriter(out) as writer:
        for index, frame, label_map in davis_sequence(3):
            writer.write(index, frame, label_map)
    assert sorted(os.listdir(out)) == ["00000.png", "00001.png", "00002.png"]
    for index, _, label_map in davis_sequence(3):
        image = Image.open(out / f"{index:05d}.png")
        assert image.mode == "P"
        assert np.array_equal(np.array(image.getpalette(), np.uint8).reshape(-1, 3), DAVIS_PALETTE)
        assert np.array_equal(np.asarray(image), label_map)


def test_overlay_writer_real_frames(tmp_path):
    path = tmp_path / "overlay.mp4"
    with OverlayWriter(path, fps=24.0, size=(480, 854)) as writer:
        for index, frame, label_map in davis_sequence():
            writer.write(index, frame, label_map)
    assert os.listdir(tmp_path) == ["overlay.mp4"]
    reader = read_video(path)
    assert (reader.size, reader.fps, reader.num_frames) == ((480, 854), 24.0, 6)
    decoded = list(reader)
    assert len(decoded) == 6
    for decoded_frame, (_, frame, label_map) in zip(decoded, davis_sequence()):
        # H.264 loss only (4:2:0 chroma subsampling blurs the saturated 2 px outlines most)
        assert mean_abs_diff(decoded_frame, draw_overlay(frame, label_map)) < 5


def test_draw_overlay_blends_and_outlines():
    frame = np.full((12, 14, 3), 100, np.uint8)
    label_map = np.zeros((12, 14), np.uint8)
    label_map[2:8, 2:6] = 1
    label_map[2:8, 6:10] = 3
    out = draw_overlay(frame, label_map)
    assert out[4, 3].tolist() == [114, 50, 50]  # (100 + (128, 0, 0)) / 2, rounded
    assert out[4, 8].tolist() == [114, 114, 50]  # id 3 = (128, 128, 0)
    assert out[2, 3].tolist() == out[1, 3].tolist() == [128, 0, 0]  # 2 px outline: both sides of the edge
    assert out[4, 5].tolist() == out[4, 6].tolist() == [128, 128, 0]  # between objects: the larger id's colour
    assert out[10, 12].tolist() == [100, 100, 100] and np.array_equal(frame, np.full((12, 14, 3), 100))


def test_overlay_writer_odd_size_is_padded(tmp_path):
    height, width = 47, 63
    frame = np.full((height, width, 3), 100, np.uint8)
    label_map = np.zeros((height, width), np.uint8)
    label_map[8:40, 8:32] = 1
    path = tmp_path / "odd.mp4"
    with OverlayWriter(path, fps=None, size=(height, width)) as writer:
        for index in range(4):
            writer.write(index, frame, label_map)
    reader = read_video(path)
    assert reader.size == (48, 64) and reader.num_frames == 4 and reader.fps == 25.0  # padded to even sizes
    decoded = next(iter(reader))
    assert mean_abs_diff(decoded[:height, :width], draw_overlay(frame, label_map)) < 8  # a small, edgy image
    assert np.abs(decoded[20, 20].astype(int) - (114, 50, 50)).max() <= 6
    assert np.abs(decoded[47].astype(int) - decoded[46]).max() <= 4  # padding repeats the last row


def test_overlay_writer_keeps_part_file_on_error(tmp_path):
    path = tmp_path / "broken.mp4"
    frame = np.zeros((32, 32, 3), np.uint8)
    label_map = np.zeros((32, 32), np.uint8)
    with pytest.raises(RuntimeError, match="tracker crashed"):
        with OverlayWriter(path, fps=5, size=(32, 32)) as writer:
            for index in range(3):
                writer.write(index, frame, label_map)
            raise RuntimeError("tracker crashed")
    assert os.listdir(tmp_path) == ["broken.mp4.part"]
    with av.open(str(tmp_path / "broken.mp4.part")) as container:
        assert sum(1 for _ in container.decode(video=0)) == 3  # finalised: every written frame is playable


def test_overlay_writer_rejects_bad_frames(tmp_path):
    with OverlayWriter(tmp_path / "o.mp4", fps=5, size=(16, 16)) as writer:
        writer.write(0, np.zeros((16, 16, 3), np.uint8), np.zeros((16, 16), np.uint8))
        with pytest.raises(InputError, match="indices must increase"):
            writer.write(0, np.zeros((16, 16, 3), np.uint8), np.zeros((16, 16), np.uint8))
        with pytest.raises(InputError, match="16x16"):
            writer.write(1, np.zeros((16, 18, 3), np.uint8), np.zeros((16, 16), np.uint8))
    with pytest.raises(OutputError, match=r"\.mp4"):
        OverlayWriter(tmp_path / "o.avi", fps=5, size=(16, 16))


def read_rle_lines(path: Path):
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # pycocotools vs numpy 2
def test_rle_writer_decodes_to_the_same_masks(tmp_path):
    path = tmp_path / "masks.jsonl"
    with RleWriter(path) as writer:
        for index, _, label_map in davis_sequence():
            writer.write(index, None, label_map)
    records = read_rle_lines(path)
    assert [record["frame"] for record in records] == list(range(6))
    for record, (_, _, label_map) in zip(records, davis_sequence()):
        present = [int(i) for i in np.unique(label_map) if i]
        assert sorted(int(key) for key in record["objects"]) == present
        for key, rle in record["objects"].items():
            assert rle["size"] == [480, 854] and isinstance(rle["counts"], str)
            decoded = mask_utils.decode([{"size": rle["size"], "counts": rle["counts"].encode("ascii")}])[..., 0]
            assert np.array_equal(decoded.astype(bool), label_map == int(key))


def test_rle_writer_resume_truncates_and_never_duplicates(tmp_path):
    sequence = list(davis_sequence())
    fresh = tmp_path / "fresh.jsonl"
    with RleWriter(fresh) as writer:
        for index, _, label_map in sequence:
            writer.write(index, None, label_map)

    resumed = tmp_path / "resumed.jsonl"
    with RleWriter(resumed) as writer:
        for index, _, label_map in sequence[:5]:
            writer.write(index, None, label_map)
    with open(resumed, "a") as handle:
        handle.write('{"frame": 5, "objects": {"1": {"si')  # a crash in the middle of a line
    with RleWriter(resumed, resume_from=3) as writer:
        assert [r["frame"] for r in read_rle_lines(resumed)] == [0, 1, 2]
        for index, _, label_map in sequence[3:]:
            writer.write(index, None, label_map)
    assert resumed.read_text() == fresh.read_text()

    with RleWriter(resumed, resume_from=10):
        pass  # nothing to drop
    assert resumed.read_text() == fresh.read_text()
    with RleWriter(resumed):
        pass  # without resume_from the file starts afresh
    assert resumed.read_text() == ""


def test_rle_writer_refuses_to_resume_a_foreign_file(tmp_path):
    path = tmp_path / "other.jsonl"
    path.write_text('{"frame": 0, "objects": {}}\nnot json\n')
    with pytest.raises(OutputError, match="other.jsonl.*line 2"):
        RleWriter(path, resume_from=5)
    assert path.read_text() == '{"frame": 0, "objects": {}}\nnot json\n'


def test_writers_share_one_signature(tmp_path):
    writers = [PaletteWriter(tmp_path / "png"), OverlayWriter(tmp_path / "o.mp4", 10, (480, 854)),
               RleWriter(tmp_path / "r.jsonl")]
    for index, frame, label_map in davis_sequence(2):
        for writer in writers:
            writer.write(index, frame, label_map)
    for writer in writers:
        writer.close()
        writer.close()  # idempotent
    assert len(os.listdir(tmp_path / "png")) == 2
    assert sum(1 for _ in read_video(tmp_path / "o.mp4")) == 2
    assert len(read_rle_lines(tmp_path / "r.jsonl")) == 2
