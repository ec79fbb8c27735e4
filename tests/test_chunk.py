"""Tests of `auralm chunk`: exact word chunking, overlap, timing parsers, silence cuts, and the CLI end to end."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import yaml

from auralm.__main__ import main
from auralm.core.errors import ConfigError
from auralm.data.audio import load_audio, write_wav
from auralm.data.chunk import (
    ChunkConfig,
    chunk_by_silence,
    chunk_by_timings,
    read_srt,
    read_vtt,
    read_word_json,
    split_text,
    voiced_seconds,
)
from auralm.data.manifest import read_manifest, write_manifest
from auralm.data.timings import TimingsError, Word, read_timings

SR = 16000


def random_words(n: int, seed: int = 0) -> list[Word]:
    rng = random.Random(seed)
    words, t = [], rng.uniform(0, 1)
    for i in range(n):
        dur = rng.uniform(0.05, 1.2)
        words.append(Word(f"w{i}", round(t, 3), round(t + dur, 3)))
        t += dur + rng.choice([0.0, 0.02, 0.1, 0.4, 1.5])
    return words


# -- chunk_by_timings --------------------------------------------------------------------------
@pytest.mark.parametrize("max_seconds,pad,seed", [(3.0, 0.0, 0), (5.0, 0.1, 1), (1.3, 0.2, 2), (20.0, 0.1, 3)])
def test_every_word_in_exactly_one_chunk(max_seconds: float, pad: float, seed: int) -> None:
    words = random_words(300, seed)
    chunks = chunk_by_timings(words, max_seconds, min_seconds=min(1.0, max_seconds / 2), pad=pad)
    assert len(chunks) > 1 or max_seconds == 20.0
    flat = [w for c in chunks for w in c.words]
    assert flat == words  # no word lost, duplicated or reordered
    assert " ".join(c.text for c in chunks) == " ".join(w.text for w in words)
    for c in chunks:
        assert c.duration <= max_seconds + 1e-9
        assert c.exact
        inside = [w for w in words if w.start >= c.start - 1e-9 and w.end <= c.end + 1e-9]
        assert inside == list(c.words), "a chunk's span must hold exactly its own words"
    for a, b in zip(chunks, chunks[1:]):
        assert a.end <= b.start + 1e-9  # no audio shared without overlap


def test_min_seconds_rebalances_the_last_chunk() -> None:
    words = [Word(f"w{i}", i * 1.0, i * 1.0 + 0.9) for i in range(11)]  # spans 0..10.9
    plain = chunk_by_timings(words, 10.0)
    assert [len(c.words) for c in plain] == [10, 1]
    balanced = chunk_by_timings(words, 10.0, min_seconds=3.0)
    assert [len(c.words) for c in balanced] == [7, 4]  # 0..6.9 and 7..10.9
    assert all(c.duration >= 3.0 for c in balanced)


def test_word_longer_than_max_gets_its_own_chunk() -> None:
    words = [Word("a", 0, 1), Word("looooong", 1.5, 9.0), Word("b", 9.2, 9.8), Word("c", 10, 10.5)]
    chunks = chunk_by_timings(words, 3.0)
    assert [c.text for c in chunks] == ["a", "looooong", "b c"]
    assert chunks[1].duration == pytest.approx(7.5)


def test_overlap_repeats_the_tail_words() -> None:
    words = [Word(f"w{i}", i * 0.5, i * 0.5 + 0.4) for i in range(60)]
    chunks = chunk_by_timings(words, 5.0, overlap=1.6)
    seen = [w for c in chunks for w in c.words]
    assert set(seen) == set(words)
    assert len(seen) > len(words)  # some words repeated
    for prev, nxt in zip(chunks, chunks[1:]):
        assert nxt.duration <= 5.0 + 1e-9
        repeated = [w for w in nxt.words if w in prev.words]
        assert repeated == list(prev.words[-len(repeated) :])  # a suffix of the previous chunk
        assert repeated and all(w.start >= prev.end - 1.6 - 1e-9 for w in repeated)
        assert len(repeated) < len(nxt.words)  # every chunk brings new words
        assert nxt.start > prev.start
    assert chunks[0].words[0] == words[0] and chunks[-1].words[-1] == words[-1]


def test_overlap_skipped_when_it_leaves_no_room() -> None:
    words = [Word("a", 0, 1.0), Word("b", 1.0, 2.0), Word("long", 2.0, 4.9)]
    chunks = chunk_by_timings(words, 3.0, overlap=2.5)
    assert [c.text for c in chunks] == ["a b", "long"]


def test_invalid_limits_and_unsorted_words() -> None:
    words = [Word("a", 0, 1)]
    with pytest.raises(ConfigError, match="overlap"):
        chunk_by_timings(words, 2.0, overlap=2.0)
    with pytest.raises(ConfigError, match="max-seconds"):
        chunk_by_timings(words, 0.0)
    with pytest.raises(TimingsError, match="sorted"):
        chunk_by_timings([Word("a", 2, 3), Word("b", 0, 1)], 5.0)
    with pytest.raises(ConfigError, match="greater than overlap"):
        ChunkConfig(out="x.jsonl", manifest="m.jsonl", max_seconds=5, overlap=5)


# -- parsers ---------------------------------------------------------------------------------------
SRT = """1
00:00:00,500 --> 00:00:02,000
<i>Hello</i> there,

2
00:00:02,500 --> 00:00:04,000 X1:10 X2:20
general {\\an8}Kenobi!

00:00:04,200 --> 00:00:05,000
no index line
"""

VTT = """WEBVTT - a title
Kind: captions

NOTE this is a comment
spanning lines

intro
00:00.500 --> 00:02.000 align:start
<v Obi>Hello</v> there &amp; you

00:00:02.500 --> 00:00:04.000
second cue
"""


def test_read_srt(tmp_path: Path) -> None:
    path = tmp_path / "a.srt"
    path.write_text("\ufeff" + SRT.replace("\n", "\r\n"), encoding="utf-8")
    cues = read_srt(path)
    assert [(c.text, c.start, c.end) for c in cues] == [
        ("Hello there,", 0.5, 2.0), ("general Kenobi!", 2.5, 4.0), ("no index line", 4.2, 5.0)]
    assert all(c.exact for c in cues)
    words = read_srt(path, spread=True)
    assert [w.text for w in words] == "Hello there, general Kenobi! no index line".split()
    assert not any(w.exact for w in words)
    assert words[0].start == 0.5 and words[1].end == 2.0 and words[0].end == words[1].start


def test_read_vtt(tmp_path: Path) -> None:
    path = tmp_path / "a.vtt"
    path.write_text(VTT, encoding="utf-8")
    assert [(c.text, c.start, c.end) for c in read_vtt(path)] == [
        ("Hello there & you", 0.5, 2.0), ("second cue", 2.5, 4.0)]
    assert read_timings(path) == read_vtt(path)


def test_read_word_json_shapes(tmp_path: Path) -> None:
    plain = tmp_path / "a.json"
    plain.write_text(json.dumps([{"word": " Hi", "start": 0.1, "end": 0.3}, {"text": "you", "start": 0.4, "end": 0.6}]))
    assert read_word_json(plain) == [Word("Hi", 0.1, 0.3), Word("you", 0.4, 0.6)]
    segs = tmp_path / "b.json"
    segs.write_text(json.dumps({"segments": [{"words": [{"word": "x", "start": 1, "end": 2}]},
                                             {"words": [{"word": "y", "start": 2, "end": 3}]}]}))
    assert [w.text for w in read_word_json(segs)] == ["x", "y"]


@pytest.mark.parametrize("name,content,match", [
    ("bad.srt", "1\n00:00:01,000 -> 00:00:02,000\nhello\n", r"line 2: expected a timing line"),
    ("bad2.srt", "1\n00:00:03,000 --> 00:00:02,000\nhello\n", r"line 2: cue ends .* before it starts"),
    ("empty.srt", "\n\n", "no subtitle cues"),
    ("bad.vtt", "00:01.000 --> 00:02.000\nhello\n", "not a WebVTT file"),
    ("bad2.vtt", "WEBVTT\n\nhello there\n", r"line 3: expected a cue timing line"),
    ("bad.json", '[{"word": "a", "start": 0.1}]', r"word 0: 'a' has no numeric 'end'"),
    ("bad2.json", '[{"word": "a", "start": 0.1, "end": 0.2},', "not valid JSON"),
    ("bad3.json", '{"foo": 1}', "expected a JSON list of words"),
    ("bad.txt", "x", "unknown timings format"),
])
def test_malformed_timings(tmp_path: Path, name: str, content: str, match: str) -> None:
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    with pytest.raises(TimingsError, match=match):
        read_timings(path)


# -- silence cutting ---------------------------------------------------------------------------------
def tone(seconds: float, freq: float = 220.0, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(round(seconds * SR))) / SR
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def silence(seconds: float) -> np.ndarray:
    rng = np.random.default_rng(0)
    return (rng.standard_normal(int(round(seconds * SR))) * 1e-4).astype(np.float32)  # -80 dB hiss


def tones_with_gaps() -> tuple[np.ndarray, list[tuple[float, float]]]:
    parts, gaps, t = [], [], 0.0
    for i, (on, off) in enumerate([(2.0, 0.6), (1.5, 0.8), (2.2, 0.5), (3.0, 0.7), (1.0, 0.6), (2.5, 0.0)]):
        parts += [tone(on, 200 + 40 * i), silence(off)]
        t += on
        if off:
            gaps.append((t, t + off))
        t += off
    return np.concatenate(parts), gaps


def test_silence_cuts_land_in_silences() -> None:
    wav, gaps = tones_with_gaps()
    spans = chunk_by_silence(wav, SR, 5.0, min_seconds=1.0, min_silence=0.3)
    total = len(wav) / SR
    assert spans[0][0] == 0 and spans[-1][1] == pytest.approx(total)
    assert all(a[1] == b[0] for a, b in zip(spans, spans[1:]))
    assert all(b - a <= 5.0 + 1e-9 for a, b in spans)
    assert len(spans) >= 4
    for _, cut in spans[:-1]:
        assert any(g0 < cut < g1 for g0, g1 in gaps), f"cut at {cut} is not in a silence {gaps}"
    voiced = voiced_seconds(wav, SR, spans)
    assert sum(voiced) == pytest.approx(2.0 + 1.5 + 2.2 + 3.0 + 1.0 + 2.5, abs=0.1)


def test_no_silence_gives_hard_cuts_at_max() -> None:
    spans = chunk_by_silence(tone(12.0), SR, 5.0, min_seconds=1.0)
    assert spans == [(0.0, 5.0), (5.0, 10.0), (10.0, 12.0)]
    spans = chunk_by_silence(tone(10.5), SR, 5.0, min_seconds=1.0)  # keeps the last chunk >= min_seconds
    assert spans == [(0.0, 5.0), (5.0, 9.5), (9.5, 10.5)]


def test_split_text_keeps_every_word_once() -> None:
    text = "the quick brown fox jumps over the lazy dog again and again"
    parts = split_text(text, [1.0, 0.0, 3.0, 1.0])
    assert " ".join(p for p in parts if p) == text
    assert parts[1] == ""
    lengths = [len(p) for p in parts]
    assert lengths[2] > lengths[0] and lengths[2] > lengths[3]


# -- the command end to end --------------------------------------------------------------------------
@pytest.fixture()
def corpus(tmp_path: Path) -> Path:
    """Two recordings: `timed` has word timings (JSON), `plain` has only a transcript."""
    wav, _ = tones_with_gaps()  # 14.9 s
    write_wav(tmp_path / "audio" / "timed.wav", wav, SR)
    write_wav(tmp_path / "audio" / "plain.wav", wav, SR)
    starts = [0.0, 2.6, 4.9, 7.6, 11.3, 12.9]
    lengths = [2.0, 1.5, 2.2, 3.0, 1.0, 2.0]
    words = []
    for i, (s, n) in enumerate(zip(starts, lengths)):
        for j in range(4):  # four words per tone
            words.append({"word": f"t{i}w{j}", "start": s + j * n / 4, "end": s + (j + 1) * n / 4 - 0.05})
    (tmp_path / "timings").mkdir()
    (tmp_path / "timings" / "timed.json").write_text(json.dumps(words))
    text = " ".join(w["word"] for w in words)
    write_manifest(tmp_path / "in.jsonl", [
        {"id": "timed", "audio": "audio/timed.wav", "text": text, "split": "valid", "source": "spk1"},
        {"id": "plain", "audio": "audio/plain.wav", "text": "one two three four five six seven eight nine ten",
         "split": "test"},
    ])
    return tmp_path


def test_cli_end_to_end(corpus: Path) -> None:
    out = corpus / "out" / "chunks.jsonl"
    rc = main(["chunk", "--manifest", str(corpus / "in.jsonl"), "--out", str(out), "--max-seconds", "5",
               "--timings-dir", str(corpus / "timings"), "pad=0.05"])
    assert rc == 0
    rows = read_manifest(out)
    timed = [r for r in rows if r.meta["parent"] == "timed"]
    plain = [r for r in rows if r.meta["parent"] == "plain"]
    assert [r.id for r in timed] == [f"timed-{k:04d}" for k in range(len(timed))]
    assert len(timed) >= 3 and len(plain) >= 3
    words = json.loads((corpus / "timings" / "timed.json").read_text())
    assert " ".join(r.text for r in timed) == " ".join(w["word"] for w in words)
    assert " ".join(r.text for r in plain) == "one two three four five six seven eight nine ten"
    assert {r.meta["text_split"] for r in timed} == {"exact"}
    assert {r.meta["text_split"] for r in plain} == {"approximate"}
    assert {r.source for r in timed} == {"spk1"} and {r.split for r in timed} == {"valid"}
    assert {r.source for r in plain} == {"plain"} and {r.split for r in plain} == {"test"}
    for r in rows:
        assert r.end - r.start <= 5.0 + 1e-6 and r.duration == pytest.approx(r.end - r.start)
        assert r.audio_path().resolve() == (corpus / "audio" / f"{r.meta['parent']}.wav").resolve()
        assert r.sample_rate == SR
        wav, sr = load_audio(r.audio_path(), start=r.start, end=r.end)
        assert sr == SR and len(wav) == pytest.approx(r.duration * SR, abs=2)
    for r in timed:  # each chunk's span holds exactly its words
        inside = [w["word"] for w in words if w["start"] >= r.start - 1e-6 and w["end"] <= r.end + 1e-6]
        assert " ".join(inside) == r.text
    saved = yaml.safe_load((corpus / "out" / "chunks.config.yaml").read_text())
    assert saved["max_seconds"] == 5.0 and saved["pad"] == 0.05
    assert ChunkConfig.from_dict(saved).timings_dir == str(corpus / "timings")


def test_cli_write_audio_and_single_recording(corpus: Path) -> None:
    srt = corpus / "timed.srt"
    srt.write_text("1\n00:00:00,000 --> 00:00:02,000\nfirst cue\n\n2\n00:00:02,600 --> 00:00:04,100\nsecond\n\n"
                   "3\n00:00:04,900 --> 00:00:07,100\nthird cue here\n")
    out = corpus / "one.jsonl"
    rc = main(["chunk", "--audio", str(corpus / "audio" / "timed.wav"), "--timings", str(srt), "--out", str(out),
               "--max-seconds", "5", "--write-audio"])
    assert rc == 0
    rows = read_manifest(out)
    assert [r.text for r in rows] == ["first cue second", "third cue here"]
    assert all(r.start is None and r.audio.startswith("one_audio/") for r in rows)
    for r in rows:
        wav, sr = load_audio(r.audio_path())
        assert sr == SR and len(wav) / SR == pytest.approx(r.duration, abs=1e-3) and r.duration <= 5.0
    names = sorted(p.name for p in (corpus / "one_audio").iterdir())
    assert names == [".auralm-chunks", "timed-0000.wav", "timed-0001.wav"]
    assert not [p for p in corpus.iterdir() if p.name.startswith(".") and p.name.endswith(".tmp")]
    # a re-run replaces its own folder, but never a folder it did not make
    assert main(["chunk", "--audio", str(corpus / "audio" / "timed.wav"), "--timings", str(srt), "--out",
                 str(out), "--write-audio", "--max-seconds", "10"]) == 0
    assert sorted(p.name for p in (corpus / "one_audio").iterdir()) == [".auralm-chunks", "timed-0000.wav"]
    assert main(["chunk", "--audio", str(corpus / "audio" / "timed.wav"), "--timings", str(srt), "--out",
                 str(out), "--write-audio", "--audio-dir", str(corpus / "audio")]) == 2
    assert (corpus / "audio" / "plain.wav").exists()


def test_cli_errors(corpus: Path, capsys: pytest.CaptureFixture[str]) -> None:
    audio = str(corpus / "audio" / "timed.wav")
    late = corpus / "late.json"
    late.write_text(json.dumps([{"word": "a", "start": 1, "end": 2}, {"word": "b", "start": 15.5, "end": 16.0}]))
    bad = corpus / "bad.srt"
    bad.write_text("1\n00:00:01,000 --> 00:00:02,000\nok\n\n2\nnot a time\nhello\n")
    cases = [
        (["--timings", str(late)], "'b' ends at 16.00s but"),
        (["--timings", str(bad)], "line 6: expected a timing line"),
        (["--max-seconds", "2", "--overlap", "2"], "must be greater than overlap"),
        (["--min-seconds", "3", "--max-seconds", "4"], "min-seconds"),
        (["bogus_key=1"], "unknown config key"),
    ]
    for extra, message in cases:
        rc = main(["chunk", "--audio", audio, "--out", str(corpus / "x.jsonl"), *extra])
        err = capsys.readouterr().err
        assert rc == 2 and message in err, (extra, err)
    assert not (corpus / "x.jsonl").exists()
    rc = main(["chunk", "--manifest", str(corpus / "in.jsonl"), "--out", str(corpus / "y.jsonl"),
               "--timings-dir", str(corpus / "timings"), "--require-timings"])
    assert rc == 2 and "row 'plain': no timings file" in capsys.readouterr().err


def test_rows_with_spans_and_meta_timings(corpus: Path) -> None:
    """Two rows cover halves of one file and share one timings file named in meta.timings."""
    write_manifest(corpus / "spans.jsonl", [
        {"id": "a", "audio": "audio/timed.wav", "start": 0.0, "end": 7.5, "meta": {"timings": "timings/timed.json"}},
        {"id": "b", "audio": "audio/timed.wav", "start": 7.5, "end": 14.9, "meta": {"timings": "timings/timed.json"}},
    ])
    out = corpus / "spans_out.jsonl"
    assert main(["chunk", "--manifest", str(corpus / "spans.jsonl"), "--out", str(out), "--max-seconds", "4"]) == 0
    rows = read_manifest(out)
    words = [w["word"] for w in json.loads((corpus / "timings" / "timed.json").read_text())]
    assert " ".join(r.text for r in rows) == " ".join(words)
    for r in rows:
        lo, hi = (0.0, 7.5) if r.meta["parent"] == "a" else (7.5, 14.9)
        assert lo <= r.start < r.end <= hi and "timings" not in r.meta
    assert {r.meta["parent"] for r in rows} == {"a", "b"}
