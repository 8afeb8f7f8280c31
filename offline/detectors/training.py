"""Training glue shared by the torch detectors: seeding, minibatch loops, progress, early stop."""

from __future__ import annotations

import copy
import logging
import random
from collections.abc import Callable

import numpy as np
import torch
from tqdm.auto import tqdm

log = logging.getLogger(__name__)


def seed_everything(seed: int) -> torch.Generator:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def batches(n: int, batch_size: int, generator: torch.Generator | None = None, shuffle: bool = True):
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    for start in range(0, n, batch_size):
        yield order[start : start + batch_size]


@torch.inference_mode()
def predict_in_chunks(fn: Callable[[torch.Tensor], torch.Tensor], X: np.ndarray, *, chunk: int = 8192, device="cpu") -> np.ndarray:
    """Apply ``fn`` to ``X`` in chunks without autograd; returns a numpy array."""
    outputs = [fn(torch.from_numpy(X[i : i + chunk]).to(device)).float().cpu().numpy() for i in range(0, len(X), chunk)]
    return np.concatenate(outputs) if outputs else np.empty((0,), dtype=np.float32)


def train_loop(
    module: torch.nn.Module,
    loss_fn: Callable[[torch.Tensor], torch.Tensor],
    X: np.ndarray,
    *,
    X_val: np.ndarray | None,
    epochs: int,
    batch_size: int,
    lr: float,
    weight_decay: float = 0.0,
    patience: int | None = 5,
    generator: torch.Generator | None = None,
    desc: str = "train",
    device: str = "cpu",
    progress: bool = True,
) -> list[dict]:
    """Adam over shuffled minibatches; keeps the weights of the best validation epoch.

    ``loss_fn(batch) -> mean loss`` closes over the module. Returns one history row per epoch.
    """
    module.to(device)
    optimizer = torch.optim.Adam(module.parameters(), lr=lr, weight_decay=weight_decay)
    data = torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32))
    val = None if X_val is None or len(X_val) == 0 else torch.from_numpy(np.ascontiguousarray(X_val, dtype=np.float32))
    history: list[dict] = []
    best, best_state, stale = float("inf"), None, 0
    bar = tqdm(range(epochs), desc=desc, unit="epoch", disable=not progress, leave=False)
    for epoch in bar:
        module.train()
        total, count = 0.0, 0
        for index in batches(len(data), batch_size, generator):
            batch = data[index].to(device)
            loss = loss_fn(batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.item() * len(index)
            count += len(index)
        row = {"epoch": epoch + 1, "train_loss": total / max(count, 1)}
        if val is not None:
            module.eval()
            with torch.no_grad():
                losses = [float(loss_fn(val[i : i + 8192].to(device))) * len(val[i : i + 8192]) for i in range(0, len(val), 8192)]
            row["val_loss"] = sum(losses) / len(val)
            if row["val_loss"] < best - 1e-6:
                best, best_state, stale = row["val_loss"], copy.deepcopy(module.state_dict()), 0
            else:
                stale += 1
        history.append(row)
        bar.set_postfix({k: f"{v:.4g}" for k, v in row.items() if k != "epoch"})
        log.debug("%s epoch %d %s", desc, epoch + 1, row)
        if patience is not None and val is not None and stale >= patience:
            break
    if best_state is not None:
        module.load_state_dict(best_state)
    module.eval()
    return history
