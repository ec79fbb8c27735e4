"""The words of ``auralm synth scenes``: captions, questions with their answers, and conversations.

A scene's objects (``plan_objects`` in :mod:`auralm.data.scenes`: colour, shape, size, grid position) are
described here, in several phrasings with British and American spelling; nothing here draws. The functions
take the scene's :class:`~auralm.data.scenes.SceneConfig` for the vocabulary (colours, shapes), the held-out
combinations and how many questions and turns to write.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from auralm.data.scenes import SceneConfig

NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
QUESTION_TYPES = ("colour", "shape", "count", "exists", "position")


def pick(rng: np.random.Generator, items: list | tuple) -> Any:
    """One of ``items``, drawn from ``rng``."""
    return items[int(rng.integers(len(items)))]


# -- phrases ------------------------------------------------------------------------------------------


def _a(word: str) -> str:
    return f"an {word}" if word[0] in "aeiou" else f"a {word}"


def _plural(shape: str) -> str:
    return shape + "s"


def _join(parts: list[str]) -> str:
    if len(parts) == 1:
        return parts[0]
    return ", ".join(parts[:-1]) + " and " + parts[-1]


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _colour_word(rng: np.random.Generator) -> str:
    return pick(rng, ("colour", "color"))


_POSITION_PHRASES: dict[tuple[str, str], tuple[str, ...]] = {
    ("centre", "middle"): ("in the centre", "in the center", "in the middle"),
    ("left", "middle"): ("on the left",),
    ("right", "middle"): ("on the right",),
    ("centre", "top"): ("at the top",),
    ("centre", "bottom"): ("at the bottom",),
    ("left", "top"): ("at the top left", "in the top left corner", "in the upper left"),
    ("right", "top"): ("at the top right", "in the top right corner", "in the upper right"),
    ("left", "bottom"): ("at the bottom left", "in the bottom left corner", "in the lower left"),
    ("right", "bottom"): ("at the bottom right", "in the bottom right corner", "in the lower right"),
}


def _where(obj: dict[str, Any], rng: np.random.Generator | None = None) -> str:
    options = _POSITION_PHRASES[(obj["position"]["column"], obj["position"]["row"])]
    return options[0] if rng is None else pick(rng, options)


def _noun_phrase(obj: dict[str, Any], rng: np.random.Generator | None, size: bool = False, where: bool = False) -> str:
    """"a large red circle at the top left"; ``rng=None`` gives the canonical wording."""
    words = []
    if size:
        words.append(obj["size"] if rng is None or obj["size"] == "small" else pick(rng, ("large", "big")))
    words += [obj["colour"], obj["shape"]]
    text = _a(" ".join(words))
    return f"{text} {_where(obj, rng)}" if where else text


def canonical_caption(objects: list[dict[str, Any]]) -> str:
    """The full description: every shape with its size, colour and place, in reading order."""
    return _cap(_join([_noun_phrase(o, None, size=True, where=True) for o in objects])) + "."


def make_captions(objects: list[dict[str, Any]], count: int, rng: np.random.Generator) -> list[str]:
    """``count`` distinct captions: the canonical one first, then varied wordings."""
    n = len(objects)
    noun = "shape" if n == 1 else "shapes"
    templates = [
        lambda: f"{_cap(NUMBER_WORDS[n])} {noun}: {_join([_noun_phrase(o, rng) for o in objects])}.",
        lambda: f"{_cap(pick(rng, ('a picture', 'a drawing', 'an image')))} of "
                f"{_join([_noun_phrase(o, rng, size=True) for o in objects])}.",
        lambda: f"There is {_join([_noun_phrase(o, rng, where=True) for o in objects])}.",
        lambda: f"{_cap(NUMBER_WORDS[n])} {pick(rng, ('coloured', 'colored'))} {noun} on a light background: "
                f"{_join([_noun_phrase(o, rng, size=True) for o in objects])}.",
        lambda: f"The {pick(rng, ('picture', 'image', 'drawing'))} shows "
                f"{_join([_noun_phrase(o, rng, size=True, where=True) for o in objects])}.",
    ]  # fmt: skip
    pairs = [(a, b) for a in objects for b in objects if a["position"]["x"] < b["position"]["x"]
             and a["position"]["column"] != b["position"]["column"]]  # fmt: skip
    if pairs:
        a, b = pick(rng, pairs)
        rest = [o for o in objects if o is not a and o is not b]
        tail = f", and {_join([_noun_phrase(o, rng, where=True) for o in rest])}" if rest else ""
        templates.append(lambda: f"{_cap(_noun_phrase(a, rng))} to the left of {_noun_phrase(b, rng)}{tail}.")
    if n == 1:
        templates.append(lambda: f"Just {_noun_phrase(objects[0], rng, size=True, where=True)}.")
    captions = [canonical_caption(objects)]
    order = rng.permutation(len(templates))
    for i in order:
        if len(captions) >= count:
            break
        text = templates[int(i)]()
        if text not in captions:
            captions.append(text)
    return captions


# -- questions --------------------------------------------------------------------------------------


def matches(obj: dict[str, Any], ref: dict[str, str]) -> bool:
    """Whether ``obj`` fits a reference such as ``{"colour": "red"}`` or ``{"size": "large", "shape": "circle"}``."""
    return all(obj[k] == v for k, v in ref.items())


def answer(objects: list[dict[str, Any]], kind: str, query: dict[str, Any]) -> str:
    """The one-word answer to a question of type ``kind`` with structured ``query`` (see docs/data.md)."""
    if kind in ("count", "exists"):
        n = sum(matches(o, query) for o in objects)
        return NUMBER_WORDS[n] if kind == "count" else ("yes" if n else "no")
    found = [o for o in objects if matches(o, query["ref"])]
    if len(found) != 1:
        raise ValueError(f"reference {query['ref']} matches {len(found)} objects, not one")
    obj = found[0]
    if kind == "colour":
        return obj["colour"]
    if kind == "shape":
        return obj["shape"]
    if kind != "position":
        raise ValueError(f"unknown question type {kind!r}")
    if "of" in query:
        other = [o for o in objects if matches(o, query["of"])]
        if len(other) != 1:
            raise ValueError(f"reference {query['of']} matches {len(other)} objects, not one")
        return "left" if obj["position"]["x"] < other[0]["position"]["x"] else "right"
    return obj["position"]["column" if query["axis"] == "x" else "row"]


def _unique_refs(objects: list[dict[str, Any]], obj: dict[str, Any], keys: tuple[tuple[str, ...], ...]) -> list[dict]:
    refs = []
    for combo in keys:
        ref = {k: obj[k] for k in combo}
        if sum(matches(o, ref) for o in objects) == 1:
            refs.append(ref)
    return refs


def _ref_text(ref: dict[str, str], rng: np.random.Generator) -> str:
    if "shape" in ref:
        return "the " + " ".join(ref[k] for k in ("size", "colour", "shape") if k in ref)
    words = " ".join(ref[k] for k in ("size", "colour") if k in ref)
    return f"the {words} {pick(rng, ('shape', 'object', 'one'))}"


def _question_text(kind: str, query: dict[str, Any], rng: np.random.Generator) -> str:
    """Wording of one question (British and American spelling both occur)."""
    if kind == "colour":
        ref = _ref_text(query["ref"], rng)
        c = _colour_word(rng)
        text = pick(rng, (f"What {c} is {ref}?", f"Which {c} is {ref}?", f"What is the {c} of {ref}?",
                           f"Tell me the {c} of {ref}.", f"{_cap(ref)} is what {c}?"))  # fmt: skip
    elif kind == "shape":
        ref = query["ref"]
        phrase = _ref_text(ref, rng).replace(" shape", " " + pick(rng, ("object", "thing", "one")))
        options = [f"What shape is {phrase}?", f"What is the shape of {phrase}?",
                   f"{_cap(phrase)} is which shape?", f"What kind of shape is {phrase}?"]  # fmt: skip
        if set(ref) == {"colour"}:
            options.append(f"Which shape is {ref['colour']}?")
        text = pick(rng, options)
    elif kind == "count":
        colour, shape = query.get("colour"), query.get("shape")
        if shape:
            things = f"{colour} {_plural(shape)}" if colour else _plural(shape)
            text = pick(rng, (f"How many {things} are there?", f"How many {things} can you see?",
                               f"How many {things} are in the {pick(rng, ('picture', 'image'))}?"))  # fmt: skip
        elif colour:
            text = pick(rng, (f"How many {colour} shapes are there?", f"How many {colour} objects can you see?",
                               f"How many shapes are {colour}?", f"How many things are {colour}?"))  # fmt: skip
        else:
            text = pick(rng, ("How many shapes are there?", "How many objects are in the picture?",
                               "How many shapes can you see?", "Count the shapes.",
                               "How many shapes does the image contain?"))  # fmt: skip
    elif kind == "exists":
        colour, shape = query.get("colour"), query.get("shape")
        if shape:
            thing = _a(f"{colour} {shape}" if colour else shape)
            text = pick(rng, (f"Is there {thing}?", f"Is there {thing} in the picture?", f"Can you see {thing}?",
                               f"Does the image contain {thing}?", f"Is there {thing} anywhere?"))  # fmt: skip
        else:
            text = pick(rng, (f"Is there anything {colour}?", f"Is any shape {colour}?",
                               f"Can you see something {colour}?", f"Is there a {colour} shape?"))  # fmt: skip
            if text.startswith("Is there a ") and colour[0] in "aeiou":
                text = f"Is there an {colour} shape?"
    elif kind == "position":
        ref = _ref_text(query["ref"], rng)
        if "of" in query:
            other = _ref_text(query["of"], rng)
            text = pick(rng, (f"Is {ref} to the left or to the right of {other}?", f"Is {ref} left or right of {other}?",
                               f"Which side of {other} is {ref} on, left or right?"))  # fmt: skip
        elif query["axis"] == "x":
            text = pick(rng, (f"Is {ref} on the left or the right?", f"Is {ref} on the left or right side?",
                               f"Which side is {ref} on, left or right?",
                               f"Is {ref} in the left or the right part of the picture?"))  # fmt: skip
        else:
            text = pick(rng, (f"Is {ref} at the top or the bottom?", f"Is {ref} near the top or the bottom of the image?",
                               f"Is {ref} in the top or the bottom part of the picture?"))  # fmt: skip
    else:
        raise ValueError(f"unknown question type {kind!r}")
    if kind != "count" and rng.random() < 0.15:
        text += pick(rng, (" Answer in one word.", " One word, please."))
    return text


def _candidates(objects: list[dict[str, Any]], cfg: SceneConfig, allowed: set[tuple[str, str]]) -> dict[str, list]:
    """Every askable (query) per type; combinations outside ``allowed`` are never named."""
    out: dict[str, list] = {t: [] for t in QUESTION_TYPES}
    for obj in objects:
        for ref in _unique_refs(objects, obj, (("shape",), ("size", "shape"))):
            out["colour"].append({"ref": ref})
        for ref in _unique_refs(objects, obj, (("colour",), ("size", "colour"))):
            out["shape"].append({"ref": ref})
        refs = _unique_refs(objects, obj, (("shape",), ("colour",), ("colour", "shape")))
        if not refs:
            continue
        if obj["position"]["column"] != "centre":
            out["position"].append({"ref": refs[0], "axis": "x"})
        if obj["position"]["row"] != "middle":
            out["position"].append({"ref": refs[-1], "axis": "y"})
        for other in objects:
            other_refs = _unique_refs(objects, other, (("shape",), ("colour",), ("colour", "shape")))
            if other is not obj and other_refs and other["position"]["column"] != obj["position"]["column"]:
                out["position"].append({"ref": refs[0], "axis": "x", "of": other_refs[0]})
    out["count"].append({})
    for shape in cfg.shapes:
        out["count"].append({"shape": shape})
    for colour in cfg.colours:
        out["count"].append({"colour": colour})
    for colour, shape in sorted(allowed):
        out["exists"].append({"colour": colour, "shape": shape})
    for shape in cfg.shapes:
        out["exists"].append({"shape": shape})
    for colour in cfg.colours:
        out["exists"].append({"colour": colour})
    return out


def make_questions(objects: list[dict[str, Any]], cfg: SceneConfig, split: str, rng: np.random.Generator) -> list[dict]:
    """Up to ``qa_per_type`` questions of each type, each ``{type, question, answer, query, heldout}``.

    Existence questions are balanced between yes and no where the scene allows it. In train scenes no
    question names a held-out combination.
    """
    held = cfg.heldout_pairs()
    allowed = {c for c in cfg.combinations() if split != "train" or c not in held}
    candidates = _candidates(objects, cfg, allowed)
    qa = []
    for kind in QUESTION_TYPES:
        pool = candidates[kind]
        if kind == "exists":
            yes = [q for q in pool if answer(objects, kind, q) == "yes"]
            no = [q for q in pool if answer(objects, kind, q) == "no"]
            chosen = []
            for i in range(cfg.qa_per_type):
                side = (yes, no)[(i + int(rng.integers(2))) % 2] if yes and no else (yes or no)
                rest = [q for q in side if q not in chosen]
                if rest:
                    chosen.append(pick(rng, rest))
        else:
            order = rng.permutation(len(pool))[: cfg.qa_per_type]
            chosen = [pool[int(i)] for i in order]
        for query in chosen:
            qa.append({
                "type": kind, "question": _question_text(kind, query, rng), "answer": answer(objects, kind, query),
                "query": query, "heldout": _involves_heldout(objects, kind, query, held),
            })  # fmt: skip
    return qa


def _involves_heldout(objects: list[dict[str, Any]], kind: str, query: dict[str, Any], held: set) -> bool:
    """Whether the answer depends on a held-out object or the question names a held-out combination."""
    refs = [query] if kind in ("count", "exists") else [query["ref"], *([query["of"]] if "of" in query else [])]
    named = any((r.get("colour"), r.get("shape")) in held for r in refs)
    return named or any(o["heldout"] and any(matches(o, r) for r in refs) for o in objects)


DESCRIBE = ("Describe the picture.", "What do you see?", "Describe this image.", "What is in the picture?",
             "What can you see in this drawing?")  # fmt: skip


def make_conversations(qa: list[dict], captions: list[str], cfg: SceneConfig, rng: np.random.Generator) -> list[dict]:
    """Multi-turn chats: an optional "describe" turn, then questions; a follow-up may lean on the one before
    ("What colour is the circle?" "red" "And the square?"). Each: ``{messages, types, qa}`` where ``qa`` holds
    the index of each turn's question in the scene's ``qa`` list (-1 for the description)."""
    conversations = []
    for _ in range(cfg.conversations):
        k = min(int(rng.integers(cfg.turns[0], cfg.turns[1] + 1)), len(qa))
        picked = [int(i) for i in rng.permutation(len(qa))[:k]]
        if rng.random() < 0.5:  # questions of one type in a row, so that follow-ups can occur
            picked.sort(key=lambda i: QUESTION_TYPES.index(qa[i]["type"]))
        messages: list[dict[str, str]] = []
        types: list[str] = []
        indices: list[int] = []
        if rng.random() < 0.3:
            messages += [{"role": "user", "content": pick(rng, DESCRIBE)},
                         {"role": "assistant", "content": pick(rng, captions)}]  # fmt: skip
            types.append("caption")
            indices.append(-1)
        previous = None
        for i in picked:
            item = qa[i]
            text = item["question"]
            if previous is not None and previous["type"] == item["type"] and rng.random() < 0.6:
                ref, before = item["query"].get("ref"), previous["query"].get("ref")
                if item["type"] == "colour" and ref and before and set(ref) == set(before) == {"shape"}:
                    text = f"And the {ref['shape']}?"
                elif item["type"] == "shape" and ref and before and set(ref) == set(before) == {"colour"}:
                    text = f"And the {ref['colour']} one?"
            messages += [{"role": "user", "content": text}, {"role": "assistant", "content": item["answer"]}]
            types.append(item["type"])
            indices.append(i)
            previous = item
        conversations.append({"messages": messages, "types": types, "qa": indices})
    return conversations
