"""The JSONL manifest: round trip, line-numbered validation, path resolution, source-hashed splits."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from auralm.core.errors import ManifestError
from auralm.data.manifest import Row, read_manifest, relative_audio, split_for_source, write_manifest


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_round_trip(tmp_path):
    rows = [
        Row(id="a", audio="a.wav", text="héllo", start=1.0, end=2.5, duration=1.5, sample_rate=16000,
            split="train", source="rec", tags=["x"], meta={"k": 1}),
        Row(id="b", text="text only", prompt="say it", label="yes"),
    ]
    path = tmp_path / "sub" / "m.jsonl"
    assert write_manifest(path, rows) == 2
    back = read_manifest(path)
    assert back == rows
    assert all(row.root == path.resolve().parent for row in back)
    first = json.loads(path.read_text(encoding="utf-8").splitlines()[1])
    assert first == {"id": "b", "text": "text only", "prompt": "say it", "label": "yes"}  # no nulls written
    assert not [p for p in path.parent.iterdir() if p.name != "m.jsonl"]  # no temp files left


def test_write_accepts_dicts_and_rejects_duplicates(tmp_path):
    path = tmp_path / "m.jsonl"
    write_manifest(path, [{"id": "a", "text": "x"}])
    assert read_manifest(path)[0].text == "x"
    with pytest.raises(ManifestError, match="duplicate id 'a'"):
        write_manifest(tmp_path / "d.jsonl", [{"id": "a", "text": "x"}, {"id": "a", "text": "y"}])
    assert not (tmp_path / "d.jsonl").exists()


def test_every_bad_line_is_reported_by_number(tmp_path):
    path = write_lines(
        tmp_path / "m.jsonl",
        [
            '{"id": "ok", "text": "fine"}',  # 1
            '{"id": "j", "text": ',  # 2 bad JSON
            '{"id": "u", "text": "x", "colour": "red"}',  # 3 unknown key
            '{"id": "t", "text": "x", "duration": "long"}',  # 4 wrong type
            '{"id": "n", "text": "x", "duration": -1.0}',  # 5 negative duration
            '{"id": "z", "audio": "z.wav", "sample_rate": 0}',  # 6 zero rate
            '{"id": "ok", "text": "again"}',  # 7 duplicate id
            "",  # 8 blank lines are skipped
            "[1, 2]",  # 9 not an object
            '{"text": "no id"}',  # 10 missing id
            '{"id": "s", "text": "x", "split": "dev"}',  # 11 unknown split
            '{"id": "b", "text": "x", "sample_rate": true}',  # 12 bool is not an int
        ],
    )
    with pytest.raises(ManifestError) as info:
        read_manifest(path)
    message = str(info.value)
    assert "10 bad line(s)" in message
    expected = {
        2: "not valid JSON",
        3: "unknown key(s) colour",
        4: "'duration' must be",
        5: "'duration' must be >= 0",
        6: "'sample_rate' must be positive",
        7: "duplicate id 'ok' (first on line 1)",
        9: "expected a JSON object",
        10: "missing required key 'id'",
        11: "'split' must be one of",
        12: "'sample_rate' must be int",
    }
    for number, words in expected.items():
        line = next((ln for ln in message.splitlines() if ln.strip().startswith(f"line {number}:")), "")
        assert words in line, f"line {number} not reported with {words!r}:\n{message}"
    assert "line 1:" not in message and "line 8:" not in message


def test_span_and_empty_fields_are_checked(tmp_path):
    path = write_lines(
        tmp_path / "m.jsonl",
        [
            '{"id": "a", "audio": "a.wav", "start": 2.0, "end": 1.0}',
            '{"id": "b", "audio": "b.wav", "start": 2.0}',
            '{"id": "", "text": "x"}',
            '{"id": "d"}',
            '{"id": "e", "text": "x", "tags": [1]}',
            '{"id": "f", "text": "x", "duration": NaN}',
            '{"id": "g", "text": "x", "tags": null, "meta": null}',  # null means none: valid
        ],
    )
    with pytest.raises(ManifestError) as info:
        read_manifest(path)
    message = str(info.value)
    assert "6 bad line(s)" in message and "line 7:" not in message
    assert "line 6: 'duration' must be a finite number" in message
    assert "'end' (1.0) must be after 'start'" in message
    assert "'start' and 'end' go together" in message
    assert "'id' is empty" in message
    assert "needs at least one of" in message
    assert "list of strings" in message


def test_empty_manifest_is_an_error(tmp_path):
    path = write_lines(tmp_path / "m.jsonl", ["", "  "])
    with pytest.raises(ManifestError, match="has no rows"):
        read_manifest(path)
    assert read_manifest(path, allow_empty=True) == []
    with pytest.raises(ManifestError, match="does not exist"):
        read_manifest(tmp_path / "missing.jsonl")


def test_audio_paths_resolve_relative_to_the_manifest(tmp_path, monkeypatch):
    data = tmp_path / "data"
    (data / "wavs").mkdir(parents=True)
    absolute = tmp_path / "elsewhere" / "x.wav"
    write_manifest(
        data / "m.jsonl",
        [Row(id="rel", audio="wavs/a.wav"), Row(id="abs", audio=str(absolute)), Row(id="none", text="t")],
    )
    monkeypatch.chdir(tmp_path)  # resolution must not depend on the working directory
    rows = {row.id: row for row in read_manifest(Path("data") / "m.jsonl")}
    assert rows["rel"].audio_path() == data.resolve() / "wavs" / "a.wav"
    assert rows["abs"].audio_path() == absolute
    with pytest.raises(ManifestError, match="has no audio"):
        rows["none"].audio_path()
    # a Row built in code (no manifest) keeps its path as written
    assert Row(id="x", audio="a.wav").audio_path() == Path("a.wav")


def test_relative_audio(tmp_path):
    manifest_dir = tmp_path / "data"
    manifest_dir.mkdir()
    assert relative_audio(manifest_dir / "wavs" / "a.wav", manifest_dir) == "wavs/a.wav"
    outside = tmp_path / "other" / "b.wav"
    assert relative_audio(outside, manifest_dir) == str(outside.resolve())
    assert Path(relative_audio(outside, manifest_dir)).is_absolute()


def test_split_for_source_is_deterministic():
    sources = [f"recording-{i}" for i in range(200)]
    first = [split_for_source(s, 0.1, 0.2, seed=1) for s in sources]
    assert first == [split_for_source(s, 0.1, 0.2, seed=1) for s in sources]
    assert first != [split_for_source(s, 0.1, 0.2, seed=2) for s in sources]
    assert set(first) <= {"train", "valid", "test"}


def test_split_for_source_rough_proportions():
    counts = Counter(split_for_source(f"src{i}", valid=0.1, test=0.2) for i in range(4000))
    assert 0.08 < counts["valid"] / 4000 < 0.12
    assert 0.18 < counts["test"] / 4000 < 0.22
    assert 0.66 < counts["train"] / 4000 < 0.74
    assert {split_for_source(f"s{i}", 0.0, 0.0) for i in range(100)} == {"train"}


@pytest.mark.parametrize("valid,test", [(-0.1, 0.1), (1.0, 0.0), (0.5, 0.5), (0.2, 1.2)])
def test_split_for_source_rejects_bad_fractions(valid, test):
    with pytest.raises(ManifestError, match="split fractions"):
        split_for_source("x", valid, test)
