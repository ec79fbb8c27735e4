"""`auralm serve` with a chat checkpoint, as a real process called with the real `openai` client: images
(image_url data URLs) and audio (input_audio) in a multi-turn conversation, plain and streamed (equal
under greedy decoding), n choices, and the bad inputs (bytes that are no image, a remote URL, media in an
assistant turn), each followed by a valid request that is still answered."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest

openai = pytest.importorskip("openai")
pytest.importorskip("fastapi")

from test_serve_api import KEY, b64, serving, tone, wav_bytes  # noqa: E402


def png_url(seed: int = 0) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


@pytest.fixture(scope="module")
def server(chat_checkpoint, tmp_path_factory):
    yield from serving(tmp_path_factory, "serve-chat", ["--checkpoint", str(chat_checkpoint), "--name", "chat",
                                                        "--api-key", KEY, "--max-images", "2"])


def conversation(image: str | None = None) -> list[dict]:
    clip = {"type": "input_audio", "input_audio": {"data": b64(wav_bytes(tone(0.6))), "format": "wav"}}
    return [
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": image or png_url(0)}},
                                     {"type": "text", "text": "What colour is the circle?"}]},
        {"role": "assistant", "content": "red"},
        {"role": "user", "content": [clip, {"type": "text", "text": "And this?"}]},
    ]  # fmt: skip


def test_chat_with_image_and_audio_plain_and_streamed_equal(server):
    client = server.client()
    assert {m.id: m.model_extra["recipe"] for m in client.models.list().data} == {"chat": "chat"}
    plain = client.chat.completions.create(model="chat", messages=conversation(), max_tokens=6)
    text = plain.choices[0].message.content
    assert isinstance(text, str) and plain.usage.completion_tokens >= 0 and plain.usage.prompt_tokens > 0
    stream = client.chat.completions.create(model="chat", messages=conversation(), max_tokens=6, stream=True)
    joined = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert joined == text
    two = client.chat.completions.create(model="chat", messages=conversation(), max_tokens=6, n=2)
    assert [c.index for c in two.choices] == [0, 1] and two.choices[0].message.content == text


@pytest.mark.parametrize("url, message", [
    ("data:image/png;base64," + base64.b64encode(b"not an image at all").decode(), "not an image"),
    ("https://example.com/cat.png", "remote URLs and local paths are refused"),
])  # fmt: skip
def test_bad_images_are_400_and_the_server_still_answers(server, url, message):
    client = server.client()
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="chat", messages=conversation(url), max_tokens=4)
    assert message in err.value.response.json()["error"]["message"]
    ok = client.chat.completions.create(model="chat", messages=conversation(), max_tokens=4)
    assert ok.choices[0].message is not None


def test_media_outside_user_turns_is_400(server):
    client = server.client()
    bad = conversation()
    bad[1] = {"role": "assistant", "content": [{"type": "image_url", "image_url": {"url": png_url(1)}}]}
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="chat", messages=bad, max_tokens=4)
    assert "user messages" in err.value.response.json()["error"]["message"]
