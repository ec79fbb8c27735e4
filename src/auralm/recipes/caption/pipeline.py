"""The S2 inference API: :class:`CaptionPipeline` (what ``auralm.load()`` returns for a caption checkpoint).

``pipe.caption(["a.wav", "b.wav"], tags=["calm", "piano"])`` captions a playlist (every track's features,
never only the last one's); one file with no tags or metadata is captioned as a track. A playlist with no
tracks is an error; a file that cannot be decoded is an error naming it, or with ``skip_bad=True`` a
reported skip (``pipe.skipped`` lists it); a tag outside the vocabulary of a closed tag encoder is an
error naming the tag.

Importing this module imports no torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from auralm.core.errors import AudioError, ConfigError

GENERATION_FILE = "generation_config.json"


def save_generation_config(folder: str | Path, gen: Any) -> Path:
    """Write ``gen`` (a GenerationConfig) as the checkpoint's decoding defaults (atomically)."""
    from auralm.core.io import atomic_write_json

    path = Path(folder) / GENERATION_FILE
    atomic_write_json(path, gen.to_dict())
    return path


def load_checkpoint(path: str | Path, device: str | None = None) -> tuple[Any, Any, Any]:
    """``(CaptionModel in eval mode, Featurizer, GenerationConfig)`` of a checkpoint (or run) folder."""
    import json

    import yaml

    from auralm.components.generation import GenerationConfig
    from auralm.recipes.caption.config import TrainConfig
    from auralm.recipes.caption.data import Featurizer
    from auralm.recipes.caption.model import CaptionModel
    from auralm.training.checkpoint import load_trainable, resolve_checkpoint

    ckpt = resolve_checkpoint(path)
    cfg = TrainConfig.from_dict(yaml.safe_load((ckpt / "config.yaml").read_text()) or {})
    feat = Featurizer(cfg.model)
    model = CaptionModel(cfg.model, feat.dims(), feat.frozen())
    load_trainable(model, ckpt)  # refuses weights trained on another LM, audio or tag encoder
    if device:
        model.to(device)
    model.eval()
    gen_file = ckpt / GENERATION_FILE
    gen = GenerationConfig.from_dict(json.loads(gen_file.read_text())) if gen_file.is_file() else cfg.generation
    return model, feat, gen


class CaptionPipeline:
    """Caption tracks and playlists with a trained S2 model."""

    recipe = "caption"

    def __init__(self, model: Any, featurizer: Any, generation: Any = None):
        from auralm.components.generation import GenerationConfig

        self.model, self.featurizer = model, featurizer
        self.generation = generation or GenerationConfig(strategy="beam", num_beams=3, max_new_tokens=48)
        self.skipped: list[str] = []

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str | None = None) -> CaptionPipeline:
        return cls(*load_checkpoint(path, device))

    def example(self, audio: Sequence[Any], tags: Sequence[str] | None = None, metadata: Sequence[float] | None = None,
                skip_bad: bool = False) -> dict[str, Any]:
        """The model's input for a playlist (or one track) of audio files or 16 kHz waveforms."""
        import numpy as np

        from auralm.core.constants import SAMPLE_RATE
        from auralm.data.audio import load_audio

        cfg = self.model.config
        self.skipped = []
        if audio is None or len(audio) == 0:
            raise ConfigError("a playlist with no tracks: give at least one audio file")
        wavs, names = [], []
        for i, item in enumerate(audio):
            name = str(item) if isinstance(item, (str, Path)) else f"waveform {i}"
            try:
                wav = load_audio(item, SAMPLE_RATE)[0] if isinstance(item, (str, Path)) else np.asarray(item, np.float32)
                if wav.ndim != 1 or len(wav) < SAMPLE_RATE // 10:
                    raise AudioError(f"{name}: not a mono clip of at least 0.1 s")
            except AudioError as exc:
                if not skip_bad:
                    raise AudioError(f"track {i + 1} of the playlist: {exc}") from None
                self.skipped.append(f"{name}: {exc}")
                continue
            wavs.append(wav)
            names.append(name)
        if not wavs:
            raise AudioError(f"every track of the playlist was skipped: {'; '.join(self.skipped)}")
        feat = self.featurizer
        vectors = feat.track_vectors_from_wavs(wavs)  # N, D_a: one row per track
        tags = list(tags or [])
        single = len(wavs) == 1 and not tags and not metadata
        rows = {"audio": vectors, "tags": feat.tag_rows(tags, "--tags"),
                "metadata": feat.metadata_row(list(metadata) if metadata else None, "--metadata")}
        return {"id": ",".join(names), "kind": "track" if single else "playlist",
                "rows": {b: rows[b] for b in cfg.branches}, "prompt": cfg.track_prompt if single else cfg.playlist_prompt,
                "captions": []}

    def caption_examples(self, examples: Sequence[dict[str, Any]], gen: Any = None, batch_size: int = 16) -> list[str]:
        """Captions of prepared examples (:mod:`.data`), in batches."""
        import torch

        from auralm.recipes.caption.data import collate
        from auralm.recipes.caption.train import batch_to

        gen = gen or self.generation
        out: list[str] = []
        with torch.no_grad():
            for i in range(0, len(examples), batch_size):
                batch = batch_to(collate(list(examples[i : i + batch_size])), self.model.device)
                out += self.model.generate(batch, gen)
        return out

    def caption(self, audio: Sequence[Any], tags: Sequence[str] | None = None, metadata: Sequence[float] | None = None,
                gen: Any = None, skip_bad: bool = False) -> str:
        """One caption for the playlist (or the single track) ``audio``."""
        return self.caption_examples([self.example(audio, tags, metadata, skip_bad)], gen)[0]
