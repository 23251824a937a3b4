"""The Gradio page: the source, the first frame to click on, the objects, the model and method, Track / Stop /
Resume with the progress bar and the streamed preview, the downloads; every event goes to
:class:`~vos.app.handlers.Handlers`."""
from __future__ import annotations

import gradio as gr

from vos.app.config import AppConfig
from vos.app.handlers import Handlers
from vos.app.models import ModelCache
from vos.app.render import message, object_list, progress
from vos.app.session import Objects, Session

CSS = """
.vos-message { min-height: 1.5em; padding: 0.3em 0.6em; border-radius: 4px; }
.vos-error { background: #fde8e8; color: #9b1c1c; font-weight: 600; }
.vos-info { background: #eef6ff; color: #1e3a8a; }
.vos-objects { list-style: none; padding-left: 0; margin: 0; }
.vos-swatch { display: inline-block; width: 0.9em; height: 0.9em; margin-right: 0.4em; border-radius: 2px;
              vertical-align: middle; }
.vos-progress progress { width: 70%; vertical-align: middle; }
"""
INTRO = ("## vos: follow objects through a video\n"
         "Open a video, click on each object (a point on it, points on the background to correct, or a box), "
         "press **Track**. Masks come from Segment Anything's prompt decoder; the run folder is the same as "
         "`vos track`'s, so either can resume it.")
_MODES = [("object point (+)", "positive"), ("background point (−)", "negative"), ("box: two corners", "box")]


def theme() -> gr.themes.Base:
    """Gradio's default theme with the system's fonts (nothing fetched from font servers)."""
    return gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"],
                             font_mono=["ui-monospace", "monospace"])


def build(config: AppConfig, models: ModelCache) -> gr.Blocks:
    """The page of an app with ``config``, its models from ``models``."""
    h = Handlers(config, models)
    with gr.Blocks(title="vos", analytics_enabled=False) as page:
        session = gr.State(Session())
        gr.Markdown(INTRO)
        with gr.Row():
            with gr.Column(scale=1, min_width=280):
                upload = gr.File(label="Upload a video", type="filepath", height=140, elem_id="vos-upload")
                path = gr.Textbox(label="…or a video path or frame folder on the server, a stream URL, camera:N",
                                  elem_id="vos-path")
                with gr.Row():
                    open_button = gr.Button("Open", elem_id="vos-open")
                    demo_button = gr.Button("Demo video", elem_id="vos-demo")
                model = gr.Dropdown(config.model_names(), value=config.model.name, label="Model",
                                    elem_id="vos-model")
                method = gr.Dropdown(config.method_choices(), value=config.default_method(config.model.name),
                                     label="Method", elem_id="vos-method")
                mask = gr.File(label="Upload a first-frame mask (PNG)", type="filepath", height=140,
                               elem_id="vos-mask")
            with gr.Column(scale=3):
                note = gr.HTML(message(), elem_id="vos-message")
                frame = gr.Image(label="First frame: click to add prompts", interactive=False, format="jpeg",
                                 buttons=["fullscreen"], elem_id="vos-frame")
                with gr.Row(equal_height=True):
                    mode = gr.Radio(_MODES, value="positive", label="A click adds", elem_id="vos-mode", scale=3)
                    current = gr.Dropdown([("new object", "new")], value="new", label="Clicks go to",
                                          elem_id="vos-current", scale=1)
                with gr.Row():
                    new_button = gr.Button("New object", size="sm", elem_id="vos-new")
                    undo_button = gr.Button("Undo", size="sm", elem_id="vos-undo")
                    remove_button = gr.Button("Remove object", size="sm", elem_id="vos-remove")
                objects = gr.HTML(object_list(Objects()), elem_id="vos-objects")
        with gr.Row(equal_height=True):
            max_frames = gr.Textbox(label="Frames to track (empty: all)", placeholder="all", max_lines=1,
                                    elem_id="vos-max-frames")
            track_button = gr.Button("Track", variant="primary", elem_id="vos-track")
            stop_button = gr.Button("Stop", variant="stop", elem_id="vos-stop")
            resume_button = gr.Button("Resume", elem_id="vos-resume")
        bar = gr.HTML(progress(0, None), elem_id="vos-progress")
        preview = gr.Image(label="Tracking", interactive=False, format="jpeg", buttons=["fullscreen"], height=540,
                           elem_id="vos-preview")
        files = gr.File(label="Downloads: masks (PNG zip), overlay video, RLE JSON Lines, run settings",
                        file_count="multiple", interactive=False, elem_id="vos-downloads")
        command = gr.Textbox(label="The same run on the command line (continues it)", interactive=False,
                             elem_id="vos-command")

        editor = [frame, objects, current, note]
        for event, fn, inputs, outputs in ((demo_button.click, h.open_demo, [session], editor),
                                           (upload.upload, h.open_upload, [session, upload], editor + [upload]),
                                           (open_button.click, h.open_path, [session, path], editor),
                                           (path.submit, h.open_path, [session, path], editor)):
            event(fn, inputs, outputs).then(h.prepare, [session, model], editor)
        frame.select(h.click, [session, mode, model], editor, trigger_mode="multiple")
        current.input(h.choose, [session, current], editor)
        new_button.click(h.new_object, [session], editor)
        undo_button.click(h.undo, [session, model], editor)
        remove_button.click(h.remove, [session, current, model], editor)
        mask.upload(h.upload_mask, [session, mask, model], editor + [mask])
        model.input(h.change_model, [session, model], [method] + editor)
        run_outputs = [preview, bar, note, files, command]
        track_button.click(h.track, [session, model, method, max_frames], run_outputs, show_progress="hidden")
        resume_button.click(h.resume, [session, max_frames], run_outputs, show_progress="hidden")
        stop_button.click(h.stop, [session], [note], show_progress="hidden")
        page.unload(h.unload)
    return page
