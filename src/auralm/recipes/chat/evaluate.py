"""``auralm chat eval``: exact-match accuracy per question type on held-out scenes, beside its controls.

For the ``qa`` examples of a split (one question each, ``per_type`` of each type, in a fixed order):

* ``typed``: the real picture, the question typed;
* ``spoken``: the real picture, the question spoken by a training voice (the scene is new, the voice not);
* ``spoken_new_voice``: the same with a voice never heard in training (the number-word clips too);
* ``other_image``: another scene's picture (the next scene of the split), typed: near chance if the
  picture is what answers;
* ``no_image``: no picture at all, typed;
* ``alt_renderer``: the same scene drawn by another program (:func:`auralm.data.scenes.render_scene_alt`);
* ``sound`` / ``cross`` types (the number-word clip): with the right clip, and with another example's clip
  (``shuffled_sound``);
* ``heldout_combinations``: questions whose answer involves a colour-shape combination never seen in
  training, typed, real picture (the first ``2 * per_type``; all with ``per_type`` 0). They are kept apart: no
  other condition asks them, so every other row measures the training vocabulary on scenes never seen;
* ``chance``: per type, the rate of the most common answer among the questions asked;
* ``chance_choices``: per type, what the best guess that reads the question scores: a question that names its
  choices ("Is the red circle on the left or the right?") is answered with the most common answer among the
  questions naming the same choices; others as ``chance``. It differs from ``chance`` for position only, whose
  questions name two of four answers: the fair level for a model given another scene's picture;
* ``other_image_truth``: per picture type, what answering every question truthfully about the picture the
  ``other_image`` condition gives (another scene's) scores: a model that reads that picture perfectly. A
  question whose named shape is not in it counts as missed. Where the scenes' answers agree more often than
  the majority answer's rate (yes/no questions about common shapes), it lies above ``chance``.

The report holds, per condition, ``{type: accuracy}`` plus ``overall``, the counts, and a few examples.
"""

from __future__ import annotations

import collections
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from auralm.recipes.chat.data import (
    QA_TYPES,
    REPLY_TOKENS,
    Features,
    media_paths,
    normalise,
    qa_record,
    read_examples,
    to_batch,
)

SCENE_TYPES = ("colour", "shape", "count", "exists", "position")
CONDITIONS = ("typed", "spoken", "spoken_new_voice", "other_image", "no_image", "alt_renderer", "shuffled_sound",
              "heldout_combinations")


def pick(examples: list[dict[str, Any]], split: str, per_type: int, types: Sequence[str] | None = None,
         heldout: bool = False) -> list[dict[str, Any]]:  # fmt: skip
    """Up to ``per_type`` qa examples of each type (every type present, or those of ``types``), in dataset order:
    those about the training vocabulary, or (``heldout``) those involving a held-out colour-shape combination."""
    out, seen = [], collections.Counter()
    for e in examples:
        if (e["kind"] != "qa" or e["split"] != split or (types is not None and e["type"] not in types)
                or bool(e.get("heldout")) != heldout):  # fmt: skip
            continue
        if per_type <= 0 or seen[e["type"]] < per_type:
            out.append(e)
            seen[e["type"]] += 1
    return out


def _answer(model: Any, feats: Features, records: list[dict[str, Any]], batch_size: int) -> list[str]:
    from auralm.components.generation import GenerationConfig

    gen = GenerationConfig(strategy="greedy", max_new_tokens=REPLY_TOKENS)
    replies: list[str] = []
    for i in range(0, len(records), batch_size):
        replies += model.generate(to_batch(records[i : i + batch_size], feats), gen)
    return replies


def _score(items: list[dict[str, Any]], replies: list[str]) -> dict[str, Any]:
    by_type: dict[str, list[bool]] = collections.defaultdict(list)
    for e, r in zip(items, replies):
        by_type[e["type"]].append(normalise(r) == e["answer"])
    acc = {t: sum(v) / len(v) for t, v in by_type.items()}
    hits = [x for v in by_type.values() for x in v]
    acc["overall"] = sum(hits) / len(hits) if hits else float("nan")
    return acc


def chance(items: list[dict[str, Any]], choices: bool = False) -> dict[str, float]:
    """Per type, the rate of the most common answer (what always giving that answer scores); ``choices``: the
    most common answer among the questions that name the same choices (:func:`named_choices`), group by group."""
    answers: dict[str, set[str]] = collections.defaultdict(set)
    for e in items:
        answers[e["type"]].add(e["answer"])
    groups: dict[str, dict[frozenset, collections.Counter]] = collections.defaultdict(
        lambda: collections.defaultdict(collections.Counter))
    for e in items:
        key = named_choices(e["question"], answers[e["type"]]) if choices else frozenset()
        groups[e["type"]][key][e["answer"]] += 1
    return {t: sum(max(c.values()) for c in g.values()) / sum(sum(c.values()) for c in g.values())
            for t, g in groups.items()}  # fmt: skip


def other_image_truth(dataset: str | Path, items: list[dict[str, Any]], other: dict[str, str]) -> dict[str, float]:
    """Per picture type, the rate at which the truth about scene ``other[scene]`` answers each question about its
    own scene (what reading the wrong picture perfectly scores; a named shape absent there: missed)."""
    from auralm.data.scene_words import answer
    from auralm.data.scenes import read_scenes

    scenes = {s["id"]: s for s in read_scenes(Path(dataset) / "scenes")}
    query = {(s["id"], q["type"], q["question"]): q["query"] for s in scenes.values() for q in s["qa"]}
    hits: dict[str, list[bool]] = collections.defaultdict(list)
    for e in items:
        q = query.get((e["scene"], e["type"], e["question"]))
        try:
            truth = answer(scenes[other[e["scene"]]]["objects"], e["type"], q) if q is not None else None
        except ValueError:  # the shape the question names is not in that picture (or not once)
            truth = None
        hits[e["type"]].append(truth == e["answer"])
    return {t: sum(v) / len(v) for t, v in hits.items()}


def named_choices(question: str, answers: set[str]) -> frozenset[str]:
    """The answers a question names as its choices ("... on the left or the right?": left, right), when it names
    two or more of them; else none."""
    named = frozenset(w for w in re.findall(r"[a-z]+", question.lower()) if w in answers)
    return named if len(named) > 1 else frozenset()


def evaluate(pipe: Any, dataset: str | Path, split: str = "test", per_type: int = 40, batch_size: int = 16,
             conditions: tuple[str, ...] | None = None, types: Sequence[str] | None = None) -> dict[str, Any]:  # fmt: skip
    """The accuracy report of a chat pipeline (or model) on a dataset's held-out ``split`` (see the module doc);
    ``conditions``: those run besides ``typed`` (default all); ``types``: the question types asked (default all)."""
    import torch

    model = getattr(pipe, "model", pipe)
    model.eval()
    if conditions is not None and (bad := sorted(set(conditions) - set(CONDITIONS))):
        raise ValueError(f"unknown condition(s) {bad}; the conditions are {', '.join(CONDITIONS)}")
    if types is not None and (bad := sorted(set(types) - set(QA_TYPES))):
        raise ValueError(f"unknown question type(s) {bad}; the types are {', '.join(QA_TYPES)}")
    examples = read_examples(dataset)
    items = pick(examples, split, per_type, types)
    if not items:
        raise ValueError(f"{dataset}: no qa examples in split {split!r}" + (f" of types {list(types)}" if types else ""))
    scene_items = [e for e in items if e["type"] in SCENE_TYPES]
    sound_items = [e for e in items if e["type"] in ("sound", "cross")]
    held = pick(examples, split, 0, types, heldout=True)
    held = held[: per_type * 2] if per_type > 0 else held  # per_type 0: every one
    feats = Features(dataset, model)
    images, clips = media_paths(items + held)
    feats.ensure(images, clips)
    scenes = list(dict.fromkeys(e["scene"] for e in items))
    image_of = {e["scene"]: e["image"] for e in items}
    other_scene = {s: scenes[(i + 1) % len(scenes)] for i, s in enumerate(scenes)}
    other = {s: image_of[other_scene[s]] for s in scenes}
    n_sound = len(sound_items)
    wanted = conditions or CONDITIONS
    runs: dict[str, tuple[list[dict], list[dict]]] = {}
    runs["typed"] = (items, [qa_record(e) for e in items])
    if "spoken" in wanted:
        runs["spoken"] = (items, [qa_record(e, spoken="spoken") for e in items])
    if "spoken_new_voice" in wanted:
        runs["spoken_new_voice"] = (items, [qa_record(e, spoken="spoken_new_voice", sound="sound_new_voice")
                                            for e in items])  # fmt: skip
    if "other_image" in wanted:
        runs["other_image"] = (items, [qa_record({**e, "image": other[e["scene"]]}) for e in items])
    if "no_image" in wanted:
        runs["no_image"] = (items, [qa_record(e, image=None) for e in items])
    if "alt_renderer" in wanted and scene_items:
        runs["alt_renderer"] = (scene_items, [qa_record(e, image="image_alt") for e in scene_items])
    if "shuffled_sound" in wanted and n_sound > 1:
        shifted = [sound_items[(i + n_sound // 2) % n_sound]["sound"] for i in range(n_sound)]
        runs["shuffled_sound"] = (sound_items, [qa_record(e, sound=s) for e, s in zip(sound_items, shifted)])
    if "heldout_combinations" in wanted and held:
        runs["heldout_combinations"] = (held, [qa_record(e) for e in held])
    report: dict[str, Any] = {"split": split, "dataset": str(dataset), "counts": dict(collections.Counter(e["type"] for e in items)),
                              "chance": chance(items), "chance_choices": chance(items, choices=True),
                              "other_image_truth": other_image_truth(dataset, scene_items, other_scene), "accuracy": {},
                              "examples": []}  # fmt: skip
    with torch.no_grad():
        for name, (its, records) in runs.items():
            replies = _answer(model, feats, records, batch_size)
            report["accuracy"][name] = _score(its, replies)
            if name == "typed":
                report["examples"] = [{"scene": e["scene"], "image": e["image"], "type": e["type"], "question": e["question"],
                                       "answer": e["answer"], "reply": r} for e, r in zip(its, replies)][:: max(1, len(its) // 24)]  # fmt: skip
    report["counts"]["heldout_combinations"] = len(held)
    report["types"] = [t for t in QA_TYPES if t in report["counts"]]
    return report
