"""`auralm hear train` on the tiny presets: what it writes, exact resume, true accumulation, stage 2, bad input."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from auralm.__main__ import main
from auralm.recipes.hear.config import config_from_preset
from auralm.recipes.hear.train import train
from auralm.training.loop import index_stream, lr_lambda
from test_collate import make_corpus


def run(tmp_path: Path, *overrides: str, preset: str = "hear-tiny", out: str = "run") -> int:
    manifest = tmp_path / "corpus" / "manifest.jsonl"
    if not manifest.exists():
        make_corpus(tmp_path / "corpus")
    return main(["hear", "train", "--preset", preset, "--out", str(tmp_path / out), f"data.manifest={manifest}", *overrides])


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    latest = (run_dir / "latest").read_text().strip()
    return load_file(str(run_dir / latest / "trainable.safetensors"))


def assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], atol: float = 1e-6) -> None:
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=atol, rtol=0, msg=lambda m, k=k: f"{k}: {m}")


@pytest.mark.parametrize("preset", ["hear-tiny", "hear-tiny-cross"])
def test_both_connector_families_train_and_write_everything(tmp_path, preset, capsys):
    assert run(tmp_path, "optim.max_steps=4", "eval_every=2", preset=preset) == 0
    out = tmp_path / "run"
    ckpt = out / (out / "latest").read_text().strip()
    assert ckpt.name == "step-000004"
    for name in ("config.yaml", "trainable.safetensors", "frozen_parts.json", "trainer_state.pt", "metrics.json"):
        assert (ckpt / name).is_file(), name
    assert (out / "config.yaml").is_file() and list((out / "tb").glob("events.out.tfevents.*"))
    metrics = json.loads((ckpt / "metrics.json").read_text())
    trained = load_file(str(ckpt / "trainable.safetensors"))
    assert metrics["trainable_params"] == sum(t.numel() for t in trained.values()) > 0
    assert all(k.startswith("connector.") for k in trained)
    if preset == "hear-tiny-cross":
        assert any("gate" in k for k in trained)
    records = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    train_steps = [r["step"] for r in records if "train/loss" in r]
    assert train_steps == [2, 4] and all(r["lr"] > 0 for r in records if "lr" in r)
    valid = [r for r in records if "valid/loss" in r]
    assert [r["step"] for r in valid] == [2, 4] and all("valid/wer" in r for r in valid)
    parts = json.loads((ckpt / "frozen_parts.json").read_text())
    assert parts["lm"]["name"] == "tiny-gpt2" and parts["encoder"]["name"] == "conv-tiny"
    assert "trainable parameters" in capsys.readouterr().err


def test_resume_gives_the_weights_of_an_uninterrupted_run(tmp_path):
    common = ("optim.max_steps=5", "log_every=1", "data.valid_split=")
    assert run(tmp_path, *common, out="full") == 0
    assert run(tmp_path, *common, "optim.stop_after=2", out="cut") == 0
    assert (tmp_path / "cut" / "latest").read_text().strip().endswith("step-000002")
    assert run(tmp_path, *common, out="cut") == 0  # resume=auto continues the run
    assert_same(weights(tmp_path / "full"), weights(tmp_path / "cut"))
    logs = [(tmp_path / d / "train_log.jsonl").read_text().splitlines() for d in ("full", "cut")]
    strip = lambda lines: [{k: v for k, v in json.loads(x).items() if "per_s" not in k} for x in lines]  # noqa: E731
    assert strip(logs[0]) == strip(logs[1])  # same losses, same lr, no duplicated steps


def test_same_seed_same_run_other_seed_other_run(tmp_path):
    common = ("optim.max_steps=2", "data.valid_split=")
    assert run(tmp_path, *common, out="a") == 0 and run(tmp_path, *common, out="b") == 0
    assert run(tmp_path, *common, "optim.seed=1", out="c") == 0
    assert_same(weights(tmp_path / "a"), weights(tmp_path / "b"), atol=0)
    assert any(not torch.equal(x, y) for x, y in zip(weights(tmp_path / "a").values(), weights(tmp_path / "c").values()))


def test_gradient_accumulation_truly_accumulates(tmp_path):
    common = ("optim.max_steps=3", "optim.batch_size=4", "data.valid_split=")
    assert run(tmp_path, *common, "optim.grad_accum=1", out="one") == 0
    assert run(tmp_path, *common, "optim.grad_accum=2", out="two") == 0
    assert run(tmp_path, *common, "optim.grad_accum=4", out="four") == 0
    for other in ("two", "four"):
        assert_nearly_all_same(weights(tmp_path / "one"), weights(tmp_path / other))


def assert_nearly_all_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    """Equal to 1e-5 but for a handful of elements: AdamW divides by sqrt(v), so an element whose gradient is
    ~0 can turn float-rounding differences (another summation order) into up to an lr-sized step."""
    assert a.keys() == b.keys()
    diff = torch.cat([(a[k] - b[k]).abs().flatten() for k in a])
    assert (diff > 1e-5).float().mean() < 1e-3 and diff.max() < 1e-3, (float((diff > 1e-5).float().mean()), float(diff.max()))


def test_stage2_adds_lora_from_a_stage1_checkpoint(tmp_path):
    from auralm.recipes.hear.pipeline import load_checkpoint

    assert run(tmp_path, "optim.max_steps=2", "data.valid_split=", out="s1") == 0
    stage1 = weights(tmp_path / "s1")
    assert run(tmp_path, "optim.max_steps=2", "data.valid_split=", "stage=2", "model.lora.r=4",
               f"init_from={tmp_path / 's1'}", out="s2") == 0
    stage2 = weights(tmp_path / "s2")
    assert any("lora_" in k for k in stage2) and set(stage1) < set(stage2)
    assert all(k.startswith("connector.") or "lora_" in k for k in stage2)
    model = load_checkpoint(tmp_path / "s2")
    assert model.has_lora
    assert_same({k: v for k, v in model.trainable_state_dict().items()}, stage2, atol=0)
    # optim.connector_lr_scale=0: LoRA trains, the stage-1 connector stays as it was
    assert run(tmp_path, "optim.max_steps=2", "data.valid_split=", "stage=2", "model.lora.r=4",
               "optim.connector_lr_scale=0", f"init_from={tmp_path / 's1'}", out="s2-frozen") == 0
    frozen = weights(tmp_path / "s2-frozen")
    assert_same({k: frozen[k] for k in stage1}, stage1, atol=0)
    assert any(not torch.equal(frozen[k], stage2[k]) for k in frozen if "lora_B" in k)


def test_bad_inputs_fail_before_anything_is_written(tmp_path, make_audio, capsys):
    manifest = make_corpus(tmp_path / "corpus")
    rows = manifest.read_text().splitlines()
    make_audio.header_only("corpus/zero.wav")
    cases = {
        "zero": [json.dumps({"id": "z", "audio": "zero.wav", "text": "x", "split": "train"})],
        "missing": [json.dumps({"id": "m", "audio": "gone.wav", "text": "x", "split": "train"})],
    }
    for name, extra in cases.items():
        bad = tmp_path / "corpus" / f"{name}.jsonl"
        bad.write_text("\n".join(rows + extra) + "\n")
        assert main(["hear", "train", "--preset", "hear-tiny", "--out", str(tmp_path / name), f"data.manifest={bad}"]) == 2
        assert not (tmp_path / name).exists()
    err = capsys.readouterr().err
    assert "length zero" in err and "'z'" in err and "'m'" in err and "no such file" in err
    assert run(tmp_path, "data.train_split=dev", out="nosplit") == 2
    assert run(tmp_path, "optim.no_such_key=1", out="nokey") == 2
    err = capsys.readouterr().err
    assert "no rows in split 'dev'" in err and "unknown config key 'optim.no_such_key'" in err
    assert not (tmp_path / "nosplit").exists() and not (tmp_path / "nokey").exists()
    (tmp_path / "corpus" / "empty.jsonl").write_text("")
    assert main(["hear", "train", "--preset", "hear-tiny", "--out", str(tmp_path / "e"),
                 f"data.manifest={tmp_path / 'corpus' / 'empty.jsonl'}"]) == 2
    assert "has no rows" in capsys.readouterr().err


def test_checkpoint_from_another_base_lm_is_refused(tmp_path, capsys):
    assert run(tmp_path, "optim.max_steps=1", "data.valid_split=", out="s1") == 0
    ckpt = tmp_path / "s1" / (tmp_path / "s1" / "latest").read_text().strip()
    parts = json.loads((ckpt / "frozen_parts.json").read_text())
    parts["lm"]["revision"] = "some-other-revision"
    (ckpt / "frozen_parts.json").write_text(json.dumps(parts))
    assert run(tmp_path, "optim.max_steps=1", "stage=2", "model.lora.r=2", f"init_from={ckpt}", out="s2") == 2
    err = capsys.readouterr().err
    assert "a checkpoint from another base lm" in err and "some-other-revision" in err
    assert not (tmp_path / "s2").exists()


def test_resume_policy(tmp_path, capsys):
    assert run(tmp_path, "optim.max_steps=1", "data.valid_split=") == 0
    assert run(tmp_path, "optim.max_steps=1", "data.valid_split=", "optim.lr=0.5") == 2
    assert "another config (differs in optim.lr)" in capsys.readouterr().err
    assert run(tmp_path, "optim.max_steps=1", "data.valid_split=", "resume=false") == 2
    assert run(tmp_path, "optim.max_steps=1", "data.valid_split=", "resume=true", out="fresh") == 2
    assert run(tmp_path, "optim.max_steps=1", "data.valid_split=") == 0  # finished run: nothing to do


def test_schedule_and_data_order():
    assert [round(lr_lambda(s, 2, 10, "cosine"), 3) for s in (0, 1, 2, 10)] == [0.5, 1.0, 1.0, 0.0]
    assert lr_lambda(6, 2, 10, "linear") == pytest.approx(0.5) and lr_lambda(9, 0, 10, "constant") == 1.0
    stream = index_stream(5, seed=3, start=0, count=15)
    assert all(sorted(stream[i : i + 5]) == list(range(5)) for i in (0, 5, 10))  # every epoch a permutation
    assert index_stream(5, 3, 7, 6) == stream[7:13]  # a position is a pure function of (seed, position)


def test_group_by_length_keeps_epochs_and_cuts_padding():
    import random

    n, batch = 203, 8  # n not a multiple of the batch: epochs start mid-batch
    lengths = [random.Random(i).uniform(0.5, 10.0) for i in range(n)]
    stream = index_stream(n, 1, 0, 4 * n, lengths, batch, pool=16)
    assert all(sorted(stream[e * n : (e + 1) * n]) == list(range(n)) for e in range(4))  # still permutations
    assert index_stream(n, 1, 333, 77, lengths, batch, pool=16) == stream[333:410]  # resumable
    assert stream[: 2 * n] != index_stream(n, 1, 0, 2 * n)  # the grouping changed the order

    def padding(order):  # fraction of a padded batch that is padding
        batches = [order[i : i + batch] for i in range(0, len(order) - batch + 1, batch)]
        return 1 - sum(sum(lengths[j] for j in b) for b in batches) / sum(batch * max(lengths[j] for j in b) for b in batches)

    assert padding(stream) < 0.5 * padding(index_stream(n, 1, 0, 4 * n))


def test_python_api_returns_the_checkpoint(tmp_path):
    make_corpus(tmp_path / "c")
    cfg = config_from_preset("hear-tiny", [f"data.manifest={tmp_path / 'c' / 'manifest.jsonl'}", f"out={tmp_path / 'r'}",
                                           "optim.max_steps=1", "data.valid_split=", "logger=none"])
    ckpt = train(cfg)
    assert ckpt == tmp_path / "r" / "checkpoints" / "step-000001" and not (tmp_path / "r" / "tb").exists()


@pytest.mark.slow
def test_two_processes_match_one(tmp_path):
    """`accelerate launch --num_processes 2` completes and matches one process with the same global batch."""
    if torch.cuda.is_available():
        pytest.skip("checks the CPU (gloo) path")
    if shutil.which("accelerate", path=str(Path(sys.executable).parent)) is None:
        pytest.skip("accelerate launcher not installed")
    make_corpus(tmp_path / "corpus")
    args = ["hear", "train", "--preset", "hear-tiny", f"data.manifest={tmp_path / 'corpus' / 'manifest.jsonl'}",
            "optim.max_steps=3", "optim.batch_size=4", "data.valid_split=", "logger=none"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "AURALM_PROGRESS": "0"}
    launcher = str(Path(sys.executable).parent / "accelerate")
    # `--multi_gpu` is accelerate's torchrun launcher; on a machine without CUDA the workers use CPU + gloo
    # (`--cpu --num_processes 2` would start one process: accelerate needs mpirun for that)
    two = subprocess.run([launcher, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
                          "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "auralm", *args,
                          "--out", str(tmp_path / "two")], env=env, capture_output=True, text=True, timeout=600)
    assert two.returncode == 0, two.stderr[-3000:]
    assert main([*args, "--out", str(tmp_path / "one")]) == 0
    assert_nearly_all_same(weights(tmp_path / "one"), weights(tmp_path / "two"))
    state = torch.load(tmp_path / "two" / "checkpoints" / "step-000003" / "trainer_state.pt", weights_only=False)
    assert state["num_processes"] == 2 and len(state["rng"]) == 2


def test_every_hear_preset_is_a_valid_train_config():
    from auralm.core.config import load_preset, preset_names
    from auralm.recipes.hear.config import TrainConfig

    names = [n for n in preset_names() if n.startswith("hear")]
    assert {"hear-tiny", "hear-tiny-cross"} <= set(names)
    for name in names:
        TrainConfig.from_dict(load_preset(name))
