"""Evaluation of S4 on a corpus's held-out (test) scenes.

* **Retrieval** (the aligner alone): R@1/5/10 audio -> text and text -> audio among the first ``n_retrieval``
  test clips' captions, with the chance control (another clip's audio), cosine, MSE, norm ratio, token-count
  accuracy (:func:`~auralm.recipes.imagine.train.evaluate_aligner`).
* **Judged attributes** (with a generator and a judge): images generated from (a) the caption text through
  the text encoder, (b) the spoken caption through the audio encoder and the aligner, (c) another clip's audio
  (the control: near chance when the audio is used), each read by the judge (colour and shape of the main
  object, number of objects) and compared with the scene; the judge's accuracy on the real test drawings
  (and on the other renderer's drawings of them) is the ceiling. Chance is the mean of 1 / classes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from auralm.components.contrastive import token_stats
from auralm.core.errors import ConfigError
from auralm.core.progress import progress
from auralm.recipes.imagine.data import Corpus
from auralm.recipes.imagine.model import Aligner, Judge, JudgeConfig, scene_labels
from auralm.recipes.imagine.pipeline import align_rows


@torch.no_grad()
def evaluate_aligner(aligner: Aligner, text: Any, rows: list, feats: list, corpus: Corpus) -> dict[str, float]:
    """Held-out alignment: R@1/5/10 audio -> text and text -> audio among the rows' captions (equal captions are
    all correct), cosine / MSE / norm ratio over real tokens, token-count accuracy; and R@1 with the audio of
    another clip (shuffled: the chance level)."""
    from auralm.components.contrastive import masked_mean_vectors
    from auralm.metrics.retrieval import recall_at_k

    pred, plens = align_rows(aligner, feats)
    target, tlens = text.encode([r.text for r in rows], pad_to_max=True)
    ids = [corpus.caption_id(r.text) for r in rows]
    a = masked_mean_vectors(pred, plens)
    t = masked_mean_vectors(target, tlens)
    out: dict[str, float] = {}
    for name, (q, k) in {"a2t": (a, t), "t2a": (t, a)}.items():
        out.update({f"{name}_{m}": v for m, v in recall_at_k(q, k, ids, ids).items() if m.startswith("r@")})
    perm = torch.roll(torch.arange(len(rows)), 1)
    out["a2t_r@1_shuffled"] = recall_at_k(a[perm], t, ids, ids, ks=(1,))["r@1"]
    out.update({k: float(v) for k, v in token_stats(pred, target, tlens).items()})
    out["length_acc"] = float((plens == tlens).float().mean())
    out["n"] = float(len(rows))
    return out


def alt_image(scene: dict[str, Any], size: int) -> torch.Tensor:
    import numpy as np

    from auralm.data.scenes import render_scene_alt

    arr = np.asarray(render_scene_alt(scene, size).convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous()


def judge_set(corpus: Corpus, split: str, cfg: JudgeConfig, alt: bool = False) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Images of a split (drawn by the corpus's renderer, or by the other one) and the judge's labels."""
    scenes = corpus.scene_list(split)
    images = torch.stack([alt_image(s, cfg.image_size) if alt else corpus.image(s) for s in scenes])
    labels = [scene_labels(s, cfg) for s in scenes]
    return images, {k: torch.tensor([lab[k] for lab in labels]) for k in cfg.heads()}


@torch.no_grad()
def judge_predict(judge: Judge, images: torch.Tensor, batch: int = 128) -> dict[str, torch.Tensor]:
    judge.eval()
    outs: dict[str, list[torch.Tensor]] = {}
    for i in range(0, len(images), batch):
        for k, v in judge(images[i : i + batch]).items():
            outs.setdefault(k, []).append(v.argmax(-1))
    return {k: torch.cat(v) for k, v in outs.items()}


def judge_accuracy(judge: Judge, images: torch.Tensor, labels: dict[str, torch.Tensor]) -> dict[str, float]:
    """Accuracy per attribute, their mean (``mean``) and all three right at once (``all``)."""
    pred = judge_predict(judge, images)
    right = {k: pred[k] == labels[k] for k in labels}
    out = {k: float(v.float().mean()) for k, v in right.items()}
    out["mean"] = sum(out[k] for k in labels) / len(labels)
    out["all"] = float(torch.stack(list(right.values())).all(0).float().mean())
    return out



def eval_rows(corpus: Corpus, n: int) -> list:
    """Test clips, one per scene (its first spoken caption), in corpus order."""
    seen, rows = set(), []
    for r in corpus.split("test"):
        if r.source not in seen:
            seen.add(r.source)
            rows.append(r)
    if len(rows) < 2:
        raise ConfigError(f"{corpus.root}: fewer than 2 test scenes")
    return rows[:n]


def evaluate(pipe: Any, corpus: Corpus, *, n_retrieval: int = 100, n_judge: int = 60, steps: int | None = None,
             guidance: float | None = None, seed: int = 0, batch: int = 16, grid: str | Path | None = None,
             grid_rows: int = 8) -> dict[str, Any]:  # fmt: skip
    """Every figure of the module docstring that ``pipe`` (an ImaginePipeline) allows; see the module docstring."""
    out: dict[str, Any] = {}
    rows = eval_rows(corpus, max(n_retrieval, n_judge))  # the first n_retrieval are ranked, the first n_judge drawn
    feats = corpus.features(rows, pipe.audio_encoder)
    out["retrieval"] = evaluate_aligner(pipe.aligner, pipe.text_encoder, rows[:n_retrieval], feats[:n_retrieval], corpus)
    if pipe.judge is None or (pipe.unet is None and pipe.pipe is None):
        return out
    judge = pipe.judge
    jcfg = judge.cfg
    real, labels = judge_set(corpus, "test", jcfg)
    alt, alt_labels = judge_set(corpus, "test", jcfg, alt=True)
    out["judge_ceiling"] = {"real": judge_accuracy(judge, real, labels), "other_renderer": judge_accuracy(judge, alt, alt_labels)}
    out["chance"] = {k: 1 / len(v) for k, v in jcfg.heads().items()}
    out["chance"]["mean"] = sum(out["chance"].values()) / 3

    rows = rows[:n_judge]
    feats = feats[:n_judge]
    scenes = [corpus.scenes[r.source] for r in rows]
    lab = [scene_labels(s, jcfg) for s in scenes]
    labels = {k: torch.tensor([x[k] for x in lab]) for k in jcfg.heads()}
    a_states, a_lens = align_rows(pipe.aligner, feats)
    t_states, t_lens = pipe.text_states([r.text for r in rows])
    other = torch.roll(torch.arange(len(rows)), 1)  # each scene gets the previous clip's audio
    conditions = {"text": (t_states, t_lens), "audio": (a_states, a_lens), "other_audio": (a_states[other], a_lens[other])}
    images: dict[str, list] = {}
    for name, (states, lens) in conditions.items():
        imgs = []
        for i in progress(range(0, len(rows), batch), desc=f"generate from {name}", total=-(-len(rows) // batch)):
            imgs += pipe.generate_from_states(states[i : i + batch], lens[i : i + batch], seed=seed + i, steps=steps,
                                              guidance=guidance)  # fmt: skip
        images[name] = imgs
        x = torch.stack([_to_tensor(im, jcfg.image_size) for im in imgs])
        out[f"judged_{name}"] = judge_accuracy(judge, x, labels)
    t, a = out["judged_text"]["mean"], out["judged_audio"]["mean"]
    out["audio_over_text"] = a / t if t > 0 else 0.0
    out["n_judged"] = len(rows)
    if grid is not None:
        real_imgs = [corpus.image(s) for s in scenes[:grid_rows]]
        save_grid(grid, real_imgs, [images[k][:grid_rows] for k in ("text", "audio", "other_audio")])
        out["grid_rows"] = [{"scene": r.source, "spoken": r.text, "audio": r.audio} for r in rows[:grid_rows]]
    return out


def _to_tensor(image: Any, size: int) -> torch.Tensor:
    import numpy as np
    from PIL import Image

    im = image.convert("RGB")
    if im.size != (size, size):
        im = im.resize((size, size), Image.BICUBIC)
    return torch.from_numpy(np.asarray(im, dtype=np.float32) / 255.0).permute(2, 0, 1)


def save_grid(path: str | Path, real: list[torch.Tensor], columns: list[list[Any]], scale: int = 4) -> None:
    """A PNG grid: one row per scene; columns: the real drawing, then each list of generated PIL images."""
    from PIL import Image

    from auralm.core.io import atomic_path
    from auralm.recipes.imagine.pipeline import to_pil

    first = to_pil(torch.stack(real))
    side = first[0].size[0] * scale
    pad = 4
    grid = Image.new("RGB", ((side + pad) * (1 + len(columns)) + pad, (side + pad) * len(first) + pad), (255, 255, 255))
    for r, im in enumerate(first):
        cells = [im] + [col[r] for col in columns]
        for c, cell in enumerate(cells):
            grid.paste(cell.convert("RGB").resize((side, side), Image.NEAREST), (pad + c * (side + pad), pad + r * (side + pad)))
    with atomic_path(Path(path)) as tmp:
        grid.save(tmp, format="PNG")


def write_metrics(path: str | Path, metrics: dict[str, Any]) -> None:
    from auralm.core.io import atomic_write_text

    atomic_write_text(path, json.dumps(metrics, indent=2) + "\n")
