"""metrics/captioning.py against pycocoevalcap's own evaluation (COCOEvalCap.evaluate) on a COCO-style example."""

from __future__ import annotations

import shutil

import pytest

pytest.importorskip("pycocoevalcap")
pytestmark = pytest.mark.skipif(shutil.which("java") is None, reason="METEOR and the PTB tokenizer need Java")

from auralm.core.errors import ConfigError  # noqa: E402
from auralm.metrics.captioning import caption_scores, diversity, spice_available  # noqa: E402

# a COCO-style example: image ids, five references each, one generated caption each
REFS = {
    391895: ["A man with a red helmet on a small moped on a dirt road.", "Man riding a motor bike on a dirt road on the countryside.",
             "A man riding on the back of a motorcycle.", "A dirt path with a young person on a motor bike rests to the foreground.",
             "A man in a red shirt and a red hat is on a motorcycle on a hill side."],
    522418: ["A woman wearing a net on her head cutting a cake.", "A woman cutting a large white sheet cake.",
             "A woman wearing a hair net cutting a large sheet cake.", "there is a woman that is cutting a white cake",
             "A woman marking a cake with the back of a chef's knife."],
    184613: ["A child holding a flowered umbrella and petting a yak.", "A young man holding an umbrella next to a herd of cattle.",
             "a young boy barefoot holding an umbrella touching the horn of a cow", "A young boy with an umbrella who is touching the horn of a cow.",
             "A boy holding an umbrella while standing next to livestock."],
    318219: ["A young boy standing in front of a computer keyboard.", "a little boy wearing headphones and looking at a computer monitor",
             "He is listening intently to the computer at school.", "A young boy stares up at the computer monitor.",
             "a young kid with head phones on using a computer"],
}
HYPS = {391895: "a man riding a motorcycle on a dirt road", 522418: "a woman cutting a cake with a knife",
        184613: "a boy holding an umbrella next to a cow", 318219: "a young boy using a computer"}


class _FakeCoco:
    """What COCOEvalCap reads of a pycocotools COCO object."""

    def __init__(self, anns: dict[int, list[str]]):
        self.imgToAnns = {i: [{"image_id": i, "caption": c} for c in caps] for i, caps in anns.items()}

    def getImgIds(self):
        return list(self.imgToAnns)


@pytest.mark.slow  # two METEOR JVMs load the paraphrase table (10 s quiet, 80 s on a busy CPU)
def test_scores_equal_cocoevalcap(monkeypatch):
    import pycocoevalcap.eval as coco_eval

    class NoSpice:  # SPICE's CoreNLP jars are not installed here (and never downloaded)
        def compute_score(self, gts, res):
            return 0.0, [0.0] * len(gts)

        def method(self):
            return "SPICE"

    monkeypatch.setattr(coco_eval, "Spice", NoSpice)
    ev = coco_eval.COCOEvalCap(_FakeCoco(REFS), _FakeCoco({k: [v] for k, v in HYPS.items()}))
    ev.evaluate()
    ids = list(REFS)
    ours = caption_scores([HYPS[i] for i in ids], [REFS[i] for i in ids], per_item=True)
    names = {"Bleu_1": "bleu_1", "Bleu_2": "bleu_2", "Bleu_3": "bleu_3", "Bleu_4": "bleu_4", "METEOR": "meteor",
             "ROUGE_L": "rouge_l", "CIDEr": "cider_d"}
    for theirs, mine in names.items():
        assert ours[mine] == pytest.approx(ev.eval[theirs], abs=1e-9), theirs
        per_item = [ev.imgToEval[i][theirs] for i in ids]
        assert ours["items"][mine] == pytest.approx(per_item, abs=1e-9), theirs
    assert 0 < ours["cider_d"] and 0 < ours["meteor"] < 1
    if not spice_available():
        assert "spice" not in ours and ours["unavailable"] == ["spice", "spider"]


def test_perfect_and_wrong_captions():
    refs = [["a slow organ melody in a minor key"], ["fast chiptune music with drums"]]
    perfect = caption_scores([r[0] for r in refs], refs, metrics=("bleu", "rouge_l"))
    assert perfect["bleu_4"] == pytest.approx(1.0, abs=1e-6) and perfect["rouge_l"] == pytest.approx(1.0)
    wrong = caption_scores(["", "the cat sat"], refs, metrics=("bleu", "rouge_l", "cider_d"))
    assert wrong["bleu_1"] < 0.01 and wrong["cider_d"] == pytest.approx(0.0)


def test_bad_input_is_named():
    with pytest.raises(ConfigError, match="2 hypotheses but 1"):
        caption_scores(["a", "b"], [["a"]])
    with pytest.raises(ConfigError, match="item 0 needs at least one"):
        caption_scores(["a"], [[]])
    with pytest.raises(ConfigError, match="unknown caption metric"):
        caption_scores(["a"], [["a"]], metrics=("fense",))


def test_diversity():
    d = diversity(["A slow organ.", "a slow organ", "fast bells"], train_captions=["A slow organ."])
    assert d["vocab_size"] == 5 and d["distinct"] == pytest.approx(2 / 3) and d["novel"] == pytest.approx(1 / 3)
