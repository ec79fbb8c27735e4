"""The phone head (auralm.components.phones): espeak-ng spellings, the lexicon, exact CTC scores, lexicon decoding,
and the S1 model's phone path (training loss, checkpoint round trip, rescored transcripts)."""

from __future__ import annotations

import math
import shutil

import pytest
import torch
import torch.nn.functional as F
import yaml

from auralm.components.generation import GenerationConfig
from auralm.components.phones import Lexicon, PhoneHead, as_sentence, phonemize, words_of
from auralm.core.errors import ConfigError

pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng")

TEXTS = ["The cat sat on the mat.", "A dog sat; the cat ran!", "Birds sing at dawn, the cat naps."]


@pytest.fixture(scope="module")
def lexicon() -> Lexicon:
    return Lexicon.build(TEXTS)


def test_words_and_spellings_come_from_espeak_without_stress_marks(lexicon):
    assert words_of("Don't-stop, the Cat's 42 hats!") == ["don't", "stop", "the", "cat's", "hats"]
    assert as_sentence("i think so") == "I think so." and as_sentence("") == ""
    prons = phonemize(["cat", "mat"])
    assert prons["cat"][0] == "k" and prons["mat"][0] == "m" and prons["cat"][1:] == prons["mat"][1:]  # a rhyme
    assert not any(c in p for ps in prons.values() for p in ps for c in "',%=")  # stress dropped
    assert lexicon.entries["the"][0] == 4 and lexicon.entries["dog"][0] == 1  # counted
    cat, sat = (lexicon.spell(w) for w in ("cat", "sat"))
    assert lexicon.spell("the cat sat") == lexicon.spell("the") + cat + sat and min(cat) >= 1  # 0 is the blank
    assert lexicon.spell("the zebra sat") is None and "zebra" not in lexicon
    again = Lexicon.from_dict(lexicon.to_dict())
    assert again.entries == lexicon.entries and again.inventory == lexicon.inventory
    # pronounced on demand for a training target, but never added to the words the decoder writes or saves
    assert again.spell("the zebra sat", add_missing=True)[-len(again.spell("sat")):] == again.spell("sat")
    assert "zebra" not in again and "zebra" not in again.to_dict()["words"] and again.spell("zebra") is None
    with pytest.raises(ConfigError, match="not a lexicon"):
        Lexicon.from_dict({"words": {}})


def test_score_is_the_exact_ctc_log_probability():
    g = torch.Generator().manual_seed(0)
    logp = torch.randn(20, 6, generator=g).log_softmax(-1)
    spellings = [[1, 2, 3], [4, 4], [5, 1, 2, 3, 4, 5], [], list(range(1, 6)) * 5]
    got = PhoneHead.score(logp, spellings)
    for s, v in zip(spellings[:3], got[:3]):
        want = -F.ctc_loss(logp[:, None], torch.tensor([s]), torch.tensor([20]), torch.tensor([len(s)]), reduction="sum")
        assert v == pytest.approx(float(want), abs=1e-4)
    assert got[3] == -math.inf and got[4] == -math.inf  # empty; longer than the clip


def emissions_for(lexicon: Lexicon, text: str, sure: float = 0.9) -> torch.Tensor:
    """Frame log-probs spelling ``text``'s phones, each phone for two frames with a blank between."""
    frames = []
    for c in lexicon.spell(text):
        frames += [c, c, 0]
    p = torch.full((len(frames), lexicon.num_classes), (1 - sure) / (lexicon.num_classes - 1))
    p[torch.arange(len(frames)), torch.tensor(frames)] = sure
    return p.log()


def test_lexicon_decoding_writes_the_words_whose_phones_are_heard(lexicon):
    head = PhoneHead(8, lexicon.num_classes, hidden=4)
    for text in ("the cat sat on the mat", "a dog naps at dawn"):  # the second sentence is in no text
        e = emissions_for(lexicon, text)
        lists = head.decode(e[None], torch.tensor([len(e)]), lexicon, beam=8, prior_weight=0.5)
        assert lists[0][0] == text and len(lists[0]) == len(set(lists[0]))
    # batched, with padding: each clip decodes on its own frames
    a, b = emissions_for(lexicon, "the dog ran"), emissions_for(lexicon, "birds sing")
    batch = torch.nn.utils.rnn.pad_sequence([a, b], batch_first=True)
    assert [ls[0] for ls in head.decode(batch, torch.tensor([len(a), len(b)]), lexicon, beam=4)] == ["the dog ran", "birds sing"]


def test_phone_head_shapes_and_loss():
    head = PhoneHead(8, 5, hidden=6, rnn_layers=1)
    x, n = torch.randn(2, 11, 8), torch.tensor([11, 6])
    logp, m = head(x, n)
    assert logp.shape == (2, 6, 5) and m.tolist() == [6, 3]
    assert torch.allclose(logp.exp().sum(-1), torch.ones(2, 6))
    loss = head.loss(x, n, [[1, 2], [3]])
    loss.backward()
    assert torch.isfinite(loss) and head.out.weight.grad is not None
    assert PhoneHead(8, 5, hidden=6)(x, n)[0].shape == (2, 6, 5)  # the convolution-only head
    with pytest.raises(ConfigError):
        PhoneHead(8, 1)


def test_audio_lm_trains_saves_and_transcribes_through_the_phone_head(tmp_path, lexicon):
    from auralm.recipes.hear.model import AudioLM, HearConfig
    from auralm.training.checkpoint import load_trainable, save_trainable

    torch.manual_seed(0)
    cfg = HearConfig(encoder="conv-tiny", lm="tiny-llama", ctc_weight=1.0, phone_weight=1.0, phone_hidden=16)
    model = AudioLM(cfg)
    b = {"states": torch.randn(2, 40, 256, generator=torch.Generator().manual_seed(1)), "lengths": torch.tensor([40, 30]),
         "texts": ["the cat sat", "a dog ran"]}
    with pytest.raises(ConfigError, match="phone head"):
        model(b)  # no lexicon yet
    model.set_lexicon(lexicon)
    out = model(b)
    assert torch.isfinite(out["phone_loss"]) and out["loss"] > out["lm_loss"]
    out["loss"].backward()
    assert model.phones.out.weight.grad is not None
    opt = torch.optim.Adam(model.phones.parameters(), lr=1e-2)  # enough for the head to spell the two clips
    for _ in range(60):
        opt.zero_grad()
        model(b)["phone_loss"].backward()
        opt.step()
    head = model.phones
    model.set_lexicon(Lexicon.from_dict(lexicon.to_dict()))  # the same phones: the head (and its optimizer) stays
    assert model.phones is head
    model.eval()
    save_trainable(model, tmp_path)
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict()))
    assert (tmp_path / "lexicon.json").is_file()
    again = AudioLM(cfg).eval()
    load_trainable(again, tmp_path)  # the lexicon first, then the head's weights
    assert again.lexicon.entries == lexicon.entries
    assert torch.equal(again.phones.out.weight, model.phones.out.weight)
    gen = GenerationConfig(rescore_beam=4, rescore_head="phones", rescore_weight=0.5, rescore_length_bonus=0.0)
    texts = again.generate({k: b[k] for k in ("states", "lengths")}, gen)
    assert texts == model.generate({k: b[k] for k in ("states", "lengths")}, gen)
    assert texts == ["The cat sat.", "A dog ran."]  # lexicon words, written as a sentence
    for t in texts:
        assert t.endswith(".") and all(w in lexicon for w in words_of(t))
    # the choice is the argmax of the stated score
    lists, logp, n = model.phones.nbest(b["states"], b["lengths"], lexicon, beam=4, prior_weight=gen.phone_prior_weight)
    from auralm.components.lm import sequence_logprobs

    start = model.tokenizer.bos_token_id if model.tokenizer.bos_token_id is not None else model.end_token_id
    for i, hyps in enumerate(lists):
        ac = model.phones.score(logp[i, : int(n[i])], [lexicon.spell(h) for h in hyps])
        lm = sequence_logprobs(model.lm, [model.tokenizer(as_sentence(h), add_special_tokens=False).input_ids
                                          for h in hyps], start)
        best = max(range(len(hyps)), key=lambda j: ac[j] + 0.5 * lm[j])
        assert texts[i] == as_sentence(hyps[best])
    no_phones = AudioLM(HearConfig(encoder="conv-tiny", lm="tiny-llama", ctc_weight=1.0))
    with pytest.raises(ConfigError, match="phone head"):
        no_phones.generate({k: b[k] for k in ("states", "lengths")}, gen)
    with pytest.raises(ConfigError, match="rescore_head"):
        GenerationConfig(rescore_head="letters")
