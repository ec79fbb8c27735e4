"""The S4 corpus: drawn scenes, their captions spoken by espeak-ng/flite voices, and cached audio-encoder states.

``build_corpus(cfg)`` writes (every step resumable: rerunning reuses what is there)::

    OUT/scenes/             auralm synth scenes (images/, scenes.jsonl, config.yaml)
    OUT/speech/             auralm synth speech of the spoken captions (wavs/, manifest.jsonl, lines.txt)
    OUT/corpus.jsonl        one row per spoken caption: audio, text (the caption), split and source (the
                            scene's: a scene's clips never cross splits), meta {scene, caption_index}
    OUT/features/<encoder>/ the audio encoder's states of every clip (auralm embed's cache, float16)
    OUT/corpus.yaml         the resolved CorpusConfig

:class:`Corpus` reads it back: rows by split, scenes by id, images as tensors, cached states, caption ids
(equal captions share an id: the losses count them as positives).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import torch

from auralm.core.config import Config, help_field, save_config
from auralm.core.errors import ConfigError, ManifestError
from auralm.core.io import atomic_write_text
from auralm.data.manifest import Row, read_manifest, write_manifest


@dataclasses.dataclass
class CorpusConfig(Config):
    """Settings of ``build_corpus`` (``auralm imagine demo`` builds one; ``auralm imagine train-* --corpus`` reads it)."""

    out: str = help_field("", "corpus folder")
    n: int = help_field(1500, "number of scenes")
    seed: int = help_field(0, "seed of the scenes and the voices")
    image_size: int = help_field(32, "side of the scene images in pixels")
    scenes: dict = help_field({}, "more SceneConfig fields (max_objects, small_radius, heldout ...)")
    spoken_train: int = help_field(2, "captions spoken per train scene (the canonical one first)")
    spoken_eval: int = help_field(1, "captions spoken per valid/test scene")
    voices: list = help_field([], "engine:voice list of auralm synth speech (empty: its default voices)")
    audio_encoder: str = help_field("whisper-tiny.en", "audio encoder whose states are cached")
    jobs: int = help_field(2, "synthesis processes")

    def validate(self) -> None:
        if not self.out:
            raise ConfigError("CorpusConfig.out: a corpus folder is required")
        if self.n < 10:
            raise ConfigError(f"CorpusConfig.n must be at least 10, got {self.n}")
        if self.spoken_train < 1 or self.spoken_eval < 1:
            raise ConfigError("CorpusConfig.spoken_train and spoken_eval must be at least 1")


def scene_config(cfg: CorpusConfig) -> Any:
    from auralm.data.scenes import SceneConfig

    try:
        return SceneConfig.from_dict({**cfg.scenes, "out": str(Path(cfg.out) / "scenes"), "n": cfg.n, "seed": cfg.seed,
                                      "image_size": cfg.image_size})  # fmt: skip
    except ConfigError as exc:
        raise ConfigError(f"CorpusConfig.scenes: {exc}") from None


def build_corpus(cfg: CorpusConfig, embed: bool = True) -> Path:
    """Draw, speak and embed the corpus described by ``cfg``; return its folder."""
    from auralm.data.scenes import read_scenes, synth_scenes
    from auralm.data.synth import SynthConfig, synth_speech

    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    synth_scenes(scene_config(cfg))
    scenes = read_scenes(out / "scenes")
    spoken = []  # (scene, caption index)
    for s in scenes:
        k = cfg.spoken_train if s["split"] == "train" else cfg.spoken_eval
        spoken += [(s, i) for i in range(min(k, len(s["captions"])))]
    lines = out / "speech" / "lines.txt"
    lines.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(lines, "".join(s["captions"][i] + "\n" for s, i in spoken))
    synth = SynthConfig(out=str(out / "speech"), text=str(lines), seed=cfg.seed, jobs=cfg.jobs,
                        **({"voices": list(cfg.voices)} if cfg.voices else {}))  # fmt: skip
    speech = read_manifest(synth_speech(synth))
    if len(speech) != len(spoken):
        raise ManifestError(f"{out / 'speech'}: {len(speech)} clips for {len(spoken)} spoken captions")
    rows = []
    for r, (s, i) in zip(speech, spoken):
        if r.text != " ".join(s["captions"][i].split()):
            raise ManifestError(f"{out / 'speech'}: clip {r.id} says {r.text!r}, expected {s['captions'][i]!r}")
        rows.append(Row(id=f"{s['id']}-c{i}", audio=f"speech/{r.audio}", text=s["captions"][i], duration=r.duration,
                        sample_rate=r.sample_rate, split=s["split"], source=s["id"],
                        meta={"scene": s["id"], "caption_index": i, "voice": f"{r.meta['engine']}:{r.meta['voice']}"}))
    write_manifest(out / "corpus.jsonl", rows)
    save_config(cfg, out, "corpus.yaml")
    if embed:
        embed_corpus(out, cfg.audio_encoder)
    return out


def features_dir(corpus: str | Path, encoder: str) -> Path:
    return Path(corpus) / "features" / encoder.replace("/", "--")


def embed_corpus(corpus: str | Path, encoder_name: str) -> Path:
    """Cache the audio encoder's states of every clip of the corpus (resumable)."""
    from auralm.components.encoders import build_audio_encoder
    from auralm.data.embed_cache import embed_manifest

    enc = build_audio_encoder(encoder_name)
    folder = features_dir(corpus, encoder_name)
    embed_manifest(Path(corpus) / "corpus.jsonl", enc, folder, batch_size=16, dtype="float16")
    return folder


class Corpus:
    """A built corpus folder, read back (see the module docstring)."""

    def __init__(self, root: str | Path):
        from auralm.data.scenes import read_scenes

        self.root = Path(root)
        if not (self.root / "corpus.jsonl").is_file():
            raise ManifestError(f"{self.root} is not an imagine corpus (no corpus.jsonl); build one with "
                                "`auralm imagine demo` or imagine.data.build_corpus")  # fmt: skip
        self.cfg = CorpusConfig.from_yaml(self.root / "corpus.yaml")
        self.rows = read_manifest(self.root / "corpus.jsonl")
        self.scenes = {s["id"]: s for s in read_scenes(self.root / "scenes")}
        captions = sorted({s_cap for s in self.scenes.values() for s_cap in s["captions"]})
        self.caption_ids = {c: i for i, c in enumerate(captions)}
        self._cache: Any = None

    def split(self, split: str) -> list[Row]:
        return [r for r in self.rows if r.split == split]

    def scene_list(self, split: str) -> list[dict[str, Any]]:
        return [s for s in self.scenes.values() if s["split"] == split]

    def caption_id(self, text: str) -> int:
        return self.caption_ids.setdefault(text, len(self.caption_ids))

    def image(self, scene: dict[str, Any]) -> torch.Tensor:
        """``(3, S, S)`` float in [0, 1]."""
        return load_image_tensor(self.root / "scenes" / scene["image"])

    def features(self, rows: list[Row], encoder: Any) -> list[torch.Tensor]:
        """Cached ``(F, D)`` states (float16) of ``rows`` for ``encoder`` (a name + revision pair, or an encoder)."""
        from auralm.data.embed_cache import EmbeddingCache

        name, rev = (encoder.name, encoder.revision) if hasattr(encoder, "revision") else encoder
        if self._cache is None or (self._cache.encoder_name, self._cache.revision) != (name, rev):
            self._cache = EmbeddingCache(features_dir(self.root, name), name, rev)
        out = []
        for r in rows:
            x = self._cache.get(r)
            if x is None:
                raise ManifestError(f"{self.root}: clip {r.id} has no cached {name} states; run the corpus build again")
            out.append(x)
        return out


def load_image_tensor(path: str | Path, size: int | None = None) -> torch.Tensor:
    from PIL import Image

    with Image.open(path) as im:
        im = im.convert("RGB")
        if size is not None and im.size != (size, size):
            im = im.resize((size, size), Image.BICUBIC)
        arr = np.asarray(im, dtype=np.float32) / 255.0
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous()


def pad_features(feats: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """``[(F_i, D)] -> (B, max F, D)`` float32 zero-padded, and lengths ``(B,)``."""
    lengths = torch.tensor([f.shape[0] for f in feats])
    out = torch.zeros(len(feats), int(lengths.max()), feats[0].shape[1])
    for i, f in enumerate(feats):
        out[i, : f.shape[0]] = f.float()
    return out, lengths
