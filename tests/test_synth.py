"""Tests of `auralm synth speech` (rendering needs espeak-ng or flite; skipped without them)."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest

from auralm.__main__ import main
from auralm.core.errors import ConfigError, ToolMissingError
from auralm.data import synth, text_sources
from auralm.data.audio import audio_info
from auralm.data.manifest import read_manifest

HAVE_ESPEAK = shutil.which("espeak-ng") is not None
HAVE_FLITE = shutil.which("flite") is not None
needs_engine = pytest.mark.skipif(not (HAVE_ESPEAK or HAVE_FLITE), reason="needs espeak-ng or flite")
needs_both = pytest.mark.skipif(not (HAVE_ESPEAK and HAVE_FLITE), reason="needs espeak-ng and flite")


def _cfg(out: Path, **kw) -> synth.SynthConfig:
    return synth.SynthConfig(out=str(out), **{"n": 8, "jobs": 2, **kw})


def _folder_hash(folder: Path) -> str:
    """sha256 over every file's relative path and bytes, config.yaml (which names the folder) aside."""
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file() and p.name != "config.yaml":
            h.update(p.relative_to(folder).as_posix().encode() + b"\0" + p.read_bytes())
    return h.hexdigest()


@needs_engine
def test_files_and_manifest_consistent(tmp_path):
    manifest = synth.synth_speech(_cfg(tmp_path / "c", seed=5))
    assert manifest == tmp_path / "c" / "manifest.jsonl"
    rows = read_manifest(manifest)
    assert len(rows) == 8 and len({r.id for r in rows}) == 8
    for row in rows:
        info = audio_info(row.audio_path())
        assert (info.sample_rate, info.channels, row.sample_rate) == (16000, 1, 16000)
        assert row.duration == pytest.approx(info.duration, abs=1e-3) and row.duration > 0.5
        assert row.audio_path().with_suffix(".txt").read_text() == row.text + "\n"
        assert row.split in ("train", "valid", "test")
        assert row.source == text_sources.sentence_id(row.text)
        assert set(row.meta) == {"engine", "voice", "rate", "pitch", "text_source"}
        assert row.meta["text_source"] == "fortunes"  # the default source (the embedded list where none is installed)

    saved = synth.SynthConfig.from_yaml(tmp_path / "c" / "config.yaml")
    assert saved.n == 8 and saved.seed == 5


@needs_engine
def test_same_seed_identical_other_seed_differs(tmp_path):
    a = _folder_hash(Path(synth.synth_speech(_cfg(tmp_path / "a", n=6, seed=3)).parent))
    b = _folder_hash(Path(synth.synth_speech(_cfg(tmp_path / "b", n=6, seed=3, jobs=1)).parent))
    assert a == b
    texts = {r.text for r in read_manifest(tmp_path / "a" / "manifest.jsonl")}
    synth.synth_speech(_cfg(tmp_path / "d", n=6, seed=4))
    assert texts != {r.text for r in read_manifest(tmp_path / "d" / "manifest.jsonl")}


@needs_engine
def test_rerun_skips_valid_files_and_repairs_missing(tmp_path, capsys):
    cfg = _cfg(tmp_path / "r", n=6)
    manifest = synth.synth_speech(cfg)
    before, first = _folder_hash(tmp_path / "r"), manifest.read_bytes()
    rows = read_manifest(manifest)
    kept, lost = rows[0].audio_path(), rows[1].audio_path()
    mtime = kept.stat().st_mtime_ns
    lost.unlink()
    rows[2].audio_path().with_suffix(".txt").write_text("wrong\n")
    (tmp_path / "r" / "wavs" / "999999-0123abcd.wav").write_bytes(b"stale")
    capsys.readouterr()
    synth.synth_speech(cfg)
    assert "2 rendered, 4 reused" in capsys.readouterr().err
    assert kept.stat().st_mtime_ns == mtime and lost.is_file()
    assert manifest.read_bytes() == first and _folder_hash(tmp_path / "r") == before


@needs_engine
def test_text_lines_in_order_cycling_voices(tmp_path):
    lines = ["The first line is here.", "", "Second comes next!", "A third one, please.", "Four.",
             "Five little ducks went swimming.", "Six is never spoken."]  # fmt: skip
    text = tmp_path / "lines.txt"
    text.write_text("\n".join(lines) + "\n")
    voices = synth.available_voices(["espeak-ng:en-us", "flite:slt", "espeak-ng:en-gb+f2", "flite:kal16"])
    synth.synth_speech(_cfg(tmp_path / "t", n=5, text=str(text), voices=voices))
    rows = read_manifest(tmp_path / "t" / "manifest.jsonl")
    assert [r.text for r in rows] == [ln for ln in lines if ln][:5]
    assert [f"{r.meta['engine']}:{r.meta['voice']}" for r in rows] == [voices[i % len(voices)] for i in range(5)]
    assert synth.SynthConfig.from_yaml(tmp_path / "t" / "config.yaml").n == 5


def test_split_is_per_sentence_and_eval_voices_only_in_test():
    voices = ["espeak-ng:en-us", "espeak-ng:en-gb", "flite:slt", "flite:awb"]
    cfg = synth.SynthConfig(out="unused", n=600, voices=voices, eval_voices=["awb"], valid_frac=0.2, test_frac=0.2)
    specs = synth.plan_clips(cfg, text_sources.embedded_sentences())
    split_of: dict[str, set[str]] = {}
    for s in specs:
        split_of.setdefault(s.source, set()).add(s.split)
        assert (s.voice == "awb") == (s.split == "test")
    assert all(len(v) == 1 for v in split_of.values())
    assert {next(iter(v)) for v in split_of.values()} == {"train", "valid", "test"}
    assert len({(s.voice, s.rate, s.pitch) for s in specs}) > 100
    # a sentence differing only in case/punctuation is the same sentence, so it shares the split
    assert text_sources.sentence_id("Hello there!") == text_sources.sentence_id("hello, there.")


def test_plan_is_seeded_and_prefix_stable():
    sents = text_sources.embedded_sentences()
    plan = synth.plan_clips(synth.SynthConfig(out="x", n=30, seed=1), sents)
    assert synth.plan_clips(synth.SynthConfig(out="x", n=10, seed=1), sents) == plan[:10]
    assert synth.plan_clips(synth.SynthConfig(out="x", n=30, seed=2), sents) != plan


@pytest.mark.parametrize("n", ["0", "-3"])
def test_nonpositive_n_is_a_clear_error(tmp_path, capsys, n):
    assert main(["synth", "speech", "--out", str(tmp_path / "o"), "--n", n]) == 2
    err = capsys.readouterr().err
    assert "auralm synth speech: error:" in err and "number of clips" in err
    assert not (tmp_path / "o").exists()


def test_config_validation():
    with pytest.raises(ConfigError, match="engine:voice"):
        synth.SynthConfig(out="x", voices=["festival:kal"])
    with pytest.raises(ConfigError, match="none is left"):
        synth.SynthConfig(out="x", voices=["flite:slt"], eval_voices=["slt"])
    with pytest.raises(ConfigError, match="espeak_rate"):
        synth.SynthConfig(out="x", espeak_rate=[200, 100])
    with pytest.raises(ConfigError, match="unknown config key"):
        synth.SynthConfig.from_dict({"out": "x", "speed": 2})


def test_missing_engines(monkeypatch, capsys):
    monkeypatch.setattr(synth.shutil, "which", lambda name: None)
    with pytest.raises(ToolMissingError, match="espeak-ng or flite"):
        synth.available_voices(synth.DEFAULT_VOICES)


@needs_both
def test_one_engine_missing_uses_the_other(monkeypatch, capsys):
    real = shutil.which
    monkeypatch.setattr(synth.shutil, "which", lambda name: None if name == "flite" else real(name))
    voices = synth.available_voices(synth.DEFAULT_VOICES)
    assert voices and all(v.startswith("espeak-ng:") for v in voices)
    assert "flite is not installed" in capsys.readouterr().err


@needs_engine
def test_cli_via_main_with_override(tmp_path):
    out = tmp_path / "m"
    assert main(["synth", "speech", "--out", str(out), "--n", "6", "--seed", "2", "trim_silence=false"]) == 0
    assert len(read_manifest(out / "manifest.jsonl")) == 6
    assert synth.SynthConfig.from_yaml(out / "config.yaml").trim_silence is False


def test_parse_fortunes_cleans_and_filters():
    db = (
        "A short and simple fortune.\n%\n"
        "Too short.\n%\n"
        "Wise words are here today.\n\t\t-- Somebody Famous\n%\n"
        "Bank error in your favor.  Collect $200.\n%\n"
        "\u201cQuoted caf\u00e9 words!!!\u201d said she.\n%\n"
        "Line one\nline two\nline three\nline four.\n%\n"
        "a short AND simple fortune!\n%\n"
        + " ".join(["word"] * 25) + "\n"
    )  # fmt: skip
    got = text_sources.dedupe(text_sources.parse_fortunes(db))
    assert got == ["A short and simple fortune.", "Wise words are here today.", '"Quoted cafe words!" said she.']


def test_fallback_sentences_when_fortunes_absent(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(text_sources, "FORTUNES_DIR", tmp_path)
    sents = synth.load_sentences(synth.SynthConfig(out="x"))
    assert sents == text_sources.embedded_sentences() and len(sents) >= 50
    assert "embedded sentence list" in capsys.readouterr().err


def test_text_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        text_sources.text_file_lines(tmp_path / "nope.txt")
    (tmp_path / "blank.txt").write_text("\n  \n")
    with pytest.raises(ConfigError, match="no non-empty lines"):
        text_sources.text_file_lines(tmp_path / "blank.txt")


def test_word_lists_were_retired():
    with pytest.raises(ConfigError, match="word_lists"):  # probe 9 of docs/s1-alignment.md: they lost per minute
        synth.SynthConfig.from_dict({"out": "x", "word_lists": 100})
    assert not hasattr(text_sources, "word_lists")
