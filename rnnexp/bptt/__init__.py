"""How a training step back-propagates through time.

`FullBPTT` is ordinary back-propagation through the whole sequence under Lightning's
automatic optimisation; `rnnexp.bptt.truncated.TruncatedBPTT` replaces the training step
of the same LightningModule with Williams & Peng's TBPTT(k1, k2) under manual optimisation.
"""

from __future__ import annotations


class FullBPTT:
    """Back-propagate through every step; Lightning steps the optimizer, clips and schedules."""

    automatic_optimization = True
    name = "full"

    def training_step(self, module, batch, batch_idx):
        x, y = batch
        prediction, _ = module(x)
        loss = module.loss(prediction, y)
        module.log_train_step(loss, prediction, y)
        return loss
