"""The demo in a real browser: Debian's Chromium driven by Playwright, a generated clip as the
camera. Skipped, with the reason, when Chromium or Playwright is missing (.ci/run installs
both)."""

from __future__ import annotations

import os
import shutil
import statistics
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from app.demo import DemoState
from app.models import choices_for
from tests.app.conftest import serve

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(os.environ.get("EVIT_TEST_ARTIFACTS", "runs/test-artifacts"))


def write_y4m(path: Path, frames: int = 40, width: int = 320, height: int = 240) -> Path:
    """A clip of drawn shapes moving across a textured background, as raw I420 frames."""
    from evit.train.synthetic import PATTERNS, SHAPES, draw_image

    with open(path, "wb") as f:
        f.write(f"YUV4MPEG2 W{width} H{height} F10:1 Ip A1:1 C420jpeg\n".encode())
        for i in range(frames):
            rng = np.random.default_rng(i // 10)  # a new scene every second
            shape, pattern = SHAPES[(i // 10) % len(SHAPES)], PATTERNS[(i // 10) % 4]
            picture = draw_image(shape, pattern, height, rng).resize((width, height))
            y, cb, cr = picture.convert("YCbCr").split()
            half = (width // 2, height // 2)
            f.write(b"FRAME\n")
            f.write(y.tobytes())
            f.write(cb.resize(half, Image.BILINEAR).tobytes())
            f.write(cr.resize(half, Image.BILINEAR).tobytes())
    return path


@pytest.fixture(scope="module")
def m0_server(tmp_path_factory):
    """M0 with live weights (every block computes), so predictions follow the picture."""
    import evit
    from edge.export import export_onnx
    from evit.live import live_copy

    path = tmp_path_factory.mktemp("m0") / "m0.onnx"
    export_onnx(live_copy(evit.create_model("m0"), seed=3), path)
    state = DemoState(choices_for(str(path)), "ort", 1)
    demo, url = serve(state, stream_every=0.05)
    yield state, url
    demo.close()


BROWSER_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
OBSERVE_STATS = (
    "() => { window.__updates = []; const el = document.querySelector('#stats');"
    " new MutationObserver(() => { const u = window.__updates, t = el.innerText;"
    " if (!u.length || u[u.length - 1][1] !== t) u.push([performance.now(), t]); })"
    ".observe(el, {subtree: true, childList: true, characterData: true}); }"
)


def stream_in_browser(url: str, clip: Path, seconds: float, after_stop: float = 0.0):
    """Open the page in Chromium with ``clip`` as the camera, stream for ``seconds``.

    Returns (results shown while streaming [(ms, text)], results shown after Stop, the top
    labels seen, the page's screenshot path).
    """
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
    args = [*BROWSER_ARGS, f"--use-file-for-fake-video-capture={clip}"]
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=args)
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 900})
            context.grant_permissions(["camera"], origin=url.rstrip("/"))
            page = context.new_page()
            page.goto(url)
            page.get_by_title("grant webcam access").click()
            page.wait_for_function(
                "() => { const v = document.querySelector('[data-testid=webcam-video]');"
                " return v && v.readyState >= 2; }",
                timeout=30_000,
            )
            page.evaluate(OBSERVE_STATS)
            page.get_by_role("button", name="capture photo").click()
            labels = set()
            deadline = time.time() + seconds
            while time.time() < deadline:
                top = page.locator("[data-testid=label-output-value]")
                if top.count():
                    labels.add(top.first.inner_text())
                time.sleep(0.1)
            during = page.evaluate("() => window.__updates.length")
            shot = None
            if after_stop:
                page.get_by_role("button", name="capture photo").click()  # the same toggle
                time.sleep(after_stop)
            else:
                ARTIFACTS.mkdir(parents=True, exist_ok=True)
                shot = ARTIFACTS / "demo-browser.png"
                page.screenshot(path=str(shot), full_page=True)
            updates = page.evaluate("() => window.__updates")
        finally:
            browser.close()
    results = _results(updates)
    late = _results(updates[during:])
    return results[: len(results) - len(late)], late, labels, shot


def _results(updates: list) -> list:
    """A result is a new "model ..." line (the element shows progress states in between)."""
    out = [(t, text) for t, text in updates if text.startswith("model")]
    return [r for i, r in enumerate(out) if i == 0 or r[1] != out[i - 1][1]]


def test_webcam_stream_in_chromium(m0_server, tmp_path, capsys):
    _, url = m0_server
    results, _, labels, shot = stream_in_browser(url, write_y4m(tmp_path / "camera.y4m"), 10)
    stats = [text for _, text in results]
    assert len(labels) >= 2, labels  # the predictions follow the clip's changing scenes
    assert len(set(stats)) >= 5, stats[-3:]  # the figures change frame after frame
    assert "frames/s" in stats[-1]
    gaps = np.diff([t for t, _ in results])
    with capsys.disabled():
        print(
            f"\nbrowser: {len(results)} results shown in 10 s, {len(labels)} distinct top labels;"
            f" result-to-result p50 {statistics.median(gaps):.0f} ms, p90 "
            f"{np.percentile(gaps, 90):.0f} ms; server side: {stats[-1]}; screenshot {shot}"
        )


def test_a_slow_model_drops_frames_instead_of_queueing_them(labelled_onnx, tmp_path, capsys):
    """0.4 s per frame while the camera offers one every 0.05 s: answers keep coming at the
    model's pace, and after Stop no backlog of old frames is still being answered."""
    state = DemoState(choices_for(str(labelled_onnx)), "ort", 1)
    real = state.classifier.runtime.timed_output

    def slow():
        time.sleep(0.4)
        return real()

    state.classifier.runtime.timed_output = slow
    demo, url = serve(state, stream_every=0.05)
    try:
        results, late, _, _ = stream_in_browser(url, write_y4m(tmp_path / "c.y4m"), 6, 2.0)
    finally:
        demo.close()
    offered = 6 / 0.05
    with capsys.disabled():
        print(
            f"\nslow model (0.4 s a frame, a frame offered every 0.05 s): {len(results)} answers "
            f"in 6 s, {len(late)} after Stop"
        )
    assert 5 <= len(results) <= 6 / 0.4 + 2, len(results)  # the model's pace, not the camera's
    assert len(results) < offered / 4
    # at most the frame in flight and one taken as Stop was pressed; a queue of the frames
    # offered meanwhile (40 in 2 s) would keep answering at the model's pace (5 in 2 s)
    assert len(late) <= 2
