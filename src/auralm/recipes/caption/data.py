"""S2 data: a music corpus (``auralm synth music``) -> the rows of each branch, examples and batches.

* :class:`Featurizer` owns the frozen feature encoders. Audio: each track's encoder states (through the
  feature cache of ``auralm embed``, :mod:`auralm.data.embed_cache`, when training; on the fly for new
  files) pooled to one vector per track (mean, or mean and std). Tags: one vector per tag word from a
  text encoder (:func:`embed_words`: mean pooling over the attention mask, L2-normalised), or one-hot
  over the closed :data:`auralm.data.music.TAG_VOCAB` (``tag_encoder: vocab``: an unknown tag is an error
  naming the playlist). Metadata: the playlist's numeric vector as one row.
* An **example** is ``{"id", "kind" (playlist | track), "rows": {branch: (n, D) tensor}, "prompt",
  "captions"}``. A playlist has one audio row per track, one tags row per tag (0 when it has none) and one
  metadata row; a track example has its one audio row and no tags or metadata rows.
* :func:`collate` pads each branch to the batch's longest and returns the lengths the masks are built from.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import torch

from auralm.core.errors import AudioError, ConfigError, ManifestError
from auralm.data.music import TAG_VOCAB, read_corpus


@functools.lru_cache(maxsize=2)
def _text_encoder(name: str) -> tuple[Any, Any]:
    from auralm.hub import load_text_encoder

    return load_text_encoder(name)


def embed_words(name: str, words: list[str]) -> torch.Tensor:
    """``(N, D)`` embeddings of tag words with the text encoder ``name``: mean of the token states over the
    attention mask, L2-normalised (the one place that pools; swap it for a general text-encoder module)."""
    from auralm.hub import encode_sentences

    model, tokenizer = _text_encoder(name)
    return encode_sentences(model, tokenizer, words)


class Featurizer:
    """The frozen encoders of the branches: audio (pooled per track), tags (per word), metadata (as given)."""

    def __init__(self, cfg: Any, audio_encoder: Any = None):
        from auralm.components.encoders import build_audio_encoder

        self.cfg = cfg
        self.audio = audio_encoder if audio_encoder is not None else build_audio_encoder(cfg.audio_encoder)
        self.audio.eval()
        self.audio_dim = self.audio.dim * (2 if cfg.audio_pooling == "meanstd" else 1)
        if cfg.tag_encoder == "vocab":
            self.tag_dim, self.tag_revision = len(TAG_VOCAB), "vocab-" + str(len(TAG_VOCAB))
        else:
            from auralm.hub import revision

            model, _ = _text_encoder(cfg.tag_encoder)
            self.tag_dim, self.tag_revision = int(model.config.hidden_size), revision(cfg.tag_encoder)
        self._tag_cache: dict[str, torch.Tensor] = {}

    def dims(self) -> dict[str, int]:
        return {"audio": self.audio_dim, "tags": self.tag_dim, "metadata": self.cfg.metadata_dim}

    def frozen(self) -> dict[str, dict[str, str]]:
        return {"audio_encoder": {"name": self.audio.name, "revision": self.audio.revision},
                "tag_encoder": {"name": self.cfg.tag_encoder, "revision": self.tag_revision}}

    # -- audio ----------------------------------------------------------------------------------------
    def pool(self, states: torch.Tensor) -> torch.Tensor:
        """``(T, D)`` encoder states of one track -> its vector ``(D,)`` or ``(2D,)``."""
        states = states.float()
        if self.cfg.audio_pooling == "mean":
            return states.mean(0)
        return torch.cat([states.mean(0), states.std(0, unbiased=False)])

    @torch.no_grad()
    def track_vectors_from_wavs(self, wavs: list[Any]) -> torch.Tensor:
        """``(N, D_a)`` for 16 kHz waveforms (the encoder runs now)."""
        states, lengths = self.audio(wavs)
        return torch.stack([self.pool(s[:n]) for s, n in zip(states, lengths.tolist())])

    def track_vectors(self, corpus: str | Path, cache_dir: str | Path | None = None, batch_size: int = 8) -> dict[str, torch.Tensor]:
        """Track id -> vector for every track of a corpus, through the embedding cache in ``cache_dir``
        (default ``CORPUS/cache/<encoder>``): encoded once, reused by every later run."""
        from auralm.data.embed_cache import EmbeddingCache, embed_manifest
        from auralm.data.manifest import read_manifest

        corpus = Path(corpus)
        rows = read_manifest(corpus / "manifest.jsonl")
        cache_dir = Path(cache_dir) if cache_dir else corpus / "cache" / self.audio.name.replace("/", "_")
        embed_manifest(rows, self.audio, cache_dir, batch_size=batch_size)
        cache = EmbeddingCache(cache_dir, self.audio.name, self.audio.revision)
        out = {}
        for row in rows:
            states = cache.get(row)
            if states is None:
                raise AudioError(f"track {row.id}: not in the embedding cache {cache_dir} after encoding")
            out[row.id] = self.pool(states)
        return out

    # -- tags -----------------------------------------------------------------------------------------
    def tag_rows(self, tags: list[str], where: str = "") -> torch.Tensor:
        """``(n_tags, D_t)`` (``(0, D_t)`` for no tags)."""
        tags = [t.strip().lower() for t in tags if t and t.strip()]
        if not tags:
            return torch.zeros(0, self.tag_dim)
        if self.cfg.tag_encoder == "vocab":
            unknown = [t for t in tags if t not in TAG_VOCAB]
            if unknown:
                raise ConfigError(f"{where or 'tags'}: tag(s) {unknown} are not in the closed tag vocabulary of "
                                  f"tag_encoder=vocab ({', '.join(TAG_VOCAB)}); use a text encoder for open tags")
            rows = torch.zeros(len(tags), self.tag_dim)
            rows[torch.arange(len(tags)), torch.tensor([TAG_VOCAB.index(t) for t in tags])] = 1.0
            return rows
        new = [t for t in dict.fromkeys(tags) if t not in self._tag_cache]
        if new:
            for t, v in zip(new, embed_words(self.cfg.tag_encoder, new)):
                self._tag_cache[t] = v
        return torch.stack([self._tag_cache[t] for t in tags])

    def metadata_row(self, metadata: list[float] | None, where: str = "") -> torch.Tensor:
        """``(1, D_m)``, or ``(0, D_m)`` when there is none."""
        if metadata is None or len(metadata) == 0:
            return torch.zeros(0, self.cfg.metadata_dim)
        if len(metadata) != self.cfg.metadata_dim:
            raise ConfigError(f"{where or 'metadata'}: a vector of {len(metadata)} values, the model takes "
                              f"{self.cfg.metadata_dim} (metadata_dim)")
        return torch.tensor([list(map(float, metadata))])


# -- examples -------------------------------------------------------------------------------------
def playlist_example(p: dict[str, Any], vectors: dict[str, torch.Tensor], feat: Featurizer, cfg: Any) -> dict[str, Any]:
    where = f"playlist {p.get('id')!r}"
    if not p.get("tracks"):
        raise ManifestError(f"{where} has no tracks: nothing to caption")
    missing = [t for t in p["tracks"] if t not in vectors]
    if missing:
        raise ManifestError(f"{where}: no audio features for track(s) {missing[:3]}")
    rows = {"audio": torch.stack([vectors[t] for t in p["tracks"]]), "tags": feat.tag_rows(p.get("tags") or [], where),
            "metadata": feat.metadata_row(p.get("metadata"), where)}
    return {"id": p["id"], "kind": "playlist", "rows": {b: rows[b] for b in cfg.branches},
            "prompt": cfg.playlist_prompt, "captions": list(p.get("captions") or [])}


def track_example(t: dict[str, Any], vectors: dict[str, torch.Tensor], feat: Featurizer, cfg: Any) -> dict[str, Any]:
    rows = {"audio": vectors[t["id"]][None], "tags": torch.zeros(0, feat.tag_dim),
            "metadata": torch.zeros(0, cfg.metadata_dim)}
    return {"id": t["id"], "kind": "track", "rows": {b: rows[b] for b in cfg.branches}, "prompt": cfg.track_prompt,
            "captions": list(t.get("captions") or []), "params": t.get("params")}


def load_examples(corpus: str | Path, feat: Featurizer, cfg: Any, cache_dir: str | Path | None = None,
                  vectors: dict[str, torch.Tensor] | None = None) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """split -> {"playlists": [...], "tracks": [...]} examples of a corpus folder."""
    tracks, playlists = read_corpus(corpus)
    vectors = vectors if vectors is not None else feat.track_vectors(corpus, cache_dir)
    out: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for p in playlists:
        out.setdefault(p["split"], {"playlists": [], "tracks": []})["playlists"].append(playlist_example(p, vectors, feat, cfg))
    for t in tracks.values():
        out.setdefault(t["split"], {"playlists": [], "tracks": []})["tracks"].append(track_example(t, vectors, feat, cfg))
    return out


def collate(examples: list[dict[str, Any]], captions: list[str] | None = None) -> dict[str, Any]:
    """A batch: ``branches`` name -> (rows (B, T, D) zero-padded, lengths (B,)), ``prompts``, ``texts``."""
    names = list(examples[0]["rows"])
    branches = {}
    for b in names:
        items = [e["rows"][b] for e in examples]
        T = max(1, max(x.shape[0] for x in items))
        rows = torch.zeros(len(items), T, items[0].shape[1])
        for i, x in enumerate(items):
            rows[i, : x.shape[0]] = x
        branches[b] = (rows, torch.tensor([x.shape[0] for x in items]))
    return {"branches": branches, "prompts": [e["prompt"] for e in examples], "texts": captions,
            "ids": [e["id"] for e in examples]}
