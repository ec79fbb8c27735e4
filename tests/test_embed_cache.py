"""`auralm embed`: sharded, keyed, resumable caching of encoder outputs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from transformers import WhisperConfig

from auralm.__main__ import main
from auralm.components.encoders import build_audio_encoder
from auralm.core.errors import AudioError, AuralmError, ConfigError
from auralm.data.audio import file_hash, load_audio
from auralm.data.embed_cache import EmbedConfig, EmbeddingCache, cache_key, cli, embed_manifest
from auralm.data.manifest import read_manifest

TINY = dict(
    d_model=32, encoder_layers=2, decoder_layers=1, encoder_attention_heads=2, decoder_attention_heads=2,
    encoder_ffn_dim=64, decoder_ffn_dim=64, num_mel_bins=80, max_source_positions=50,
)


def tiny_encoder(seed: int = 0):
    return build_audio_encoder(WhisperConfig(**TINY), seed=seed)


@pytest.fixture(scope="module")
def encoder():
    return tiny_encoder()


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    """5 short WAVs (two sample rates) and a manifest of 6 rows: one row is a chunk of clip 4."""
    rng = np.random.default_rng(0)
    rows = []
    for i in range(5):
        rate = 16000 if i % 2 == 0 else 22050
        wav = 0.3 * np.sin(2 * np.pi * (200 + 50 * i) * np.arange(int(rate * (0.2 + 0.1 * i))) / rate)
        sf.write(str(tmp_path / f"clip{i}.wav"), (wav + 0.01 * rng.standard_normal(len(wav))).astype(np.float32), rate)
        rows.append({"id": f"r{i}", "audio": f"clip{i}.wav", "text": f"clip {i}"})
    rows.append({"id": "r4-chunk", "audio": "clip4.wav", "start": 0.1, "end": 0.35})
    rows.append({"id": "text-only", "text": "no audio here"})
    manifest = tmp_path / "train.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return manifest


def all_tensors(root: Path, enc) -> dict[str, torch.Tensor]:
    cache = EmbeddingCache(root, enc.name, enc.revision)
    return {k: cache.lookup(k) for k in cache.keys()}


def test_embed_twice_second_run_skips_everything(corpus, encoder, tmp_path):
    out = tmp_path / "cache"
    first = embed_manifest(corpus, encoder, out, batch_size=2, shard_size=2)
    assert (first.encoded, first.skipped, first.no_audio, first.unique) == (6, 0, 1, 6)
    assert first.shards_written == 3 and first.audio_seconds > 0 and first.real_time_factor > 0
    assert "real-time factor" in first.summary()
    shards = sorted(p.name for p in (out / "shards").iterdir())
    second = embed_manifest(corpus, encoder, out, batch_size=2, shard_size=2)
    assert (second.encoded, second.skipped, second.shards_written) == (0, 6, 0)
    assert sorted(p.name for p in (out / "shards").iterdir()) == shards
    cfg = EmbedConfig.from_yaml(out / "config.yaml")
    assert (cfg.encoder, cfg.batch_size, cfg.pad_to_30s, cfg.dtype) == (encoder.name, 2, False, "float32")
    assert not (out / ".lock").exists()


def test_lookup_shapes_and_values(corpus, encoder, tmp_path):
    out = tmp_path / "cache"
    embed_manifest(corpus, encoder, out, batch_size=4, shard_size=4)
    cache = EmbeddingCache(out, encoder.name, encoder.revision)
    assert len(cache) == 6
    for row in read_manifest(corpus):
        if row.audio is None:
            continue
        wav, _ = load_audio(row.audio_path(), 16000, row.start, row.end)
        got = cache.get(row)
        assert got.shape == (int(encoder.output_lengths([len(wav)])[0]), encoder.dim)
        alone, n = encoder([wav])
        torch.testing.assert_close(got, alone[0, : n[0]], rtol=0, atol=2e-5)
        assert cache.info(cache.row_key(row))["frames"] == got.shape[0]


def test_chunks_are_keyed_separately(corpus, encoder, tmp_path):
    out = tmp_path / "cache"
    embed_manifest(corpus, encoder, out)
    cache = EmbeddingCache(out, encoder.name, encoder.revision)
    rows = {r.id: r for r in read_manifest(corpus)}
    whole, chunk = cache.get(rows["r4"]), cache.get(rows["r4-chunk"])
    assert cache.row_key(rows["r4"]) != cache.row_key(rows["r4-chunk"])
    assert whole.shape[0] == 30 and chunk.shape[0] == 13  # 0.6 s and 0.25 s at 50 frames/s
    # the key follows the file's content, not its name
    audio_hash = file_hash(rows["r4"].audio_path())
    assert cache.row_key(rows["r4-chunk"]) == cache_key(encoder.name, encoder.revision, audio_hash, 0.1, 0.35)
    assert cache.lookup("0" * 64) is None


def test_interrupted_run_resumes_to_identical_tensors(corpus, encoder, tmp_path):
    with open(corpus, "a") as fh:  # 10 clips: batches of 2, shards of 3 clips rounded up to 2 batches
        for i in range(4):
            fh.write(json.dumps({"id": f"extra{i}", "audio": "clip3.wav", "start": 0.05 * i, "end": 0.3}) + "\n")
    embed_manifest(corpus, encoder, tmp_path / "whole", batch_size=2, shard_size=3)

    def boom(batch: int) -> None:
        if batch == 2:  # the first shard (batches 0-1) is on disk, batch 2 is in the pending shard
            raise KeyboardInterrupt

    out = tmp_path / "resumed"
    with pytest.raises(KeyboardInterrupt):
        embed_manifest(corpus, encoder, out, batch_size=2, shard_size=3, on_batch=boom)
    assert len(EmbeddingCache(out, encoder.name, encoder.revision)) == 4
    assert not list(out.rglob("*.tmp")) and not (out / ".lock").exists()
    again = embed_manifest(corpus, encoder, out, batch_size=2, shard_size=3)
    assert (again.encoded, again.skipped) == (6, 4)
    whole, resumed = all_tensors(tmp_path / "whole", encoder), all_tensors(out, encoder)
    assert whole.keys() == resumed.keys()
    assert all(torch.equal(whole[k], resumed[k]) for k in whole)


@pytest.mark.slow  # a subprocess importing torch and transformers: ~6 s
def test_killed_process_resumes(corpus, tmp_path):
    """A hard kill (no cleanup at all) after the first shard: the rerun takes over the stale lock."""
    out = tmp_path / "killed"
    script = textwrap.dedent(
        f"""
        import os, sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_embed_cache import tiny_encoder
        from auralm.data.embed_cache import embed_manifest
        def die(batch):
            if batch == 2:
                os._exit(9)
        embed_manifest({str(corpus)!r}, tiny_encoder(), {str(out)!r}, batch_size=1, shard_size=2, on_batch=die)
        """
    )
    env = {**os.environ, "AURALM_PROGRESS": "0"}
    assert subprocess.run([sys.executable, "-c", script], env=env, timeout=120).returncode == 9
    assert (out / ".lock").exists() and len(list((out / "shards").glob("*.safetensors"))) == 1
    enc = tiny_encoder()
    report = embed_manifest(corpus, enc, out, batch_size=1, shard_size=2)
    assert (report.encoded, report.skipped) == (4, 2)
    embed_manifest(corpus, enc, tmp_path / "whole", batch_size=1, shard_size=2)
    whole, resumed = all_tensors(tmp_path / "whole", enc), all_tensors(out, enc)
    assert whole.keys() == resumed.keys() and all(torch.equal(whole[k], resumed[k]) for k in whole)


def test_other_encoder_revision_or_dtype_is_refused(corpus, encoder, tmp_path):
    out = tmp_path / "cache"
    embed_manifest(corpus, encoder, out)
    other = tiny_encoder(seed=1)
    assert other.name == encoder.name and other.revision != encoder.revision
    with pytest.raises(AuralmError, match="revision"):
        embed_manifest(corpus, other, out)
    with pytest.raises(AuralmError, match="dtype"):
        embed_manifest(corpus, encoder, out, dtype="float16")
    with pytest.raises(AuralmError, match="holds embeddings of"):
        EmbeddingCache(out, encoder.name, other.revision)
    with pytest.raises(AuralmError, match="not an embedding cache"):
        EmbeddingCache(tmp_path / "nothing", encoder.name, encoder.revision)


def test_bad_rows_fail_before_any_work(corpus, encoder, tmp_path):
    lines = corpus.read_text().splitlines()
    lines.append(json.dumps({"id": "ghost", "audio": "missing.wav"}))
    lines.append(json.dumps({"id": "overrun", "audio": "clip0.wav", "start": 0.0, "end": 5.0}))
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join(lines) + "\n")
    out = tmp_path / "cache"
    with pytest.raises(AudioError) as err:
        embed_manifest(bad, encoder, out)
    assert "'ghost'" in str(err.value) and "'overrun'" in str(err.value) and "2 bad row(s)" in str(err.value)
    assert not out.exists()


def test_float16_storage(corpus, encoder, tmp_path):
    embed_manifest(corpus, encoder, tmp_path / "half", dtype="float16")
    tensors = all_tensors(tmp_path / "half", encoder)
    assert len(tensors) == 6 and all(t.dtype == torch.float16 for t in tensors.values())


def test_config_validation():
    with pytest.raises(ConfigError, match="positive"):
        EmbedConfig(batch_size=0)
    with pytest.raises(ConfigError, match="dtype"):
        EmbedConfig(dtype="int8")


def test_stale_lock_of_a_dead_process_is_taken_over(corpus, encoder, tmp_path):
    dead = subprocess.Popen(["true"])
    dead.wait()
    out = tmp_path / "cache"
    out.mkdir()
    (out / ".lock").write_text(str(dead.pid))
    assert embed_manifest(corpus, encoder, out).encoded == 6
    assert not (out / ".lock").exists()


def test_live_writer_lock_is_respected(corpus, encoder, tmp_path):
    out = tmp_path / "cache"
    out.mkdir()
    (out / ".lock").write_text(str(os.getppid()))  # a live process that is not us
    with pytest.raises(AuralmError, match="another `auralm embed`"):
        embed_manifest(corpus, encoder, out)


def test_cli_conv_tiny(corpus, tmp_path, capsys):
    out = tmp_path / "cache"
    args = ["--manifest", str(corpus), "--encoder", "conv-tiny", "--out", str(out), "--device", "cpu"]
    assert cli([*args, "batch_size=2", "shard_size=4"]) == 0
    assert "real-time factor" in capsys.readouterr().out
    assert cli(args + ["batch_size=2", "shard_size=4"]) == 0
    assert "encoded 0 clip(s), skipped 6" in capsys.readouterr().out
    assert main(["embed", *args, "--dtype", "float16"]) == 2
    assert "dtype='float32' (this run: 'float16')" in capsys.readouterr().err


def test_cli_names_bad_rows(corpus, tmp_path, capsys):
    with open(corpus, "a") as fh:
        fh.write(json.dumps({"id": "ghost", "audio": "missing.wav"}) + "\n")
    out = tmp_path / "cache"
    assert main(["embed", "--manifest", str(corpus), "--encoder", "conv-tiny", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "row 'ghost'" in err and "nothing was encoded" in err and len(err.strip().splitlines()) == 2
    assert not out.exists()


def _two_process_cache(corpus, out, batch_size=2, shard_size=2):
    """Processes 0 and 1 of one run (threads sharing a barrier), each with its own copy of the encoder."""
    import threading

    barrier, errors, reports = threading.Barrier(2, timeout=120), [], {}
    encoders = [tiny_encoder(), tiny_encoder()]  # built here: seeding is global, threads would race on it

    def work(rank: int) -> None:
        try:
            reports[rank] = embed_manifest(corpus, encoders[rank], out, batch_size=batch_size, shard_size=shard_size,
                                           rank=rank, world=2, barrier=barrier.wait)
        except BaseException as exc:  # noqa: BLE001 - re-raised below
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=work, args=(r,)) for r in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return reports


def test_several_processes_share_the_manifest_and_build_the_one_process_cache(corpus, encoder, tmp_path):
    with open(corpus, "a") as fh:  # 10 clips: 5 batches of 2, shared 3 + 2
        for i in range(4):
            fh.write(json.dumps({"id": f"extra{i}", "audio": "clip3.wav", "start": 0.05 * i, "end": 0.3}) + "\n")
    embed_manifest(corpus, encoder, tmp_path / "one", batch_size=2, shard_size=2)
    reports = _two_process_cache(corpus, tmp_path / "two")
    assert sorted(r.encoded for r in reports.values()) == [4, 6]
    one, two = all_tensors(tmp_path / "one", encoder), all_tensors(tmp_path / "two", encoder)
    assert one.keys() == two.keys() and all(torch.equal(one[k], two[k]) for k in one)  # the same batches, bit for bit
    names = sorted(p.name for p in (tmp_path / "two" / "shards").iterdir())
    assert names == [f"{i:05d}.safetensors" for i in range(5)]
    index = json.loads((tmp_path / "two" / "index.json").read_text())
    assert sorted(index) == names and sum(len(v) for v in index.values()) == 10  # both processes' shards listed
    assert not (tmp_path / "two" / ".lock").exists()
    # a second run (one or two processes) has nothing to do
    again = _two_process_cache(corpus, tmp_path / "two")
    assert [r.encoded for r in again.values()] == [0, 0]
    assert embed_manifest(corpus, encoder, tmp_path / "two", batch_size=2, shard_size=2).encoded == 0


@pytest.mark.slow  # two torch processes: ~15 s
def test_torchrun_two_processes_equal_one(corpus, tmp_path):
    """`torchrun --nproc_per_node 2 -m auralm embed ...` writes the cache one process writes."""
    import shutil

    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    if torchrun is None:
        pytest.skip("torchrun not installed")
    args = ["embed", "--manifest", str(corpus), "--encoder", "conv-tiny", "--batch-size", "2", "--shard-size", "2",
            "--device", "cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "AURALM_PROGRESS": "0"}
    two = subprocess.run([torchrun, "--nproc_per_node", "2", "-m", "auralm", *args, "--out", str(tmp_path / "two")],
                         env=env, capture_output=True, text=True, timeout=300)
    assert two.returncode == 0, two.stderr[-3000:]
    assert "[process 1 of 2]" in two.stdout and "[process 2 of 2]" in two.stdout
    assert main([*args, "--out", str(tmp_path / "one")]) == 0
    meta = json.loads((tmp_path / "one" / "cache.json").read_text())
    one = EmbeddingCache(tmp_path / "one", meta["encoder"], meta["revision"])
    other = EmbeddingCache(tmp_path / "two", meta["encoder"], meta["revision"])
    assert sorted(one.keys()) == sorted(other.keys()) and len(one) == 6
    assert all(torch.equal(one.lookup(k), other.lookup(k)) for k in one.keys())
