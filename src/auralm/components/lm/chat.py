"""Multi-turn conversations with media placeholders, tokenised with the LM's own chat template.

A conversation is OpenAI-shaped: ``[{"role": "user" | "assistant" | "system", "content": str}, ...]``; a
user turn's text may hold any number of :data:`IMAGE_TOKEN` and :data:`AUDIO_TOKEN` placeholders, each
where one image or one clip goes. :func:`build_conversation` renders the conversation message by message
with ``tokenizer.apply_chat_template`` (a plain ``role: text`` template for tokenizers without one), expands
each placeholder into as many placeholder ids as its item has LM positions, and labels the assistant
replies (and the end token that closes each) while every other position gets -100::

    <|im_start|>user\\n<|image|> x N What colour is the circle?<|im_end|>\\n<|im_start|>assistant\\n red <|im_end|> \\n
    -100 ........................................................................................ red <|im_end|> -100

The placeholders are special tokens of the *tokenizer*; the LM is not resized (their ids may be past its
vocabulary). The model replaces them before the embedding lookup and splices the media frames in
(:func:`auralm.components.connectors.splice_media`).
"""

from __future__ import annotations

from typing import Any

from auralm.components.lm import AUDIO_TOKEN, PlaceholderError, add_audio_token, end_token_id

IMAGE_TOKEN = "<|image|>"
MEDIA_TOKENS = {"image": IMAGE_TOKEN, "audio": AUDIO_TOKEN}
ROLES = ("system", "user", "assistant")
# for tokenizers without a chat template (GPT-2 and the tiny-gpt2 test LM): a reply ends with eos
PLAIN_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] + ': ' + m['content'] }}{% if m['role'] == 'assistant' %}{{ eos_token }}"
    "{% endif %}{{ '\n' }}{% endfor %}{% if add_generation_prompt %}{{ 'assistant: ' }}{% endif %}"
)


def add_media_tokens(tokenizer: Any) -> dict[str, int]:
    """Add the image and audio placeholders (once) as special tokens; ``{"image": id, "audio": id}``."""
    add_audio_token(tokenizer)
    if IMAGE_TOKEN not in tokenizer.get_added_vocab():
        tokenizer.add_tokens([IMAGE_TOKEN], special_tokens=True)
    added = tokenizer.get_added_vocab()
    return {kind: int(added[token]) for kind, token in MEDIA_TOKENS.items()}


def media_order(messages: list[dict[str, str]]) -> list[str]:
    """The kinds of the placeholders of a conversation, in the order they appear (``["image", "audio"]``)."""
    order = []
    for m in messages:
        text = m["content"]
        i = 0
        while True:
            hits = [(text.find(tok, i), kind) for kind, tok in MEDIA_TOKENS.items() if text.find(tok, i) >= 0]
            if not hits:
                break
            at, kind = min(hits)
            order.append(kind)
            i = at + len(MEDIA_TOKENS[kind])
    return order


def check_messages(messages: Any, media: dict[str, int] | None = None, where: str = "conversation") -> None:
    """Raise :class:`PlaceholderError` for a malformed conversation or placeholders that do not match the
    number of media items given (``media``: ``{"image": 2, "audio": 1}``), naming both counts."""
    if not isinstance(messages, list) or not messages:
        raise PlaceholderError(f"{where}: expected a non-empty list of messages, got {type(messages).__name__}")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), str):
            raise PlaceholderError(f"{where}: message {i} must be {{'role': one of {ROLES}, 'content': text}}, got {m!r}")
        if m["role"] != "user" and any(tok in m["content"] for tok in MEDIA_TOKENS.values()):
            raise PlaceholderError(f"{where}: message {i} ({m['role']}) holds a media placeholder; only user turns may")
    if media is not None:
        order = media_order(messages)
        for kind, token in MEDIA_TOKENS.items():
            placed, given = order.count(kind), int(media.get(kind, 0))
            if placed != given:
                noun = "image" if kind == "image" else "audio clip"
                raise PlaceholderError(
                    f"{where}: {placed} {token} placeholder(s) but {given} {noun}(s) given; "
                    f"put one {token} in a user turn where each {noun} goes"
                )


def _template(tokenizer: Any) -> str | None:
    return None if getattr(tokenizer, "chat_template", None) else PLAIN_TEMPLATE


def _render(tokenizer: Any, messages: list[dict[str, str]], generation_prompt: bool) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt,
                                         chat_template=_template(tokenizer))  # fmt: skip


def _ids(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"]) if text else []


def build_conversation(
    tokenizer: Any,
    messages: list[dict[str, str]],
    media_lengths: list[int] | None = None,
    system: str | None = None,
    generation_prompt: bool = False,
) -> tuple[list[int], list[int]]:
    """Token ids and labels of one conversation.

    ``media_lengths[i]``: LM positions of the i-th placeholder in order of appearance (an image's tokens,
    a clip's projected frames); each placeholder becomes that many placeholder ids. ``system``: a system
    message put first (``None``: the template's own default, e.g. SmolLM2's 20-token persona).
    Labels: the content of every assistant turn plus its end token; -100 elsewhere.
    ``generation_prompt=True`` appends the assistant header (for decoding the next reply).
    """
    order = media_order(messages)
    media_lengths = list(media_lengths or [])
    if len(media_lengths) != len(order):
        raise PlaceholderError(f"{len(order)} media placeholder(s) in the conversation but {len(media_lengths)} "
                               "media item(s) given")  # fmt: skip
    check_messages(messages)
    msgs = ([{"role": "system", "content": system}] if system is not None else []) + list(messages)
    ids_of = add_media_tokens(tokenizer)
    end = end_token_id(tokenizer)
    ids: list[int] = []
    labels: list[int] = []
    before = ""
    for k, m in enumerate(msgs):
        text = _render(tokenizer, msgs[: k + 1], False)
        if not text.startswith(before):
            raise PlaceholderError("the chat template does not render a conversation as a prefix of its extension; "
                                   "cannot find the replies' tokens")  # fmt: skip
        segment, before = text[len(before):], text
        if m["role"] != "assistant":
            piece = _ids(tokenizer, segment)
            ids += piece
            labels += [-100] * len(piece)
            continue
        at = segment.find(m["content"]) if m["content"] else -1
        if at < 0:
            raise PlaceholderError(f"the chat template does not copy assistant message {k} verbatim")
        head, body, tail = segment[:at], segment[at : at + len(m["content"])], segment[at + len(m["content"]):]
        head_ids, body_ids, tail_ids = _ids(tokenizer, head), _ids(tokenizer, body), _ids(tokenizer, tail)
        ids += head_ids + body_ids + tail_ids
        labels += [-100] * len(head_ids) + body_ids
        if tail_ids and tail_ids[0] == end:
            labels += [end] + [-100] * (len(tail_ids) - 1)
        else:  # a template that does not close the reply with the end token: add it, and learn it
            ids[len(ids) - len(tail_ids) : len(ids) - len(tail_ids)] = [end]
            labels += [end] + [-100] * len(tail_ids)
    if generation_prompt:
        text = _render(tokenizer, msgs, True)
        piece = _ids(tokenizer, text[len(before):])
        ids += piece
        labels += [-100] * len(piece)
    # expand the placeholders, in order of appearance
    media_ids = {v: k for k, v in ids_of.items()}
    out_ids: list[int] = []
    out_labels: list[int] = []
    item = 0
    for i, lab in zip(ids, labels):
        if i in media_ids:
            n = int(media_lengths[item])
            item += 1
            if n < 1:
                raise PlaceholderError(f"media item {item - 1} ({media_ids[i]}) has no LM positions")
            out_ids += [i] * n
            out_labels += [-100] * n
        else:
            out_ids.append(i)
            out_labels.append(lab)
    if item != len(order):
        raise PlaceholderError(f"{len(order)} placeholder(s) in the text but {item} in its tokens "
                               "(a placeholder merged with neighbouring text?)")  # fmt: skip
    return out_ids, out_labels


__all__ = ["IMAGE_TOKEN", "MEDIA_TOKENS", "PLAIN_TEMPLATE", "add_media_tokens", "build_conversation",
           "check_messages", "media_order"]
