"""`auralm serve` with a caption checkpoint, as a real process called with the real `openai` client: the
clips of a chat request are the tracks of a playlist and the reply is its caption (plain and streamed
equal, the same caption `auralm.load()` gives in process); a `tags:` line gives the playlist's tags; the
bad inputs (an image, no audio, a tag the model cannot read, a clip too short to be a track) are 400s
naming the problem, each followed by a valid request that is still answered."""

from __future__ import annotations

import numpy as np
import pytest

openai = pytest.importorskip("openai")
pytest.importorskip("fastapi")

from test_serve_api import KEY, b64, serving, tone, wav_bytes  # noqa: E402
from test_serve_chat import png_url  # noqa: E402


@pytest.fixture(scope="module")
def caption_run(tmp_path_factory):
    from auralm.__main__ import main

    root = tmp_path_factory.mktemp("serve-caption")
    assert main(["caption", "synth", "--out", str(root / "music"), "playlists=[8,3,3]", "tracks=[24,12,12]",
                 "seconds=1.0", "max_tracks=5"]) == 0
    assert main(["caption", "train", "--preset", "caption-tiny", "--out", str(root / "run"), "--corpus",
                 str(root / "music"), "optim.max_steps=4"]) == 0
    return root / "run"


@pytest.fixture(scope="module")
def server(caption_run, tmp_path_factory):
    yield from serving(tmp_path_factory, "serve-caption", ["--checkpoint", str(caption_run), "--name", "caption",
                                                           "--api-key", KEY])


def tracks(*freqs: float) -> list[np.ndarray]:
    return [tone(1.0, f) for f in freqs]


def playlist(wavs: list[np.ndarray], text: str | None = "tags: calm, fast") -> list[dict]:
    parts = [{"type": "input_audio", "input_audio": {"data": b64(wav_bytes(w)), "format": "wav"}} for w in wavs]
    return [{"role": "user", "content": ([{"type": "text", "text": text}] if text else []) + parts}]


def test_a_playlist_is_captioned_as_in_process(server, caption_run):
    import auralm

    client = server.client()
    assert {m.id: m.model_extra["endpoints"] for m in client.models.list().data} == {"caption": ["/v1/chat/completions"]}
    wavs = tracks(220, 330, 440)
    plain = client.chat.completions.create(model="caption", messages=playlist(wavs), max_tokens=8)
    text = plain.choices[0].message.content
    pipe = auralm.load(caption_run)
    gen = pipe.generation.replace(max_new_tokens=8)
    assert text == pipe.caption(wavs, tags=["calm", "fast"], gen=gen)  # the same pipeline, the same caption
    assert text != pipe.caption(wavs, gen=gen) or text != pipe.caption(wavs[:1], gen=gen)  # tags and tracks are read
    assert plain.usage.prompt_tokens > 0 and 0 <= plain.usage.completion_tokens <= 8
    stream = client.chat.completions.create(model="caption", messages=playlist(wavs), max_tokens=8, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == text


@pytest.mark.parametrize("messages, message", [
    ([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": png_url(0)}},
                                   {"type": "text", "text": "Describe."}]}], "not images"),
    ([{"role": "user", "content": "Describe the playlist."}], "add its tracks as input_audio"),
    (playlist(tracks(220, 330), "tags: dubstep"), "dubstep"),
    (playlist([tone(0.05)]), "track 1 of the playlist"),
])  # fmt: skip
def test_bad_playlists_are_400_and_the_server_still_answers(server, messages, message):
    client = server.client()
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="caption", messages=messages, max_tokens=4)
    assert message in err.value.response.json()["error"]["message"]
    ok = client.chat.completions.create(model="caption", messages=playlist(tracks(220)), max_tokens=4)
    assert isinstance(ok.choices[0].message.content, str)


def test_caption_tags():
    from auralm.serve.service import caption_tags

    messages = [{"role": "system", "content": "tags: ignored"},
                {"role": "user", "content": "Tags: calm, organ <|audio|> <|audio|>\nsomething else"},
                {"role": "user", "content": "tags:fast,calm, fast"}]
    assert caption_tags(messages) == ["calm", "organ", "fast"]  # repeats, in one line or across lines, once
