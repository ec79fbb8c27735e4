"""Text sources of `auralm synth speech`: WordNet glosses, GCIDE quotations, their mixing, voices and augmentation."""

from __future__ import annotations

import gzip
import shutil
from collections import Counter

import pytest

from auralm.__main__ import main
from auralm.core.errors import ConfigError
from auralm.data import synth, text_sources
from auralm.data.audio import audio_info, load_audio
from auralm.data.manifest import read_manifest

HAVE_WORDNET = (text_sources.WORDNET_DIR / "data.noun").is_file()
HAVE_GCIDE = text_sources.GCIDE_PATH.is_file()
HAVE_ESPEAK = shutil.which("espeak-ng") is not None
HAVE_SOX = shutil.which("sox") is not None


# -- cleaning ---------------------------------------------------------------------------------------
def test_wordnet_gloss_with_brackets_and_semicolons():
    gloss = ('(of speed) less than that of sound in a designated medium; capable of flight (by [jet] engines); '
             '"aircraft flying at subsonic speeds"; "a jet [plane] at subsonic speed"; "too short"; '
             '"it was a dark and stormy night" - Bulwer-Lytton; "she said; \'go home now\' and left"')  # fmt: skip
    definitions, examples = text_sources.parse_wordnet_gloss(gloss)
    # parenthesised asides go; a definition that still holds a bracket is dropped whole
    assert definitions == ["Less than that of sound in a designated medium."]
    # examples: capitalised, full stop added; brackets, short ones, attributions and quote marks go
    assert examples == ["Aircraft flying at subsonic speeds.", "It was a dark and stormy night."]


def test_wordnet_files_parsed_past_the_licence_header(tmp_path):
    (tmp_path / "data.noun").write_text(
        "  1 This software and database is being provided to you, the LICENSEE | by Princeton\n"
        "00001740 03 n 01 entity 0 003 ~ 00001930 n 0000 | that which exists; \"the entity was real and alive\"  \n"
        "00002137 03 n 02 abstraction 0 | a general concept formed by extracting common features; "
        "\"the abstraction of a general rule from many cases\"  \n")  # fmt: skip
    (tmp_path / "data.verb").write_text("00001740 29 v 01 breathe 0 | draw air into, and expel out of, the lungs; "
                                        '"I can breathe better when the air is clean"  \n')  # fmt: skip
    text_sources._wordnet.cache_clear()
    assert text_sources.wordnet_examples(tmp_path) == [
        "The entity was real and alive.", "The abstraction of a general rule from many cases.",
        "I can breathe better when the air is clean."]  # fmt: skip
    assert text_sources.wordnet_definitions(tmp_path) == [
        "A general concept formed by extracting common features.", "Draw air into, and expel out of, the lungs."]  # fmt: skip
    assert text_sources.wordnet_examples(tmp_path / "absent") == []


GCIDE_SAMPLE = """\
Absurdity \\Ab*surd"i*ty\\, n.
   2. That which is absurd; an absurd action.
      [1913 Webster]

            His travels were full of absurdities. --Johnson.
      [1913 Webster]

            It is lamentable to remember what abundance of noble
            blood hath been shed with small benefit to the
            Christian state.                         --Raleigh.
      [1913 Webster]

   Syn: Exuberance; plenteousness; plenty.
        [1913 Webster]

            The {cinque} ports were [=e]ver the gate. --Old Play.
      [1913 Webster]

            Thou shalt not go. Thy father forbids it, and thy mother weeps at the door, and the house is
            empty without its children. Go home. --Anon.
      [1913 Webster]

         An indented note without any attribution at all here.
      [1913 Webster]
"""


def test_gcide_quotations_cleaned(tmp_path):
    assert text_sources.parse_gcide(GCIDE_SAMPLE) == [
        "His travels were full of absurdities.",
        "It is lamentable to remember what abundance of noble blood hath been shed with small benefit to the "
        "Christian state.",
        # 25 words: cut at its sentence ends; "Thou shalt not go." (4 words) and "Go home." are too short
        "Thy father forbids it, and thy mother weeps at the door, and the house is empty without its children.",
    ]  # fmt: skip
    path = tmp_path / "gcide.dict.dz"
    path.write_bytes(gzip.compress((GCIDE_SAMPLE * 2).encode()))  # dictzip files are gzip files
    assert len(text_sources.gcide_quotations(path)) == 3  # deduplicated


@pytest.mark.skipif(not (HAVE_WORDNET and HAVE_GCIDE), reason="needs wordnet-base and dict-gcide")
def test_installed_sources_hold_the_promised_text():
    examples, quotes = text_sources.load_source("wordnet-examples"), text_sources.load_source("gcide-quotes")
    assert len(examples) > 25000 and len(text_sources.load_source("wordnet-definitions")) > 100000
    assert len(quotes) > 30000
    assert "The widow sued his surgeon for malpractice." in examples
    assert "His travels were full of absurdities." in quotes
    for s in examples[:2000] + quotes[:2000]:
        assert 5 <= len(s.split()) <= 20 and not set(s) & set('()[]{}<>"/&$%#@*_=+|\\~^')


def test_unknown_source_is_a_clear_error():
    with pytest.raises(ConfigError, match="unknown text source 'poems'"):
        synth.SynthConfig(out="x", sources={"poems": 1})
    with pytest.raises(ConfigError, match="at least one weight"):
        synth.SynthConfig(out="x", sources={"fortunes": 0})
    with pytest.raises(ConfigError, match="unknown text source"):
        text_sources.load_source("poems")


# -- mixing and splitting -------------------------------------------------------------------------------
def _pools(n: int = 400) -> dict[str, list[str]]:
    words = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu".split()
    make = lambda tag, k: f"The {tag} {words[k % 12]} {words[k // 12 % 12]} number {k} is here."  # noqa: E731
    return {"fortunes": [make("fortune", k) for k in range(n)], "wordnet-examples": [make("example", k) for k in range(n)],
            "gcide-quotes": [make("quote", k) for k in range(n)]}  # fmt: skip


def test_sources_mixed_in_the_asked_proportions_with_a_fixed_seed():
    weights = {"fortunes": 1.0, "wordnet-examples": 2.0, "gcide-quotes": 1.0}
    cfg = synth.SynthConfig(out="x", n=4000, seed=7, sources=weights)
    plan = synth.plan_clips(cfg, _pools())
    counts = Counter(s.text_source for s in plan)
    for name, w in weights.items():
        share = counts[name] / len(plan)
        assert abs(share - w / 4) < 0.025, (name, share)  # 4,000 draws: 3 sigma of a 1/4 share is 0.021
        assert all(name.split("-")[-1].rstrip("s") in s.text for s in plan if s.text_source == name)
    assert synth.plan_clips(cfg, _pools()) == plan  # the seed fixes it
    assert synth.plan_clips(cfg.replace(n=500), _pools()) == plan[:500]  # clip i does not depend on n
    other = synth.plan_clips(cfg.replace(seed=8), _pools())
    assert [s.text for s in other] != [s.text for s in plan]
    # a source with weight 0 is never drawn; the others keep their relative weights
    only = synth.plan_clips(cfg.replace(n=300, sources={**weights, "fortunes": 0.0}), _pools())
    assert {s.text_source for s in only} == {"wordnet-examples", "gcide-quotes"}


def test_no_sentence_in_both_train_and_test_across_sources():
    pools = _pools(300)
    # the same sentences, differently cased and punctuated, in a second source
    pools["gcide-quotes"] = [s.upper().rstrip(".") + "!" for s in pools["fortunes"][:150]] + pools["gcide-quotes"][:150]
    cfg = synth.SynthConfig(out="x", n=3000, sources={"fortunes": 1, "wordnet-examples": 1, "gcide-quotes": 1},
                            valid_frac=0.2, test_frac=0.2)  # fmt: skip
    plan = synth.plan_clips(cfg, pools)
    split_of: dict[str, set[str]] = {}
    for s in plan:
        split_of.setdefault(text_sources.sentence_key(s.text), set()).add(s.split)
    assert all(len(v) == 1 for v in split_of.values())
    assert {"fortunes", "gcide-quotes"} <= {s.text_source for s in plan if s.split == "test"}
    shared = {text_sources.sentence_key(s) for s in pools["fortunes"][:150]}
    assert any(s.text_source == "gcide-quotes" and text_sources.sentence_key(s.text) in shared for s in plan)
    # source_sentences gives each sentence to the first source that has it
    merged = text_sources.source_sentences(["fortunes", "gcide-quotes"], load=pools.__getitem__)
    assert len(merged["gcide-quotes"]) == 150 and len(merged["fortunes"]) == 300


def test_missing_source_left_out_with_a_warning(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(text_sources, "GCIDE_PATH", tmp_path / "none.dz")
    monkeypatch.setattr(text_sources, "FORTUNES_DIR", tmp_path)
    texts = synth.load_texts(synth.SynthConfig(out="x", sources={"fortunes": 1, "gcide-quotes": 1}))
    assert texts == {"embedded": text_sources.embedded_sentences()}
    err = capsys.readouterr().err
    assert "gcide-quotes" in err and "dict-gcide" in err and "embedded sentence list" in err


# -- voices and augmentation ------------------------------------------------------------------------
def test_held_out_voices_share_of_the_test_split_and_patterns():
    voices = list(synth.WIDE_VOICES)
    cfg = synth.SynthConfig(out="x", n=2000, voices=voices, eval_voices=["espeak-ng:en-gb-x-gbcwmd*", "rms"],
                            eval_voice_share=0.5, flite_share=0.3, test_frac=0.2)  # fmt: skip
    held = {v for v in voices if v.startswith("espeak-ng:en-gb-x-gbcwmd")} | {"flite:rms"}
    assert len(held) == 21
    plan = synth.plan_clips(cfg, text_sources.embedded_sentences())
    for s in plan:
        assert s.held_out_voice == (f"{s.engine}:{s.voice}" in held)
        assert s.split == "test" or not s.held_out_voice
    test = [s for s in plan if s.split == "test"]
    assert 0.35 < sum(s.held_out_voice for s in test) / len(test) < 0.65
    train = [s for s in plan if s.split == "train"]
    assert 0.25 < sum(s.engine == "flite" for s in train) / len(train) < 0.35
    assert len({(s.engine, s.voice) for s in train}) > 100


def test_augmentation_planned_for_train_only():
    cfg = synth.SynthConfig(out="x", n=600, speed_prob=0.5, reverb_prob=0.3, noise_prob=0.4, noise_snr=[15, 25],
                            valid_frac=0.2, test_frac=0.2)  # fmt: skip
    plan = synth.plan_clips(cfg, text_sources.embedded_sentences())
    train = [s for s in plan if s.split == "train"]
    assert all(not s.augment for s in plan if s.split != "train")
    for name, prob in (("speed", 0.5), ("reverb", 0.3), ("noise", 0.4)):
        assert abs(sum(name in dict(s.augment) for s in train) / len(train) - prob) < 0.1
    assert all(15 <= dict(s.augment)["noise"] <= 25 for s in train if "noise" in dict(s.augment))
    plain = synth.plan_clips(cfg.replace(speed_prob=0.0, reverb_prob=0.0, noise_prob=0.0), text_sources.embedded_sentences())
    # an augmented clip gets another file name; an unaugmented one keeps the name it had without the options
    for a, b in zip(plan, plain):
        assert (a.clip_id(cfg) == b.clip_id(cfg)) == (not a.augment)


@pytest.mark.skipif(not (HAVE_ESPEAK and HAVE_SOX), reason="needs espeak-ng and sox")
def test_augmented_clips_rendered(tmp_path):
    text = tmp_path / "t.txt"
    text.write_text("The quick brown fox jumps over the lazy dog near the river bank.\n" * 2)
    base = dict(text=str(text), voices=["espeak-ng:en-us"], valid_frac=0.0, test_frac=0.0, espeak_rate=[160, 160],
                espeak_pitch=[50, 50])  # fmt: skip
    synth.synth_speech(synth.SynthConfig(out=str(tmp_path / "plain"), **base))
    aug = dict(speed_prob=1.0, speed_range=[1.25, 1.25], noise_prob=1.0, noise_snr=[10, 10])
    synth.synth_speech(synth.SynthConfig(out=str(tmp_path / "aug"), **base, **aug))
    plain, noisy = read_manifest(tmp_path / "plain" / "manifest.jsonl"), read_manifest(tmp_path / "aug" / "manifest.jsonl")
    assert noisy[0].meta["augment"] == {"speed": 1.25, "noise": 10.0} and "augment" not in plain[0].meta
    assert noisy[0].duration == pytest.approx((plain[0].duration - 0.2) / 1.25 + 0.2, rel=0.1)  # 0.2 s of padding
    wav_p, _ = load_audio(plain[0].audio_path(), 16000)
    wav_n, _ = load_audio(noisy[0].audio_path(), 16000)
    assert abs(wav_p[:800]).max() == 0 and abs(wav_n[:800]).max() > 0.01  # the padding is noisy now
    assert noisy[0].id != noisy[1].id and noisy[0].text == noisy[1].text
    assert audio_info(noisy[0].audio_path()).sample_rate == 16000
    reverb = synth.synth_speech(synth.SynthConfig(out=str(tmp_path / "rev"), **base, reverb_prob=1.0, reverb_range=[60, 60]))
    assert read_manifest(reverb)[0].meta["augment"] == {"reverb": 60.0}


@pytest.mark.skipif(not (HAVE_ESPEAK and HAVE_WORDNET), reason="needs espeak-ng and wordnet-base")
def test_cli_sources_and_voice_set(tmp_path):
    out = tmp_path / "m"
    assert main(["synth", "speech", "--out", str(out), "--n", "6", "--sources", "wordnet-examples:2,fortunes",
                 "--voices", "wide", "--eval-voices", "flite:*", "flite_share=0"]) == 0  # fmt: skip
    rows = read_manifest(out / "manifest.jsonl")
    assert {r.meta["text_source"] for r in rows} <= {"wordnet-examples", "fortunes"}
    cfg = synth.SynthConfig.from_yaml(out / "config.yaml")
    assert cfg.sources == {"wordnet-examples": 2.0, "fortunes": 1.0} and len(cfg.voices) > 100
    assert all(r.meta["engine"] == "espeak-ng" and r.meta["held_out_voice"] is False for r in rows if r.split != "test")
    assert main(["synth", "speech", "--out", str(tmp_path / "bad"), "--sources", "fortunes:lots"]) == 2
