"""Training glue shared by the torch detectors: seeding, the one minibatch loop, progress, early stop.

Every deep model trains through :func:`train_loop` (after PyOD's ``base_dl.py``: one loop, the
model-specific work in a hook). The hook is ``step(batch) -> {name: float}``, which does the
optimizer work of one minibatch: one Adam for an autoencoder (:func:`adam_step` builds that step
from a loss function), several for a GAN. The loop owns everything else: shuffling with the
caller's generator, train/eval modes, per-epoch history rows, ``max_steps``, a per-epoch
callback, and early stopping on a validation loss with the best weights restored.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import random
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

log = logging.getLogger(__name__)

#: a minibatch: one tensor, or a tuple of tensors with the same rows (e.g. images and labels)
Batch = torch.Tensor | tuple[torch.Tensor, ...]
#: one optimisation step on a minibatch; returns the numbers to log (averaged over the epoch's rows)
Step = Callable[[Batch], Mapping[str, float]]


#: conv nets train and score in channels_last layout: on this project's 2-core AVX2 CPU a conv
#: training step takes 20-28% less time (``python -m benchmarks.image_cost``, A/B in one run;
#: rows in benchmarks/results/image_cost.csv). A module flag so that harness can turn it off.
CHANNELS_LAST = True


def place(net: nn.Module, device: str | torch.device = "cpu") -> nn.Module:
    """Move ``net`` to ``device``; conv nets also go to channels_last (see :data:`CHANNELS_LAST`)."""
    net.to(device)
    if CHANNELS_LAST and any(isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)) for m in net.modules()):
        net.to(memory_format=torch.channels_last)
    return net


def bf16_autocast(device: str | torch.device = "cpu", enabled: bool = True):
    """bf16 autocast on ``device``'s type for a whole fit or scoring pass (a null context when not
    ``enabled``). ``cache_enabled=False``: one context spans every optimizer step, and autocast's
    weight-cast cache would keep the bf16 copies of the weights made at the first step for all
    later ones, so the model would not learn (seen: an AE's loss 725 -> 697 in 10 epochs, float32's
    670 -> 241; test ``test_a_bf16_fit_learns_like_float32``)."""
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16, cache_enabled=False)


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


def adam_step(modules: nn.Module | Iterable[nn.Module], loss_fn: Callable[[Batch], torch.Tensor], *, lr: float,
              weight_decay: float = 0.0, betas: tuple[float, float] = (0.9, 0.999), key: str = "train_loss") -> Step:
    """The step of a model with one loss and one Adam: ``loss_fn(batch) -> mean loss``."""
    params = [p for m in _module_list(modules) for p in m.parameters()]
    optimizer = torch.optim.Adam(params, lr=lr, betas=betas, weight_decay=weight_decay)

    def step(batch: Batch) -> dict[str, float]:
        loss = loss_fn(batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return {key: loss.item()}

    return step


def train_loop(
    modules: nn.Module | Iterable[nn.Module] | Mapping[str, nn.Module],
    step: Step | Callable[[Batch], torch.Tensor],
    X: np.ndarray | tuple[np.ndarray, ...],
    *,
    epochs: int,
    batch_size: int,
    generator: torch.Generator | None = None,
    X_val: np.ndarray | tuple[np.ndarray, ...] | None = None,
    val_loss: Callable[[Batch], torch.Tensor] | None = None,
    patience: int | None = None,
    max_steps: int | None = None,
    min_batch: int = 1,
    desc: str = "train",
    device: str = "cpu",
    progress: bool = True,
    on_epoch: Callable[[dict], None] | None = None,
    lr: float | None = None,
    weight_decay: float = 0.0,
) -> list[dict]:
    """Runs ``step`` over shuffled minibatches of ``X`` for ``epochs`` epochs; one history row per epoch.

    - ``modules``: the networks (one, several, or a name -> network mapping): put in train mode
      for each epoch, in eval mode for validation, the callback and at the end; their weights are
      the ones early stopping keeps.
    - ``step(batch) -> {name: value}``: the optimisation of one minibatch. The epoch's row is
      ``{"epoch": k, name: mean over the epoch's rows, ...}``. ``X`` may be a tuple of arrays
      (images, labels): the batch is then the tuple of their rows. Batches of fewer than
      ``min_batch`` rows are skipped (batch norm needs 2).
    - ``X_val`` with ``val_loss(batch) -> mean loss``: after every epoch the validation loss (in
      eval mode, no autograd) goes into the row as ``val_loss``; with ``patience``, training stops
      after ``patience`` epochs without improvement and the best epoch's weights are restored.
    - ``max_steps``: stop after that many steps in all (quick presets); the last row is the
      partial epoch.
    - ``on_epoch(row)``: called after every epoch, networks in eval mode.
    - ``lr`` (shorthand for a one-loss model): ``step`` is then a loss function, wrapped into
      :func:`adam_step` (with ``weight_decay``) and used as ``val_loss`` too.
    """
    nets = _module_list(modules)
    for net in nets:
        place(net, device)
    if lr is not None:
        val_loss = step if val_loss is None else val_loss
        step = adam_step(nets, step, lr=lr, weight_decay=weight_decay)
    data = _tensors(X)
    n = len(data[0])
    val = None if X_val is None or len(_first(X_val)) == 0 else _tensors(X_val)
    if val is not None and val_loss is None:
        raise ValueError("X_val needs val_loss")
    history: list[dict] = []
    best, best_state, stale, steps = float("inf"), None, 0, 0
    bar = tqdm(range(epochs), desc=desc, unit="epoch", disable=not progress, leave=False)
    for epoch in bar:
        _set_mode(nets, train=True)
        sums: dict[str, float] = defaultdict(float)
        rows = 0
        for index in batches(n, batch_size, generator):
            if len(index) < min_batch:
                continue
            logs = step(_take(data, index, device))
            for key, value in logs.items():
                sums[key] += float(value) * len(index)
            rows += len(index)
            steps += 1
            if max_steps is not None and steps >= max_steps:
                break
        row = {"epoch": epoch + 1, **{key: value / max(rows, 1) for key, value in sums.items()}}
        if val is not None:
            _set_mode(nets, train=False)
            row["val_loss"] = _mean_loss(val_loss, val, device)
            if row["val_loss"] < best - 1e-6:
                best, best_state, stale = row["val_loss"], [copy.deepcopy(net.state_dict()) for net in nets], 0
            else:
                stale += 1
        history.append(row)
        if on_epoch is not None:
            _set_mode(nets, train=False)
            on_epoch(row)
        bar.set_postfix({k: f"{v:.4g}" for k, v in row.items() if k != "epoch"})
        log.debug("%s epoch %d %s", desc, epoch + 1, row)
        if max_steps is not None and steps >= max_steps:
            break
        if patience is not None and val is not None and stale >= patience:
            break
    if best_state is not None:
        for net, state in zip(nets, best_state):
            net.load_state_dict(state)
    _set_mode(nets, train=False)
    return history


# -- helpers -------------------------------------------------------------------------------------
def _module_list(modules) -> list[nn.Module]:
    if isinstance(modules, nn.Module):
        return [modules]
    if isinstance(modules, Mapping):
        return list(modules.values())
    return list(modules)


def _set_mode(nets: list[nn.Module], *, train: bool) -> None:
    for net in nets:
        net.train(train)


def _first(X):
    return X[0] if isinstance(X, tuple) else X


def _tensors(X) -> tuple[torch.Tensor, ...]:
    arrays = X if isinstance(X, tuple) else (X,)
    out = []
    for a in arrays:
        a = np.asarray(a)
        out.append(torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32 if a.dtype.kind == "f" else a.dtype)))
    if any(len(t) != len(out[0]) for t in out):
        raise ValueError(f"arrays of different lengths: {[len(t) for t in out]}")
    return tuple(out)


def _take(data: tuple[torch.Tensor, ...], index, device) -> Batch:
    parts = tuple(t[index].to(device) for t in data)
    return parts[0] if len(parts) == 1 else parts


def _mean_loss(loss_fn, val: tuple[torch.Tensor, ...], device, chunk: int = 8192) -> float:
    n, total = len(val[0]), 0.0
    with torch.no_grad():
        for start in range(0, n, chunk):
            index = slice(start, start + chunk)
            parts = tuple(t[index].to(device) for t in val)
            size = len(parts[0])
            total += float(loss_fn(parts[0] if len(parts) == 1 else parts)) * size
    return total / n
