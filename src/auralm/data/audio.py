"""Audio I/O: decode to mono float32, resample to the encoder's rate, and fail loudly on bad files.

WAV, FLAC and OGG are decoded by soundfile; MP3, M4A and anything soundfile cannot read go through
``ffmpeg`` when it is installed. Resampling uses soxr. A file is never silently read at a wrong rate:
every loader returns the rate it delivers, and :func:`load_audio` resamples to ``sample_rate`` when given.
"""

from __future__ import annotations

import dataclasses
import hashlib
import shutil
import subprocess
from pathlib import Path

import numpy as np

from auralm.core.errors import AudioError, ToolMissingError
from auralm.core.io import atomic_path

SOUNDFILE_SUFFIXES = {".wav", ".flac", ".ogg", ".oga", ".aiff", ".aif"}
FFMPEG_SUFFIXES = {".mp3", ".m4a", ".mp4", ".aac", ".opus", ".webm", ".wma"}
AUDIO_SUFFIXES = SOUNDFILE_SUFFIXES | FFMPEG_SUFFIXES
SILENCE_PEAK = 1e-4  # a clip whose absolute peak is below this (-80 dBFS) counts as silent


@dataclasses.dataclass(frozen=True)
class AudioInfo:
    sample_rate: int
    frames: int
    channels: int

    @property
    def duration(self) -> float:
        return self.frames / self.sample_rate


def audio_info(path: str | Path) -> AudioInfo:
    """Header facts without decoding the samples (decodes through ffmpeg for compressed formats)."""
    path = Path(path)
    if not path.is_file():
        raise AudioError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise AudioError(f"{path}: file is empty (0 bytes)")
    if path.suffix.lower() in SOUNDFILE_SUFFIXES:
        import soundfile as sf

        try:
            info = sf.info(str(path))
        except Exception as exc:  # soundfile raises several types for corrupt headers
            rate = _wav_header_rate(path)
            if rate == 0:
                raise AudioError(f"{path}: sample rate is 0 in the WAV header") from None
            raise AudioError(f"{path}: cannot read audio header ({_short(exc)})") from None
        if info.samplerate <= 0:
            raise AudioError(f"{path}: sample rate is {info.samplerate}")
        return AudioInfo(int(info.samplerate), int(info.frames), int(info.channels))
    wav, sr = _decode_ffmpeg(path)
    return AudioInfo(sr, len(wav), 1)


def load_audio(
    path: str | Path,
    sample_rate: int | None = None,
    start: float | None = None,
    end: float | None = None,
) -> tuple[np.ndarray, int]:
    """Decode ``path`` to mono float32 in [-1, 1]; resample to ``sample_rate`` if given.

    ``start``/``end`` (seconds) select a span. Returns ``(wav, rate)`` with ``wav`` of shape ``(T,)``.
    Raises :class:`AudioError` for missing, corrupt, empty files and invalid rates.
    """
    path = Path(path)
    if sample_rate is not None and sample_rate <= 0:
        raise AudioError(f"requested sample rate must be positive, got {sample_rate}")
    if not path.is_file():
        raise AudioError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise AudioError(f"{path}: file is empty (0 bytes)")
    if path.suffix.lower() in SOUNDFILE_SUFFIXES:
        wav, sr = _decode_soundfile(path, start, end)
    else:
        wav, sr = _decode_ffmpeg(path)
        if start is not None or end is not None:
            a = int(round((start or 0.0) * sr))
            b = len(wav) if end is None else int(round(end * sr))
            wav = wav[a:b]
    if wav.size == 0:
        span = "" if start is None else f" between {start}s and {end}s"
        raise AudioError(f"{path}: no samples{span}")
    if not np.all(np.isfinite(wav)):
        raise AudioError(f"{path}: contains NaN or infinite samples")
    if sample_rate is not None and sample_rate != sr:
        wav, sr = resample(wav, sr, sample_rate), sample_rate
    return wav, sr


def resample(wav: np.ndarray, orig_rate: int, new_rate: int) -> np.ndarray:
    """Resample mono ``(T,)`` float audio with soxr (high quality)."""
    if orig_rate <= 0 or new_rate <= 0:
        raise AudioError(f"sample rates must be positive, got {orig_rate} -> {new_rate}")
    if orig_rate == new_rate:
        return wav.astype(np.float32, copy=False)
    import soxr

    return soxr.resample(wav.astype(np.float32, copy=False), orig_rate, new_rate, quality="HQ").astype(np.float32)


def is_silent(wav: np.ndarray, threshold: float = SILENCE_PEAK) -> bool:
    return wav.size == 0 or float(np.max(np.abs(wav))) < threshold


def check_audio(path: str | Path) -> AudioInfo:
    """Fully decode ``path`` and raise :class:`AudioError` when it is corrupt, empty, zero-rate or silent."""
    info = audio_info(path)
    wav, _ = load_audio(path)
    if is_silent(wav):
        raise AudioError(f"{path}: silent (peak below {SILENCE_PEAK:g})")
    return dataclasses.replace(info, frames=len(wav))


def write_wav(path: str | Path, wav: np.ndarray, sample_rate: int) -> None:
    """Write 16-bit PCM WAV atomically."""
    import soundfile as sf

    if sample_rate <= 0:
        raise AudioError(f"cannot write {path} at sample rate {sample_rate}")
    with atomic_path(path) as tmp:
        sf.write(str(tmp), np.clip(wav, -1.0, 1.0), sample_rate, subtype="PCM_16", format="WAV")


def file_hash(path: str | Path, chunk: int = 1 << 20) -> str:
    """sha256 of a file's bytes (hex): the content key of the embedding cache."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def _decode_soundfile(path: Path, start: float | None, end: float | None) -> tuple[np.ndarray, int]:
    import soundfile as sf

    try:
        with sf.SoundFile(str(path)) as fh:
            sr = int(fh.samplerate)
            if sr <= 0:
                raise AudioError(f"{path}: sample rate is {sr}")
            a = 0 if start is None else int(round(start * sr))
            if a > 0:
                fh.seek(min(a, fh.frames))
            n = -1 if end is None else max(0, int(round(end * sr)) - a)
            data = fh.read(frames=n, dtype="float32", always_2d=True)
    except AudioError:
        raise
    except Exception as exc:
        if _wav_header_rate(path) == 0:
            raise AudioError(f"{path}: sample rate is 0 in the WAV header") from None
        raise AudioError(f"{path}: cannot decode audio ({_short(exc)})") from None
    return data.mean(axis=1).astype(np.float32), sr


def _decode_ffmpeg(path: Path) -> tuple[np.ndarray, int]:
    """Decode any format ffmpeg knows, at the file's own rate, to mono float32."""
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        raise ToolMissingError(f"{path}: decoding {path.suffix or 'this format'} needs ffmpeg (apt-get install ffmpeg)")
    probe = subprocess.run(
        [ffmpeg, "-hide_banner", "-i", str(path)], capture_output=True, text=True, check=False
    ).stderr
    sr = _rate_from_ffmpeg_banner(probe)
    if sr is None:
        raise AudioError(f"{path}: ffmpeg finds no audio stream")
    out = subprocess.run(
        [ffmpeg, "-v", "error", "-i", str(path), "-f", "f32le", "-ac", "1", "-ar", str(sr), "-"],
        capture_output=True,
        check=False,
    )
    if out.returncode != 0:
        raise AudioError(f"{path}: ffmpeg cannot decode it ({out.stderr.decode(errors='replace').strip()[:200]})")
    return np.frombuffer(out.stdout, dtype=np.float32).copy(), sr


def _wav_header_rate(path: Path) -> int | None:
    """The sample rate field of a RIFF/WAVE ``fmt `` chunk, or None when there is none."""
    with open(path, "rb") as fh:
        head = fh.read(4096)
    if head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return None
    pos = 12
    while pos + 8 <= len(head):
        size = int.from_bytes(head[pos + 4 : pos + 8], "little")
        if head[pos : pos + 4] == b"fmt " and pos + 16 <= len(head):
            return int.from_bytes(head[pos + 12 : pos + 16], "little")
        pos += 8 + size + (size & 1)
    return None


def _rate_from_ffmpeg_banner(text: str) -> int | None:
    for line in text.splitlines():
        if "Audio:" in line:
            for part in line.split(","):
                part = part.strip()
                if part.endswith(" Hz"):
                    try:
                        rate = int(part[:-3])
                    except ValueError:
                        continue
                    return rate if rate > 0 else None
    return None


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[-1][:200] if text else type(exc).__name__
