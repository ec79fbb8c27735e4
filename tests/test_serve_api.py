"""`auralm serve` as a real process on a free loopback port, called with the real `openai` client (and raw
sockets where a client would not misbehave): every endpoint, every response format, every error status,
the bad inputs of issue 11, and after each bad request a good one still answered."""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

openai = pytest.importorskip("openai")
httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

KEY = "test-key-123"
SR = 16000


# -- fixtures: tiny checkpoints, real server processes ----------------------------------------------------
def tone(seconds: float, freq: float = 300.0, gaps: bool = False) -> np.ndarray:
    t = np.arange(int(SR * seconds)) / SR
    wav = 0.4 * np.sin(2 * np.pi * freq * t)
    if gaps:  # 1 s on, 1 s off: silences to cut at
        wav = wav * (np.sin(2 * np.pi * 0.5 * t) > 0)
    return wav.astype(np.float32)


def wav_bytes(wav: np.ndarray, sr: int = SR) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, wav, sr, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def audio_message(data: bytes, text: str | None = "Transcribe the audio.", fmt: str = "wav") -> dict:
    parts = [{"type": "text", "text": text}] if text else []
    return {"role": "user", "content": parts + [{"type": "input_audio", "input_audio": {"data": b64(data), "format": fmt}}]}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`python -m auralm serve ARGS` on a free loopback port; stopped (terminate, then kill) by :meth:`stop`."""

    def __init__(self, args: list[str], log: Path, ready_s: float = 120.0, command: str = "serve"):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        env = {**os.environ, "AURALM_PROGRESS": "0", "GRADIO_ANALYTICS_ENABLED": "False"}
        with open(log, "wb") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "auralm", command, *args, "--host", "127.0.0.1",
                                          "--port", str(self.port)], stdout=out, stderr=subprocess.STDOUT, env=env)
        end = time.monotonic() + ready_s
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{log.read_text()[-3000:]}")
            try:
                if httpx.get(self.url + "/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"server not ready in {ready_s} s:\n{log.read_text()[-3000:]}")

    def client(self, key: str = KEY, timeout: float = 60) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.url + "/v1", api_key=key, max_retries=0, timeout=timeout)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def serving(tmp_path_factory, label: str, args: list[str], command: str = "serve"):
    """The body of a module fixture (``yield from serving(...)``): a :class:`Server` with ``args``, its log in
    a fresh tmp folder named after ``label``, stopped when the module is done."""
    srv = Server(args, tmp_path_factory.mktemp(f"{label}-log") / "server.log", command=command)
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    """A 2-step hear-tiny run (as tests/test_hear_cli.py trains one) and a tiny sound bundle (as
    tests/test_sound_cli.py builds one)."""
    from auralm.__main__ import main
    from auralm.recipes.sound.data import make_sound_events
    from auralm.recipes.sound.demo import make_bundle
    from auralm.training.checkpoint import resolve_checkpoint
    from test_collate import make_corpus

    root = tmp_path_factory.mktemp("serve-ckpt")
    manifest = make_corpus(root / "corpus")
    assert main(["hear", "train", "--preset", "hear-tiny", "--out", str(root / "hear"), f"data.manifest={manifest}",
                 "optim.max_steps=2", "data.valid_split=", "logger=none"]) == 0
    events = make_sound_events(root / "events", n_per_class=4, valid_frac=0.25, test_frac=0.25)
    tok = ["optim.max_steps=10", "eval_every=10", "optim.batch_size=4", "crop_frames=32", "model.hidden=32", "model.codebook_size=16",
           "model.code_dim=16", "model.res_blocks=1"]
    gpt = ["gpt.n_layer=1", "gpt.n_embd=32", "gpt.n_head=2", "optim.batch_size=4", "eval_every=10", "save_every=10"]
    assert main(["sound", "train-tokenizer", "--manifest", str(events), "--out", str(root / "tok"), *tok]) == 0
    assert main(["sound", "train-gpt", "--kind", "class", "--manifest", str(events), "--tokenizer",
                 str(root / "tok"), "--out", str(root / "gpt"), "--max-steps", "10", *gpt]) == 0
    bundle = make_bundle(root / "bundle", resolve_checkpoint(root / "tok"), None, resolve_checkpoint(root / "gpt"), None)
    return {"hear": root / "hear", "sound": bundle}


MAIN_ARGS = ["--api-key", KEY, "--max-body-mb", "6", "--max-audio-seconds", "120", "--body-timeout", "1",
             "--max-images", "2", "--max-tokens", "256", "--batch-wait-ms", "20"]


@pytest.fixture(scope="module")
def server(checkpoints, tmp_path_factory):
    yield from serving(tmp_path_factory, "serve", ["--checkpoint", str(checkpoints["hear"]), "--name", "hear",
                                                   "--checkpoint", str(checkpoints["sound"]), "--name", "sound",
                                                   *MAIN_ARGS])


@pytest.fixture(scope="module")
def client(server):
    return server.client()


def ask(client, data: bytes, text: str | None = "Transcribe the audio.", **kwargs):
    kwargs.setdefault("max_tokens", 12)
    return client.chat.completions.create(model="hear", messages=[audio_message(data, text)], **kwargs)


def still_answers(client) -> None:
    """The server answers a valid request after a bad one."""
    reply = ask(client, wav_bytes(tone(0.5)), max_tokens=4)
    assert reply.choices[0].message.content is not None and reply.usage.total_tokens > 0


def raw_http(server: Server, head: str, body: bytes = b"", wait: float = 10.0) -> tuple[int, dict, bytes]:
    """One request over a raw socket (for what clients refuse to send); (status, headers, body)."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=wait) as s:
        s.sendall(head.replace("\n", "\r\n").encode() + b"\r\n" + body)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        top, _, rest = data.partition(b"\r\n\r\n")
        lines = top.decode("latin-1").split("\r\n")
        headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        need = int(headers.get("content-length", 0))
        while len(rest) < need:
            chunk = s.recv(65536)
            if not chunk:
                break
            rest += chunk
    return int(lines[0].split()[1]), headers, rest


def error_of(exc: openai.APIStatusError) -> dict:
    body = exc.response.json()
    assert set(body["error"]) >= {"message", "type", "param", "code"}  # OpenAI's error object
    return body["error"]


# -- endpoints ------------------------------------------------------------------------------------------------
def test_health_and_models(server, client):
    health = httpx.get(server.url + "/health", timeout=10).json()  # no key needed
    assert health["status"] == "ok" and set(health["models"]) == {"hear", "sound"}
    models = {m.id: m for m in client.models.list().data}
    assert set(models) == {"hear", "sound"}
    assert models["hear"].model_extra["recipe"] == "hear"
    assert models["sound"].model_extra["labels"] == ["beep", "chirp", "click-train", "noise-burst"]
    assert client.models.retrieve("sound").id == "sound"


def test_chat_plain_and_streamed_greedy_equal(client):
    clip = wav_bytes(tone(1.0))
    plain = ask(client, clip, max_tokens=24)
    text = plain.choices[0].message.content
    assert text and plain.object == "chat.completion" and plain.model == "hear"
    assert plain.choices[0].finish_reason in ("stop", "length")
    assert plain.usage.prompt_tokens > 0 and plain.usage.completion_tokens > 0
    assert plain.usage.total_tokens == plain.usage.prompt_tokens + plain.usage.completion_tokens
    stream = ask(client, clip, max_tokens=24, stream=True, stream_options={"include_usage": True})
    deltas, finish, usage = [], None, None
    for chunk in stream:
        assert chunk.object == "chat.completion.chunk"
        if chunk.usage:
            usage = chunk.usage
        for choice in chunk.choices:
            if choice.delta.content:
                deltas.append(choice.delta.content)
            finish = choice.finish_reason or finish
    assert len(deltas) > 1  # really streamed, not one piece
    assert "".join(deltas) == text  # greedy: the joined stream is the plain reply
    assert finish == plain.choices[0].finish_reason and usage.total_tokens == plain.usage.total_tokens
    again = ask(client, clip, max_tokens=24)
    assert again.choices[0].message.content == text  # greedy is deterministic


def test_stream_ends_with_done(server):
    body = json.dumps({"model": "hear", "stream": True, "max_tokens": 6,
                       "messages": [audio_message(wav_bytes(tone(0.5)))]})
    with httpx.stream("POST", server.url + "/v1/chat/completions", content=body, timeout=60,
                      headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}) as resp:
        assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in resp.iter_lines() if line]
    assert all(line.startswith("data: ") for line in lines) and lines[-1] == "data: [DONE]"
    assert json.loads(lines[0][6:])["choices"][0]["delta"]["role"] == "assistant"


def test_chat_multi_turn_hears_the_latest_audio(client):
    first, second = wav_bytes(tone(0.6, 250)), wav_bytes(tone(0.9, 520))
    direct = ask(client, second, "What is this sound?", max_tokens=10).choices[0].message.content
    convo = [audio_message(first, "Transcribe the audio."), {"role": "assistant", "content": "something"},
             audio_message(second, "Transcribe the audio."), {"role": "assistant", "content": "else"},
             {"role": "user", "content": "What is this sound?"}]  # no audio: the latest clip (second) is heard
    reply = client.chat.completions.create(model="hear", messages=convo, max_tokens=10)
    assert reply.choices[0].message.content == direct
    text_as_string = [{"role": "system", "content": "be brief"}, audio_message(second, None),
                      {"role": "user", "content": "What is this sound?"}]
    assert client.chat.completions.create(model="hear", messages=text_as_string, max_tokens=10).choices[0].message.content == direct


def test_chat_n_stop_and_seed(client):
    clip = wav_bytes(tone(0.8))
    plain = ask(client, clip, max_tokens=16).choices[0].message.content
    words = plain.split()
    assert len(words) >= 3
    stop = " " + words[2]
    cut = plain[: plain.index(stop)]
    stopped = ask(client, clip, max_tokens=16, stop=[stop, "\n\n\n"])
    assert stopped.choices[0].message.content == cut and stopped.choices[0].finish_reason == "stop"
    streamed = "".join(c.choices[0].delta.content or "" for c in ask(client, clip, max_tokens=16, stop=stop, stream=True)
                       if c.choices)
    assert streamed == cut
    two = ask(client, clip, max_tokens=16, n=2)
    assert [c.index for c in two.choices] == [0, 1] and {c.message.content for c in two.choices} == {plain}
    a = ask(client, clip, max_tokens=12, temperature=1.5, top_p=0.9, seed=7).choices[0].message.content
    b = ask(client, clip, max_tokens=12, temperature=1.5, top_p=0.9, seed=7).choices[0].message.content
    assert a == b  # a seed reproduces a sampled answer


def test_transcriptions_every_format_and_long_audio(client):
    clip = wav_bytes(tone(1.0))
    short = client.audio.transcriptions.create(model="hear", file=("clip.wav", clip))
    chat = ask(client, clip, None, max_tokens=128).choices[0].message.content  # the same default prompt
    assert short.text == chat
    text = client.audio.transcriptions.create(model="hear", file=("clip.wav", clip), response_format="text")
    assert text.strip() == short.text
    long = wav_bytes(tone(65.0, gaps=True))  # past the 30 s a piece: cut at silences, as `hear generate` does
    verbose = client.audio.transcriptions.create(model="hear", file=("long.wav", long), response_format="verbose_json",
                                                 language="en")
    segs = verbose.segments
    assert len(segs) >= 3 and verbose.duration == pytest.approx(65.0) and verbose.language == "en"
    assert segs[0].start == 0 and segs[-1].end == pytest.approx(65.0)
    assert all(a.end == pytest.approx(b.start) and b.end - b.start <= 30.0 for a, b in zip(segs, segs[1:]))
    assert verbose.text == " ".join(s.text for s in segs if s.text)
    srt = client.audio.transcriptions.create(model="hear", file=("long.wav", long), response_format="srt")
    cues = [c for c in srt.strip().split("\n\n") if c]
    assert cues[0].startswith("1\n00:00:00,000 --> 00:00:") and "-->" in cues[-1]
    assert len(cues) == sum(1 for s in segs if s.text)
    vtt = client.audio.transcriptions.create(model="hear", file=("long.wav", long), response_format="vtt")
    assert vtt.startswith("WEBVTT\n\n00:00:00.000 --> ") and segs[0].text in vtt
    with pytest.raises(openai.BadRequestError) as err:
        client.audio.transcriptions.create(model="hear", file=("clip.wav", clip), response_format="docx")
    assert "response_format must be one of json, text, srt, vtt, verbose_json" in error_of(err.value)["message"]


def test_speech_returns_a_wav_of_the_label(client):
    one = client.audio.speech.create(model="sound", input="beep", voice="alloy", response_format="wav",
                                     extra_body={"seed": 3})
    wav, sr = sf.read(io.BytesIO(one.content))
    assert sr == 16000 and len(wav) > 0 and one.response.headers["content-type"] == "audio/wav"
    same = client.audio.speech.create(model="sound", input="beep", voice="alloy", response_format="wav",
                                      extra_body={"seed": 3})
    assert same.content == one.content  # the seed decides the clip
    with pytest.raises(openai.BadRequestError) as err:
        client.audio.speech.create(model="sound", input="moo", voice="alloy", response_format="wav")
    assert "known labels: beep, chirp, click-train, noise-burst" in error_of(err.value)["message"]
    with pytest.raises(openai.BadRequestError) as err:
        client.audio.speech.create(model="sound", input="beep", voice="alloy", response_format="mp3")
    assert "response_format must be 'wav'" in error_of(err.value)["message"]
    with pytest.raises(openai.BadRequestError) as err:  # a recipe asked for what it does not serve
        client.audio.speech.create(model="hear", input="beep", voice="alloy", response_format="wav")
    assert "serves /v1/chat/completions, /v1/audio/transcriptions" in error_of(err.value)["message"]


def test_concurrent_requests_of_different_lengths_batch_and_match(server, client):
    clips = [wav_bytes(tone(0.3 + 0.37 * i, 200 + 45 * i)) for i in range(10)]
    limits = [10 if i % 3 else 3 for i in range(len(clips))]  # requests that differ in max_tokens share batches
    alone = [ask(client, c, max_tokens=n).choices[0].message.content for c, n in zip(clips, limits)]
    before = httpx.get(server.url + "/health", timeout=10).json()["models"]["hear"]
    results: dict[int, str] = {}
    barrier = threading.Barrier(len(clips))

    def one(i: int) -> None:
        barrier.wait(timeout=30)
        results[i] = ask(client, clips[i], max_tokens=limits[i]).choices[0].message.content

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(clips))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    after = httpx.get(server.url + "/health", timeout=10).json()["models"]["hear"]
    assert [results.get(i) for i in range(len(clips))] == alone  # batching changes no answer
    assert len({len(a.split()) for a in alone}) > 1  # the short limit cut some answers (else this proves nothing)
    assert after["jobs"] - before["jobs"] == len(clips)
    assert after["batches"] - before["batches"] < len(clips) and after["largest"] > 1  # they were grouped


# -- errors -----------------------------------------------------------------------------------------------------
def test_wrong_or_missing_key_is_401(server, client):
    with pytest.raises(openai.AuthenticationError) as err:
        server.client(key="wrong").models.list()
    assert error_of(err.value)["message"] == "incorrect API key" and err.value.status_code == 401
    status, headers, body = raw_http(server, "GET /v1/models HTTP/1.1\nHost: x\n")
    assert status == 401 and "missing API key" in json.loads(body)["error"]["message"]
    still_answers(client)


def test_unknown_model_is_404(client):
    with pytest.raises(openai.NotFoundError) as err:
        client.chat.completions.create(model="nope", messages=[audio_message(wav_bytes(tone(0.3)))])
    e = error_of(err.value)
    assert e["code"] == "model_not_found" and "model 'nope' is not served here; served: hear, sound" in e["message"]
    with pytest.raises(openai.NotFoundError):
        client.audio.transcriptions.create(model="nope", file=("a.wav", wav_bytes(tone(0.3))))
    still_answers(client)


def test_schema_errors_are_422(client):
    with pytest.raises(openai.UnprocessableEntityError) as err:
        client.chat.completions.create(model="hear", messages=[])
    assert "messages" in error_of(err.value)["message"]
    with pytest.raises(openai.UnprocessableEntityError) as err:
        client.chat.completions.create(model="hear", messages=[{"role": "user", "content": [{"type": "input_audio"}]}])
    assert "input_audio" in error_of(err.value)["message"]
    with pytest.raises(openai.UnprocessableEntityError):
        ask(client, wav_bytes(tone(0.3)), temperature=5)
    still_answers(client)


def test_bad_media_is_400(client, make_audio):
    clip = wav_bytes(tone(0.5))
    cases = {
        "truncated base64": ({"data": b64(clip)[:-3], "format": "wav"}, "input_audio.data is not valid base64"),
        "sample rate 0": ({"data": b64(make_audio.zero_rate("z.wav").read_bytes()), "format": "wav"},
                          "sample rate is 0 in the WAV header"),
        "not audio": ({"data": b64(b"hello, world " * 20), "format": "wav"}, "input_audio: cannot decode audio"),
        "bad format": ({"data": b64(clip), "format": "flac"}, "input_audio.format must be one of wav, mp3"),
        "empty WAV": ({"data": b64(make_audio.header_only("e.wav").read_bytes()), "format": "wav"}, "no samples"),
    }
    for name, (audio, message) in cases.items():
        msg = {"role": "user", "content": [{"type": "input_audio", "input_audio": audio}]}
        with pytest.raises(openai.BadRequestError) as err:
            client.chat.completions.create(model="hear", messages=[msg], max_tokens=4)
        assert message in error_of(err.value)["message"], name
        still_answers(client)
    with pytest.raises(openai.BadRequestError) as err:
        client.audio.transcriptions.create(model="hear", file=("z.wav", make_audio.zero_rate("z2.wav").read_bytes()))
    assert "sample rate is 0 in the WAV header" in error_of(err.value)["message"]
    with pytest.raises(openai.BadRequestError) as err:  # text only: a hear model needs audio
        client.chat.completions.create(model="hear", messages=[{"role": "user", "content": "hi"}])
    assert "add an input_audio part" in error_of(err.value)["message"]
    with pytest.raises(openai.BadRequestError) as err:
        ask(client, clip, "<|audio|> and <|audio|>")
    assert "audio placeholder" in error_of(err.value)["message"]
    with pytest.raises(openai.BadRequestError) as err:
        ask(client, clip, max_tokens=1000)
    assert "more than this server allows (256, --max-tokens)" in error_of(err.value)["message"]
    still_answers(client)


def test_images_are_checked_then_refused(client):
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (4, 4), (200, 10, 10)).save(buf, format="PNG")
    png = "data:image/png;base64," + b64(buf.getvalue())
    clip = audio_message(wav_bytes(tone(0.5)))
    cases = {
        "no image": ("data:image/png;base64," + b64(b"this is not an image at all"), "the bytes are not an image"),
        "remote URL": ("https://example.com/cat.png", "remote URLs and local paths are refused"),
        "local path": ("/etc/passwd", "remote URLs and local paths are refused"),
        "real image": (png, "is a hear checkpoint: it takes audio (input_audio) and text, not images"),
    }
    for name, (url, message) in cases.items():
        msg = {"role": "user", "content": [*clip["content"], {"type": "image_url", "image_url": {"url": url}}]}
        with pytest.raises(openai.BadRequestError) as err:
            client.chat.completions.create(model="hear", messages=[msg], max_tokens=4)
        assert message in error_of(err.value)["message"], name
    many = {"role": "user", "content": [*clip["content"]] + [{"type": "image_url", "image_url": {"url": png}}] * 3}
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="hear", messages=[many], max_tokens=4)
    assert "at most 2 per request (--max-images)" in error_of(err.value)["message"]
    still_answers(client)


def test_body_over_the_limit_is_413(server, client):
    big = os.urandom(7 * 1024 * 1024)  # the limit is 6 MiB
    with pytest.raises(openai.APIStatusError) as err:
        client.audio.transcriptions.create(model="hear", file=("big.wav", big))
    assert err.value.status_code == 413 and "--max-body-mb 6" in error_of(err.value)["message"]
    # no Content-Length (chunked): counted while it arrives
    def chunks():
        for _ in range(8):
            yield b"x" * (1 << 20)

    resp = httpx.post(server.url + "/v1/chat/completions", content=chunks(), timeout=30,
                      headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"})
    assert resp.status_code == 413 and "more than 6291456 bytes" in resp.json()["error"]["message"]
    still_answers(client)


def test_content_length_that_lies(server, client):
    body = json.dumps({"model": "hear", "messages": [audio_message(wav_bytes(tone(0.3)))]}).encode()
    head = (f"POST /v1/chat/completions HTTP/1.1\nHost: x\nAuthorization: Bearer {KEY}\n"
            "Content-Type: application/json\nContent-Length: {n}\n")
    status, _, out = raw_http(server, head.format(n=20), body)  # says less than is sent: the JSON is cut
    assert status == 400 and "the body is not valid JSON" in json.loads(out)["error"]["message"]
    t0 = time.monotonic()
    status, _, out = raw_http(server, head.format(n=len(body) + 500), body)  # says more: waits, then gives up
    assert status == 400 and time.monotonic() - t0 < 8
    message = json.loads(out)["error"]["message"]
    assert f"did not arrive in full within 1 s (Content-Length says {len(body) + 500} bytes; {len(body)} arrived" in message
    status, headers, out = raw_http(server, head.format(n=10**9))  # says more than the limit: refused unread
    assert status == 413 and headers["connection"] == "close" and "1000000000 bytes" in json.loads(out)["error"]["message"]
    still_answers(client)


@pytest.fixture(scope="module")
def hour_mp3(tmp_path_factory) -> bytes:
    if shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg is not installed (make setup installs it)")
    path = tmp_path_factory.mktemp("hour") / "hour.mp3"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "anullsrc=r=8000:cl=mono", "-t", "3600",
                    "-c:a", "libmp3lame", "-b:a", "8k", str(path)], check=True, timeout=120)
    return path.read_bytes()  # about 3.6 MB: under the body limit, far over the audio limit


def test_an_hour_of_audio_is_413(client, hour_mp3):
    t0 = time.monotonic()
    with pytest.raises(openai.APIStatusError) as err:
        client.chat.completions.create(model="hear", messages=[audio_message(hour_mp3, fmt="mp3")], max_tokens=4)
    e = error_of(err.value)
    assert err.value.status_code == 413 and e["code"] == "audio_too_long"
    assert "is 3600.1 s long; this server takes at most 120 s of audio per request" in e["message"]
    with pytest.raises(openai.APIStatusError) as err:
        client.audio.transcriptions.create(model="hear", file=("hour.mp3", hour_mp3))
    assert err.value.status_code == 413 and "--max-audio-seconds" in error_of(err.value)["message"]
    assert time.monotonic() - t0 < 30  # refused from the header, not after decoding an hour
    still_answers(client)


def test_mp3_input_audio_is_decoded(client, tmp_path):
    if shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg is not installed")
    wav = tmp_path / "a.wav"
    sf.write(str(wav), tone(1.0), SR)
    mp3 = tmp_path / "a.mp3"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(wav), str(mp3)], check=True, timeout=60)
    reply = client.chat.completions.create(model="hear", messages=[audio_message(mp3.read_bytes(), fmt="mp3")],
                                           max_tokens=4)
    assert reply.choices[0].message.content


# -- queue and timeout: a server with one slot, no queue and a short deadline --------------------------------------
@pytest.mark.slow
def test_full_queue_is_429_and_slow_answer_is_504(checkpoints, tmp_path):
    srv = Server(["--checkpoint", str(checkpoints["hear"]), "--name", "hear", "--max-concurrent", "1",
                  "--max-queue", "0", "--request-timeout", "1", "--max-tokens", "1000"], tmp_path / "tight.log")
    try:
        client = srv.client(key="unused")
        slow: dict[str, BaseException] = {}

        def long_answer() -> None:
            try:  # 400 sampled tokens: seconds on a CPU (~6 s here), past the 1 s deadline
                ask(client, wav_bytes(tone(0.5)), max_tokens=400, temperature=2.0)
            except openai.APIStatusError as exc:
                slow["error"] = exc

        worker = threading.Thread(target=long_answer)
        worker.start()
        end = time.monotonic() + 10
        while httpx.get(srv.url + "/health", timeout=5).json()["active"] < 1 and time.monotonic() < end:
            time.sleep(0.02)
        with pytest.raises(openai.RateLimitError) as err:  # the one slot is taken and no one may wait
            ask(client, wav_bytes(tone(0.3)), max_tokens=2)
        assert err.value.response.headers["retry-after"] == "1"
        assert "the server is busy" in error_of(err.value)["message"]
        worker.join(30)
        assert slow["error"].status_code == 504
        assert "did not answer within 1 s (--request-timeout)" in error_of(slow["error"])["message"]
        end = time.monotonic() + 60  # the timed-out batch still runs to its end; then the server answers again
        while True:
            try:
                assert ask(client, wav_bytes(tone(0.3)), max_tokens=2).choices[0].message.content is not None
                break
            except (openai.RateLimitError, openai.InternalServerError, openai.APIStatusError):
                assert time.monotonic() < end
                time.sleep(0.5)
    finally:
        srv.stop()


def test_serve_help_documents_every_flag(capsys):
    import dataclasses

    from auralm.__main__ import main
    from auralm.serve.config import ServeConfig

    with pytest.raises(SystemExit) as done:
        main(["serve", "--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    for f in dataclasses.fields(ServeConfig):
        assert "--" + f.name.replace("_", "-") in out
    for flag in ("--checkpoint", "--name", "--device"):
        assert flag in out
