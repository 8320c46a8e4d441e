"""`rnnexp-eval ckpt_path=<file> [key=value ...]`: test a saved checkpoint.

The architecture and data come from the run config stored inside the checkpoint; `key=value`
arguments change it for this evaluation (e.g. `data.source=local`, `data.dataset=fashion_mnist`).
An override that changes the architecture (say `model.hidden_size=64`) makes the weights not fit,
and is reported as such.
"""

from __future__ import annotations

import json
import os
import sys

USAGE = """usage: rnnexp-eval ckpt_path=<path/to/checkpoint.ckpt> [key=value ...]

Tests a checkpoint written by rnnexp-train on its test split and prints the metrics as JSON.
key=value pairs override the run config stored in the checkpoint, e.g. data.source=bundled.
"""


def evaluate(ckpt_path: str, overrides: list[str]) -> dict:
    from omegaconf import OmegaConf

    from rnnexp.checkpoints import load_checkpoint, run_config_of
    from rnnexp.errors import CheckpointError

    checkpoint = load_checkpoint(ckpt_path)
    cfg = OmegaConf.create(run_config_of(checkpoint, ckpt_path))
    for item in overrides:
        key = item.split("=", 1)[0]
        if OmegaConf.select(cfg, key, default="__missing__") == "__missing__":
            from rnnexp.errors import ConfigError

            raise ConfigError(key, item.split("=", 1)[1], "a key of the run config (see .hydra/config.yaml)")
    cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(overrides))

    import pytorch_lightning as pl

    from rnnexp.build import build_datamodule, build_module, validate

    validate(cfg)
    pl.seed_everything(int(cfg.seed), verbose=False)
    datamodule = build_datamodule(cfg)
    saved_data_state = checkpoint.get(type(datamodule).__qualname__)
    if saved_data_state:  # the preprocessing the run was trained with (e.g. its pixel permutation)
        datamodule.load_state_dict(saved_data_state)
    datamodule.prepare()
    module = build_module(cfg, datamodule.task)
    try:
        module.load_state_dict(checkpoint["state_dict"], strict=True)
    except RuntimeError as exc:
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()][1:4]
        raise CheckpointError(f"{ckpt_path}: its weights do not fit the model built from this config "
                              f"(different architecture?): {' '.join(lines)}") from None
    trainer = pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False)
    results = trainer.test(module, datamodule=datamodule, verbose=False)
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
