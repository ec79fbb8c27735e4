"""`auralm serve` with an imagine checkpoint, as a real process called with the real `openai` client:
pictures from a text prompt and (the documented extension field) from a spoken description, the size asked
for, the same seed giving the same picture, and the bad requests as 400s."""

from __future__ import annotations

import base64
import io

import pytest

openai = pytest.importorskip("openai")
pytest.importorskip("fastapi")
pytest.importorskip("diffusers")

from test_serve_api import KEY, b64, serving, tone, wav_bytes  # noqa: E402


@pytest.fixture(scope="module")
def server(imagine_checkpoint, tmp_path_factory):
    yield from serving(tmp_path_factory, "serve-imagine", ["--checkpoint", str(imagine_checkpoint), "--name", "imagine",
                                                           "--api-key", KEY])


def _png(b64_json: str):
    from PIL import Image

    return Image.open(io.BytesIO(base64.b64decode(b64_json)))


@pytest.mark.slow
def test_images_from_text_and_from_audio(server):
    client = server.client()
    assert {m.id: m.model_extra["recipe"] for m in client.models.list().data} == {"imagine": "imagine"}
    res = client.images.generate(model="imagine", prompt="a red circle", n=2, size="48x40", extra_body={"seed": 3})
    images = [_png(d.b64_json) for d in res.data]
    assert len(images) == 2 and all(im.size == (48, 40) and im.format == "PNG" for im in images)
    again = client.images.generate(model="imagine", prompt="a red circle", n=1, size="48x40", extra_body={"seed": 3})
    assert again.data[0].b64_json == res.data[0].b64_json  # the same seed, the same picture
    spoken = client.images.generate(model="imagine", prompt="", extra_body={
        "seed": 0, "input_audio": {"data": b64(wav_bytes(tone(1.0))), "format": "wav"}})
    assert _png(spoken.data[0].b64_json).size[0] > 0


@pytest.mark.slow
@pytest.mark.parametrize("kwargs, message", [
    ({"prompt": "x", "size": "big"}, "size must be"),
    ({"prompt": "x", "response_format": "url"}, "b64_json"),
    ({"prompt": "  "}, "give a prompt"),
])  # fmt: skip
def test_bad_image_requests_are_400(server, kwargs, message):
    client = server.client()
    with pytest.raises(openai.BadRequestError) as err:
        client.images.generate(model="imagine", **kwargs)
    assert message in err.value.response.json()["error"]["message"]
