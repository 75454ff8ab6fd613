"""The report in a real browser: headless Chromium loads report.html from disk, every image decodes,
no request leaves the file, and the page is not blank.

Skipped, with the reason, only where Chromium is not installed (``scripts/setup.sh`` installs the
Debian package ``chromium`` where it can).
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from tests.report.browser import find_chromium, visit

CHROMIUM = find_chromium()
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None,
    reason="Chromium is not installed (Debian: apt-get install chromium; scripts/setup.sh does it)",
)


def _is_load_error(entry: dict) -> bool:
    return entry.get("level") == "error" and (
        entry.get("source") in ("security", "network")
        or "Content Security Policy" in entry.get("text", "")
    )


@needs_chromium
def test_report_opens_in_headless_chromium_without_the_network(digits_run, tmp_path):
    report = digits_run / "report.html"
    seen = visit(report, CHROMIUM)

    # Every image loaded and decoded.
    assert len(seen.images) == 5
    for image in seen.images:
        assert image["complete"] and image["naturalWidth"] > 0 and image["naturalHeight"] > 0, image

    # No request left the file: the page itself and its inline data: images only.
    page_url = report.resolve().as_uri()
    outside = [u for u in seen.requests if u != page_url and not u.startswith("data:")]
    assert outside == []
    assert page_url in seen.requests
    # A blocked attempt would show as a CSP violation (or a failed load) in the log.
    assert [e for e in seen.log_entries if _is_load_error(e)] == []

    # The screenshot is a real page: tall, and not one flat colour.
    screenshot = Image.open(io.BytesIO(seen.screenshot)).convert("L")
    (tmp_path / "screenshot.png").write_bytes(seen.screenshot)
    pixels = np.asarray(screenshot, dtype=np.float64)
    assert screenshot.size[1] > 2000, screenshot.size  # every section rendered, not just a header
    assert pixels.std() > 20.0, pixels.std()
    assert (pixels < 128).mean() > 0.01  # some dark ink: text, axes, images


@needs_chromium
def test_the_pixel_check_would_catch_a_blank_page(tmp_path):
    blank = tmp_path / "blank.html"
    blank.write_text("<!DOCTYPE html><html><body style='background:#fff'></body></html>")
    seen = visit(blank, CHROMIUM)
    pixels = np.asarray(Image.open(io.BytesIO(seen.screenshot)).convert("L"), dtype=np.float64)
    assert pixels.std() < 1.0 and seen.images == []


@needs_chromium
def test_the_request_check_would_catch_an_external_image(tmp_path):
    page = tmp_path / "leaky.html"
    # No CSP here: the browser must try the request for the check to see it (nothing listens).
    page.write_text('<!DOCTYPE html><html><body><img src="http://127.0.0.1:9/x.png"></body></html>')
    seen = visit(page, CHROMIUM)
    assert "http://127.0.0.1:9/x.png" in seen.requests
    assert seen.images[0]["naturalWidth"] == 0


@needs_chromium
def test_the_report_policy_blocks_an_external_image_and_the_log_shows_it(tmp_path):
    from tripletkit.report import CONTENT_SECURITY_POLICY

    page = tmp_path / "blocked.html"
    page.write_text(
        f'<!DOCTYPE html><html><head><meta http-equiv="Content-Security-Policy" '
        f'content="{CONTENT_SECURITY_POLICY}"></head>'
        '<body><img src="http://127.0.0.1:9/x.png"></body></html>'
    )
    seen = visit(page, CHROMIUM)
    errors = [e for e in seen.log_entries if _is_load_error(e)]
    assert any("Content Security Policy" in e.get("text", "") for e in errors)
    assert seen.images[0]["naturalWidth"] == 0
