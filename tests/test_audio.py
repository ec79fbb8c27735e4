"""Audio I/O: decoding, resampling, spans, ffmpeg formats, loud failures and atomic WAV writes."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest
import soundfile as sf

from auralm.core.errors import AudioError, ToolMissingError
from auralm.data.audio import (
    audio_info,
    check_audio,
    file_hash,
    is_silent,
    load_audio,
    resample,
    write_wav,
)

needs_ffmpeg = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg is not installed")


def test_load_native_rate(make_audio):
    path = make_audio.tone("a.wav", seconds=0.5, sample_rate=22050)
    wav, sr = load_audio(path)
    assert sr == 22050
    assert wav.dtype == np.float32 and wav.shape == (11025,)
    assert 0.45 < np.max(np.abs(wav)) <= 0.5 + 1e-3
    info = audio_info(path)
    assert (info.sample_rate, info.frames, info.channels) == (22050, 11025, 1)
    assert info.duration == pytest.approx(0.5)


@pytest.mark.parametrize("target", [8000, 16000, 48000])
def test_resample_on_load(make_audio, target):
    path = make_audio.tone("a.wav", seconds=0.5, sample_rate=16000, freq=200)
    wav, sr = load_audio(path, sample_rate=target)
    assert sr == target
    assert abs(len(wav) - target // 2) <= 2  # length scales with the rate, duration is kept
    assert wav.dtype == np.float32
    # the tone survives: its dominant frequency is still 200 Hz
    spectrum = np.abs(np.fft.rfft(wav))
    assert np.fft.rfftfreq(len(wav), 1 / sr)[np.argmax(spectrum)] == pytest.approx(200, abs=4)


def test_resample_function():
    wav = np.ones(1000, dtype=np.float64)
    assert resample(wav, 16000, 16000).dtype == np.float32
    assert len(resample(wav.astype(np.float32), 16000, 8000)) == 500
    with pytest.raises(AudioError, match="positive"):
        resample(wav, 0, 16000)
    with pytest.raises(AudioError, match="positive"):
        resample(wav, 16000, -1)


def test_stereo_is_mixed_to_mono(make_audio):
    path = make_audio.path("st.wav")
    left = np.full(800, 0.5, dtype=np.float32)
    sf.write(str(path), np.stack([left, -left * 0.5], axis=1), 8000, subtype="FLOAT")
    wav, sr = load_audio(path)
    assert wav.shape == (800,) and sr == 8000
    assert np.allclose(wav, 0.125)
    assert audio_info(path).channels == 2


def test_start_end_span(make_audio):
    path = make_audio.path("ramp.wav")
    ramp = (np.arange(16000, dtype=np.float32) / 16000) * 0.9
    sf.write(str(path), ramp, 16000, subtype="FLOAT")
    wav, sr = load_audio(path, start=0.25, end=0.5)
    assert sr == 16000 and len(wav) == 4000
    assert wav[0] == pytest.approx(ramp[4000]) and wav[-1] == pytest.approx(ramp[7999])
    tail, _ = load_audio(path, start=0.75)
    assert len(tail) == 4000 and tail[0] == pytest.approx(ramp[12000])
    head, _ = load_audio(path, end=0.1)
    assert len(head) == 1600 and head[0] == pytest.approx(0.0)
    resampled, sr = load_audio(path, sample_rate=8000, start=0.25, end=0.5)
    assert sr == 8000 and abs(len(resampled) - 2000) <= 2
    with pytest.raises(AudioError, match="no samples between"):
        load_audio(path, start=2.0, end=3.0)


@needs_ffmpeg
def test_mp3_via_ffmpeg(make_audio):
    src = make_audio.tone("a.wav", seconds=1.0, sample_rate=16000, freq=300)
    mp3 = make_audio.path("a.mp3")
    done = subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-i", str(src), "-codec:a", "libmp3lame", "-b:a", "64k", str(mp3)],
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"this ffmpeg cannot encode mp3: {done.stderr.decode(errors='replace')[:200]}")
    wav, sr = load_audio(mp3)
    assert sr == 16000
    assert abs(len(wav) - 16000) < 0.1 * 16000  # encoder padding only
    assert np.max(np.abs(wav)) > 0.3
    wav8, sr8 = load_audio(mp3, sample_rate=8000)
    assert sr8 == 8000 and abs(len(wav8) - len(wav) / 2) <= 2
    span, _ = load_audio(mp3, start=0.2, end=0.4)
    assert len(span) == 3200
    info = check_audio(mp3)
    assert info.sample_rate == 16000 and info.channels == 1


@needs_ffmpeg
def test_corrupt_mp3_is_an_audio_error(make_audio):
    path = make_audio.corrupt("bad.mp3")
    with pytest.raises(AudioError, match="bad.mp3"):
        load_audio(path)


def test_mp3_without_ffmpeg_names_the_tool(make_audio, monkeypatch):
    path = make_audio.corrupt("x.mp3")
    monkeypatch.setattr("auralm.data.audio.shutil.which", lambda name: None)
    with pytest.raises(ToolMissingError, match="ffmpeg"):
        load_audio(path)


def test_missing_file(tmp_path):
    for func in (load_audio, audio_info, check_audio):
        with pytest.raises(AudioError, match="no such file"):
            func(tmp_path / "nope.wav")


def test_empty_file(make_audio):
    path = make_audio.empty("e.wav")
    for func in (load_audio, audio_info, check_audio):
        with pytest.raises(AudioError, match="empty"):
            func(path)


def test_header_without_samples(make_audio):
    path = make_audio.header_only("h.wav")
    assert audio_info(path).frames == 0
    with pytest.raises(AudioError, match="no samples"):
        load_audio(path)


def test_corrupt_file(make_audio):
    path = make_audio.corrupt("c.wav")
    with pytest.raises(AudioError, match="cannot read audio header"):
        audio_info(path)
    with pytest.raises(AudioError, match="cannot decode"):
        load_audio(path)


def test_zero_sample_rate(make_audio):
    path = make_audio.zero_rate("z.wav")
    for func in (load_audio, audio_info, check_audio):
        with pytest.raises(AudioError, match="sample rate is 0"):
            func(path)


def test_silence(make_audio):
    path = make_audio.silent("s.wav")
    wav, _ = load_audio(path)  # loading silence is fine; checking it is not
    assert is_silent(wav) and is_silent(np.zeros(0))
    assert not is_silent(np.array([0.0, 0.01]))
    with pytest.raises(AudioError, match="silent"):
        check_audio(path)
    assert check_audio(make_audio.tone("t.wav", seconds=0.1)).frames == 1600


@pytest.mark.parametrize("rate", [0, -16000])
def test_non_positive_requested_rate_is_rejected(make_audio, rate):
    path = make_audio.tone("a.wav")
    with pytest.raises(AudioError, match="must be positive"):
        load_audio(path, sample_rate=rate)


def test_write_wav_round_trip(tmp_path):
    wav = np.sin(np.linspace(0, 100, 4000)).astype(np.float32) * 0.7
    path = tmp_path / "deep" / "out.wav"
    write_wav(path, wav, 16000)
    back, sr = load_audio(path)
    assert sr == 16000 and back.shape == wav.shape
    assert np.max(np.abs(back - wav)) < 1e-3  # 16-bit quantisation only
    assert sf.info(str(path)).subtype == "PCM_16"
    assert [p.name for p in path.parent.iterdir()] == ["out.wav"]  # no temp file left behind

    write_wav(path, np.array([2.0, -2.0, 0.5], dtype=np.float32), 8000)  # overwrite; clips to [-1, 1]
    back, sr = load_audio(path)
    assert sr == 8000 and np.allclose(back, [1.0, -1.0, 0.5], atol=1e-3)


def test_write_wav_failure_keeps_old_file(tmp_path):
    path = tmp_path / "keep.wav"
    write_wav(path, np.full(100, 0.5, dtype=np.float32), 8000)
    before = path.read_bytes()
    with pytest.raises(Exception):  # noqa: B017 - any failure to encode will do
        write_wav(path, np.zeros((2, 2, 2), dtype=np.float32), 8000)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["keep.wav"]


@pytest.mark.parametrize("rate", [0, -1])
def test_write_wav_rejects_bad_rate(tmp_path, rate):
    with pytest.raises(AudioError, match="sample rate"):
        write_wav(tmp_path / "x.wav", np.zeros(10, dtype=np.float32), rate)
    assert not (tmp_path / "x.wav").exists()


def test_file_hash(make_audio):
    a = make_audio.tone("a.wav", freq=300)
    b = make_audio.tone("b.wav", freq=300)
    c = make_audio.tone("c.wav", freq=301)
    assert file_hash(a) == file_hash(b) != file_hash(c)
    assert len(file_hash(a)) == 64
