"""`auralm ui` with a chat checkpoint and an imagine checkpoint, as a real process driven through the Gradio
client API (`gradio_client`, logged in with the API key as the UI's password): the Chat tab takes an image
and a clip in one turn and gives the reply the HTTP API gives for the same conversation (greedy), a second
turn resends the first with its media; bad images are errors and the next turn is still answered; the Image
tab makes a picture of the model's own size, the same for the same seed, from a prompt or from a clip."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

pytest.importorskip("gradio")
gradio_client = pytest.importorskip("gradio_client")
pytest.importorskip("diffusers")

from test_serve_api import KEY, SR, Server, b64, serving, tone  # noqa: E402


@pytest.fixture(scope="module")
def server(chat_checkpoint, imagine_checkpoint, tmp_path_factory):
    yield from serving(tmp_path_factory, "serve-ui-recipes", ["--checkpoint", str(chat_checkpoint), "--name", "chat",
                                                              "--checkpoint", str(imagine_checkpoint), "--name", "imagine",
                                                              "--api-key", KEY, "--max-images", "2"], command="ui")


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict[str, Path]:
    from PIL import Image

    root = tmp_path_factory.mktemp("ui-media")
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(root / "scene.png")
    sf.write(str(root / "first.wav"), tone(0.6), SR, subtype="PCM_16")
    sf.write(str(root / "second.wav"), tone(0.8, freq=500.0), SR, subtype="PCM_16")
    (root / "broken.png").write_bytes(b"not an image at all")
    return {p.stem: p for p in root.iterdir()}


def ui(server: Server):
    """A Gradio client of its own (a session of its own: a new conversation)."""
    return gradio_client.Client(server.url + "/ui/", auth=("auralm", KEY), verbose=False)


def said(message: dict) -> str:
    content = message["content"]
    return content if isinstance(content, str) else "".join(part.get("text", "") for part in content)


def api_parts(*paths: Path, text: str) -> list[dict]:
    parts = []
    for path in paths:
        if path.suffix == ".png":
            parts.append({"type": "image_url", "image_url": {"url": "data:image/png;base64," + b64(path.read_bytes())}})
        else:
            parts.append({"type": "input_audio", "input_audio": {"data": b64(path.read_bytes()), "format": "wav"}})
    return [*parts, {"type": "text", "text": text}]


@pytest.mark.slow
def test_chat_turns_with_an_image_and_a_clip_match_the_api(server, media):
    handle = gradio_client.handle_file
    client, api = ui(server), server.client()
    history, box = client.predict("chat", {"text": "What colour is the circle?",
                                           "files": [handle(str(media["scene"])), handle(str(media["first"]))]},
                                  [], api_name="/chat")  # fmt: skip
    assert box == {"text": "", "files": []} and [m["role"] for m in history] == ["user", "assistant"]
    assert "[image: scene.png]" in said(history[0]) and "[audio: first.wav]" in said(history[0])
    first = [{"role": "user", "content": api_parts(media["scene"], media["first"], text="What colour is the circle?")}]
    expected = api.chat.completions.create(model="chat", messages=first).choices[0].message.content
    assert said(history[1]) == expected  # greedy: the reply the API gives for the same conversation
    # a second turn: the first (its image and clip included) is sent again with it
    history, _ = client.predict("chat", {"text": "And this?", "files": [handle(str(media["second"]))]}, history,
                                api_name="/chat")
    assert [m["role"] for m in history] == ["user", "assistant", "user", "assistant"]
    second = [*first, {"role": "assistant", "content": expected},
              {"role": "user", "content": api_parts(media["second"], text="And this?")}]
    assert said(history[3]) == api.chat.completions.create(model="chat", messages=second).choices[0].message.content


@pytest.mark.slow
def test_chat_bad_images_are_errors_and_the_next_turn_is_answered(server, media):
    handle = gradio_client.handle_file
    client = ui(server)
    with pytest.raises(gradio_client.exceptions.AppError, match="not an image"):
        client.predict("chat", {"text": "What is it?", "files": [handle(str(media["broken"]))]}, [], api_name="/chat")
    three = [handle(str(media["scene"]))] * 3
    with pytest.raises(gradio_client.exceptions.AppError, match="at most 2"):
        client.predict("chat", {"text": "What is it?", "files": three}, [], api_name="/chat")
    history, _ = client.predict("chat", {"text": "What is it?", "files": [handle(str(media["scene"]))]}, [],
                                api_name="/chat")
    assert [m["role"] for m in history] == ["user", "assistant"]


def _pixels(image) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(image if isinstance(image, str) else io.BytesIO(image)).convert("RGB"))


@pytest.mark.slow
def test_image_tab_makes_the_models_size_and_the_seed_repeats(server, media):
    client, api = ui(server), server.client()
    auto = api.images.generate(model="imagine", prompt="a red circle", extra_body={"seed": 3})
    expected = _pixels(base64.b64decode(auto.data[0].b64_json))
    assert expected.shape[0] == expected.shape[1] > 0  # the model's own size (size=auto)
    one = _pixels(client.predict("imagine", "a red circle", None, 3, api_name="/image"))
    two = _pixels(client.predict("imagine", "a red circle", None, 3, api_name="/image"))
    assert one.shape == expected.shape and np.array_equal(one, two)  # the same seed, the same picture
    assert np.array_equal(one, expected)  # and the API's picture
    # from a clip (the prompt is then unused), as the API's input_audio extension
    heard = _pixels(client.predict("imagine", "", gradio_client.handle_file(str(media["first"])), 0, api_name="/image"))
    spoken = api.images.generate(model="imagine", prompt="", extra_body={
        "seed": 0, "input_audio": {"data": b64(media["first"].read_bytes()), "format": "wav"}})
    assert np.array_equal(heard, _pixels(base64.b64decode(spoken.data[0].b64_json)))
    with pytest.raises(gradio_client.exceptions.AppError, match="give a prompt"):
        client.predict("imagine", "  ", None, 0, api_name="/image")
