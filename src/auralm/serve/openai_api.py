"""The OpenAI-compatible HTTP API over :class:`~auralm.serve.service.Service`.

=============================  =======================================================================
``GET  /health``               status, per-model queue and batch counts (no key needed)
``GET  /v1/models``            the served models (``id``, ``recipe``, ``endpoints``; sound: ``labels``)
``POST /v1/chat/completions``  hear checkpoints: OpenAI messages with ``text`` and ``input_audio`` parts;
                               the last user turn's text is the prompt and its audio (or the latest audio
                               earlier in the conversation) the clip; ``stream: true`` sends SSE chunks.
                               chat checkpoints: ``text``, ``image_url`` and ``input_audio`` parts in any
                               user turn of a multi-turn conversation
``POST /v1/audio/transcriptions``  hear checkpoints: multipart ``file``; json, text, srt, vtt, verbose_json
``POST /v1/audio/speech``      sound checkpoints: ``input`` is a label the model knows; a WAV comes back
``POST /v1/images/generations``  imagine checkpoints: ``prompt`` (text) or the extension field ``input_audio``
                               (``{"data": base64, "format": "wav"}``: picture what the clip describes);
                               ``n``, ``size`` (``auto`` = the model's own), ``seed``; ``b64_json`` PNGs
=============================  =======================================================================

Every error is OpenAI's error object (:mod:`auralm.serve.errors`); the statuses are listed in
``docs/serving.md``. Decoding (temperature 0 or absent: greedy; above 0: sampling with ``top_p``) is
described in :meth:`Service.generation <auralm.serve.service.Service.generation>`.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import time
import traceback
import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

from fastapi import FastAPI, File, Form, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from auralm import __version__
from auralm.serve.config import ServeConfig
from auralm.serve.errors import APIError, error_body
from auralm.serve.guard import Gate, Guard
from auralm.serve.media import CHAT_AUDIO_FORMATS, decode_base64, load_audio_bytes, load_image
from auralm.serve.service import AUDIO, IMAGE, MAX_PROMPT_CHARS, ChatJob, HearJob, Service

log = logging.getLogger("auralm.serve")
TRANSCRIPTION_FORMATS = ("json", "text", "srt", "vtt", "verbose_json")
MAX_STOPS = 4


# -- request schemas (unknown fields are accepted and ignored, as clients send OpenAI's whole set) ---------
class _Loose(BaseModel):
    model_config = ConfigDict(extra="allow")


class InputAudio(_Loose):
    data: str
    format: str


class ImageURL(_Loose):
    url: str
    detail: str | None = None


class TextPart(_Loose):
    type: Literal["text"]
    text: str


class AudioPart(_Loose):
    type: Literal["input_audio"]
    input_audio: InputAudio


class ImagePart(_Loose):
    type: Literal["image_url"]
    image_url: ImageURL | str


Part = Annotated[TextPart | AudioPart | ImagePart, Field(discriminator="type")]


class Message(_Loose):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[Part] | None = None


class StreamOptions(_Loose):
    include_usage: bool = False


class ChatRequest(_Loose):
    model: str
    messages: list[Message] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    seed: int | None = None
    stop: str | list[str] | None = None
    n: int = Field(1, ge=1)
    stream: bool = False
    stream_options: StreamOptions | None = None


class ImageRequest(_Loose):
    model: str
    prompt: str = Field("", max_length=MAX_PROMPT_CHARS)
    n: int = Field(1, ge=1)
    size: str = "auto"
    response_format: str = "b64_json"
    seed: int = 0
    input_audio: InputAudio | None = None  # extension: picture what this clip describes (the prompt is then unused)


class SpeechRequest(_Loose):
    model: str
    input: str = Field(max_length=MAX_PROMPT_CHARS)
    voice: str | None = None  # accepted for OpenAI clients; a sound model has no voices
    response_format: str = "wav"
    seed: int = 0


# -- helpers ----------------------------------------------------------------------------------------------
def apply_stop(text: str, stops: list[str]) -> tuple[str, bool]:
    """``text`` cut before the first stop string, and whether one was found."""
    cuts = [i for i in (text.find(s) for s in stops) if i >= 0]
    return (text[: min(cuts)], True) if cuts else (text, False)


class StopFilter:
    """Streams a choice's text, holding back any tail that may begin a stop string; stops at the first one."""

    def __init__(self, stops: list[str]):
        self.stops, self.text, self.sent, self.stopped = stops, "", 0, False

    def feed(self, delta: str) -> str:
        if self.stopped:
            return ""
        self.text += delta
        text, self.stopped = apply_stop(self.text, self.stops)
        if not self.stopped:
            hold = max((k for s in self.stops for k in range(1, len(s)) if text.endswith(s[:k])), default=0)
            text = text[: len(text) - hold]
        out = text[self.sent :]
        self.sent = len(text)
        return out

    def rest(self, final: str) -> str:
        """What is left to send once the whole answer ``final`` is known."""
        text, _ = apply_stop(final, self.stops)
        return text[self.sent :] if len(text) > self.sent else ""


def _stops(stop: str | list[str] | None) -> list[str]:
    stops = [stop] if isinstance(stop, str) else list(stop or [])
    if len(stops) > MAX_STOPS or any(not s for s in stops):
        raise APIError(400, f"stop takes at most {MAX_STOPS} non-empty strings", param="stop")
    return stops


def _timestamp(seconds: float, sep: str) -> str:
    ms = int(round(seconds * 1000))
    h, ms = divmod(ms, 3_600_000)
    m, ms = divmod(ms, 60_000)
    s, ms = divmod(ms, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


def subtitles(segments: list[dict[str, Any]], kind: str) -> str:
    """SRT or WebVTT text of ``segments`` (``start``, ``end``, ``text``); empty segments are left out."""
    cues = [s for s in segments if s["text"]]
    if kind == "srt":
        return "".join(f"{i}\n{_timestamp(s['start'], ',')} --> {_timestamp(s['end'], ',')}\n{s['text']}\n\n"
                       for i, s in enumerate(cues, 1))
    return "WEBVTT\n\n" + "".join(f"{_timestamp(s['start'], '.')} --> {_timestamp(s['end'], '.')}\n{s['text']}\n\n"
                                  for s in cues)


def wav_bytes(wav: Any, sample_rate: int) -> bytes:
    import numpy as np
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, np.clip(np.asarray(wav, dtype=np.float32), -1, 1), int(sample_rate), subtype="PCM_16", format="WAV")
    return buf.getvalue()


def _sse(obj: Any) -> bytes:
    return f"data: {json.dumps(obj)}\n\n".encode()


def _content_parts(msg: Message) -> list[Any]:
    if isinstance(msg.content, str):
        return [TextPart(type="text", text=msg.content)]
    return list(msg.content or [])


# -- the app ----------------------------------------------------------------------------------------------
def create_app(service: Service, cfg: ServeConfig | None = None) -> FastAPI:
    """The FastAPI app serving ``service`` (see the module docstring); the Gradio UI at ``/ui`` when ``cfg.ui``."""
    cfg = cfg or service.cfg
    gate = Gate(cfg.max_concurrent, cfg.max_queue, cfg.retry_after)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        gate.closing = True
        service.close()

    app = FastAPI(title="auralm", version=__version__, lifespan=lifespan, docs_url="/docs", redoc_url=None)
    app.state.service, app.state.gate = service, gate

    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _schema_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        bad_json = [e for e in errors if e.get("type") == "json_invalid"]
        if bad_json:
            return JSONResponse(error_body(400, f"the body is not valid JSON ({bad_json[0].get('ctx', {}).get('error', 'parse error')})"),
                                status_code=400)
        parts = []
        for e in errors[:5]:
            where = ".".join(str(x) for x in e.get("loc", ()) if x != "body")
            parts.append(f"{where or 'body'}: {e.get('msg', 'invalid')}")
        param = ".".join(str(x) for x in errors[0].get("loc", ()) if x != "body") if errors else None
        return JSONResponse(error_body(422, "; ".join(parts) or "invalid request", param=param or None), status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = f"no route {request.method} {request.url.path}" if exc.status_code in (404, 405) else str(exc.detail)
        return JSONResponse(error_body(exc.status_code, message), status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _bug(request: Request, exc: Exception) -> JSONResponse:
        log.error("internal error on %s %s\n%s", request.method, request.url.path, traceback.format_exc())
        return JSONResponse(error_body(500, f"internal error: {type(exc).__name__}: {exc}"), status_code=500)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {**service.health(), "active": gate.active, "waiting": gate.waiting, "refused": gate.refused}

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [m.describe() for m in service.models.values()]}

    @app.get("/v1/models/{name}")
    async def model(name: str) -> dict[str, Any]:
        if name not in service.models:
            raise APIError(404, f"model {name!r} is not served here; served: {', '.join(service.models)}")
        return service.models[name].describe()

    @app.post("/v1/chat/completions", response_model=None)
    async def chat(req: ChatRequest, request: Request) -> Any:
        deadline = request.state.deadline
        model = service.get(req.model, ("hear", "chat", "caption"), "/v1/chat/completions")
        # images are checked first (their errors are the most specific); hear refuses them, chat reads them
        images = [p.image_url for m in req.messages for p in _content_parts(m) if isinstance(p, ImagePart)]
        if len(images) > cfg.max_images:
            raise APIError(400, f"{len(images)} images; this server takes at most {cfg.max_images} per request "
                                "(--max-images)", param="messages")
        image_bytes = []
        for i, image in enumerate(images):
            url = image if isinstance(image, str) else image.url
            image_bytes.append(await run_in_threadpool(load_image, url, f"image_url of image {i + 1}",
                                                       cfg.allow_remote_media, cfg.max_body_bytes))
        if req.n > cfg.max_n:
            raise APIError(400, f"n {req.n} is more than this server allows ({cfg.max_n}, --max-n)", param="n")
        if model.recipe == "chat":
            gen = service.generation(model, req.max_completion_tokens or req.max_tokens, req.temperature, req.top_p)
            job = await _chat_job(req, image_bytes)
            return await _reply(req, model, job, gen, lambda: service.chat(model, job, gen, req.seed, deadline))
        if model.recipe == "caption":  # the clips are a playlist's tracks; the reply is its caption
            if images:
                raise APIError(400, f"model {model.name!r} is a caption checkpoint: it takes the tracks of a playlist "
                                    "(input_audio parts) and an optional 'tags: a, b' line, not images",
                               param="messages")
            gen = service.generation(model, req.max_completion_tokens or req.max_tokens, req.temperature, req.top_p)
            job = await _chat_job(req, [])
            if not job.audio:
                raise APIError(400, f"model {model.name!r} captions a playlist: add its tracks as input_audio parts "
                                    "({'data': base64, 'format': 'wav'}) to a user message", param="messages")
            return await _reply(req, model, job, gen, lambda: service.caption(model, job, gen, req.seed, deadline))
        if images:
            raise APIError(400, f"model {model.name!r} is a hear checkpoint: it takes audio (input_audio) and text, "
                                "not images", param="messages")
        users = [m for m in req.messages if m.role == "user"]
        if not users:
            raise APIError(400, "the messages hold no user message", param="messages")
        last = _content_parts(users[-1])
        text = "\n".join(p.text for p in last if isinstance(p, TextPart)).strip() or None
        audio = []
        for m in reversed(users):  # the last user turn's audio, else the latest before it
            audio = [p.input_audio for p in _content_parts(m) if isinstance(p, AudioPart)]
            if audio:
                break
        if not audio:
            raise APIError(400, f"model {model.name!r} answers about audio: add an input_audio part "
                                "({'data': base64, 'format': 'wav'}) to the last user message", param="messages")
        if len(audio) > 1:
            raise APIError(400, f"a hear checkpoint reads one audio clip per turn; the message holds {len(audio)}",
                           param="messages")
        fmt = audio[0].format.lower()
        if fmt not in CHAT_AUDIO_FORMATS:
            raise APIError(400, f"input_audio.format must be one of {', '.join(CHAT_AUDIO_FORMATS)}, got {fmt!r}",
                           param="input_audio.format")
        service.check_prompt(model, text)
        gen = service.generation(model, req.max_completion_tokens or req.max_tokens, req.temperature, req.top_p)
        raw = decode_base64(audio[0].data, "input_audio.data")
        wav = await run_in_threadpool(load_audio_bytes, raw, "input_audio", cfg.max_audio_seconds, f"audio.{fmt}")
        job = HearJob([(wav, text)] * req.n)
        return await _reply(req, model, job, gen, lambda: service.hear(model, job, gen, req.seed, deadline))

    async def _chat_job(req: ChatRequest, image_bytes: list[bytes]) -> ChatJob:
        """OpenAI messages -> a conversation with placeholders, its images and its decoded clips."""
        messages, clips = [], []
        for m in req.messages:
            role = "system" if m.role in ("system", "developer") else m.role
            if role not in ("system", "user", "assistant"):
                raise APIError(400, f"a chat checkpoint takes system, user and assistant messages, not {m.role!r}",
                               param="messages")
            text = []
            for part in _content_parts(m):
                if isinstance(part, TextPart):
                    text.append(part.text)
                elif isinstance(part, ImagePart):
                    text.append(IMAGE)
                else:
                    fmt = part.input_audio.format.lower()
                    if fmt not in CHAT_AUDIO_FORMATS:
                        raise APIError(400, f"input_audio.format must be one of {', '.join(CHAT_AUDIO_FORMATS)}, "
                                            f"got {fmt!r}", param="input_audio.format")
                    raw = decode_base64(part.input_audio.data, "input_audio.data")
                    clips.append(await run_in_threadpool(load_audio_bytes, raw, f"input_audio {len(clips) + 1}",
                                                         cfg.max_audio_seconds, f"audio.{fmt}"))
                    text.append(AUDIO)
            if role != "user" and len(text) != sum(isinstance(p, TextPart) for p in _content_parts(m)):
                raise APIError(400, f"{m.role} messages hold text only; images and audio go in user messages",
                               param="messages")
            messages.append({"role": role, "content": " ".join(text).strip()})
        if not messages or messages[-1]["role"] != "user":
            raise APIError(400, "the last message must be a user message", param="messages")
        return ChatJob(messages, image_bytes, clips, n=req.n)

    async def _reply(req: ChatRequest, model: Any, job: Any, gen: Any, start: Any) -> Any:
        """The chat.completion (or its SSE stream) of a job that ``start()`` runs."""
        stops = _stops(req.stop)
        rid, created = f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time())

        def finish(res_tokens: int, stopped: bool) -> str:
            return "stop" if stopped or res_tokens < gen.max_new_tokens else "length"

        if not req.stream:
            res = await start()
            choices = []
            for i, t in enumerate(res.texts):
                content, stopped = apply_stop(t, stops)
                choices.append({"index": i, "message": {"role": "assistant", "content": content},
                                "finish_reason": finish(res.completion_tokens[i], stopped), "logprobs": None})
            completion = sum(res.completion_tokens)
            return {"id": rid, "object": "chat.completion", "created": created, "model": model.name,
                    "choices": choices, "usage": {"prompt_tokens": res.prompt_tokens * req.n,
                                                  "completion_tokens": completion,
                                                  "total_tokens": res.prompt_tokens * req.n + completion}}

        loop = asyncio.get_running_loop()
        events: asyncio.Queue = asyncio.Queue()
        job.on_text = lambda k, t: loop.call_soon_threadsafe(events.put_nowait, (k, t))
        task = asyncio.ensure_future(start())
        task.add_done_callback(lambda _: events.put_nowait(None))
        first = await events.get()
        if first is None and task.exception() is not None:
            raise task.exception()  # nothing sent yet: a plain error response (504, 400, ...)
        filters = [StopFilter(stops) for _ in range(req.n)]
        include_usage = bool(req.stream_options and req.stream_options.include_usage)

        def chunk(choices: list[dict[str, Any]], **extra: Any) -> bytes:
            return _sse({"id": rid, "object": "chat.completion.chunk", "created": created, "model": model.name,
                         "choices": choices, **extra})

        async def stream() -> AsyncIterator[bytes]:
            yield chunk([{"index": k, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}
                         for k in range(req.n)])
            event = first
            while event is not None:
                k, delta = event
                out = filters[k].feed(delta)
                if out:
                    yield chunk([{"index": k, "delta": {"content": out}, "finish_reason": None}])
                event = await events.get()
            if task.exception() is not None:
                err = task.exception()
                body = err.body() if isinstance(err, APIError) else error_body(500, f"internal error: {err}")
                yield _sse(body)
                yield b"data: [DONE]\n\n"
                return
            res = task.result()
            for k, final in enumerate(res.texts):
                rest = filters[k].rest(final)
                if rest:
                    yield chunk([{"index": k, "delta": {"content": rest}, "finish_reason": None}])
                _, stopped = apply_stop(final, stops)
                yield chunk([{"index": k, "delta": {}, "finish_reason": finish(res.completion_tokens[k], stopped)}])
            if include_usage:
                completion = sum(res.completion_tokens)
                yield chunk([], usage={"prompt_tokens": res.prompt_tokens * req.n, "completion_tokens": completion,
                                       "total_tokens": res.prompt_tokens * req.n + completion})
            yield b"data: [DONE]\n\n"

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    @app.post("/v1/audio/transcriptions", response_model=None)
    async def transcriptions(request: Request, file: Annotated[UploadFile, File()], model: Annotated[str, Form()],
                             response_format: Annotated[str, Form()] = "json",
                             language: Annotated[str | None, Form()] = None,
                             prompt: Annotated[str | None, Form()] = None,
                             temperature: Annotated[float | None, Form(ge=0, le=2)] = None) -> Any:
        deadline = request.state.deadline
        entry = service.get(model, "hear", "/v1/audio/transcriptions")
        if response_format not in TRANSCRIPTION_FORMATS:
            raise APIError(400, f"response_format must be one of {', '.join(TRANSCRIPTION_FORMATS)}, got "
                                f"{response_format!r}", param="response_format")
        prompt = (prompt or "").strip() or None
        service.check_prompt(entry, prompt)
        gen = service.generation(entry, None, temperature)
        raw = await file.read()
        wav = await run_in_threadpool(load_audio_bytes, raw, f"file {file.filename or ''}".strip(),
                                      cfg.max_audio_seconds, file.filename or "")
        spans, res = await service.transcribe(entry, wav, prompt, gen, deadline)
        text = " ".join(t for t in res.texts if t)
        duration = len(wav) / entry.pipeline.sample_rate
        if response_format == "text":
            return PlainTextResponse(text)
        if response_format == "json":
            return {"text": text, "usage": {"type": "duration", "seconds": round(duration, 3)}}
        segments = [{"id": i, "seek": int(a * 100), "start": round(a, 3), "end": round(b, 3), "text": t,
                     "temperature": gen.temperature if gen.strategy == "sample" else 0.0}
                    for i, ((a, b), t) in enumerate(zip(spans, res.texts))]
        if response_format in ("srt", "vtt"):
            return PlainTextResponse(subtitles(segments, response_format),
                                     media_type="text/vtt" if response_format == "vtt" else "text/plain")
        return {"task": "transcribe", "language": language or "english", "duration": round(duration, 3),
                "text": text, "segments": segments}

    @app.post("/v1/images/generations", response_model=None)
    async def images(req: ImageRequest, request: Request) -> Any:
        entry = service.get(req.model, "imagine", "/v1/images/generations")
        if req.response_format != "b64_json":
            raise APIError(400, f"response_format must be 'b64_json' (got {req.response_format!r})", param="response_format")
        if req.n > cfg.max_n:
            raise APIError(400, f"n {req.n} is more than this server allows ({cfg.max_n}, --max-n)", param="n")
        if req.size == "auto":
            size = service.image_size(entry)
        else:
            w, _, h = req.size.partition("x")
            if not (w.isdigit() and h.isdigit() and 16 <= int(w) <= 2048 and 16 <= int(h) <= 2048):
                raise APIError(400, f"size must be 'WIDTHxHEIGHT' (16..2048 each) or 'auto', got {req.size!r}", param="size")
            size = (int(w), int(h))
        wav = None
        if req.input_audio is not None:
            fmt = req.input_audio.format.lower()
            if fmt not in CHAT_AUDIO_FORMATS:
                raise APIError(400, f"input_audio.format must be one of {', '.join(CHAT_AUDIO_FORMATS)}, got {fmt!r}",
                               param="input_audio.format")
            raw = decode_base64(req.input_audio.data, "input_audio.data")
            wav = await run_in_threadpool(load_audio_bytes, raw, "input_audio", cfg.max_audio_seconds, f"audio.{fmt}")
        elif not req.prompt.strip():
            raise APIError(400, "give a prompt, or a clip in input_audio", param="prompt")
        pngs = await service.images(entry, req.prompt.strip() or None, wav, req.n, req.seed, size, request.state.deadline)
        import base64

        return {"created": int(time.time()), "data": [{"b64_json": base64.b64encode(p).decode()} for p in pngs]}

    @app.post("/v1/audio/speech", response_model=None)
    async def speech(req: SpeechRequest, request: Request) -> Response:
        entry = service.get(req.model, "sound", "/v1/audio/speech")
        if req.response_format != "wav":
            raise APIError(400, f"response_format must be 'wav' (got {req.response_format!r})", param="response_format")
        wav = await service.speech(entry, req.input.strip(), req.seed, request.state.deadline)
        return Response(wav_bytes(wav, entry.pipeline.sample_rate), media_type="audio/wav")

    if cfg.ui:
        from auralm.serve.ui import mount_ui

        app = mount_ui(app, service)
    app.add_middleware(Guard, cfg=cfg, gate=gate)
    return app
