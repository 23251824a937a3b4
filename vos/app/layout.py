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
from vos.trackers.options import DEFAULT_DETECT_THRESHOLD

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
         "press **Track**. Or find your own object: upload a photo of it under *Find objects from a photo*, click "
         "it there; it is searched for on every frame, tracked once found, and found again when it comes back. "
         "Masks come from the model's prompt decoder; the run folder is the same as `vos track`'s, so either can "
         "resume it.")
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
        with gr.Accordion("Find objects from a photo (optional)", open=False, elem_id="vos-find"):
            with gr.Row():
                with gr.Column(scale=1, min_width=280):
                    ref_upload = gr.File(label="Upload a reference photo", type="filepath", height=140,
                                         elem_id="vos-ref-upload")
                    ref_mask = gr.File(label="…and its mask (PNG), or click the objects on it", type="filepath",
                                       height=140, elem_id="vos-ref-mask")
                    redetect = gr.Checkbox(label="Also find the first frame's objects again when they are lost",
                                           elem_id="vos-redetect")
                    threshold = gr.Number(value=DEFAULT_DETECT_THRESHOLD, minimum=0, label="Detection threshold "
                                          "(score in [0, 1])", elem_id="vos-threshold")
                with gr.Column(scale=3):
                    ref_frame = gr.Image(label="Reference photo: click the objects to find", interactive=False,
                                         format="jpeg", buttons=["fullscreen"], elem_id="vos-ref-frame")
                    with gr.Row():
                        ref_current = gr.Dropdown([("new object", "new")], value="new", label="Clicks go to",
                                                  elem_id="vos-ref-current", scale=1)
                        ref_new = gr.Button("New object", size="sm", elem_id="vos-ref-new")
                        ref_undo = gr.Button("Undo", size="sm", elem_id="vos-ref-undo")
                        ref_remove = gr.Button("Remove object", size="sm", elem_id="vos-ref-remove")
                    ref_objects = gr.HTML(object_list(Objects(), "click on the reference photo"),
                                          elem_id="vos-ref-objects")
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
        ref_editor = [ref_frame, ref_objects, ref_current, note]
        for events, view, picture, selector, new, undo, remove, upload in (
                (h.first, editor, frame, current, new_button, undo_button, remove_button, mask),
                (h.reference, ref_editor, ref_frame, ref_current, ref_new, ref_undo, ref_remove, ref_mask)):
            picture.select(events.click, [session, mode, model], view, trigger_mode="multiple")
            selector.input(events.choose, [session, selector], view)
            new.click(events.new_object, [session], view)
            undo.click(events.undo, [session, model], view)
            remove.click(events.remove, [session, selector, model], view)
            upload.upload(events.upload_mask, [session, upload, model], view + [upload])
        ref_upload.upload(h.open_reference, [session, ref_upload, model], ref_editor + [ref_upload])
        model.input(h.change_model, [session, model], [method] + editor + ref_editor[:3])
        run_outputs = [preview, bar, note, files, command]
        track_button.click(h.track, [session, model, method, max_frames, redetect, threshold], run_outputs,
                           show_progress="hidden")
        resume_button.click(h.resume, [session, max_frames], run_outputs, show_progress="hidden")
        stop_button.click(h.stop, [session], [note], show_progress="hidden")
        page.unload(h.unload)
    return page
