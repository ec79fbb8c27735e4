"""``auralm prepare``: pairing, bad-file reporting, --skip-bad, splits and the saved config."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from auralm.__main__ import main
from auralm.core.errors import ConfigError
from auralm.data.manifest import read_manifest, split_for_source
from auralm.data.prepare import PrepareConfig, PrepareError, config_path_for, prepare

GOOD = {"a": "hello world", "sub/b": "second  clip\n", "c": " third\tone "}


def seed_corpus(make_audio, root: str = "corpus") -> Path:
    """Three good pairs, one of them in a subfolder."""
    for i, (stem, text) in enumerate(GOOD.items()):
        make_audio.tone(f"{root}/{stem}.wav", seconds=0.1 * (i + 1), freq=300 + 100 * i)
        make_audio.text(f"{root}/{stem}.txt", text)
    return make_audio.root / root


def run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    code = main(["prepare", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def manifest_ids(path: Path) -> set[str]:
    return {row.id for row in read_manifest(path)}


# Each bad case: (what to create under the corpus, the file that must be named, words in the reason).
BadMaker = Callable[[object, Path], Path]
BAD_CASES: dict[str, tuple[BadMaker, str]] = {
    "corrupt_wav": (lambda m, d: (m.corrupt(d / "bad.wav"), m.text(d / "bad.txt", "x"))[0], "cannot read"),
    "empty_wav": (lambda m, d: (m.empty(d / "bad.wav"), m.text(d / "bad.txt", "x"))[0], "empty"),
    "header_only_wav": (lambda m, d: (m.header_only(d / "bad.wav"), m.text(d / "bad.txt", "x"))[0], "no samples"),
    "transcript_without_audio": (lambda m, d: m.text(d / "bad.txt", "orphan text"), "no audio file"),
    "audio_without_transcript": (lambda m, d: m.tone(d / "bad.wav"), "no transcript"),
    "zero_rate_wav": (lambda m, d: (m.zero_rate(d / "bad.wav"), m.text(d / "bad.txt", "x"))[0], "sample rate is 0"),
    "silent_wav": (lambda m, d: (m.silent(d / "bad.wav"), m.text(d / "bad.txt", "x"))[0], "silent"),
    "empty_transcript": (lambda m, d: (m.tone(d / "bad.wav"), m.text(d / "bad.txt", " \n\t"))[1], "empty"),
}


def _check_fails_then_skips(case: str, make_audio, capsys) -> None:
    maker, reason = BAD_CASES[case]
    corpus = seed_corpus(make_audio)
    bad = maker(make_audio, corpus)
    out = make_audio.root / "out" / "m.jsonl"

    code, stdout, stderr = run_cli(["--audio-dir", str(corpus), "--out", str(out)], capsys)
    assert code != 0
    assert str(bad) in stderr
    bad_line = next(line for line in stderr.splitlines() if str(bad) in line)
    assert reason in bad_line
    assert not out.exists() and not config_path_for(out).exists()
    assert not out.parent.exists() or not any(out.parent.iterdir())

    code, stdout, stderr = run_cli(["--audio-dir", str(corpus), "--out", str(out), "--skip-bad"], capsys)
    assert code == 0, stderr
    assert manifest_ids(out) == set(GOOD)
    assert str(bad) in stderr and "skipped" in stderr


def test_corrupt_wav(make_audio, capsys):
    _check_fails_then_skips("corrupt_wav", make_audio, capsys)


def test_empty_wav(make_audio, capsys):
    _check_fails_then_skips("empty_wav", make_audio, capsys)


def test_header_only_wav(make_audio, capsys):
    _check_fails_then_skips("header_only_wav", make_audio, capsys)


def test_transcript_without_audio(make_audio, capsys):
    _check_fails_then_skips("transcript_without_audio", make_audio, capsys)


def test_audio_without_transcript(make_audio, capsys):
    _check_fails_then_skips("audio_without_transcript", make_audio, capsys)


def test_zero_sample_rate_wav(make_audio, capsys):
    _check_fails_then_skips("zero_rate_wav", make_audio, capsys)


def test_silent_wav(make_audio, capsys):
    _check_fails_then_skips("silent_wav", make_audio, capsys)


def test_empty_transcript(make_audio, capsys):
    _check_fails_then_skips("empty_transcript", make_audio, capsys)


def test_every_bad_file_is_named_at_once(make_audio, capsys):
    corpus = seed_corpus(make_audio)
    bad = []
    for i, (maker, _) in enumerate(BAD_CASES.values()):
        sub = corpus / f"bad{i}"
        bad.append(maker(make_audio, sub))
    out = make_audio.root / "m.jsonl"
    code, _, stderr = run_cli(["--audio-dir", str(corpus), "--out", str(out)], capsys)
    assert code == 2
    assert stderr.startswith("auralm prepare: error:")
    assert [p for p in bad if str(p) not in stderr] == []
    assert f"{len(bad)} problem(s)" in stderr
    assert not out.exists()

    with pytest.raises(PrepareError) as info:
        prepare(corpus, None, out)
    assert {p.path for p in info.value.problems} == set(bad)

    report = prepare(corpus, None, out, skip_bad=True)
    assert {row.id for row in report.rows} == set(GOOD) == manifest_ids(out)
    assert len(report.problems) == len(bad)


def test_rows_and_config(make_audio, capsys):
    corpus = seed_corpus(make_audio)
    out = make_audio.root / "m.jsonl"
    code, stdout, _ = run_cli(["--audio-dir", str(corpus), "--out", str(out), "--seed", "3"], capsys)
    assert code == 0
    assert "wrote 3 row(s)" in stdout
    rows = {row.id: row for row in read_manifest(out)}
    assert rows["c"].text == "third one" and rows["sub/b"].text == "second clip"
    assert rows["sub/b"].audio == "corpus/sub/b.wav"  # relative to the manifest's folder
    assert rows["sub/b"].audio_path().resolve() == (corpus / "sub" / "b.wav").resolve()
    assert rows["a"].sample_rate == 16000 and rows["a"].duration == pytest.approx(0.1)
    assert rows["c"].duration == pytest.approx(0.3)
    for row in rows.values():
        assert row.source == row.id
        assert row.split == split_for_source(row.id, 0.1, 0.1, 3)

    cfg_path = make_audio.root / "m.config.yaml"
    assert cfg_path == config_path_for(out) and cfg_path.exists()
    saved = PrepareConfig.from_dict(yaml.safe_load(cfg_path.read_text()))
    assert saved.seed == 3 and saved.skip_bad is False
    assert Path(saved.audio_dir) == corpus.resolve() and Path(saved.transcripts_dir) == corpus.resolve()


def test_separate_transcripts_dir_and_outside_audio_paths(make_audio, capsys):
    make_audio.tone("wavs/x/one.flac")
    make_audio.tone("wavs/two.wav")
    make_audio.text("texts/x/one.txt", "uno")
    make_audio.text("texts/two.txt", "dos")
    out = make_audio.root / "manifests" / "m.jsonl"
    args = ["--audio-dir", str(make_audio.root / "wavs"), "--transcripts-dir", str(make_audio.root / "texts")]
    code, _, stderr = run_cli([*args, "--out", str(out)], capsys)
    assert code == 0, stderr
    rows = {row.id: row for row in read_manifest(out)}
    assert set(rows) == {"x/one", "two"} and rows["x/one"].text == "uno"
    assert Path(rows["two"].audio).is_absolute()  # not under the manifest's folder
    assert rows["two"].audio_path().exists()


def test_same_stem_twice_is_reported(make_audio, capsys):
    corpus = seed_corpus(make_audio)
    make_audio.tone(corpus / "a.flac")
    code, _, stderr = run_cli(["--audio-dir", str(corpus), "--out", str(make_audio.root / "m.jsonl")], capsys)
    assert code == 2 and str(corpus / "a.flac") in stderr and str(corpus / "a.wav") in stderr


def test_hidden_files_are_ignored(make_audio, capsys):
    corpus = seed_corpus(make_audio)
    make_audio.corrupt(corpus / "._a.wav")
    make_audio.text(corpus / ".cache" / "z.txt", "ignored")
    code, _, stderr = run_cli(["--audio-dir", str(corpus), "--out", str(make_audio.root / "m.jsonl")], capsys)
    assert code == 0, stderr


def test_splits_are_deterministic(make_audio):
    corpus = make_audio.root / "corpus"
    for i in range(40):
        make_audio.tone(corpus / f"r{i:02d}.wav", seconds=0.05)
        make_audio.text(corpus / f"r{i:02d}.txt", f"text {i}")
    first = make_audio.root / "one.jsonl"
    second = make_audio.root / "two.jsonl"
    prepare(corpus, None, first, valid_frac=0.2, test_frac=0.2, seed=7)
    prepare(corpus, None, second, valid_frac=0.2, test_frac=0.2, seed=7, jobs=3)
    assert first.read_bytes() == second.read_bytes()
    splits = {json.loads(line)["split"] for line in first.read_text().splitlines()}
    assert splits == {"train", "valid", "test"}
    third = make_audio.root / "three.jsonl"
    prepare(corpus, None, third, valid_frac=0.2, test_frac=0.2, seed=8)
    assert third.read_bytes() != first.read_bytes()  # the seed matters


def test_chunks_of_one_source_share_a_split(make_audio):
    corpus = make_audio.root / "corpus"
    for talk in range(12):
        for chunk in range(4):
            make_audio.tone(corpus / f"talk{talk}" / f"{chunk:03d}.wav", seconds=0.05)
            make_audio.text(corpus / f"talk{talk}" / f"{chunk:03d}.txt", f"talk {talk} chunk {chunk}")
    report = prepare(corpus, None, make_audio.root / "m.jsonl", source_regex="^([^/]+)/", valid_frac=0.3, test_frac=0.3)
    by_source: dict[str, set[str]] = {}
    for row in report.rows:
        assert row.source == row.id.split("/")[0]
        by_source.setdefault(row.source, set()).add(row.split)
    assert len(by_source) == 12
    assert all(len(splits) == 1 for splits in by_source.values())
    assert len(set().union(*by_source.values())) > 1  # sources do land in different splits


def test_empty_audio_dir_is_a_clear_error(make_audio, capsys):
    empty = make_audio.root / "nothing"
    empty.mkdir()
    out = make_audio.root / "m.jsonl"
    code, _, stderr = run_cli(["--audio-dir", str(empty), "--out", str(out)], capsys)
    assert code == 2
    assert "no audio files under" in stderr and str(empty) in stderr
    assert not out.exists()


def test_missing_audio_dir_is_a_clear_error(make_audio, capsys):
    code, _, stderr = run_cli(["--audio-dir", str(make_audio.root / "nope"), "--out", "m.jsonl"], capsys)
    assert code == 2 and "does not exist" in stderr


def test_skip_bad_with_nothing_good_left_writes_nothing(make_audio, capsys):
    make_audio.silent("corpus/a.wav")
    make_audio.text("corpus/a.txt", "hi")
    out = make_audio.root / "m.jsonl"
    code, _, stderr = run_cli(["--audio-dir", str(make_audio.root / "corpus"), "--out", str(out), "--skip-bad"], capsys)
    assert code == 2 and "no good audio/transcript pairs" in stderr
    assert not out.exists()


def test_config_validation_and_overrides(make_audio, capsys):
    corpus = seed_corpus(make_audio)
    with pytest.raises(ConfigError, match="sum below 1"):
        PrepareConfig(audio_dir="a", out="m.jsonl", valid_frac=0.6, test_frac=0.5)
    with pytest.raises(ConfigError, match="unknown"):
        PrepareConfig.from_dict({"audio_dir": "a", "out": "m.jsonl", "colour": "red"})
    out = make_audio.root / "m.jsonl"
    code, _, _ = run_cli(["--audio-dir", str(corpus), "--out", str(out), "seed=5"], capsys)
    assert code == 0 and yaml.safe_load(config_path_for(out).read_text())["seed"] == 5
    code, _, stderr = run_cli(["--audio-dir", str(corpus), "--out", str(out), "colour=red"], capsys)
    assert code == 2 and "unknown config key" in stderr
