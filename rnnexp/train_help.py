"""`rnnexp-train --help`: the config groups and the composed config, as Hydra's help shows them.

Hydra's own `--help` lists each group's options by rebuilding its config repository once per
group (about 120 times for conf/), which makes the answer several times slower than composing the
config itself. The groups are the folders of conf/ (rnnexp.choices.group_options reads the same
files), so this help lists them directly and composes the config once through Hydra's public
compose API. `--hydra-help` still prints Hydra's own flags.
"""

from __future__ import annotations

from pathlib import Path

from rnnexp.choices import CONF_DIR, group_options

USAGE = """\
rnnexp-train: train one recurrent-network experiment, or sweep many with -m.

  rnnexp-train                                    the default experiment (conf/train.yaml)
  rnnexp-train cell=gru model.num_layers=2        pick a group option, override any key
  rnnexp-train -m cell=rnn,lstm,gru seed=1,2,3    a sweep: one job per combination
  rnnexp-train resume=<run dir>                   continue an interrupted run where it stopped
  rnnexp-train --cfg job [overrides]              print the composed config and exit
  rnnexp-train --hydra-help                       Hydra's own flags
"""


def config_groups(conf_dir: Path = CONF_DIR) -> dict[str, tuple[str, ...]]:
    """Every config group under conf/ (nested ones as `hydra/launcher`) and its options.

    Hydra's own groups are listed one level down (`hydra/launcher`), where a user picks from them;
    `hydra` itself (conf/hydra/default.yaml, always used) and deeper folders (a launcher's own
    parts, such as hydra/launcher/rnnexp) are not."""
    groups = {}
    for folder in sorted(p for p in conf_dir.rglob("*") if p.is_dir()):
        group = folder.relative_to(conf_dir).as_posix()
        options = group_options(group)
        if options and (not group.startswith("hydra") or group.count("/") == 1):
            groups[group] = options
    return groups


def help_text(overrides: list[str]) -> str:
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides)
    groups = "\n".join(f"{group}: {', '.join(options)}" for group, options in config_groups().items())
    return (f"{USAGE}\n== Configuration groups ==\nCompose your configuration from those groups "
            f"(group=option)\n\n{groups}\n\n== Config ==\nOverride anything in the config "
            f"(foo.bar=value)\n\n{OmegaConf.to_yaml(cfg)}")
