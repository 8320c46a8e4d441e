"""Photograph TensorBoard's HParams tab over a sweep, as it opens (the README's picture).

    scripts/six_cells_sweep.sh                     # the README's sweep, into outputs/readme/multirun/six_cells
    .venv/bin/python scripts/hparams_screenshot.py outputs/readme/multirun/six_cells

It starts TensorBoard on 127.0.0.1, loads the HParams tab in headless Chromium (Debian:
`apt-get install chromium`), waits until the table lists every run of the sweep, and saves a PNG.
Exit status 1, with the reason, when the sweep holds no runs or the page does not come up.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from devtools import BrowserUnavailable, Chromium
from hparams_page import TensorBoard, open_hparams

REPO = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sweep", type=Path, help="a sweep directory (outputs/multirun/<date>/<time>)")
    parser.add_argument("--out", type=Path, default=REPO / "docs/img/hparams_sweep.png", help="the PNG to write")
    parser.add_argument("--width", type=int, default=1760, help="page width in pixels (the table needs ~1700)")
    parser.add_argument("--height", type=int, default=520, help="page height in pixels")
    parser.add_argument("--timeout", type=float, default=120, help="seconds to wait for TensorBoard and the page")
    args = parser.parse_args(argv)

    runs = sorted(p.parent.name for p in args.sweep.glob("*/metrics.json"))
    if not runs:
        print(f"error: {args.sweep} holds no runs (no <job>/metrics.json); run the sweep first, e.g. "
              "scripts/six_cells_sweep.sh", file=sys.stderr)
        return 1
    with tempfile.NamedTemporaryFile("w", prefix="tensorboard-", suffix=".log", delete=False) as log:
        try:
            with TensorBoard(args.sweep, log) as board, Chromium() as browser:
                board.wait_for_runs(len(runs), timeout=args.timeout)
                page = open_hparams(browser, board.url, runs=len(runs), timeout=args.timeout,
                                    width=args.width, height=args.height)
                png = browser.screenshot()
        except (BrowserUnavailable, TimeoutError, RuntimeError) as exc:
            print(f"error: {exc} (TensorBoard's log: {log.name})", file=sys.stderr)
            return 1
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(png)
    print(f"{args.out}: {len(page['rows'])} runs; columns: {', '.join(page['header'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
