"""Open a local HTML file in headless Chromium over the DevTools protocol (``--remote-debugging-pipe``).

The pipe protocol: Chromium reads NUL-terminated JSON commands from file descriptor 3 and writes
NUL-terminated JSON replies and events to descriptor 4. We open one page, record every network
request and every console/log entry, wait for the load event, ask the page about its images, and
take a full-page screenshot.
"""

from __future__ import annotations

import base64
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: The flags the issue asks for, plus a throw-away profile so parallel runs do not collide.
HEADLESS_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
)


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name) or (
            f"/usr/bin/{name}" if Path(f"/usr/bin/{name}").exists() else None
        )
        if path:
            return path
    return None


@dataclass
class PageVisit:
    """What the browser saw: requested URLs, log entries, the images' state, a PNG screenshot."""

    requests: list[str] = field(default_factory=list)
    log_entries: list[dict[str, Any]] = field(default_factory=list)
    images: list[dict[str, Any]] = field(default_factory=list)
    screenshot: bytes = b""


class _Pipe:
    def __init__(self, process: subprocess.Popen, write_fd: int, read_fd: int) -> None:
        self.process, self.write_fd, self.read_fd = process, write_fd, read_fd
        self.buffer = b""
        self.next_id = 0
        self.events: list[dict[str, Any]] = []

    def _read_message(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("Chromium did not answer in time")
            ready, _, _ = select.select([self.read_fd], [], [], left)
            if ready:
                chunk = os.read(self.read_fd, 1 << 20)
                if not chunk:
                    raise RuntimeError(
                        f"Chromium closed the pipe (exit code {self.process.poll()})"
                    )
                self.buffer += chunk
        message, self.buffer = self.buffer.split(b"\0", 1)
        return json.loads(message)

    def send(
        self,
        method: str,
        params: dict | None = None,
        session: str | None = None,
        timeout: float = 30.0,
    ) -> dict[str, Any]:
        self.next_id += 1
        command: dict[str, Any] = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            command["sessionId"] = session
        os.write(self.write_fd, json.dumps(command).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            message = self._read_message(deadline)
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})
            self.events.append(message)

    def wait_for(self, method: str, timeout: float = 30.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        for index, event in enumerate(self.events):
            if event.get("method") == method:
                return self.events.pop(index)
        while True:
            message = self._read_message(deadline)
            if message.get("method") == method:
                return message
            self.events.append(message)


def visit(html_file: Path, chromium: str, width: int = 1400, height: int = 1000) -> PageVisit:
    """Load ``html_file`` in headless Chromium and report what happened."""
    url = Path(html_file).resolve().as_uri()
    commands_read, commands_write = os.pipe()
    replies_read, replies_write = os.pipe()
    profile = tempfile.mkdtemp(prefix="tripletkit-chromium-")

    # Chromium expects its commands on fd 3 and writes replies to fd 4. os.pipe() descriptors
    # are close-on-exec; dup2 makes inheritable copies at 3 and 4 (via fresh descriptors first,
    # in case a pipe end already sits at 3 or 4).
    def child_fds() -> None:
        commands, replies = os.dup(commands_read), os.dup(replies_write)
        os.dup2(commands, 3)
        os.dup2(replies, 4)

    process = subprocess.Popen(
        [
            chromium,
            *HEADLESS_FLAGS,
            f"--user-data-dir={profile}",
            f"--window-size={width},{height}",
            "--remote-debugging-pipe",
            "about:blank",
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        close_fds=False,
        preexec_fn=child_fds,
    )
    os.close(commands_read)
    os.close(replies_write)
    pipe = _Pipe(process, commands_write, replies_read)
    result = PageVisit()
    try:
        target = pipe.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = pipe.send("Target.attachToTarget", {"targetId": target, "flatten": True})[
            "sessionId"
        ]
        for domain in ("Page", "Network", "Log", "Runtime"):
            pipe.send(f"{domain}.enable", session=session)
        pipe.send(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
            session=session,
        )
        pipe.send("Page.navigate", {"url": url}, session=session)
        pipe.wait_for("Page.loadEventFired", timeout=60)
        images = pipe.send(
            "Runtime.evaluate",
            {
                "expression": "JSON.stringify(Array.from(document.images).map(i => ({src: "
                "i.src.slice(0, 40), complete: i.complete, naturalWidth: i.naturalWidth, "
                "naturalHeight: i.naturalHeight})))",
                "returnByValue": True,
            },
            session=session,
        )
        result.images = json.loads(images["result"]["value"])
        shot = pipe.send(
            "Page.captureScreenshot",
            {"format": "png", "captureBeyondViewport": True},
            session=session,
            timeout=60,
        )
        result.screenshot = base64.b64decode(shot["data"])
        pipe.send("Browser.close", timeout=10)
    finally:
        for event in pipe.events:
            params = event.get("params", {})
            if event.get("method") == "Network.requestWillBeSent":
                result.requests.append(params["request"]["url"])
            elif event.get("method") == "Log.entryAdded":
                result.log_entries.append(params["entry"])
            elif event.get("method") == "Runtime.consoleAPICalled":
                result.log_entries.append({"level": params.get("type"), "text": str(params)})
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        os.close(commands_write)
        os.close(replies_read)
        shutil.rmtree(profile, ignore_errors=True)
    return result
