"""The three S4 trainers, each a :class:`~auralm.training.loop.Task` handed to the one engine (``fit``):

* :func:`train_aligner`: the aligner on (cached audio states, the text encoder's states of the spoken caption),
  with :class:`~auralm.components.contrastive.AlignmentLoss` plus a cross-entropy on the caption's token count;
  validation: retrieval R@k among the valid captions, cosine, MSE, norm ratio, length accuracy;
* :func:`train_diffusion`: the UNet on the corpus's train images, conditioned on the text encoder's states of a
  random caption of each (dropped to the null condition with ``cfg_dropout``, for classifier-free guidance);
* :func:`train_judge`: the judge on train drawings (by :func:`~auralm.data.scenes.render_scene` and, for
  ``alt_frac`` of them, the other renderer), validated on valid drawings.

Checkpoints are the engine's (``OUT/checkpoints/step-N/`` + ``OUT/latest``); each holds the ``config.yaml`` that
made it and its weights (``aligner.safetensors`` + ``queue.safetensors``, ``unet.safetensors``,
``judge.safetensors``); :mod:`.pipeline` loads them.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from auralm.components.contrastive import AlignmentLoss
from auralm.core.errors import ConfigError
from auralm.recipes.imagine.config import AlignerTrainConfig, DiffusionTrainConfig, JudgeTrainConfig
from auralm.recipes.imagine.data import Corpus, pad_features
from auralm.recipes.imagine.evaluate import evaluate_aligner, judge_accuracy, judge_set
from auralm.recipes.imagine.model import (
    Aligner,
    Judge,
    build_scheduler,
    build_unet,
    diffusion_loss,
    null_condition,
)
from auralm.training.loop import Task

__all__ = ["AlignerTrainConfig", "DiffusionTrainConfig", "JudgeTrainConfig", "train_aligner", "train_diffusion",
           "train_judge"]


def _save(tensors: dict[str, torch.Tensor], path: Path) -> None:
    from safetensors.torch import save_file

    save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(path))


def _load(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path))


def _check_corpus(cfg: Any) -> None:
    if not cfg.corpus:
        raise ConfigError(f"{type(cfg).__name__}.corpus: a corpus folder is required (--corpus DIR)")


# -- aligner --------------------------------------------------------------------------------------
class AlignerTask(Task):
    def __init__(self, cfg: AlignerTrainConfig, corpus: Corpus, text_encoder: Any, train: list, valid: list):
        self.cfg, self.corpus, self.text = cfg, corpus, text_encoder
        self.train_rows, self.train_feats = train
        self.valid_rows, self.valid_feats = valid
        torch.manual_seed(cfg.optim.seed)
        self.aligner = Aligner(cfg.model)
        self.align_loss = AlignmentLoss(cfg.loss, cfg.model.tokens, cfg.model.text_dim)
        self.model = torch.nn.ModuleDict({"aligner": self.aligner, "loss": self.align_loss})
        self.text_states: dict[str, tuple[torch.Tensor, int]] = {}
        encode_texts(self.text, [r.text for r in self.train_rows], self.text_states)
        self.generators = {"data": torch.Generator().manual_seed(cfg.optim.seed)}
        self.device = torch.device("cpu")

    def bind(self, ctx: Any) -> None:
        self.device = ctx.device
        self.align_loss.group = ctx.group

    def global_batch(self, step: int) -> list[int]:
        return torch.randint(0, len(self.train_rows), (self.cfg.optim.batch_size,), generator=self.generators["data"]).tolist()


    def batch_tensors(self, rows: list, feats: list) -> tuple[torch.Tensor, ...]:
        x, lens = pad_features(feats)
        texts = [r.text for r in rows]
        target = torch.stack([self.text_states[t][0] for t in texts]).float()
        tlens = torch.tensor([self.text_states[t][1] for t in texts])
        ids = torch.tensor([self.corpus.caption_id(t) for t in texts])
        return x.to(self.device), lens, target.to(self.device), tlens, ids

    def loss(self, idx: list[int]) -> dict[str, Any]:
        x, lens, target, tlens, ids = self.batch_tensors([self.train_rows[i] for i in idx], [self.train_feats[i] for i in idx])
        pred, len_logits = self.aligner(x, lens)
        out = self.align_loss(pred, target, tlens, ids)
        length_ce = F.cross_entropy(len_logits, tlens.to(self.device))
        out["loss"] = out["loss"] + self.cfg.length_weight * length_ce
        out["length_ce"] = length_ce
        return {**out, "n": len(idx)}

    def validate(self, step: int, logger: Any) -> dict[str, float]:
        scores = evaluate_aligner(self.aligner, self.text, self.valid_rows, self.valid_feats, self.corpus)
        self.aligner.train()
        return {f"valid/{k}": v for k, v in scores.items()}

    def save_weights(self, folder: Path, step: int) -> None:
        _save(self.aligner.state_dict(), folder / "aligner.safetensors")
        _save(self.align_loss.state_dict(), folder / "queue.safetensors")

    def load_weights(self, folder: Path) -> None:
        self.aligner.load_state_dict(_load(folder / "aligner.safetensors"))
        self.align_loss.load_state_dict(_load(folder / "queue.safetensors"))

    def fingerprint(self) -> str:
        return f"{len(self.train_rows)}:{self.train_rows[0].id}:{self.train_rows[-1].id}"


@torch.no_grad()
def encode_texts(text: Any, texts: list[str], cache: dict[str, tuple[torch.Tensor, int]], batch: int = 64) -> None:
    """Fill ``cache`` (caption -> (float16 ``(N, D)`` states, length)) with the text encoder's states of ``texts``."""
    from auralm.core.progress import progress

    todo = sorted(set(texts) - set(cache))
    for i in progress(range(0, len(todo), batch), desc="encode captions", unit="batch"):
        states, lens = text.encode(todo[i : i + batch], pad_to_max=True)
        for t, s_, n in zip(todo[i : i + batch], states, lens.tolist()):
            cache[t] = (s_.to(torch.float16), int(n))


def prepare_aligner(cfg: AlignerTrainConfig) -> tuple[AlignerTrainConfig, Corpus, Any, Any]:
    """The corpus, the text and audio encoders' identities, and ``cfg`` with the widths and N set from them."""
    from auralm.components.encoders import build_text_encoder
    from auralm.hub import revision

    _check_corpus(cfg)
    corpus = Corpus(cfg.corpus)
    text = build_text_encoder(cfg.model.text_encoder, max_length=cfg.text_max_length)
    import json

    from auralm.recipes.imagine.data import features_dir

    meta_path = features_dir(cfg.corpus, cfg.model.audio_encoder) / "cache.json"
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else None
    if meta is None:
        raise ConfigError(f"{cfg.corpus} holds no cached {cfg.model.audio_encoder} states (features/); build them")
    audio_id = (meta["encoder"], meta["revision"])
    if meta["encoder"].startswith("whisper"):
        if revision(meta["encoder"]) != meta["revision"]:
            raise ConfigError(f"{cfg.corpus}: the cached states are of another {meta['encoder']} revision")
    model = cfg.model.replace(audio_dim=int(meta["dim"]), text_dim=text.dim, tokens=text.max_length)
    return cfg.replace(model=model), corpus, text, audio_id


def train_aligner(cfg: AlignerTrainConfig) -> Path:
    """Train (or resume) the aligner; return the checkpoint folder."""
    from auralm.training.loop import fit

    cfg, corpus, text, audio_id = prepare_aligner(cfg)
    train = corpus.split("train")
    valid = corpus.split("valid")[: cfg.max_eval]
    if len(valid) < 2:
        raise ConfigError(f"{cfg.corpus}: fewer than 2 valid clips")
    task = AlignerTask(cfg, corpus, text, (train, corpus.features(train, audio_id)), (valid, corpus.features(valid, audio_id)))
    ckpt = fit(task, cfg, name="train aligner", device="cpu")
    _report("train-aligner", ckpt, ("a2t_r@1", "a2t_r@5", "cosine", "norm_ratio"))
    return ckpt


def _report(cmd: str, ckpt: Path, keys: tuple[str, ...]) -> None:
    import json
    import os

    m = json.loads((ckpt / "metrics.json").read_text())
    v = m.get("valid", {})
    if int(os.environ.get("RANK", "0")) == 0:
        got = ", ".join(f"{k} {v[k]:.3f}" for k in keys if k in v)
        print(f"auralm imagine {cmd}: step {m.get('steps_done')} ({m.get('stopped_by')}), {m.get('elapsed_s', 0):.0f} s; "
              f"valid {got}; wrote {ckpt}", file=sys.stderr)  # fmt: skip


# -- diffusion ------------------------------------------------------------------------------------
class DiffusionTask(Task):
    def __init__(self, cfg: DiffusionTrainConfig, text: Any, images: torch.Tensor, captions: list[list[str]],
                 valid: tuple[torch.Tensor, list[str]]):  # fmt: skip
        self.cfg, self.images, self.captions, self.valid = cfg, images, captions, valid
        torch.manual_seed(cfg.optim.seed)
        self.unet = build_unet(cfg.model)
        self.scheduler = build_scheduler(cfg.model, "ddpm")
        self.model = self.unet
        self.ema = None
        if cfg.ema:
            self.ema = {k: v.detach().clone() for k, v in self.unet.state_dict().items()}
        self.generators = {"data": torch.Generator().manual_seed(cfg.optim.seed),
                           "noise": torch.Generator().manual_seed(cfg.optim.seed + 1)}  # fmt: skip
        self.device = torch.device("cpu")
        self.states: dict[str, tuple[torch.Tensor, int]] = {}  # caption -> its states (the text encoder is frozen)
        encode_texts(text, [c for cs in captions for c in cs] + list(valid[1]), self.states)

    def bind(self, ctx: Any) -> None:
        self.device = ctx.device

    def global_batch(self, step: int) -> list[tuple[int, int, bool]]:
        g, n = self.generators["data"], self.cfg.optim.batch_size
        idx = torch.randint(0, len(self.images), (n,), generator=g).tolist()
        pick = torch.rand(n, generator=g).tolist()
        drop = (torch.rand(n, generator=g) < self.cfg.cfg_dropout).tolist()
        return [(i, int(u * len(self.captions[i])), d) for i, u, d in zip(idx, pick, drop)]

    def condition(self, texts: list[str], drop: list[bool]) -> tuple[torch.Tensor, torch.Tensor]:
        """The cached text states of ``texts`` (B, N, D) and their mask; dropped items get the null condition."""
        states = torch.stack([self.states[t][0] for t in texts]).float()
        lens = torch.tensor([self.states[t][1] for t in texts])
        mask = (torch.arange(states.shape[1])[None] < lens[:, None]).long()
        if any(drop):
            null_s, null_m = null_condition(len(texts), states.shape[1], states.shape[2])
            d = torch.tensor(drop)
            states = torch.where(d[:, None, None], null_s, states)
            mask = torch.where(d[:, None], null_m, mask)
        return states.to(self.device), mask.to(self.device)

    def loss(self, examples: list[tuple[int, int, bool]]) -> dict[str, Any]:
        idx = [i for i, _, _ in examples]
        states, mask = self.condition([self.captions[i][c] for i, c, _ in examples], [d for _, _, d in examples])
        x = self.images[idx].to(self.device) * 2 - 1
        loss = diffusion_loss(self.unet, self.scheduler, x, states, mask, self.generators["noise"],
                              snr_gamma=self.cfg.snr_gamma)  # fmt: skip
        return {"loss": loss, "n": len(examples)}

    def end_step(self, step: int) -> None:
        if self.ema is not None:
            with torch.no_grad():
                for k, v in self.unet.state_dict().items():
                    if v.dtype.is_floating_point:
                        self.ema[k].mul_(self.cfg.ema).add_(v.detach(), alpha=1 - self.cfg.ema)
                    else:
                        self.ema[k].copy_(v)

    @torch.no_grad()
    def validate(self, step: int, logger: Any) -> dict[str, float]:
        """The plain DDPM loss on valid scenes with their captions and with the null condition, over every
        timestep and over the noisier half (``_high``: where the picture's layout and colours are decided, so the
        condition's effect shows first). Same noise and timesteps for both conditions."""
        images, texts = self.valid
        x = images.to(self.device) * 2 - 1
        states, mask = self.condition(texts, [False] * len(texts))
        null_s, null_m = null_condition(len(texts), states.shape[1], states.shape[2], self.device)
        half = self.scheduler.config.num_train_timesteps // 2
        out = {}
        self.unet.eval()
        for suffix, t_min in (("", 0), ("_high", half)):
            for name, (s, m) in (("loss", (states, mask)), ("loss_unconditional", (null_s, null_m))):
                g = torch.Generator().manual_seed(1234)
                out[f"valid/{name}{suffix}"] = float(diffusion_loss(self.unet, self.scheduler, x, s, m, g, t_min=t_min))
        self.unet.train()
        return out

    def weights(self) -> dict[str, torch.Tensor]:
        return self.ema if self.ema is not None else self.unet.state_dict()

    def save_weights(self, folder: Path, step: int) -> None:
        _save(self.weights(), folder / "unet.safetensors")
        if self.ema is not None:
            _save(self.unet.state_dict(), folder / "unet_train.safetensors")

    def load_weights(self, folder: Path) -> None:
        if self.ema is not None:
            self.unet.load_state_dict(_load(folder / "unet_train.safetensors"))
            self.ema = _load(folder / "unet.safetensors")
        else:
            self.unet.load_state_dict(_load(folder / "unet.safetensors"))

    def fingerprint(self) -> str:
        return f"{len(self.images)}:{self.captions[0][0]}"


def train_diffusion(cfg: DiffusionTrainConfig) -> Path:
    """Train (or resume) the text-conditioned UNet on the corpus's train images; return the checkpoint folder."""
    from auralm.components.encoders import build_text_encoder
    from auralm.training.loop import fit

    _check_corpus(cfg)
    corpus = Corpus(cfg.corpus)
    text = build_text_encoder(cfg.text_encoder, max_length=cfg.text_max_length)
    cfg = cfg.replace(model=cfg.model.replace(cond_dim=text.dim))
    train = corpus.scene_list("train")
    if not train:
        raise ConfigError(f"{cfg.corpus}: no train scenes")
    if corpus.cfg.image_size != cfg.model.image_size:
        raise ConfigError(f"{cfg.corpus} holds {corpus.cfg.image_size} px scenes; model.image_size is {cfg.model.image_size}")
    images = torch.stack([corpus.image(s) for s in train])
    valid = corpus.scene_list("valid")[: cfg.max_eval] or train[: cfg.max_eval]
    k = cfg.captions or None
    task = DiffusionTask(cfg, text, images, [s["captions"][:k] for s in train],
                         (torch.stack([corpus.image(s) for s in valid]), [s["captions"][0] for s in valid]))  # fmt: skip
    ckpt = fit(task, cfg, name="train diffusion", device="cpu")
    _report("train-diffusion", ckpt, ("loss", "loss_unconditional"))
    return ckpt


# -- judge ----------------------------------------------------------------------------------------
class JudgeTask(Task):
    def __init__(self, cfg: JudgeTrainConfig, train: tuple, alt: tuple, valid: tuple):
        self.cfg, self.train, self.alt, self.valid = cfg, train, alt, valid
        torch.manual_seed(cfg.optim.seed)
        self.judge = Judge(cfg.model)
        self.model = self.judge
        self.generators = {"data": torch.Generator().manual_seed(cfg.optim.seed)}
        self.device = torch.device("cpu")

    def bind(self, ctx: Any) -> None:
        self.device = ctx.device

    def global_batch(self, step: int) -> list[tuple[int, bool, float]]:
        g, n = self.generators["data"], self.cfg.optim.batch_size
        idx = torch.randint(0, len(self.train[0]), (n,), generator=g).tolist()
        alt = (torch.rand(n, generator=g) < self.cfg.alt_frac).tolist()
        noise = (torch.rand(n, generator=g) * self.cfg.noise).tolist()
        return list(zip(idx, alt, noise))

    def loss(self, examples: list) -> dict[str, Any]:
        idx = torch.tensor([i for i, _, _ in examples])
        alt = torch.tensor([a for _, a, _ in examples])
        x = torch.where(alt[:, None, None, None], self.alt[0][idx], self.train[0][idx])
        g = torch.Generator().manual_seed(int(idx.sum()))
        x = (x + torch.randn(x.shape, generator=g) * torch.tensor([s for _, _, s in examples])[:, None, None, None]).clamp(0, 1)
        logits = self.judge(x.to(self.device))
        losses = {k: F.cross_entropy(v, self.train[1][k][idx].to(self.device)) for k, v in logits.items()}
        return {"loss": sum(losses.values()), "n": len(examples), **{f"ce_{k}": v for k, v in losses.items()}}

    def validate(self, step: int, logger: Any) -> dict[str, float]:
        acc = judge_accuracy(self.judge, *self.valid)
        self.judge.train()
        return {f"valid/{k}": v for k, v in acc.items()}

    def save_weights(self, folder: Path, step: int) -> None:
        _save(self.judge.state_dict(), folder / "judge.safetensors")

    def load_weights(self, folder: Path) -> None:
        self.judge.load_state_dict(_load(folder / "judge.safetensors"))


def train_judge(cfg: JudgeTrainConfig) -> Path:
    """Train (or resume) the judge on train drawings; return the checkpoint folder."""
    from auralm.training.loop import fit

    _check_corpus(cfg)
    corpus = Corpus(cfg.corpus)
    model = cfg.model.replace(image_size=corpus.cfg.image_size)
    sc = corpus.cfg.scenes
    if "colours" in sc or "shapes" in sc or "max_objects" in sc:
        model = model.replace(colours=list(sc.get("colours", model.colours)), shapes=list(sc.get("shapes", model.shapes)),
                              max_count=int(sc.get("max_objects", model.max_count)))  # fmt: skip
    cfg = cfg.replace(model=model)
    train = judge_set(corpus, "train", cfg.model)
    alt = judge_set(corpus, "train", cfg.model, alt=True)
    valid = judge_set(corpus, "valid", cfg.model)
    ckpt = fit(JudgeTask(cfg, train, alt, valid), cfg, name="train judge", device="cpu")
    _report("train-judge", ckpt, ("colour", "shape", "count", "mean"))
    return ckpt
