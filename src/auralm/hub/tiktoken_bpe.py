"""tiktoken BPE ranks (``*.tiktoken``) -> a Hugging Face byte-level BPE tokenizer.

A ``.tiktoken`` file lists one token per line: its bytes in base64 and its rank. tiktoken merges
the adjacent pair whose concatenation has the lowest rank; Hugging Face BPE applies merge rules
in list order. Both agree when each multi-byte token contributes one merge rule ``(left, right)``,
ordered by the token's rank, where ``left + right`` is the split that BPE itself reaches on the
token's bytes using only lower-ranked tokens. Tokens are spelled with GPT-2's byte-to-unicode
table, which is what the ``ByteLevel`` pre-tokenizer and decoder of ``tokenizers`` expect.
"""

from __future__ import annotations

import base64
from pathlib import Path

ENDOFTEXT = "<|endoftext|>"


def read_tiktoken_ranks(path: str | Path) -> dict[bytes, int]:
    """Parse a ``.tiktoken`` file into {token bytes: rank}."""
    ranks: dict[bytes, int] = {}
    for lineno, line in enumerate(Path(path).read_text(encoding="ascii").splitlines(), 1):
        if not line.strip():
            continue
        try:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
        except ValueError as exc:
            raise ValueError(f"{path}:{lineno}: expected '<base64> <rank>', got {line!r}") from exc
    return ranks


def byte_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from the 256 byte values to printable unicode characters.

    Printable Latin-1 bytes map to themselves; the other 68 bytes take code points 256, 257, ...
    in byte order, so no token string contains whitespace or control characters.
    """
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table, extra = {}, 0
    for b in range(256):
        if b in keep:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def _split(token: bytes, ranks: dict[bytes, int], limit: int) -> list[bytes]:
    """Run BPE on ``token`` with tokens ranked below ``limit`` (the merge that builds it comes last)."""
    parts = [token[i : i + 1] for i in range(len(token))]
    while len(parts) > 1:
        best, at = limit, -1
        for i in range(len(parts) - 1):
            rank = ranks.get(parts[i] + parts[i + 1], limit)
            if rank < best:
                best, at = rank, i
        if at < 0:
            break
        parts[at : at + 2] = [parts[at] + parts[at + 1]]
    return parts


def ranks_to_vocab_merges(ranks: dict[bytes, int]) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Vocab {unicode token: id} and merges [(left, right)] in priority order."""
    table = byte_to_unicode()

    def spell(raw: bytes) -> str:
        return "".join(table[b] for b in raw)

    vocab = {spell(tok): rank for tok, rank in ranks.items()}
    merges = []
    for tok, rank in sorted(ranks.items(), key=lambda item: item[1]):
        if len(tok) < 2:
            continue
        parts = _split(tok, ranks, rank)
        if len(parts) != 2:
            raise ValueError(
                f"token {tok!r} (rank {rank}) is not reachable by one merge of lower-ranked tokens"
            )
        merges.append((spell(parts[0]), spell(parts[1])))
    return vocab, merges


def build_tokenizer(ranks: dict[bytes, int], specials: dict[str, int] | None = None):
    """A ``tokenizers.Tokenizer`` equivalent to tiktoken's GPT-2 encoding over ``ranks``."""
    from tokenizers import AddedToken, Tokenizer, decoders, pre_tokenizers
    from tokenizers.models import BPE

    vocab, merges = ranks_to_vocab_merges(ranks)
    tok = Tokenizer(BPE(vocab=vocab, merges=merges, fuse_unk=False))
    # ByteLevel's built-in regex is GPT-2's: 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    specials = {ENDOFTEXT: len(ranks)} if specials is None else specials
    for text, wanted in sorted(specials.items(), key=lambda item: item[1]):
        tok.add_special_tokens([AddedToken(text, special=True, normalized=False)])
        if tok.token_to_id(text) != wanted:
            raise ValueError(f"special token {text!r} got id {tok.token_to_id(text)}, expected {wanted}")
    return tok


def convert_gpt2_tiktoken(src: str | Path, dst: str | Path) -> None:
    """Write a transformers tokenizer folder for GPT-2 from ``gpt2.tiktoken`` (``<|endoftext|>`` = 50256)."""
    from transformers import PreTrainedTokenizerFast

    tok = build_tokenizer(read_tiktoken_ranks(src))
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=ENDOFTEXT,
        eos_token=ENDOFTEXT,
        unk_token=ENDOFTEXT,
        model_max_length=1024,
    )
    wrapped.save_pretrained(str(dst))
