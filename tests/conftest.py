"""Shared test fixtures: tiny audio assets made on the fly (numpy + soundfile), never downloaded.

Use the ``make_audio`` fixture::

    def test_x(make_audio):
        good = make_audio.tone("a.wav")               # 0.25 s 440 Hz sine at 16 kHz
        make_audio.silent("b.wav"); make_audio.empty("c.wav")
        make_audio.corrupt("d.wav"); make_audio.zero_rate("e.wav")

Relative names are placed under the fixture's root (``tmp_path``); parent folders are created.

The session's model cache is a fresh folder (``AURALM_CACHE``, set before any test runs, inherited by the
servers and ``torchrun`` children the tests start): a run never reads or writes the user's
``~/.cache/auralm``, and each offline conversion (SmolLM2 from its GGUF, Whisper from CTranslate2) happens
once a session, as on a fresh CI machine. The tiny trained checkpoints that several modules serve
(``chat_checkpoint``, ``imagine_checkpoint``) are built once a session.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf


@pytest.fixture(scope="session", autouse=True)
def session_model_cache(tmp_path_factory) -> Iterator[Path]:
    """One fresh auralm model cache for the whole session (see the module docstring)."""
    root = tmp_path_factory.mktemp("auralm-cache")
    before = os.environ.get("AURALM_CACHE")
    os.environ["AURALM_CACHE"] = str(root)
    yield root
    if before is None:
        os.environ.pop("AURALM_CACHE", None)
    else:
        os.environ["AURALM_CACHE"] = before


@pytest.fixture(scope="session")
def chat_checkpoint(tmp_path_factory) -> Path:
    """A tiny chat checkpoint (two steps of stage 1, two of stage 2 with LoRA) on a 12-scene synthetic set."""
    from auralm.core.config import apply_overrides, load_preset
    from auralm.recipes.chat.config import TrainConfig
    from auralm.recipes.chat.data import ChatSynthConfig, synth_chat
    from auralm.recipes.chat.train import train

    root = tmp_path_factory.mktemp("serve-chat")
    synth_chat(ChatSynthConfig(out=str(root / "data"), scenes=12, image_size=64, conversations=1,
                               voices=["espeak-ng:en-us"], test_voices=["espeak-ng:en-gb"], clips_per_text=1))  # fmt: skip
    base = TrainConfig.from_dict(load_preset("chat-tiny"))
    one = train(apply_overrides(base, [f"data.dataset={root / 'data'}", f"out={root / 's1'}", "optim.max_steps=2"]))
    two = train(apply_overrides(base, [f"data.dataset={root / 'data'}", f"out={root / 's2'}", "optim.max_steps=2",
                                       "stage=2", "model.lora.r=4", f"init_from={one}"]))  # fmt: skip
    return two


@pytest.fixture(scope="session")
def imagine_checkpoint(tmp_path_factory) -> Path:
    """The checkpoint of a tiny imagine demo (`auralm imagine demo --preset imagine-tiny`)."""
    from auralm.__main__ import main

    out = tmp_path_factory.mktemp("serve-imagine") / "demo"
    assert main(["imagine", "demo", "--preset", "imagine-tiny", "--out", str(out)]) == 0
    return out / "checkpoint"


def sine(seconds: float = 0.25, sample_rate: int = 16000, freq: float = 440.0, amp: float = 0.5) -> np.ndarray:
    """A mono float32 sine tone."""
    t = np.arange(int(round(seconds * sample_rate)), dtype=np.float64) / sample_rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


class AudioFactory:
    """Writes small audio files (good and deliberately broken) under ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def path(self, name: str | Path) -> Path:
        path = Path(name)
        path = path if path.is_absolute() else self.root / path
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def tone(
        self,
        name: str | Path,
        seconds: float = 0.25,
        sample_rate: int = 16000,
        freq: float = 440.0,
        channels: int = 1,
        subtype: str = "PCM_16",
    ) -> Path:
        """A sine tone; ``channels=2`` writes the same tone on both channels. Format follows the suffix."""
        path = self.path(name)
        wav = sine(seconds, sample_rate, freq)
        data = np.stack([wav] * channels, axis=1) if channels > 1 else wav
        sf.write(str(path), data, sample_rate, subtype=subtype if path.suffix.lower() == ".wav" else None)
        return path

    def silent(self, name: str | Path, seconds: float = 0.25, sample_rate: int = 16000) -> Path:
        """A valid WAV of digital silence."""
        path = self.path(name)
        sf.write(str(path), np.zeros(int(seconds * sample_rate), dtype=np.float32), sample_rate, subtype="PCM_16")
        return path

    def empty(self, name: str | Path) -> Path:
        """A zero-byte file."""
        path = self.path(name)
        path.write_bytes(b"")
        return path

    def header_only(self, name: str | Path, sample_rate: int = 16000) -> Path:
        """A valid WAV header with no sample frames."""
        path = self.path(name)
        sf.write(str(path), np.zeros(0, dtype=np.float32), sample_rate, subtype="PCM_16")
        return path

    def corrupt(self, name: str | Path, size: int = 512) -> Path:
        """Random bytes that are no audio format at all."""
        path = self.path(name)
        path.write_bytes(np.random.default_rng(0).integers(0, 256, size, dtype=np.uint8).tobytes())
        return path

    def zero_rate(self, name: str | Path) -> Path:
        """A WAV whose ``fmt `` chunk says 0 Hz (and 0 bytes/s), the rest intact."""
        path = self.tone(name)
        data = bytearray(path.read_bytes())
        pos = data.index(b"fmt ")
        data[pos + 12 : pos + 16] = (0).to_bytes(4, "little")  # sample rate
        data[pos + 16 : pos + 20] = (0).to_bytes(4, "little")  # byte rate
        path.write_bytes(bytes(data))
        return path

    def text(self, name: str | Path, text: str) -> Path:
        """A UTF-8 text file (a transcript)."""
        path = self.path(name)
        path.write_text(text, encoding="utf-8")
        return path


@pytest.fixture
def make_audio(tmp_path: Path) -> AudioFactory:
    """An :class:`AudioFactory` rooted at ``tmp_path``."""
    return AudioFactory(tmp_path)
