"""The parts of serving that need no server: streaming's stable prefix, stop strings, subtitles, the batcher,
the admission gate, media checks, and the pipeline's streaming hook on a tiny model."""

from __future__ import annotations

import asyncio
import base64
import io
import random
import threading
import time

import numpy as np
import pytest
import soundfile as sf

from auralm.components.generation import loop_length, stable_length
from auralm.serve.batching import Batcher
from auralm.serve.errors import APIError


def test_stable_length_never_promises_what_the_loop_guard_drops():
    """Whatever tokens follow, the guard's final cut never reaches into the stable prefix."""
    rng = random.Random(0)
    for _ in range(3000):
        repeats, period = rng.choice([2, 3, 4]), rng.choice([1, 2, 3, 5])
        row = [rng.choice([1, 2, 3]) for _ in range(rng.randint(0, 14))]
        safe = stable_length(row, repeats, period)
        assert 0 <= safe <= len(row)
        for _ in range(12):  # random continuations, as the guard would end them
            full = list(row)
            for _ in range(rng.randint(0, 10)):
                full.append(rng.choice([1, 2, 3]))
                if loop_length(full, repeats, period):
                    break
            kept = len(full) - loop_length(full, repeats, period)
            assert kept >= safe, (row, full, repeats, period)
    assert stable_length([5, 6, 7, 8], 4, 16) == 4  # nothing repeats: all of it is final
    assert stable_length([5, 6, 6, 6], 4, 16) == 2  # the run of 6s may still be cut back to one 6
    assert stable_length([1, 2, 3], 0, 16) == 3  # no loop guard


def test_stop_filter_streams_exactly_the_stopped_text():
    from auralm.serve.openai_api import StopFilter, apply_stop

    rng = random.Random(1)
    for _ in range(500):
        text = "".join(rng.choice("ab c") for _ in range(rng.randint(0, 30)))
        stops = [s for s in ("b c", "cc", "a a") if rng.random() < 0.6]
        f = StopFilter(stops)
        out, i = [], 0
        while i < len(text):
            j = i + rng.randint(1, 4)
            out.append(f.feed(text[i:j]))
            i = j
        out.append(f.rest(text))
        assert "".join(out) == apply_stop(text, stops)[0]


def test_subtitles():
    from auralm.serve.openai_api import subtitles

    segs = [{"start": 0.0, "end": 29.5, "text": "one"}, {"start": 29.5, "end": 30.0, "text": ""},
            {"start": 30.0, "end": 3725.25, "text": "two"}]
    assert subtitles(segs, "srt") == "1\n00:00:00,000 --> 00:00:29,500\none\n\n2\n00:00:30,000 --> 01:02:05,250\ntwo\n\n"
    assert subtitles(segs, "vtt").startswith("WEBVTT\n\n00:00:00.000 --> 00:00:29.500\none\n\n00:00:30.000 --> ")


def test_batcher_groups_by_key_and_isolates_failures():
    calls: list[tuple] = []
    gate = threading.Event()

    def run(key, payloads):
        gate.wait(5)
        calls.append((key, list(payloads)))
        if "bad" in payloads and len(payloads) > 1:
            raise ValueError("one bad item fails the batch")
        return [ValueError("bad") if p == "bad" else f"{key}:{p}" for p in payloads]

    b = Batcher("t", run, max_items=3, wait_s=0.05)
    try:
        futs = [b.submit("a", 1), b.submit("b", 2), b.submit("a", 3), b.submit("a", 4), b.submit("a", 5)]
        gate.set()
        assert [f.result(5) for f in futs] == ["a:1", "b:2", "a:3", "a:4", "a:5"]
        assert calls[0] == ("a", [1, 3, 4])  # same key, oldest first, at most 3 items
        assert sorted(len(p) for _, p in calls) == [1, 1, 3]
        calls.clear()
        good, bad = b.submit("c", "ok"), b.submit("c", "bad")
        assert good.result(5) == "c:ok"  # retried alone after the batch failed
        with pytest.raises(ValueError):
            bad.result(5)
        gate.clear()
        first = b.submit("d", "slow")
        time.sleep(0.1)  # the worker now waits on the gate, inside run
        dropped = b.submit("d", "dropped")
        assert dropped.cancel()  # a request that timed out before its batch started
        gate.set()
        assert first.result(5) == "d:slow"
        assert all("dropped" not in p for _, p in calls)
    finally:
        gate.set()
        b.close()
    # the gated batch was in run for the rest of the 0.1 s sleep after its 0.05 s window; the first batch's
    # three jobs each waited for their window (a, 1 the whole 0.05 s)
    assert b.stats["busy_s"] >= 0.03 and b.stats["waited_s"] >= 0.05


def test_gate_admits_queues_and_refuses():
    from auralm.serve.guard import Gate

    async def scenario():
        g = Gate(slots=1, queue=1, retry_after=3)
        far = time.monotonic() + 10
        await g.enter(far)  # takes the slot
        waiter = asyncio.ensure_future(g.enter(far))  # waits in the queue
        await asyncio.sleep(0.01)
        with pytest.raises(APIError) as err:
            await g.enter(far)  # queue full
        assert err.value.status == 429 and err.value.headers == {"Retry-After": "3"}
        g.leave()  # the slot goes to the waiter
        await asyncio.wait_for(waiter, 1)
        assert g.active == 1 and g.waiting == 0
        with pytest.raises(APIError) as err:
            await g.enter(time.monotonic() + 0.05)  # waits, and its deadline passes
        assert err.value.status == 504
        g.leave()
        assert g.active == 0
        g.closing = True
        with pytest.raises(APIError) as err:
            await g.enter(far)
        assert err.value.status == 503

    asyncio.run(scenario())


def test_media_checks(make_audio):
    from auralm.serve.media import decode_base64, load_audio_bytes, load_image

    with pytest.raises(APIError, match="not valid base64"):
        decode_base64("UklGRg=", "x")
    assert decode_base64("data:audio/wav;base64," + base64.b64encode(b"RIFF").decode(), "x") == b"RIFF"
    buf = io.BytesIO()
    sf.write(buf, np.zeros(16000, np.float32), 8000, format="WAV")  # 2 s at 8 kHz: resampled to 16 kHz
    assert len(load_audio_bytes(buf.getvalue(), "x", 10)) == 32000
    with pytest.raises(APIError) as err:
        load_audio_bytes(buf.getvalue(), "x", 1.5)
    assert err.value.status == 413
    with pytest.raises(APIError, match="sample rate is 0"):
        load_audio_bytes(make_audio.zero_rate("z.wav").read_bytes(), "x", 10)
    with pytest.raises(APIError, match="empty"):
        load_audio_bytes(b"", "x", 10)
    gif = b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff!\xf9\x04\x01\x00\x00\x00\x00,\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;"
    assert load_image("data:image/gif;base64," + base64.b64encode(gif).decode(), "x", False, 1000) == gif
    for url, message in [("data:image/png,raw", "must be base64"), ("ftp://host/x.png", "refused"),
                         ("cat.png", "must be a data URL"),
                         ("data:image/png;base64," + base64.b64encode(b"\x89PNG\r\n\x1a\nbroken").decode(), "not a readable image")]:
        with pytest.raises(APIError, match=message):
            load_image(url, "x", False, 1000)


def test_transcribe_streams_chunks_in_order_and_joins_to_the_answer(tmp_path):
    """HearPipeline.transcribe(on_text=...) on a tiny untrained model: per-item prompts, chunked audio."""
    import torch

    from auralm.components.connectors import ConnectorConfig
    from auralm.recipes.hear.model import AudioLM, HearConfig
    from auralm.recipes.hear.pipeline import HearPipeline, audio_spans

    torch.manual_seed(0)
    pipe = HearPipeline(AudioLM(HearConfig(encoder="conv-tiny", lm="tiny-gpt2", connector=ConnectorConfig())).eval())
    t = np.arange(16000 * 3) / 16000
    wavs = [(0.3 * np.sin(2 * np.pi * f * t[:n]) * (np.sin(2 * np.pi * 0.5 * t[:n]) > 0)).astype(np.float32)
            for f, n in ((300, 48000), (500, 9000))]
    assert len(audio_spans(pipe.model, wavs[0], 1.2)) >= 3 and len(audio_spans(pipe.model, wavs[1], 1.2)) == 1
    got: dict[int, list[str]] = {0: [], 1: []}
    out = pipe.transcribe(wavs, prompt=["Transcribe the audio.", "What is it?"], generation={"max_new_tokens": 12},
                          chunk_seconds=1.2, on_text=lambda i, s: got[i].append(s))
    assert ["".join(got[i]) for i in (0, 1)] == out
    assert out == pipe.transcribe(wavs, prompt=["Transcribe the audio.", "What is it?"],
                                  generation={"max_new_tokens": 12}, chunk_seconds=1.2)
    assert out[1] == pipe.transcribe(wavs[1], prompt="What is it?", generation={"max_new_tokens": 12})


def test_batcher_refills_after_a_batch_so_clients_do_not_split_into_groups():
    sizes: list[int] = []

    def run(key, payloads):
        sizes.append(len(payloads))
        time.sleep(0.05)
        return payloads

    b = Batcher("t", run, max_items=4, wait_s=0.001, refill_s=1.0)
    try:
        def client(i: int) -> None:
            for r in range(5):
                time.sleep(0.02 * (i if r == 0 else 1))  # staggered at first; then a 20 ms round trip
                b.submit("k", (i, r)).result(10)

        threads = [threading.Thread(target=client, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert sum(sizes) == 20 and sizes[-3:] == [4, 4, 4]  # the staggered start merged into full batches
        t0 = time.monotonic()
        b.submit("k", "alone").result(10)  # a batch of 4 was answered, and nobody comes back: waits refill_s
        t1 = time.monotonic()
        b.submit("k", "again").result(10)  # the last batch held 1 and 1 is queued: no refill wait
        assert time.monotonic() - t1 < 0.5 <= t1 - t0
    finally:
        b.close()
