"""`rnnexp-eval ckpt_path=<file> [key=value ...]`: test a saved checkpoint.

The architecture and data come from the run config stored inside the checkpoint, the
preprocessing (normalisation, pixel order and permutation) from the data state stored beside it;
`key=value` arguments change the config for this evaluation (e.g. `data.source=local`).
`data.test_dir=<folder>` tests on the IDX pair t10k-images-idx3-ubyte[.gz] and
t10k-labels-idx1-ubyte[.gz] in that folder alone: no training files are read. A checkpoint
written before the preprocessing was stored falls back to recomputing the normalisation from the
training files, with a warning (an error naming them when they cannot be found). An override that
changes the architecture (say `model.hidden_size=64`) makes the weights not fit, and is reported
as such.
"""

from __future__ import annotations

import json
import os
import sys

USAGE = """usage: rnnexp-eval ckpt_path=<path/to/checkpoint.ckpt> [data.test_dir=<folder>] [key=value ...]

Tests a checkpoint written by rnnexp-train on its test split and prints the metrics as JSON, with
the checkpoint's own preprocessing. data.test_dir=<folder> tests on the IDX files
t10k-images-idx3-ubyte[.gz] and t10k-labels-idx1-ubyte[.gz] in that folder instead (no training
files needed). key=value pairs override the run config stored in the checkpoint, e.g. data.source=bundled.
"""


def evaluate(ckpt_path: str, overrides: list[str]) -> dict:
    import pytorch_lightning as pl

    from rnnexp.inference import load_trained

    trained = load_trained(ckpt_path, overrides)
    trained.prepare_data()
    trainer = pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False)
    results = trainer.test(trained.module, datamodule=trained.datamodule, verbose=False)
    return {k: float(v) for k, v in (results[0] if results else {}).items()}


def main(argv: list[str] | None = None) -> int:
    from rnnexp.errors import RnnexpError

    args = list(sys.argv[1:] if argv is None else argv)
    if not args or any(a in ("-h", "--help") for a in args):
        print(USAGE, end="")
        return 0 if args else 2
    ckpt = [a.split("=", 1)[1] for a in args if a.startswith("ckpt_path=")]
    rest = [a for a in args if not a.startswith("ckpt_path=")]
    bad = [a for a in rest if "=" not in a]
    if len(ckpt) != 1 or bad:
        print(USAGE, end="", file=sys.stderr)
        print(f"rnnexp-eval: error: expected one ckpt_path=... and key=value pairs, got {args}", file=sys.stderr)
        return 2
    try:
        metrics = evaluate(ckpt[0], rest)
    except RnnexpError as exc:
        if os.environ.get("RNNEXP_DEBUG"):
            raise
        print(f"rnnexp-eval: error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(metrics, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
