"""A trained checkpoint made ready to test (rnnexp-eval) or to predict (rnnexp-predict): the run
config stored in it (changed by key=value overrides), a data module that carries the checkpoint's
own preprocessing, and the model with its weights."""

from __future__ import annotations

import logging
from dataclasses import dataclass

log = logging.getLogger(__name__)

_ABSENT = "__absent__"


@dataclass
class Trained:
    ckpt_path: str
    cfg: object  # DictConfig
    datamodule: object
    module: object

    @property
    def preprocessing_saved(self) -> bool:
        """False for a checkpoint of an image task written before rnnexp stored the preprocessing."""
        return getattr(self.datamodule, "saved_preprocessing", True) is not None

    def prepare_data(self):
        """Build the data module's splits. A checkpoint without stored preprocessing falls back to
        recomputing the normalisation from the training files (as rnnexp did before), and says so;
        where those files cannot be found, the error says why they are needed."""
        from rnnexp.errors import DataNotFoundError

        if not self.preprocessing_saved:
            log.warning("%s stores no preprocessing (written before rnnexp saved it in checkpoints): the "
                        "normalisation is recomputed from the training files of data.source=%s",
                        self.ckpt_path, self.cfg.data.source)
        try:
            return self.datamodule.prepare()
        except DataNotFoundError as exc:
            if self.preprocessing_saved:
                raise
            raise DataNotFoundError(
                f"{self.ckpt_path} was written before rnnexp stored the preprocessing in checkpoints, so its "
                f"normalisation must be recomputed from the training files, and they were not found ({exc}); "
                "make them available (data.source=..., data.data_dir=...) or retrain to get a "
                "self-contained checkpoint") from None


def _newer_key(cfg, key: str) -> bool:
    """A key today's conf/ has that the run config lacks (added since the checkpoint was written,
    e.g. data.test_dir), and that the object its node builds takes as an argument."""
    import inspect

    from hydra.utils import get_class
    from omegaconf import DictConfig, OmegaConf

    from rnnexp.config_schema import schema

    if key not in schema().fields:
        return False
    parent, _, name = key.rpartition(".")
    node = OmegaConf.select(cfg, parent, default=None) if parent else cfg
    target = node.get("_target_") if isinstance(node, DictConfig) else None
    if not target:
        return True
    try:
        return name in inspect.signature(get_class(target)).parameters
    except (ImportError, ValueError, TypeError):
        return False


def run_config_with(checkpoint: dict, ckpt_path: str, overrides: list[str]):
    """The checkpoint's run config with key=value overrides; a key must be one of the run config,
    or one added to conf/ since that the run's objects take (_newer_key)."""
    from omegaconf import OmegaConf

    from rnnexp.checkpoints import run_config_of
    from rnnexp.errors import ConfigError

    cfg = OmegaConf.create(run_config_of(checkpoint, ckpt_path))
    for item in overrides:
        key, _, value = item.partition("=")
        if OmegaConf.select(cfg, key, default=_ABSENT) == _ABSENT and not _newer_key(cfg, key):
            raise ConfigError(key, value, "a key of the run config (see .hydra/config.yaml)",
                              hint=f"this checkpoint's {cfg.get('data', {}).get('name', 'task')} has no such key")
    return OmegaConf.merge(cfg, OmegaConf.from_dotlist(overrides))


def load_trained(ckpt_path: str, overrides: list[str]) -> Trained:
    import pytorch_lightning as pl

    from rnnexp.build import build_datamodule, build_module, validate
    from rnnexp.checkpoints import load_checkpoint
    from rnnexp.errors import CheckpointError

    checkpoint = load_checkpoint(ckpt_path)
    cfg = run_config_with(checkpoint, ckpt_path, overrides)
    validate(cfg)
    pl.seed_everything(int(cfg.seed), verbose=False)
    datamodule = build_datamodule(cfg)
    # Lightning saves a data module's state_dict() under its class's qualified name
    datamodule.load_state_dict(checkpoint.get(type(datamodule).__qualname__) or {})
    module = build_module(cfg, datamodule.task)
    try:
        module.load_state_dict(checkpoint["state_dict"], strict=True)
    except RuntimeError as exc:
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()][1:4]
        raise CheckpointError(f"{ckpt_path}: its weights do not fit the model built from this config "
                              f"(different architecture?): {' '.join(lines)}") from None
    module.eval()
    return Trained(str(ckpt_path), cfg, datamodule, module)
