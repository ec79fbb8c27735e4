"""The Gradio UI (``auralm ui``, or ``auralm serve --ui``), mounted at ``/ui`` on the API's own app.

Tabs, shown for the recipes the server holds:

* **Transcribe** (hear models): upload or record audio, and an optional prompt; the transcript, cut where
  ``/v1/audio/transcriptions`` cuts it.
* **Chat** (hear and chat models): multi-turn, the answer streams in. With a hear model each turn may add a
  recording or an audio file and the model hears the latest clip, as in the API. With a chat model each turn
  may add images and clips (uploaded or recorded), and every turn, with all its images and clips in order,
  is sent again with the next one, as an API client sends the whole conversation.
* **Sound** (sound models): a label and a seed; the WAV plays in the page.
* **Image** (imagine models): a text prompt, or a clip (uploaded or recorded) that the picture is made from,
  and a seed; a PNG of the model's own size.

Every action calls :class:`~auralm.serve.service.Service` and :mod:`auralm.serve.media`, the code the HTTP
endpoints call, so limits, batching and errors are the same. Each button has an ``api_name`` (``transcribe``,
``chat``, ``sound``, ``image``) for ``gradio_client``. With ``--api-key`` the UI asks for the key as its
password.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import mimetypes
import time
from pathlib import Path
from typing import Any

from auralm.serve.errors import APIError
from auralm.serve.media import load_audio_bytes, load_image, sniff_image
from auralm.serve.service import AUDIO, IMAGE, MAX_PROMPT_CHARS, ChatJob, HearJob, Service

THEME_FONTS = (["ui-sans-serif", "system-ui", "sans-serif"], ["ui-monospace", "monospace"])  # nothing fetched


def _paths(message: dict[str, Any] | None) -> list[str]:
    return [f if isinstance(f, str) else f.get("path") for f in (message or {}).get("files", []) if f]


def build_ui(service: Service) -> Any:
    """The Gradio Blocks over ``service``."""
    import gradio as gr

    cfg = service.cfg
    hear = [n for n, m in service.models.items() if m.recipe == "hear"]
    talk = [n for n, m in service.models.items() if m.recipe in ("hear", "chat")]
    sound = [n for n, m in service.models.items() if m.recipe == "sound"]
    imagine = [n for n, m in service.models.items() if m.recipe == "imagine"]

    def deadline() -> float:
        return time.monotonic() + cfg.request_timeout

    def read(path: str | None, what: str) -> Any:
        if not path:
            raise gr.Error(f"{what}: upload or record a clip first")
        try:
            return load_audio_bytes(Path(path).read_bytes(), what, cfg.max_audio_seconds, Path(path).name)
        except APIError as err:
            raise gr.Error(err.message) from None

    def attachable(name: str | None) -> dict[str, Any]:
        """What the chat box takes: images and clips, several a turn, for chat models; one clip for hear models."""
        if name and service.models[name].recipe == "chat":
            return {"file_types": ["audio", "image"], "file_count": "multiple"}
        return {"file_types": ["audio"], "file_count": "single"}

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

    def attachments(paths: list[str], before: int) -> tuple[list[str], list[bytes], list[Any]]:
        """One turn's files, in order: their placeholders, the checked image bytes and the decoded clips
        (``before`` images earlier in the conversation count towards ``--max-images``)."""
        marks, images, clips = [], [], []
        for path in paths:
            raw = Path(path).read_bytes()
            kind = sniff_image(raw)
            if kind is not None or (mimetypes.guess_type(path)[0] or "").startswith("image/"):  # the API's 400 if not
                if before + len(images) + 1 > cfg.max_images:
                    raise APIError(400, f"{before + len(images) + 1} images; this server takes at most "
                                        f"{cfg.max_images} per conversation (--max-images)")
                url = f"data:image/{kind or 'png'};base64," + base64.b64encode(raw).decode()
                images.append(load_image(url, f"image {Path(path).name}", False, cfg.max_body_bytes))
                marks.append(IMAGE)
            else:
                clips.append(load_audio_bytes(raw, f"audio {Path(path).name}", cfg.max_audio_seconds, Path(path).name))
                marks.append(AUDIO)
        return marks, images, clips

    async def chat(name: str, message: dict[str, Any], history: list[dict[str, Any]], clip: str | None,
                   convo: list[dict[str, Any]] | None):
        text = (message or {}).get("text", "").strip()
        files = _paths(message)
        history = list(history or [])
        before = list(convo or []) if history else []  # an emptied chat starts a new conversation
        convo = before  # what the state holds while the answer streams: the turn joins once answered
        empty = {"text": "", "files": []}
        try:
            model = service.get(name, ("hear", "chat"), "the UI")
            loop = asyncio.get_running_loop()
            queue: asyncio.Queue = asyncio.Queue()
            on_text = lambda k, t: loop.call_soon_threadsafe(queue.put_nowait, t)  # noqa: E731
            if model.recipe == "chat":
                if not text and not files:
                    raise APIError(400, "type a message, or attach an image or a clip")
                counted = sum(len(turn["images"]) for turn in before)
                marks, images, clips = await asyncio.to_thread(attachments, files, counted)
                turns = [*before, {"role": "user", "content": " ".join([*marks, text]).strip(), "images": images,
                                   "audio": clips}]  # fmt: skip
                job = ChatJob([{"role": t["role"], "content": t["content"]} for t in turns],
                              [im for t in turns for im in t["images"]], [w for t in turns for w in t["audio"]],
                              n=1, on_text=on_text)
                start = service.chat(model, job, service.generation(model, None), None, deadline())
                shown = " ".join([text, *(f"[{'image' if m == IMAGE else 'audio'}: {Path(p).name}]"
                                          for m, p in zip(marks, files))]).strip()
            else:
                clip = files[-1] if files else clip  # the latest clip of the conversation
                if not clip:
                    raise APIError(400, "add a recording or an audio file: the model answers about audio")
                prompt = text or None
                service.check_prompt(model, prompt)
                wav = read(clip, "audio")
                job = HearJob([(wav, prompt)], on_text=on_text)
                start = service.hear(model, job, service.generation(model, None), None, deadline())
                shown = text + (f"  [audio: {Path(files[-1]).name}]" if files else "")
            history.append({"role": "user", "content": shown})
            task = asyncio.ensure_future(start)
            task.add_done_callback(lambda _: queue.put_nowait(None))
            history.append({"role": "assistant", "content": ""})
            while (delta := await queue.get()) is not None:
                history[-1]["content"] += delta
                yield history, empty, clip, convo
            reply = task.result().texts[0]
            history[-1]["content"] = reply
            if model.recipe == "chat":
                convo = [*turns, {"role": "assistant", "content": reply.strip(), "images": [], "audio": []}]
        except APIError as err:
            raise gr.Error(err.message) from None
        yield history, empty, clip, convo

    def switch(name: str) -> tuple[Any, ...]:
        """Another model: a new conversation, and the attachments it takes."""
        return [], gr.MultimodalTextbox(value=None, **attachable(name)), None, []

    async def generate(name: str, label: str, seed: float) -> tuple[int, Any]:
        try:
            model = service.get(name, "sound", "the UI")
            wav = await service.speech(model, label, int(seed or 0), deadline())
        except APIError as err:
            raise gr.Error(err.message) from None
        return int(model.pipeline.sample_rate), wav

    async def picture(name: str, prompt: str, path: str | None, seed: float) -> Any:
        import io

        from PIL import Image

        prompt = (prompt or "").strip()
        try:
            model = service.get(name, "imagine", "the UI")
            if len(prompt) > MAX_PROMPT_CHARS:
                raise APIError(400, f"the prompt is {len(prompt)} characters; at most {MAX_PROMPT_CHARS}")
            wav = None
            if path:
                wav = await asyncio.to_thread(read, path, "audio")
            elif not prompt:
                raise APIError(400, "give a prompt, or upload or record a clip")
            pngs = await service.images(model, prompt or None, wav, 1, int(seed or 0), service.image_size(model), deadline())
        except APIError as err:
            raise gr.Error(err.message) from None
        return Image.open(io.BytesIO(pngs[0]))

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
        if talk:
            with gr.Tab("Chat"):
                c_model = gr.Dropdown(talk, value=talk[0], label="model")
                c_bot = gr.Chatbot(label="conversation", elem_id="chatbot", height=360)
                c_clip = gr.State(None)  # hear models: the latest clip
                c_convo = gr.State([])  # chat models: the turns with their images and clips
                c_box = gr.MultimodalTextbox(sources=["upload", "microphone"], **attachable(talk[0]),
                                             placeholder="Ask about the audio or the images (attach, or record a clip)",
                                             elem_id="chat-input")
                c_box.submit(chat, [c_model, c_box, c_bot, c_clip, c_convo], [c_bot, c_box, c_clip, c_convo],
                             api_name="chat")
                c_model.change(switch, c_model, [c_bot, c_box, c_clip, c_convo], api_visibility="private")
                c_bot.clear(lambda: (None, []), None, [c_clip, c_convo], api_visibility="private")
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
        if imagine:
            with gr.Tab("Image"):
                i_model = gr.Dropdown(imagine, value=imagine[0], label="model")
                i_prompt = gr.Textbox(label="prompt", lines=2, elem_id="image-prompt")
                i_audio = gr.Audio(sources=["upload", "microphone"], type="filepath", elem_id="image-audio",
                                   label="or a spoken description (when given, the picture is made from it)")
                i_seed = gr.Number(0, label="seed", precision=0)
                i_button = gr.Button("Generate", variant="primary", elem_id="image-button")
                i_out = gr.Image(label="picture", type="pil", format="png", elem_id="image-out", interactive=False)
                i_button.click(picture, [i_model, i_prompt, i_audio, i_seed], i_out, api_name="image")
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
