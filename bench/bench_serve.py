"""`auralm serve` under load on loopback: throughput, latency, memory, correctness, and what batching buys.

It starts the server as a real process (``python -m auralm serve``) on a free 127.0.0.1 port with a hear
checkpoint, and:

1. **references**: asks for every test clip's answer one request at a time (greedy chat, and a
   transcription), the answers every later valid request must equal;
2. **mixed load**: ``--clients`` clients (50) for ``--seconds`` (>= 60 for the issue's figure), each
   request drawn (seeded) from valid chat, streamed chat and transcription requests and invalid ones
   (truncated base64, a WAV whose header says 0 Hz, an unknown model, a wrong key, a schema error, bytes
   that are no image, audio over the limit), each with the status it must get;
3. **batched vs one at a time**: a second server with ``--batch-size 1`` starts; ``--ratio-clients``
   clients (16) send valid chat requests back to back to each server for ``--ratio-seconds``, in
   alternating halves (batched, single, single, batched) so a drifting machine load hits both alike. The
   ratio of the two rates is what batching buys at that concurrency (issue 11's target: >= 3x at 16).

It reports requests/s, p50/p99 latency (valid requests), the server's RSS at start and its peak (process
and children, sampled every 0.2 s), the count of 5xx other than the designed 429/503, wrong statuses,
wrong answers, and the ratio; ``--out`` writes the same as JSON. Every loop is bounded in time; only
loopback is contacted::

    PYTHONPATH=src HF_HUB_OFFLINE=1 .venv/bin/python bench/bench_serve.py --checkpoint runs/demo/checkpoint \\
        [--clients 50 --seconds 60 --ratio-clients 16 --ratio-seconds 30 --max-tokens 32 --out serve.json]

Test clips are synthetic tones (0.5 to 6 s, some with pauses) unless ``--audio`` names WAV files.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import psutil
import soundfile as sf

MODEL = "bench"
KEY = "bench-key"
SR = 16000


def wav_bytes(wav: np.ndarray, sr: int = SR) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, wav, sr, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def test_clips(paths: list[str], n: int = 12) -> list[bytes]:
    if paths:
        return [Path(p).read_bytes() for p in paths]
    rng = np.random.default_rng(0)
    clips = []
    for i in range(n):
        seconds = 0.5 + 5.5 * i / max(1, n - 1)
        t = np.arange(int(SR * seconds)) / SR
        wav = 0.3 * np.sin(2 * np.pi * (180 + 40 * i) * t) + 0.02 * rng.standard_normal(len(t))
        if i % 3 == 2:
            wav = wav * (np.sin(2 * np.pi * 0.7 * t) > -0.3)
        clips.append(wav_bytes(wav.astype(np.float32)))
    return clips


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, checkpoint: str, batch_size: int, log: Path, extra: list[str]):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "AURALM_PROGRESS": "0"}
        cmd = [sys.executable, "-m", "auralm", "serve", "--checkpoint", checkpoint, "--name", MODEL, "--host",
               "127.0.0.1", "--port", str(self.port), "--api-key", KEY, "--batch-size", str(batch_size),
               "--max-audio-seconds", "60", *extra]
        self.log = log
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
        end = time.monotonic() + 600
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise SystemExit(f"server exited ({self.proc.returncode}):\n{log.read_text()[-3000:]}")
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.25)
        else:
            self.stop()
            raise SystemExit("server not ready in 600 s")
        self.ps = psutil.Process(self.proc.pid)
        self.start_rss = self.rss()
        self.peak_rss = self.start_rss
        self._stop = threading.Event()
        self._sampler = threading.Thread(target=self._sample, daemon=True)
        self._sampler.start()

    def rss(self) -> int:
        try:
            procs = [self.ps, *self.ps.children(recursive=True)]
            return sum(p.memory_info().rss for p in procs)
        except psutil.Error:
            return 0

    def _sample(self) -> None:
        while not self._stop.wait(0.2):
            self.peak_rss = max(self.peak_rss, self.rss())

    def stop(self) -> None:
        if hasattr(self, "_stop"):
            self._stop.set()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()


# -- requests --------------------------------------------------------------------------------------------------
def chat_body(clip: bytes, max_tokens: int, stream: bool = False, model: str = MODEL, data: str | None = None) -> dict:
    audio = {"data": data if data is not None else base64.b64encode(clip).decode(), "format": "wav"}
    return {"model": model, "max_tokens": max_tokens, "stream": stream, "messages": [
        {"role": "user", "content": [{"type": "text", "text": "Transcribe the audio."},
                                     {"type": "input_audio", "input_audio": audio}]}]}


def post_chat(http: httpx.Client, url: str, body: dict, key: str = KEY) -> tuple[int, str | None]:
    headers = {"Authorization": f"Bearer {key}"}
    if not body.get("stream"):
        r = http.post(url + "/v1/chat/completions", json=body, headers=headers)
        return r.status_code, r.json()["choices"][0]["message"]["content"] if r.status_code == 200 else None
    parts = []
    with http.stream("POST", url + "/v1/chat/completions", json=body, headers=headers) as r:
        if r.status_code != 200:
            r.read()
            return r.status_code, None
        for line in r.iter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                event = json.loads(line[6:])
                if "error" in event:
                    return 500, None
                for c in event.get("choices", []):
                    parts.append(c.get("delta", {}).get("content") or "")
    return 200, "".join(parts)


def post_transcription(http: httpx.Client, url: str, clip: bytes) -> tuple[int, str | None]:
    r = http.post(url + "/v1/audio/transcriptions", headers={"Authorization": f"Bearer {KEY}"},
                  files={"file": ("clip.wav", clip, "audio/wav")}, data={"model": MODEL})
    return r.status_code, r.json()["text"] if r.status_code == 200 else None


def zero_rate(clip: bytes) -> bytes:
    data = bytearray(clip)
    pos = data.index(b"fmt ")
    data[pos + 12 : pos + 20] = bytes(8)
    return bytes(data)


def make_invalid(clips: list[bytes], max_tokens: int) -> dict[str, tuple[int, callable]]:
    """name -> (status it must get, function(http, url) -> status)."""
    long_clip = wav_bytes(np.zeros(SR * 61, np.float32) + 0.01)  # over the bench server's 60 s
    not_image = "data:image/png;base64," + base64.b64encode(b"no image here").decode()

    def chat(body: dict, key: str = KEY):
        return lambda http, url: http.post(url + "/v1/chat/completions", json=body,
                                           headers={"Authorization": f"Bearer {key}"}).status_code

    with_image = chat_body(clips[0], max_tokens)
    with_image["messages"][0]["content"].append({"type": "image_url", "image_url": {"url": not_image}})
    return {
        "truncated base64": (400, chat(chat_body(clips[0], max_tokens, data=base64.b64encode(clips[0]).decode()[:-3]))),
        "sample rate 0": (400, chat(chat_body(zero_rate(clips[0]), max_tokens))),
        "unknown model": (404, chat(chat_body(clips[0], max_tokens, model="nope"))),
        "wrong key": (401, chat(chat_body(clips[0], max_tokens), key="wrong")),
        "schema": (422, chat({"model": MODEL, "messages": []})),
        "not an image": (400, chat(with_image)),
        "audio too long": (413, chat(chat_body(long_clip, max_tokens))),
    }


class Tally:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.latency: list[float] = []
        self.statuses: dict[int, int] = {}
        self.valid = self.wrong_answers = self.wrong_status = self.unexpected_5xx = self.invalid = 0
        self.busy = 0  # designed 429/503
        self.examples: list[str] = []

    def add(self, kind: str, expected: int, status: int, seconds: float, ok_answer: bool | None) -> None:
        with self.lock:
            self.statuses[status] = self.statuses.get(status, 0) + 1
            if status in (429, 503):
                self.busy += 1
                return
            if status >= 500:
                self.unexpected_5xx += 1
            if status != expected:
                self.wrong_status += 1
                if len(self.examples) < 5:
                    self.examples.append(f"{kind}: {status} (expected {expected})")
                return
            if expected == 200:
                self.valid += 1
                self.latency.append(seconds)
                if not ok_answer:
                    self.wrong_answers += 1
                    if len(self.examples) < 5:
                        self.examples.append(f"{kind}: answer differs from the reference")
            else:
                self.invalid += 1


def run_clients(url: str, clients: int, seconds: float, clips: list[bytes], refs: dict, max_tokens: int,
                invalid: dict, invalid_frac: float, seed: int) -> tuple[Tally, float]:
    tally = Tally()
    end = time.monotonic() + seconds
    kinds = list(invalid)

    def client(i: int) -> None:
        rng = random.Random(seed * 1000 + i)
        with httpx.Client(timeout=300) as http:
            while time.monotonic() < end:
                t0 = time.monotonic()
                j = rng.randrange(len(clips))
                roll = rng.random()
                try:
                    if roll < invalid_frac:
                        name = rng.choice(kinds)
                        expected, fn = invalid[name]
                        tally.add(name, expected, fn(http, url), time.monotonic() - t0, None)
                        continue
                    roll = (roll - invalid_frac) / max(1e-9, 1 - invalid_frac)
                    if roll < 0.2:
                        status, text = post_transcription(http, url, clips[j])
                        tally.add("transcription", 200, status, time.monotonic() - t0, text == refs["transcription"][j])
                    else:
                        stream = roll > 0.85
                        status, text = post_chat(http, url, chat_body(clips[j], max_tokens, stream=stream))
                        tally.add("chat stream" if stream else "chat", 200, status, time.monotonic() - t0,
                                  text == refs["chat"][j])
                except httpx.HTTPError as exc:
                    tally.add(f"transport {type(exc).__name__}", 200, 599, time.monotonic() - t0, False)

    t0 = time.monotonic()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + 600)
    return tally, time.monotonic() - t0


def server_stats(server: Server) -> dict:
    return httpx.get(server.url + "/health", timeout=10).json()["models"][MODEL]


def batch_use(halves: list[tuple[dict, dict, float]]) -> dict:
    """From the server's counters before and after each half: how full its batches were and how busy its model."""
    d = {k: sum(after[k] - before[k] for before, after, _ in halves) for k in ("batches", "jobs", "items", "busy_s", "waited_s")}
    wall = sum(w for _, _, w in halves)
    return {**{k: round(v, 2) for k, v in d.items()}, "items_per_batch": round(d["items"] / max(1, d["batches"]), 2),
            "busy_frac": round(d["busy_s"] / wall, 3) if wall else None,
            "busy_s_per_item": round(d["busy_s"] / max(1, d["items"]), 3),
            "wait_s_per_job": round(d["waited_s"] / max(1, d["jobs"]), 3)}


def summary(tally: Tally, wall: float) -> dict:
    lat = sorted(tally.latency)
    total = sum(tally.statuses.values())
    pct = lambda q: round(lat[min(len(lat) - 1, int(q * len(lat)))] * 1000, 1) if lat else None  # noqa: E731
    return {"requests": total, "requests_per_s": round(total / wall, 2), "valid_per_s": round(tally.valid / wall, 2),
            "valid": tally.valid, "invalid_answered_right": tally.invalid, "busy_429_503": tally.busy,
            "p50_ms": pct(0.5), "p99_ms": pct(0.99), "mean_ms": round(statistics.mean(lat) * 1000, 1) if lat else None,
            "wrong_answers": tally.wrong_answers, "wrong_status": tally.wrong_status,
            "unexpected_5xx": tally.unexpected_5xx, "statuses": dict(sorted(tally.statuses.items())),
            "examples": tally.examples}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", required=True, help="a hear checkpoint folder")
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--seconds", type=float, default=60.0, help="mixed-load phase length")
    ap.add_argument("--ratio-clients", type=int, default=16)
    ap.add_argument("--ratio-seconds", type=float, default=30.0, help="seconds of each throughput run (batched, one at a time), in two halves")
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--invalid-frac", type=float, default=0.3)
    ap.add_argument("--audio", nargs="*", default=[], help="WAV files to use instead of synthetic tones")
    ap.add_argument("--server-arg", action="append", default=[], help="extra `auralm serve` argument (repeat)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--ratio-only", action="store_true", help="skip the mixed-load phase (the references are still made)")
    ap.add_argument("--out", help="write the report as JSON here")
    args = ap.parse_args()

    clips = test_clips(args.audio)
    invalid = make_invalid(clips, args.max_tokens)
    report: dict = {"checkpoint": args.checkpoint, "clips": len(clips), "max_tokens": args.max_tokens,
                    "cpus": os.cpu_count(), "torch_threads": os.environ.get("OMP_NUM_THREADS", "default")}
    logs = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    srv = Server(args.checkpoint, args.batch_size, logs / "batched.log", args.server_arg)
    try:
        with httpx.Client(timeout=600) as http:
            refs = {"chat": [post_chat(http, srv.url, chat_body(c, args.max_tokens))[1] for c in clips],
                    "transcription": [post_transcription(http, srv.url, c)[1] for c in clips]}
            for name, (expected, fn) in invalid.items():
                got = fn(http, srv.url)
                if got != expected:
                    print(f"warning: {name} gave {got}, expected {expected}", file=sys.stderr)
        print(f"[bench] references: {sum(r is not None for r in refs['chat'])}/{len(clips)} clips", file=sys.stderr)
        if not args.ratio_only:
            tally, wall = run_clients(srv.url, args.clients, args.seconds, clips, refs, args.max_tokens, invalid,
                                      args.invalid_frac, args.seed + 1)
            report["mixed"] = {"clients": args.clients, "seconds": round(wall, 1), **summary(tally, wall)}
            report["mixed"]["server_batches"] = server_stats(srv)
            print(f"[bench] mixed: {report['mixed']['requests_per_s']} req/s", file=sys.stderr)
        report["rss_mb"] = {"start": round(srv.start_rss / 2**20, 1), "peak": round(srv.peak_rss / 2**20, 1)}
        # throughput, batched and one at a time, in alternating halves so a drifting machine load hits both alike
        single = Server(args.checkpoint, 1, logs / "single.log", args.server_arg)
        try:
            with httpx.Client(timeout=600) as http:  # warm-up
                post_chat(http, single.url, chat_body(clips[0], args.max_tokens))
            runs: dict[str, list] = {"batched": [], "one_at_a_time": []}
            servers = {"batched": srv, "one_at_a_time": single}
            batches = {name: [] for name in servers}  # the server's batch counters before and after each half
            for half in range(2):
                for name in ("batched", "one_at_a_time")[:: 1 if half == 0 else -1]:
                    before = server_stats(servers[name])
                    runs[name].append(run_clients(servers[name].url, args.ratio_clients, args.ratio_seconds / 2, clips,
                                                  refs, args.max_tokens, {}, 0.0, args.seed + half))
                    batches[name].append((before, server_stats(servers[name]), runs[name][-1][1]))
                    print(f"[bench] {name}: {runs[name][-1][0].valid / runs[name][-1][1]:.2f} valid req/s",
                          file=sys.stderr)
        finally:
            single.stop()
        for name, size in (("batched", args.batch_size), ("one_at_a_time", 1)):
            merged = Tally()
            for t, _ in runs[name]:
                for key in ("valid", "wrong_answers", "wrong_status", "unexpected_5xx", "invalid", "busy"):
                    setattr(merged, key, getattr(merged, key) + getattr(t, key))
                merged.latency += t.latency
                for code, count in t.statuses.items():
                    merged.statuses[code] = merged.statuses.get(code, 0) + count
                merged.examples += t.examples
            report[name] = {"batch_size": size, "clients": args.ratio_clients,
                            **summary(merged, sum(w for _, w in runs[name])), "server": batch_use(batches[name])}
    finally:
        srv.stop()
    b, s = report["batched"]["valid_per_s"], report["one_at_a_time"]["valid_per_s"]
    report["batching_speedup"] = round(b / s, 2) if s else None
    for name in ("batched", "one_at_a_time"):
        u = report[name]["server"]
        print(f"{name}: {u['items_per_batch']} items a batch, model busy {u['busy_frac']:.0%} of the time, "
              f"{u['busy_s_per_item']} s of model time an item, {u['wait_s_per_job']} s queued a request", file=sys.stderr)
    m = report.get("mixed")
    if m:
        print(f"""
mixed load: {m['clients']} clients for {m['seconds']} s against {args.checkpoint}
  requests/s          {m['requests_per_s']}  (valid {m['valid_per_s']}/s; {m['valid']} valid, {m['invalid_answered_right']} invalid answered with the right status)
  latency (valid)     p50 {m['p50_ms']} ms   p99 {m['p99_ms']} ms
  server RSS          start {report['rss_mb']['start']} MiB   peak {report['rss_mb']['peak']} MiB
  5xx (not 429/503)   {m['unexpected_5xx']}     designed 429/503: {m['busy_429_503']}
  wrong status        {m['wrong_status']}     wrong answers: {m['wrong_answers']}   {'; '.join(m['examples'])}
  statuses            {m['statuses']}""")
    print(f"""batching at {args.ratio_clients} clients: {b} valid req/s (batch {args.batch_size}) vs {s} (batch 1) = {report['batching_speedup']}x
""")
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    ok = all(report[k]["unexpected_5xx"] == 0 and report[k]["wrong_status"] == 0 and report[k]["wrong_answers"] == 0
             for k in ("mixed", "batched", "one_at_a_time") if k in report)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
