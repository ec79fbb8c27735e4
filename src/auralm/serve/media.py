"""Media in requests: base64 and uploaded audio, data-URL images. Everything is checked before a model
sees it, and each failure is an :class:`~auralm.serve.errors.APIError` naming the part at fault:

* base64 that does not decode -> 400;
* audio that is empty, corrupt, of sample rate 0, or in a format the server cannot decode -> 400;
* audio longer than the limit -> 413, from the header (WAV/FLAC/OGG via soundfile, others via ffmpeg's
  banner) before any sample is decoded, and again after decoding (a header can lie);
* an image URL that is not a ``data:`` URL -> 400 unless the operator allows remote media; bytes that are
  no PNG, JPEG, GIF, WebP or BMP image -> 400.

Audio goes through :func:`auralm.data.audio.load_audio` (the same decoder every command uses), written to
a private temporary file first.
"""

from __future__ import annotations

import base64
import binascii
import io
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from auralm.core.constants import SAMPLE_RATE
from auralm.core.errors import AuralmError
from auralm.serve.errors import APIError

CHAT_AUDIO_FORMATS = ("wav", "mp3")
# leading bytes -> suffix the decoder is chosen by (the upload's own name is only a fallback)
AUDIO_MAGIC = ((b"RIFF", ".wav"), (b"fLaC", ".flac"), (b"OggS", ".ogg"), (b"ID3", ".mp3"), (b"\xff\xfb", ".mp3"),
               (b"\xff\xf3", ".mp3"), (b"\xff\xf2", ".mp3"), (b"FORM", ".aiff"))
IMAGE_MAGIC = ((b"\x89PNG\r\n\x1a\n", "png"), (b"\xff\xd8\xff", "jpeg"), (b"GIF87a", "gif"), (b"GIF89a", "gif"),
               (b"BM", "bmp"))


def decode_base64(data: str, what: str) -> bytes:
    """Bytes of a base64 string (a ``data:...;base64,`` prefix is allowed); 400 when it is not base64."""
    if data.startswith("data:"):
        data = data.partition(",")[2]
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise APIError(400, f"{what} is not valid base64 ({exc}); was it cut short?") from None
    if not raw:
        raise APIError(400, f"{what} is empty")
    return raw


def sniff_audio_suffix(raw: bytes, name: str = "") -> str:
    for magic, suffix in AUDIO_MAGIC:
        if raw.startswith(magic):
            return suffix
    return Path(name).suffix.lower() or ".bin"


def probe_seconds(path: Path) -> float | None:
    """Duration from the header, without decoding samples; None when the header does not say."""
    from auralm.data.audio import SOUNDFILE_SUFFIXES

    if path.suffix in SOUNDFILE_SUFFIXES:
        import soundfile as sf

        try:
            info = sf.info(str(path))
        except Exception:  # the decoder reports the problem properly
            return None
        return info.frames / info.samplerate if info.samplerate > 0 else None
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        return None
    banner = subprocess.run([ffmpeg, "-hide_banner", "-i", str(path)], capture_output=True, text=True,
                            check=False, timeout=30).stderr
    m = re.search(r"Duration: (\d+):(\d\d):(\d\d(?:\.\d+)?)", banner)
    return int(m[1]) * 3600 + int(m[2]) * 60 + float(m[3]) if m else None


def load_audio_bytes(raw: bytes, what: str, max_seconds: float, name: str = "") -> np.ndarray:
    """16 kHz mono float32 samples of an audio file's bytes (see the module docstring for the errors)."""
    from auralm.data.audio import load_audio

    if not raw:
        raise APIError(400, f"{what} is empty (0 bytes)")
    suffix = sniff_audio_suffix(raw, name)
    with tempfile.TemporaryDirectory(prefix="auralm-serve-") as tmp:
        path = Path(tmp) / f"audio{suffix}"
        path.write_bytes(raw)
        seconds = probe_seconds(path)
        if seconds is not None and seconds > max_seconds:
            raise APIError(413, f"{what} is {seconds:.1f} s long; this server takes at most {max_seconds:g} s of "
                                "audio per request (--max-audio-seconds)", code="audio_too_long")
        try:
            wav, _ = load_audio(path, SAMPLE_RATE)
        except AuralmError as exc:
            raise APIError(400, f"{what}: {str(exc).replace(str(path) + ': ', '').replace(str(path), 'the file')}") from None
    if len(wav) > max_seconds * SAMPLE_RATE:
        raise APIError(413, f"{what} is {len(wav) / SAMPLE_RATE:.1f} s long; this server takes at most "
                            f"{max_seconds:g} s of audio per request (--max-audio-seconds)", code="audio_too_long")
    return wav


def sniff_image(raw: bytes) -> str | None:
    for magic, kind in IMAGE_MAGIC:
        if raw.startswith(magic):
            return kind
    if raw[:4] == b"RIFF" and raw[8:12] == b"WEBP":
        return "webp"
    return None


def load_image(url: str, what: str, allow_remote: bool, max_bytes: int) -> bytes:
    """The checked bytes of an image URL: a ``data:image/...;base64,`` URL, or (``allow_remote``) an
    http(s) or file:// URL."""
    if url.startswith("data:"):
        header, _, payload = url.partition(",")
        if not header.endswith(";base64"):
            raise APIError(400, f"{what}: a data URL must be base64 (data:image/png;base64,...)")
        raw = decode_base64(payload, what)
    elif re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", url) or url.startswith(("/", "~", ".")):
        if not allow_remote:
            raise APIError(400, f"{what}: remote URLs and local paths are refused by this server; send the image "
                                "inline as a data URL (data:image/png;base64,...), or start the server with "
                                "--allow-remote-media")
        raw = _fetch(url, what, max_bytes)
    else:
        raise APIError(400, f"{what} must be a data URL (data:image/png;base64,...), got {url[:40]!r}")
    if sniff_image(raw) is None:
        raise APIError(400, f"{what}: the bytes are not an image (expected PNG, JPEG, GIF, WebP or BMP)")
    try:
        from PIL import Image
    except ImportError:  # the magic bytes are all we can check
        return raw
    try:
        with Image.open(io.BytesIO(raw)) as img:
            img.verify()
    except Exception as exc:
        raise APIError(400, f"{what}: not a readable image ({exc})") from None
    return raw


def _fetch(url: str, what: str, max_bytes: int) -> bytes:
    import urllib.request

    if url.startswith("file://") or not re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", url):
        path = Path(url.removeprefix("file://")).expanduser()
        if not path.is_file():
            raise APIError(400, f"{what}: no such file {path}")
        if path.stat().st_size > max_bytes:
            raise APIError(413, f"{what}: {path} is larger than {max_bytes} bytes")
        return path.read_bytes()
    if not url.startswith(("http://", "https://")):
        raise APIError(400, f"{what}: only http(s), file:// and data: URLs are supported")
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:  # noqa: S310 - the operator allowed it
            raw = resp.read(max_bytes + 1)
    except Exception as exc:
        raise APIError(400, f"{what}: cannot fetch {url} ({exc})") from None
    if len(raw) > max_bytes:
        raise APIError(413, f"{what}: {url} is larger than {max_bytes} bytes")
    return raw
