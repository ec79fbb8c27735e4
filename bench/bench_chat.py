"""S3 chat: the splice against a per-example Python loop, and the chat training step against the machine's peak.

1. **Splice**: a batch of conversations, each with images and clips at placeholders. Ours:
   :func:`auralm.components.connectors.splice_media`, one ``masked_scatter`` per modality. Baseline: the
   seed's way, a Python loop over examples that finds each placeholder, cuts the embeddings around it,
   concatenates the media in, and pads the rows again. Same output (checked), ratio of times.
2. **Training step**: one forward + backward of :class:`auralm.recipes.chat.model.ChatLM` (LM frozen,
   projectors + LoRA trained) on cached features, conversations as in the demo; reply tokens per second,
   and the fraction of this machine's matmul peak (``torch.utils.flop_counter``) the step reaches.
3. **Length-grouped batches** (with ``--dataset``, a chat demo's data folder with its feature cache, and ``--init``,
   a stage-1 checkpoint): the demo's stage-2 step (``chat-demo-stage2``: LoRA on SmolLM2, conversations + pictures)
   on the batches the index stream gives with and without ``optim.group_by_length``, alternating, the same steps:
   padding fraction, seconds per step and the speed-up.

    HF_HUB_OFFLINE=1 OMP_NUM_THREADS=2 .venv/bin/python bench/bench_chat.py [--lm smollm2-135m-instruct] [--batch 8]
    HF_HUB_OFFLINE=1 OMP_NUM_THREADS=2 .venv/bin/python bench/bench_chat.py --dataset runs/chat-demo3/data \
        --init runs/chat-x/count/stage1/checkpoints/step-001000 --grouped-steps 12
"""

from __future__ import annotations

import argparse
import time

import torch
from bench_train import matmul_peak  # the same peak bench_train.py measures (bench/ is on sys.path)

from auralm.components.connectors import splice_media


def seed_splice(embeds_rows: list[torch.Tensor], ids_rows: list[torch.Tensor], media: list[list[torch.Tensor]],
                token_id: int) -> torch.Tensor:  # fmt: skip
    """The per-example loop: each row's single placeholder token replaced by its media tensors, then padded."""
    out = []
    for emb, ids, items in zip(embeds_rows, ids_rows, media):
        pieces, start, k = [], 0, 0
        for pos in (ids == token_id).nonzero().squeeze(1).tolist():
            pieces += [emb[start:pos], items[k]]
            start, k = pos + 1, k + 1
        pieces.append(emb[start:])
        out.append(torch.cat(pieces))
    L = max(len(o) for o in out)
    return torch.stack([torch.nn.functional.pad(o, (0, 0, 0, L - len(o))) for o in out])


def bench_splice(B: int = 16, H: int = 576, reps: int = 20) -> None:
    g = torch.Generator().manual_seed(0)
    token = 7
    n_img, text = 25, 60
    rows_short, rows_long, media, ids_long = [], [], [], []
    for b in range(B):
        k = 1 + b % 2  # one or two images per conversation
        items = [torch.randn(n_img, H, generator=g) for _ in range(k)]
        ids = torch.randint(10, 100, (text,), generator=g)
        ids[torch.randperm(text, generator=g)[:k].sort().values] = token
        emb = torch.randn(text, H, generator=g)
        rows_short.append(emb)
        media.append(items)
        # our layout: each placeholder already expanded to n_img positions (build_conversation does it)
        long_ids, long_emb = [], []
        for i, e in zip(ids.tolist(), emb):
            long_ids += [i] * (n_img if i == token else 1)
            long_emb += [e] * (n_img if i == token else 1)
        ids_long.append(torch.tensor(long_ids))
        rows_long.append(torch.stack(long_emb))
    L = max(len(x) for x in ids_long)
    ids_b = torch.stack([torch.nn.functional.pad(x, (0, L - len(x)), value=0) for x in ids_long])
    emb_b = torch.stack([torch.nn.functional.pad(x, (0, 0, 0, L - len(x))) for x in rows_long])
    flat = torch.stack([m for items in media for m in items])
    lengths = torch.full((len(flat),), n_img)
    # the seed's layout: one placeholder id per item (runs of expanded placeholders collapsed)
    short_ids = [torch.tensor([t for j, t in enumerate(il.tolist()) if not (t == token and j > 0 and il[j - 1] == token)])
                 for il in ids_long]  # fmt: skip
    ours = splice_media(emb_b, ids_b, flat, lengths, token)
    ref = seed_splice(rows_short, short_ids, media, token)
    torch.testing.assert_close(ours[:, : ref.shape[1]], ref)

    def best(fn) -> float:
        t_best = float("inf")
        for _ in range(reps):
            t = time.perf_counter()
            fn()
            t_best = min(t_best, time.perf_counter() - t)
        return t_best

    t_ours = best(lambda: splice_media(emb_b, ids_b, flat, lengths, token))
    t_seed = best(lambda: seed_splice(rows_short, short_ids, media, token))
    print(f"splice, {B} conversations, {len(flat)} images of {n_img} tokens: ours {t_ours * 1e3:.2f} ms, "
          f"per-example loop {t_seed * 1e3:.2f} ms -> {t_seed / t_ours:.1f}x")


def bench_step(lm: str, batch: int, steps: int) -> None:
    from torch.utils.flop_counter import FlopCounterMode

    from auralm.components.lm import LoraConfig
    from auralm.recipes.chat.model import ChatLM, ChatModelConfig
    from auralm.training.loop import autocast_dtype

    tiny = lm.startswith("tiny")
    cfg = ChatModelConfig(image_encoder="efficientnet-tiny" if tiny else "efficientnet-lite0", image_size=160,
                          audio_encoder="conv-tiny" if tiny else "whisper-tiny.en", lm=lm, feed="raw", ctc_weight=0.0)  # fmt: skip
    model = ChatLM(cfg)
    model.add_lora(LoraConfig(r=16, alpha=32.0, dropout=0.0, targets=["q_proj", "v_proj"]))
    model.train()
    g = torch.Generator().manual_seed(0)
    N, D = model.image_proj.num_tokens * model.config.image_pool**2, model.image_encoder.dim
    convs, media = [], []
    for _ in range(batch):
        turns = []
        for t in range(3):
            head = "<|image|>\n" if t == 0 else ""
            turns += [{"role": "user", "content": f"{head}What colour is the large square on the left?"},
                      {"role": "assistant", "content": "red"}]  # fmt: skip
        convs.append(turns)
        media.append([{"kind": "image", "states": torch.randn(N, D, generator=g)}])
    batch_ = {"messages": convs, "media": media}
    params = [p for p in model.parameters() if p.requires_grad]
    dtype = autocast_dtype("auto", torch.device("cpu"))
    amp = torch.autocast("cpu", dtype=dtype) if dtype is not None else torch.autocast("cpu", enabled=False)
    with FlopCounterMode(display=False) as counter, amp:
        res = model(batch_)
        res["loss"].backward()
    flops = counter.get_total_flops()
    times = []
    for _ in range(steps):
        for p in params:
            p.grad = None
        t = time.perf_counter()
        with amp:
            res = model(batch_)
        res["loss"].backward()
        times.append(time.perf_counter() - t)
    step = min(times)
    peak = matmul_peak(dtype or torch.float32)
    tokens = int(res["n_tokens"])
    print(f"chat step ({lm}, {batch} conversations, precision {dtype or torch.float32}): {step:.2f} s, "
          f"{tokens / step:.0f} reply tokens/s, {flops / step / 1e9:.1f} GFLOP/s = {flops / step / peak:.2f} of "
          f"the matmul peak ({peak / 1e9:.0f} GFLOP/s)")  # fmt: skip


def bench_grouping(dataset: str, init: str, steps: int) -> None:
    from auralm.core.config import apply_overrides, load_preset
    from auralm.recipes.chat.config import TrainConfig
    from auralm.recipes.chat.data import to_batch
    from auralm.recipes.chat.model import ChatLM
    from auralm.recipes.chat.train import ChatTask, _data
    from auralm.training.checkpoint import load_trainable

    cfg = apply_overrides(TrainConfig.from_dict(load_preset("chat-demo-stage2")), [f"data.dataset={dataset}"])
    model = ChatLM(cfg.model.replace(lora=cfg.model.lora.replace(r=0)))
    load_trainable(model, init)
    model.add_lora(cfg.model.lora)
    model.train()
    data = _data(cfg, model)
    tasks = {g: ChatTask(cfg.replace(optim=cfg.optim.replace(group_by_length=g)), model, **data) for g in (False, True)}
    params = [p for p in model.parameters() if p.requires_grad]
    seconds = {False: 0.0, True: 0.0}
    real = {False: 0, True: 0}
    total = {False: 0, True: 0}
    for step in range(steps):
        for g, task in tasks.items():  # alternating, so a slower machine moment hits both orders alike
            for p in params:
                p.grad = None
            batch = task.global_batch(step)
            t = time.perf_counter()
            out = task.loss(batch)
            out["loss"].backward()
            seconds[g] += time.perf_counter() - t
            mask = model.build_inputs(to_batch([task.train[i] for i, _, _ in batch], task.feats))["mask"]
            real[g], total[g] = real[g] + int(mask.sum()), total[g] + mask.numel()
    for g in (False, True):
        print(f"stage-2 step, {'grouped' if g else 'random'} batches: {1 - real[g] / total[g]:.0%} padding, "
              f"{seconds[g] / steps:.2f} s a step")  # fmt: skip
    print(f"grouped / random: {seconds[True] / seconds[False]:.2f} of the time ({steps} steps each)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--lm", default="smollm2-135m-instruct")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--dataset", default="", help="a chat demo's data folder: run only the grouped-batch comparison")
    p.add_argument("--init", default="", help="with --dataset: a stage-1 checkpoint")
    p.add_argument("--grouped-steps", type=int, default=12)
    args = p.parse_args()
    if args.dataset:
        bench_grouping(args.dataset, args.init, args.grouped_steps)
        return
    bench_splice()
    bench_step(args.lm, args.batch, args.steps)


if __name__ == "__main__":
    main()
