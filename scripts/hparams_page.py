"""TensorBoard's HParams tab over a sweep, as a browser shows it: what tests/test_hparams_browser.py
checks and scripts/hparams_screenshot.py photographs.

    with TensorBoard(sweep_dir, log) as board, Chromium() as browser:
        board.wait_for_runs(4)
        page = open_hparams(browser, board.url, runs=4)
        page["ticked"], page["header"], page["rows"]
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from devtools import DEEP_ELEMENTS_JS, Chromium


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class TensorBoard:
    """`tensorboard --logdir <logdir>` on 127.0.0.1 and a free port, stopped on exit."""

    def __init__(self, logdir: Path, log):
        self.logdir, self.log = Path(logdir), log
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> TensorBoard:
        # load_fast=false: the Python reader, no separate data-server binary to wait for
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tensorboard.main", "--logdir", str(self.logdir), "--host", "127.0.0.1",
             "--port", str(self.port), "--load_fast=false"], stdout=self.log, stderr=subprocess.STDOUT)
        return self

    def __exit__(self, *exc) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def post(self, route: str, body: dict) -> dict:
        request = urllib.request.Request(f"{self.url}/data/plugin/hparams/{route}", data=json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    def session_groups(self, request: dict | None = None) -> list[dict]:
        request = request or {"experimentName": "", "startIndex": 0, "sliceSize": 1000, "allowedStatuses": [
            "STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"]}
        return self.post("session_groups", request).get("sessionGroups", [])

    def wait_for_runs(self, expected: int, timeout: float = 90, request: dict | None = None) -> list[dict]:
        """The session groups, once the server (which loads the events in the background) has `expected`."""
        deadline, groups = time.monotonic() + timeout, []
        while len(groups) < expected:
            if self.process.poll() is not None:
                raise RuntimeError(f"TensorBoard exited with {self.process.returncode}; see {self.log.name}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"TensorBoard served {len(groups)} of {expected} runs after {timeout:.0f} s")
            time.sleep(0.5)
            try:
                groups = self.session_groups(request)
            except (urllib.error.URLError, ConnectionError):
                continue
        return groups


# The HParams tab's query pane (the hparam and metric checkboxes) and its table, read through the
# shadow roots: the table is a vaadin-grid whose cells are slotted into its own shadow DOM.
READ_PAGE_JS = DEEP_ELEMENTS_JS + """
(() => {
  const all = deepElements(document);
  const pane = all.find(e => e.localName === 'tf-hparams-query-pane');
  const grid = all.find(e => e.localName === 'vaadin-grid' && e.id === 'sessionGroupsTable');
  if (!pane || !grid || !grid.shadowRoot) return null;
  const text = cell => {
    const slot = cell.querySelector('slot');
    return slot ? slot.assignedElements().map(e => e.textContent.trim()).join(' ') : '';
  };
  const rows = sel => [...grid.shadowRoot.querySelectorAll(sel)]
    .filter(tr => !tr.hidden)
    .map(tr => [...tr.querySelectorAll('th, td')].filter(c => !c.hidden).map(text));
  return JSON.stringify({
    ticked: [...pane.shadowRoot.querySelectorAll('paper-checkbox')]
      .filter(c => c.checked).map(c => c.textContent.trim()),
    header: rows('#header tr')[0] || [],
    rows: rows('#items tr').filter(row => row.length && row[0]),
  });
})()
"""


def open_hparams(browser: Chromium, url: str, runs: int, timeout: float = 60, width: int = 1400,
                 height: int = 900) -> dict:
    """Load the HParams tab and wait until its table shows `runs` rows.

    Returns {"ticked": the checkbox labels ticked in the query pane, "header": the table's column
    titles left to right, "rows": each row's cell texts in the same order}.
    """
    browser.open(f"{url}/#hparams", width=width, height=height)
    deadline = time.monotonic() + timeout
    page = None
    while page is None or len(page["rows"]) < runs:
        if time.monotonic() > deadline:
            seen = "no HParams table" if page is None else f"{len(page['rows'])} rows"
            raise TimeoutError(f"the HParams tab showed {seen} after {timeout:.0f} s, expected {runs} runs")
        time.sleep(0.5)
        raw = browser.evaluate(READ_PAGE_JS)
        page = json.loads(raw) if raw else None
    return page
