"""The loop a researcher would write by hand: the yardstick rnnexp's training epoch is held to.

Shuffle the in-memory training tensors with a seeded generator, slice a batch, forward, loss,
backward, optimizer step. Nothing else: no logging, no metrics, no checks, no checkpoints.
"""

from __future__ import annotations

import contextlib
import time

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


def plain_epoch(module, inputs: torch.Tensor, targets: torch.Tensor, batch_size: int, steps: int = 0,
                seed: int = 0, device: str = "cpu", precision: str = "32-true") -> dict:
    """Train `module` (forward -> (prediction, state), `.loss`, `.optimizer_factory`, as rnnexp's
    SequenceModel) for one epoch, or its first `steps` batches; return wall and CPU seconds."""
    module.to(device).train()
    optimizer = module.optimizer_factory(params=module.parameters())
    scaler = torch.amp.GradScaler(device) if precision == "16-mixed" else None
    generator = torch.Generator().manual_seed(seed)
    synchronize(device)
    wall, cpu = time.perf_counter(), time.process_time()
    order = torch.randperm(len(inputs), generator=generator)
    done = 0
    for index in order.split(batch_size):
        if steps and done == steps:
            break
        x = inputs[index].to(device, non_blocking=True)
        y = targets[index].to(device, non_blocking=True)
        optimizer.zero_grad(set_to_none=True)
        with autocast_for(precision, device):
            prediction, _ = module(x)
            loss = module.loss(prediction, y)
        if scaler is None:
            loss.backward()
            optimizer.step()
        else:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        done += 1
    synchronize(device)
    return {"wall_s": time.perf_counter() - wall, "cpu_s": time.process_time() - cpu, "steps": done,
            "final_loss": float(loss.detach())}
