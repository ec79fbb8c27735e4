"""The Gradio UI (``auralm ui``, or ``auralm serve --ui``), mounted at ``/ui`` on the API's own app.

Tabs, shown for the recipes the server holds: **Transcribe** (upload or record audio), **Chat** (multi-turn;
each turn may add a recording or a file; the model hears the latest clip, as in the API), **Sound** (a
label and a seed; the WAV plays in the page). Every action calls :class:`~auralm.serve.service.Service`
and :mod:`auralm.serve.media`, the code the HTTP endpoints call, so limits, batching and errors are the
same. With ``--api-key`` the UI asks for the key as its password.
"""

from __future__ import annotations

import hmac
import time
from pathlib import Path
from typing import Any

from auralm.serve.errors import APIError
from auralm.serve.media import load_audio_bytes
from auralm.serve.service import HearJob, Service

THEME_FONTS = (["ui-sans-serif", "system-ui", "sans-serif"], ["ui-monospace", "monospace"])  # nothing fetched


def build_ui(service: Service) -> Any:
    """The Gradio Blocks over ``service``."""
    import gradio as gr

    cfg = service.cfg
    hear = [n for n, m in service.models.items() if m.recipe == "hear"]
    sound = [n for n, m in service.models.items() if m.recipe == "sound"]

    def deadline() -> float:
        return time.monotonic() + cfg.request_timeout

    def read(path: str | None, what: str) -> Any:
        if not path:
            raise gr.Error(f"{what}: upload or record a clip first")
        try:
            return load_audio_bytes(Path(path).read_bytes(), what, cfg.max_audio_seconds, Path(path).name)
        except APIError as err:
            raise gr.Error(err.message) from None

    async def transcribe(name: str, path: str | None, prompt: str) -> str:
        try:
            model = service.get(name, "hear", "the UI")
            prompt = prompt.strip() or None
            service.check_prompt(model, prompt)
            wav = read(path, "audio")
            _, res = await service.transcribe(model, wav, prompt, service.generation(model, None), deadline())
        except APIError as err:
            raise gr.Error(err.message) from None
        return " ".join(t for t in res.texts if t)

    async def chat(name: str, message: dict[str, Any], history: list[dict[str, Any]], clip: str | None):
        text = (message or {}).get("text", "").strip()
        files = [f if isinstance(f, str) else f.get("path") for f in (message or {}).get("files", [])]
        clip = files[-1] if files else clip  # the latest clip of the conversation
        history = list(history or [])
        history.append({"role": "user", "content": text + (f"  [audio: {Path(files[-1]).name}]" if files else "")})
        try:
            model = service.get(name, "hear", "the UI")
            if not clip:
                raise APIError(400, "add a recording or an audio file: the model answers about audio")
            prompt = text or None
            service.check_prompt(model, prompt)
            wav = read(clip, "audio")
            import asyncio

            loop = asyncio.get_running_loop()
            queue: asyncio.Queue = asyncio.Queue()
            job = HearJob([(wav, prompt)], on_text=lambda k, t: loop.call_soon_threadsafe(queue.put_nowait, t))
            task = asyncio.ensure_future(service.hear(model, job, service.generation(model, None), None, deadline()))
            task.add_done_callback(lambda _: queue.put_nowait(None))
            history.append({"role": "assistant", "content": ""})
            while (delta := await queue.get()) is not None:
                history[-1]["content"] += delta
                yield history, {"text": "", "files": []}, clip
            history[-1]["content"] = task.result().texts[0]
        except APIError as err:
            raise gr.Error(err.message) from None
        yield history, {"text": "", "files": []}, clip

    async def generate(name: str, label: str, seed: float) -> tuple[int, Any]:
        try:
            model = service.get(name, "sound", "the UI")
            wav = await service.speech(model, label, int(seed or 0), deadline())
        except APIError as err:
            raise gr.Error(err.message) from None
        return int(model.pipeline.sample_rate), wav

    with gr.Blocks(title="auralm", analytics_enabled=False) as demo:
        gr.Markdown(f"# auralm\nModels: {', '.join(f'`{n}` ({service.models[n].recipe})' for n in service.models)}. "
                    "The same models answer the OpenAI-compatible API at `/v1`.")
        if hear:
            with gr.Tab("Transcribe"):
                t_model = gr.Dropdown(hear, value=hear[0], label="model")
                t_audio = gr.Audio(sources=["upload", "microphone"], type="filepath", label="audio",
                                   elem_id="transcribe-audio")
                t_prompt = gr.Textbox(label="prompt (empty: the model's own)", lines=1)
                t_button = gr.Button("Transcribe", variant="primary", elem_id="transcribe-button")
                t_out = gr.Textbox(label="transcript", lines=4, elem_id="transcript", buttons=["copy"])
                t_button.click(transcribe, [t_model, t_audio, t_prompt], t_out, api_name="transcribe")
            with gr.Tab("Chat"):
                c_model = gr.Dropdown(hear, value=hear[0], label="model")
                c_bot = gr.Chatbot(label="conversation", elem_id="chatbot", height=360)
                c_clip = gr.State(None)
                c_box = gr.MultimodalTextbox(sources=["upload", "microphone"], file_types=["audio"],
                                             placeholder="Ask about the audio (attach or record a clip)",
                                             elem_id="chat-input")
                c_box.submit(chat, [c_model, c_box, c_bot, c_clip], [c_bot, c_box, c_clip], api_name="chat")
        if sound:
            with gr.Tab("Sound"):
                s_model = gr.Dropdown(sound, value=sound[0], label="model")
                labels = list(service.models[sound[0]].pipeline.labels)
                s_label = gr.Dropdown(labels, value=labels[0] if labels else None, label="label",
                                      allow_custom_value=not labels)
                s_seed = gr.Number(0, label="seed", precision=0)
                s_button = gr.Button("Generate", variant="primary", elem_id="sound-button")
                s_out = gr.Audio(label="sound", type="numpy", elem_id="sound-out", interactive=False)
                s_button.click(generate, [s_model, s_label, s_seed], s_out, api_name="sound")
                s_model.change(lambda n: gr.Dropdown(choices=list(service.models[n].pipeline.labels)), s_model,
                               s_label)
    return demo


def mount_ui(app: Any, service: Service, path: str = "/ui") -> Any:
    """``app`` with the UI mounted at ``path`` (a password prompt asking for the API key when there is one)."""
    import gradio as gr

    key = service.cfg.api_key
    auth = (lambda user, password: hmac.compare_digest(password.encode(), key.encode())) if key else None
    return gr.mount_gradio_app(app, build_ui(service).queue(default_concurrency_limit=None), path=path, auth=auth,
                               auth_message="Password: the server's API key" if key else None,
                               max_file_size=service.cfg.max_body_bytes, ssr_mode=False, footer_links=[],
                               theme=gr.themes.Default(font=THEME_FONTS[0], font_mono=THEME_FONTS[1]))
