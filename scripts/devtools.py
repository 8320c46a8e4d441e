"""A headless Chromium driven through the DevTools protocol, for looking at TensorBoard's pages.

TensorBoard renders its dashboards into shadow DOM, so `chromium --dump-dom` does not contain what
is on screen; here the page is loaded for real and read with JavaScript (Runtime.evaluate) or
photographed (Page.captureScreenshot). The protocol runs over a pipe (--remote-debugging-pipe:
chromium reads commands on fd 3 and writes replies on fd 4, each a JSON message ending in a NUL
byte), so no port is opened and no package beyond the standard library is needed.

    with Chromium() as browser:
        browser.open("http://127.0.0.1:6006/#hparams", width=1400, height=800)
        print(browser.evaluate("document.title"))
        Path("page.png").write_bytes(browser.screenshot())
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


class BrowserUnavailable(RuntimeError):
    """No Chromium on PATH, or it would not start (the reason is in the message)."""


def find_chromium() -> str:
    for name in CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    raise BrowserUnavailable(f"no Chromium on PATH (looked for {', '.join(CANDIDATES)}); "
                             "on Debian: apt-get install chromium")


class Chromium:
    """One headless Chromium with one page of our own, closed on exit."""

    def __init__(self, executable: str | None = None, timeout: float = 30.0):
        self.executable = executable or find_chromium()
        self.timeout = timeout
        self.next_id = 0
        self.session: str | None = None
        self.buffer = b""

    def __enter__(self) -> Chromium:
        self.profile = tempfile.TemporaryDirectory(prefix="rnnexp-chromium-")
        to_browser_r, self.to_browser = os.pipe()
        self.from_browser, from_browser_w = os.pipe()

        def as_fds_3_and_4():  # in the child, before exec: the pipe's ends where chromium looks for them
            high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in (to_browser_r, from_browser_w)]  # either may be 3 or 4
            for fd, target in zip(high, (3, 4)):
                os.dup2(fd, target, inheritable=True)

        self.log = open(Path(self.profile.name) / "chromium.log", "w+")
        try:
            self.process = subprocess.Popen(
                [self.executable, "--headless=new", "--remote-debugging-pipe", "--no-sandbox", "--disable-gpu",
                 "--no-first-run", "--no-default-browser-check", "--disable-extensions", "--disable-dev-shm-usage",
                 "--hide-scrollbars", "--mute-audio", f"--user-data-dir={self.profile.name}", "about:blank"],
                stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT,
                # only os calls, no locks: safe after fork even with other threads about
                preexec_fn=as_fds_3_and_4, pass_fds=(3, 4))  # noqa: PLW1509
        except OSError as exc:
            for fd in (to_browser_r, self.to_browser, self.from_browser, from_browser_w):
                os.close(fd)
            self.log.close()
            self.profile.cleanup()
            raise BrowserUnavailable(f"{self.executable} did not start: {exc}") from exc
        os.close(to_browser_r)
        os.close(from_browser_w)
        try:
            target = self.call("Target.createTarget", url="about:blank")["targetId"]
            self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        except BaseException as exc:
            reason = self.startup_log()
            self.__exit__(None, None, None)
            if isinstance(exc, (BrowserUnavailable, OSError, TimeoutError)):
                raise BrowserUnavailable(f"{self.executable} did not start: {exc}\n{reason}") from exc
            raise
        return self

    def startup_log(self) -> str:
        self.log.flush()
        self.log.seek(0)
        return self.log.read()[-2000:]

    def __exit__(self, *exc) -> None:
        if self.process.poll() is None:
            try:
                self.call("Browser.close", session=False)
                self.process.wait(timeout=10)
            except (BrowserUnavailable, OSError, TimeoutError, subprocess.TimeoutExpired):
                self.process.kill()
                self.process.wait()
        for fd in (self.to_browser, self.from_browser):
            try:
                os.close(fd)
            except OSError:
                pass
        self.log.close()
        self.profile.cleanup()

    # -- the protocol
    def call(self, method: str, session: bool = True, **params) -> dict:
        """Send one command and wait for its reply (events that arrive meanwhile are dropped)."""
        self.next_id += 1
        message = {"id": self.next_id, "method": method, "params": params}
        if session and self.session:
            message["sessionId"] = self.session
        os.write(self.to_browser, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + self.timeout
        while True:
            reply = self.read_message(deadline)
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise RuntimeError(f"DevTools {method}: {reply['error'].get('message')}")
                return reply.get("result", {})

    def read_message(self, deadline: float) -> dict:
        while b"\0" not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no reply from Chromium within {self.timeout:.0f} s")
            ready, _, _ = select.select([self.from_browser], [], [], left)
            if ready:
                chunk = os.read(self.from_browser, 1 << 16)
                if not chunk:
                    raise BrowserUnavailable(f"Chromium exited (status {self.process.poll()})")
                self.buffer += chunk
        raw, self.buffer = self.buffer.split(b"\0", 1)
        return json.loads(raw)

    # -- what the callers need
    def open(self, url: str, width: int = 1400, height: int = 900) -> None:
        self.call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1,
                  mobile=False)
        self.call("Page.navigate", url=url)

    def evaluate(self, expression: str):
        """The value of a JavaScript expression in the page (awaited if it is a promise)."""
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            raise RuntimeError(f"JavaScript error: {details.get('exception', {}).get('description') or details}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 60.0, what: str = "the page"):
        """Poll a JavaScript expression until it is truthy; its value."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what} did not appear within {timeout:.0f} s")
            time.sleep(0.25)

    def screenshot(self) -> bytes:
        return base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"])


# Every element of the page, shadow roots included (querySelectorAll stops at each shadow root).
DEEP_ELEMENTS_JS = """
function deepElements(root) {
  const found = [];
  const walk = (node) => {
    for (const el of node.querySelectorAll('*')) {
      found.push(el);
      if (el.shadowRoot) walk(el.shadowRoot);
    }
  };
  walk(root);
  return found;
}
"""
