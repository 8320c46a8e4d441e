"""Stop a run cleanly when it diverges, and keep non-finite weights out of every checkpoint."""

from __future__ import annotations

import pytorch_lightning as pl
import torch

from rnnexp.errors import DivergenceError


class DivergenceGuard(pl.Callback):
    """Stop on a non-finite loss or weight, and keep non-finite weights out of every checkpoint.

    Every N-th optimizer step (N = check_every_n_steps), after backward and before `optimizer.step`,
    it tests one number: the module's running sum of this epoch's training losses
    (`running_loss_sum`; else the last batch's loss), which is inf or nan as soon as any loss since
    the last check was. One small op and one host sync per check, nothing on the other steps: the
    guard costs nothing measurable in a training epoch (`rnnexp-bench --only epoch`).

    A step with non-finite gradients but a finite loss makes the weights non-finite, so the next
    loss is too: the check after it catches that and reports the weights ("the weight norm") first.
    No non-finite weights reach a checkpoint: they are checked whenever a checkpoint is about to
    be written (any writer: last.ckpt, the best, Ctrl-C) and when training ends. With N > 1 the
    step reported is the one the divergence was found at, at most N - 1 steps after it began.
    """

    def __init__(self, check_every_n_steps: int = 1):
        self.every = max(1, int(check_every_n_steps))
        self._until_check = 1  # the first step is checked

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        # A countdown of its own: reading trainer.global_step walks four Lightning objects
        self._until_check -= 1
        if self._until_check == 0:
            self._until_check = self.every
            self._check_losses(trainer, pl_module)

    def on_train_epoch_end(self, trainer, pl_module):
        # Callbacks' epoch-end hooks run before the module's, which resets the running sum.
        self._check_losses(trainer, pl_module)

    def _check_losses(self, trainer, pl_module) -> None:
        stats = getattr(pl_module, "last_batch", None)
        checked = getattr(pl_module, "running_loss_sum", None)
        if checked is None:
            checked = stats[0] if stats is not None else None
        # A 0-dim tensor: one isfinite op says it all (no `.all()` op after it)
        if checked is None or bool(torch.isfinite(checked)):
            return
        # The weights first: non-finite weights (from an earlier step) make the loss non-finite too.
        self._check_weights(trainer, pl_module, list(pl_module.parameters()))
        loss = stats[0] if stats is not None else checked
        value = float(loss) if not bool(torch.isfinite(loss).all()) else float(checked)
        raise DivergenceError(trainer.global_step, "the training loss", value, self.hint(trainer, pl_module))

    def on_train_end(self, trainer, pl_module):
        self._check_weights(trainer, pl_module, list(pl_module.parameters()))

    def on_save_checkpoint(self, trainer, pl_module, checkpoint):
        # Called while the checkpoint is assembled, before anything is written: raising here keeps
        # non-finite weights (lr * grad = inf from finite gradients) out of every checkpoint file.
        self._check_weights(trainer, pl_module, list(pl_module.parameters()))

    def _check_weights(self, trainer, pl_module, params) -> None:
        norm = _total_norm(params)
        if not bool(torch.isfinite(norm)):
            raise DivergenceError(trainer.global_step, "the weight norm", float(norm), self.hint(trainer, pl_module))

    @staticmethod
    def hint(trainer, pl_module) -> str:
        lr = trainer.optimizers[0].param_groups[0]["lr"] if trainer.optimizers else float("nan")
        return (f"lower optimizer.lr (now {lr:g}) or clip gradients with trainer.gradient_clip_val=1.0; "
                "the last good checkpoint is checkpoints/last.ckpt")


@torch.no_grad()
def _total_norm(tensors: list[torch.Tensor]) -> torch.Tensor:
    """The 2-norm of all the tensors together (inf or nan when any element is)."""
    if not tensors:
        return torch.zeros(())
    return torch.nn.utils.get_total_norm(tensors, norm_type=2.0)
