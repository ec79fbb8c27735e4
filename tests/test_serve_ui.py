"""`auralm ui` in a real browser: headless Chromium (Debian's `chromium`, driven by Playwright's Python API
pointed at that executable; no browser download) uploads a WAV on the Transcribe tab, submits, and finds on
the page the transcript the API gives for the same clip; then a chat turn and a generated sound.
Screenshots go into the test's tmp folder."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import soundfile as sf

from test_serve_api import Server, checkpoints, tone  # noqa: F401 - checkpoints is a fixture

CHROMIUM = "/usr/bin/chromium"


@pytest.mark.slow
def test_ui_transcribes_an_uploaded_wav_in_chromium(checkpoints, tmp_path):  # noqa: F811
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (the Python API) is not installed")
    pytest.importorskip("gradio")
    if not Path(CHROMIUM).exists() and shutil.which("chromium") is None:
        pytest.skip("Debian's chromium is not installed (apt-get install chromium; make setup does it)")
    clip = tmp_path / "clip.wav"
    sf.write(str(clip), tone(1.0), 16000, subtype="PCM_16")
    srv = Server(["--checkpoint", str(checkpoints["hear"]), "--name", "hear", "--checkpoint",
                  str(checkpoints["sound"]), "--name", "sound"], tmp_path / "ui.log", command="ui")
    try:
        expected = srv.client().audio.transcriptions.create(model="hear", file=("clip.wav", clip.read_bytes())).text
        assert expected
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=shutil.which("chromium") or CHROMIUM, headless=True,
                                        args=["--no-sandbox"])
            try:
                page = browser.new_page()
                page.goto(srv.url + "/ui/", wait_until="load", timeout=60_000)
                page.locator("#transcribe-audio input[type=file]").set_input_files(str(clip))
                page.locator("#transcribe-audio audio, #transcribe-audio canvas, #transcribe-audio .waveform-container"
                             ).first.wait_for(state="attached", timeout=30_000)
                page.click("#transcribe-button")
                page.wait_for_function("() => document.querySelector('#transcript textarea').value.length > 0",
                                       timeout=60_000)
                page.screenshot(path=str(tmp_path / "transcribe.png"), full_page=True)
                assert page.locator("#transcript textarea").input_value() == expected
                # chat: a clip and a question; the answer streams into the conversation
                page.get_by_role("tab", name="Chat").click()
                page.locator("#chat-input input[type=file]").set_input_files(str(clip))
                page.wait_for_timeout(500)
                page.locator("#chat-input textarea").fill("Transcribe the audio.")
                page.locator("#chat-input textarea").press("Enter")
                page.wait_for_function(f"() => document.querySelector('#chatbot').innerText.includes({expected[:40]!r})",
                                       timeout=60_000)
                page.screenshot(path=str(tmp_path / "chat.png"), full_page=True)
                # sound: the generated WAV lands in an audio player
                page.get_by_role("tab", name="Sound").click()
                page.click("#sound-button")
                page.locator("#sound-out audio").first.wait_for(state="attached", timeout=60_000)
                page.screenshot(path=str(tmp_path / "sound.png"), full_page=True)
            finally:
                browser.close()
        assert (tmp_path / "transcribe.png").stat().st_size > 1000
    finally:
        srv.stop()
