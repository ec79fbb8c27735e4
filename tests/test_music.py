"""data/music.py: rendered tracks carry their parameters, captions name them, playlists share a theme."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

from auralm.core.errors import ConfigError, ManifestError
from auralm.data import music
from auralm.data.music import (
    MusicConfig,
    caption_attributes,
    draw_track,
    plan_corpus,
    read_corpus,
    render_track,
)

TINY = {"playlists": [8, 3, 3], "tracks": [36, 36, 36], "seconds": 1.0, "min_tracks": 3, "max_tracks": 5}


def test_render_depends_on_every_parameter():
    p = draw_track(np.random.default_rng(0), {"instrument": "organ"})
    base = render_track(p, 1.0)
    assert base.dtype == np.float32 and base.shape == (16000,) and np.abs(base).max() <= 1.0
    for key, other in (("instrument", "bell"), ("tempo", p["tempo"] + 30), ("mode", "minor" if p["mode"] == "major" else "major"),
                       ("register", "high" if p["register"] != "high" else "low"), ("drums", not p["drums"])):
        assert not np.allclose(render_track({**p, key: other}, 1.0), base), key
    soft, loud = render_track({**p, "loudness": "soft"}, 1.0), render_track({**p, "loudness": "loud"}, 1.0)
    assert np.abs(loud).max() > 2 * np.abs(soft).max()
    assert np.array_equal(render_track(p, 1.0), base)  # deterministic


def test_every_instrument_renders():
    for inst in music.INSTRUMENTS:
        wav = render_track(draw_track(np.random.default_rng(1), {"instrument": inst}), 0.5)
        assert np.isfinite(wav).all() and np.abs(wav).max() > 0.1


def test_track_captions_name_the_attributes():
    rng = np.random.default_rng(0)
    for _ in range(30):
        p = draw_track(rng)
        caps = music.track_captions(p, 5, rng)
        assert len(set(caps)) >= 4
        for c in caps:
            assert caption_attributes(c) == {"instrument": p["instrument"], "tempo_word": p["tempo_word"], "mode": p["mode"]}, c


def test_caption_attributes_ambiguous_is_none():
    assert caption_attributes("slow and fast organ or bell in major")["tempo_word"] is None
    assert caption_attributes("a chiptune tune")["instrument"] == "chiptune"


def test_playlists_share_their_theme_and_splits_are_disjoint():
    tracks, playlists = plan_corpus(MusicConfig(out="x", **TINY))
    by_id = {t["id"]: t for t in tracks}
    assert len(playlists) == 14
    for p in playlists:
        members = [by_id[t]["params"] for t in p["tracks"]]
        assert 3 <= len(members) <= 5 and len(set(p["tracks"])) == len(members)
        assert all(by_id[t]["split"] == p["split"] for t in p["tracks"])  # held-out playlists hold held-out tracks
        key = music.THEME_KEYS[p["theme"]["kind"]]
        assert all(m[key] == p["theme"]["value"] for m in members)
        assert set(p["tags"]) <= set(music.TAG_VOCAB)
        assert len(p["metadata"]) == music.TEMPO_BINS and sum(p["metadata"]) == pytest.approx(1.0, abs=1e-3)
        assert len(p["captions"]) == 5


def test_synth_music_writes_the_corpus(tmp_path):
    from auralm.__main__ import main

    out = tmp_path / "music"
    assert main(["synth", "music", "--out", str(out), "playlists=[4,2,2]", "tracks=[12,12,12]", "seconds=0.5",
                 "max_tracks=4", "no_tags_frac=0.5"]) == 0
    tracks, playlists = read_corpus(out)
    assert len(tracks) == 36 and len(playlists) == 8
    wav, sr = sf.read(out / tracks["test-t00000"]["audio"])
    assert sr == 16000 and len(wav) == 8000
    rows = [json.loads(x) for x in (out / "manifest.jsonl").read_text().splitlines()]
    assert len(rows) == 36 and rows[0]["meta"]["params"]["instrument"] in music.INSTRUMENTS
    assert json.loads((out / "vocab.json").read_text())["tags"] == list(music.TAG_VOCAB)


def test_bad_config_and_corpus(tmp_path):
    with pytest.raises(ConfigError, match="at least max_tracks"):
        MusicConfig(out="x", playlists=[2, 0, 0], tracks=[3, 0, 0])
    with pytest.raises(ManifestError, match="not a music corpus"):
        read_corpus(tmp_path)
    (tmp_path / "tracks.jsonl").write_text(json.dumps({"id": "t1"}) + "\n")
    (tmp_path / "playlists.jsonl").write_text(json.dumps({"id": "p1", "tracks": []}) + "\n")
    with pytest.raises(ManifestError, match="'p1' has no tracks"):
        read_corpus(tmp_path)
