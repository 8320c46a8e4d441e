"""The loop a researcher would write by hand: the yardstick rnnexp's training epoch is held to.

Shuffle the in-memory training tensors with a seeded generator, slice a batch, forward, loss,
backward, optimizer step. Nothing else: no logging, no metrics, no checks, no checkpoints.
"""

from __future__ import annotations

import contextlib

import torch


def autocast_for(precision: str, device: str):
    """What Lightning's mixed-precision plugin wraps the forward in (nothing for 32-true)."""
    if precision in ("16-mixed", "bf16-mixed"):
        dtype = torch.float16 if precision == "16-mixed" else torch.bfloat16
        return torch.autocast(device_type=device, dtype=dtype)
    if precision != "32-true":
        raise ValueError(f"precision={precision!r}: the plain loop knows 32-true, 16-mixed, bf16-mixed")
    return contextlib.nullcontext()


def synchronize(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


class PlainLoop:
    """Train `module` (forward -> (prediction, state), `.loss`, `.optimizer_factory`, as rnnexp's
    SequenceModel) the way a hand-written loop does, one `step()` at a time: the next batch of a
    seeded shuffle of the in-memory tensors (reshuffled each epoch), forward, loss, backward, step.

    `start_batch` starts the first epoch that many batches into its order (the batches before it come
    at the end of that epoch). Interleaved with rnnexp's steps (rnnexp.bench.epoch), a loop on the
    same seed and order would read the very rows rnnexp's step read a few milliseconds earlier, still
    in the CPU's caches: two plain loops interleaved that way measured 2-3% apart for that alone."""

    def __init__(self, module, inputs: torch.Tensor, targets: torch.Tensor, batch_size: int, seed: int = 0,
                 device: str = "cpu", precision: str = "32-true", start_batch: int = 0):
        self.module = module.to(device).train()
        self.inputs, self.targets, self.batch_size = inputs, targets, batch_size
        self.device, self.precision = device, precision
        self.optimizer = module.optimizer_factory(params=module.parameters())
        self.scaler = torch.amp.GradScaler(device) if precision == "16-mixed" else None
        self.generator = torch.Generator().manual_seed(seed)
        self.batches = iter(())
        self.start_batch = start_batch

    def _next_indices(self) -> torch.Tensor:
        index = next(self.batches, None)
        if index is None:  # a new epoch: a new order
            order = torch.randperm(len(self.inputs), generator=self.generator).split(self.batch_size)
            start, self.start_batch = self.start_batch % len(order), 0
            self.batches = iter(order[start:] + order[:start])
            index = next(self.batches)
        return index

    def step(self) -> None:
        index = self._next_indices()
        x = self.inputs[index].to(self.device, non_blocking=True)
        y = self.targets[index].to(self.device, non_blocking=True)
        self.optimizer.zero_grad(set_to_none=True)
        with autocast_for(self.precision, self.device):
            prediction, _ = self.module(x)
            loss = self.module.loss(prediction, y)
        if self.scaler is None:
            loss.backward()
            self.optimizer.step()
        else:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
