"""Multiple-instance learning on instance bags (tiles of a slide, sub-volumes of a scan).

A bag is one patient's ``(n_i, dim)`` instance embeddings and carries one
label. The network (Ilse, Tomczak & Welling, "Attention-based deep multiple
instance learning", ICML 2018)::

    h_k = Dropout(ReLU(W x_k))                        instance encoder
    a_k = softmax_k( w^T tanh(V h_k) )                attention
    a_k = softmax_k( w^T (tanh(V h_k) * sigm(U h_k)) ) gated attention
    z   = sum_k a_k h_k                               bag embedding
    p   = sigmoid(c^T Dropout(z) + b)

``mean`` pooling fixes ``a_k = 1/n``; ``max`` pooling takes the element-wise
maximum of the ``h_k`` and reports as an instance's weight the share of hidden
units at which it is the maximum.

Training: inputs standardised with the mean and SD of the training bags'
instances (stored in the network, so held-out bags never influence them);
Adam; binary cross-entropy, positive class weighted by ``n_neg / n_pos`` when
``class_weight="balanced"``; mini-batches of padded bags (at most
``max_instances`` instances per bag per step, drawn afresh each epoch);
early stopping on the validation loss of a stratified inner split of the
training bags, keeping the best epoch's weights.

Determinism: one seed drives the split, the initial weights, dropout and the
batch order; torch's global RNG is forked and restored, deterministic
algorithms are switched on and CPU work runs on one thread while fitting or
predicting, so the same bags and seed give byte-identical weights and scores.
Each bag is scored on its own (no padding), so a patient's score does not
depend on which other patients are scored with it.
"""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from sklearn.model_selection import StratifiedShuffleSplit
from torch import nn

from pipeline.device import resolve_device

log = logging.getLogger("cohortlab.models.mil")

POOLINGS = ("attention", "gated", "mean", "max")


class MILNet(nn.Module):
    """Instance encoder, pooling and bag classifier (see the module notes)."""

    # buffers registered in __init__ (saved with the weights, not trained): the instance standardisation
    shift: torch.Tensor
    scale: torch.Tensor

    def __init__(self, dim: int, hidden: int = 128, attention_dim: int = 64, pooling: str = "attention",
                 dropout: float = 0.25) -> None:
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"pooling {pooling!r}: use one of {', '.join(POOLINGS)}")
        self.pooling = pooling
        self.register_buffer("shift", torch.zeros(dim))
        self.register_buffer("scale", torch.ones(dim))
        self.encoder = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Dropout(dropout))
        if pooling in ("attention", "gated"):
            self.attention_v = nn.Linear(hidden, attention_dim)
            self.attention_w = nn.Linear(attention_dim, 1)
            if pooling == "gated":
                self.attention_u = nn.Linear(hidden, attention_dim)
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(hidden, 1))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Bag logits ``(B,)`` and instance weights ``(B, N)`` of padded bags ``x (B, N, dim)``, ``mask (B, N)``."""
        h = self.encoder((x - self.shift) / self.scale)
        if self.pooling in ("attention", "gated"):
            a = torch.tanh(self.attention_v(h))
            if self.pooling == "gated":
                a = a * torch.sigmoid(self.attention_u(h))
            a = self.attention_w(a).squeeze(-1).masked_fill(~mask, float("-inf"))
            weights = torch.softmax(a, dim=1)
            z = (weights.unsqueeze(-1) * h).sum(dim=1)
        elif self.pooling == "mean":
            m = mask.to(h.dtype)
            weights = m / m.sum(dim=1, keepdim=True)
            z = (weights.unsqueeze(-1) * h).sum(dim=1)
        else:
            z, arg = h.masked_fill(~mask.unsqueeze(-1), float("-inf")).max(dim=1)
            hits = torch.zeros_like(h).scatter_(1, arg.unsqueeze(1), 1.0)
            weights = hits.mean(dim=2)
        return self.head(z).squeeze(-1), weights


@contextmanager
def deterministic(device: torch.device, seed: int) -> Iterator[None]:
    """Seeded, deterministic torch for the duration; global RNG, threads and flags restored on exit."""
    threads = torch.get_num_threads()
    flag = torch.are_deterministic_algorithms_enabled()
    if device.type == "cuda":
        # cuBLAS needs a fixed workspace for deterministic matrix products
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        torch.set_num_threads(1)
        # every CPU op used here is deterministic; on CUDA an op without a deterministic kernel warns, not fails
        torch.use_deterministic_algorithms(True, warn_only=device.type == "cuda")
        try:
            yield
        finally:
            torch.use_deterministic_algorithms(flag)
            torch.set_num_threads(threads)


def _as_bags(bags: Any) -> list[np.ndarray]:
    seq = bags.embeddings if hasattr(bags, "embeddings") else bags
    out = [np.ascontiguousarray(b, dtype=np.float32) for b in seq]
    # torch.from_numpy needs writable memory; cohort bags are read-only views
    out = [b if b.flags.writeable else b.copy() for b in out]
    for i, b in enumerate(out):
        if b.ndim != 2 or b.shape[0] == 0:
            raise ValueError(f"bag {i} has shape {b.shape}; every bag needs at least one instance (n, dim)")
        if b.shape[1] != out[0].shape[1]:
            raise ValueError(f"bag {i} has {b.shape[1]} features, bag 0 has {out[0].shape[1]}")
        if not np.isfinite(b).all():
            raise ValueError(f"bag {i} holds non-finite values")
    return out


def _instance_moments(bags: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Mean and SD over all instances of ``bags``, accumulated bag by bag in float64 (no concatenation)."""
    n, total, squares = 0, 0.0, 0.0
    for b in bags:
        b64 = b.astype(np.float64)
        n += len(b64)
        total = total + b64.sum(axis=0)
        squares = squares + np.square(b64).sum(axis=0)
    mean = np.asarray(total) / n
    return mean, np.sqrt(np.maximum(np.asarray(squares) / n - mean**2, 0.0))


def _pad(bags: Sequence[np.ndarray], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    n = max(b.shape[0] for b in bags)
    x = np.zeros((len(bags), n, bags[0].shape[1]), dtype=np.float32)
    mask = np.zeros((len(bags), n), dtype=bool)
    for i, b in enumerate(bags):
        x[i, : len(b)] = b
        mask[i, : len(b)] = True
    return torch.from_numpy(x).to(device), torch.from_numpy(mask).to(device)


class MILClassifier:
    """A scikit-learn-like MIL estimator: ``fit(bags, y)``, ``predict_proba(bags)``, ``attention(bags)``.

    Parameters
    ----------
    pooling
        ``attention`` (Ilse et al. 2018), ``gated`` (gated attention, same
        paper), ``mean`` or ``max``.
    hidden, attention_dim, dropout
        Network sizes and dropout rate.
    lr, weight_decay
        Adam settings.
    max_epochs, patience
        Epoch budget and early-stopping patience (epochs without a lower validation loss).
    batch_size
        Bags per optimisation step.
    validation_fraction
        Share of training bags held out (stratified) for early stopping; with
        fewer than two bags of a class there is no split and all ``max_epochs`` run.
    max_instances
        Instances drawn per bag per training step (all are used to score).
    class_weight
        ``"balanced"`` weights positives by ``n_neg / n_pos``; None does not.
    seed
        Seed of everything random (see the module notes).
    device
        ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
    """

    # set by fit or from_state; a saved config may predate best_epoch and epochs
    dim_: int
    device_: str
    best_epoch_: int | None
    epochs_: int | None

    def __init__(self, pooling: str = "attention", hidden: int = 128, attention_dim: int = 64,
                 dropout: float = 0.25, lr: float = 5e-4, weight_decay: float = 1e-4, max_epochs: int = 60,
                 patience: int = 10, batch_size: int = 8, validation_fraction: float = 0.2,
                 max_instances: int = 512, class_weight: str | None = "balanced", seed: int = 0,
                 device: str = "auto") -> None:
        if pooling not in POOLINGS:
            raise ValueError(f"pooling {pooling!r}: use one of {', '.join(POOLINGS)}")
        if class_weight not in (None, "balanced"):
            raise ValueError(f"class_weight {class_weight!r}: use 'balanced' or leave it out")
        self.pooling = pooling
        self.hidden = hidden
        self.attention_dim = attention_dim
        self.dropout = dropout
        self.lr = lr
        self.weight_decay = weight_decay
        self.max_epochs = max_epochs
        self.patience = patience
        self.batch_size = batch_size
        self.validation_fraction = validation_fraction
        self.max_instances = max_instances
        self.class_weight = class_weight
        self.seed = seed
        self.device = device
        self.net_: MILNet | None = None

    # --- parameters and persistence
    PARAMS = ("pooling", "hidden", "attention_dim", "dropout", "lr", "weight_decay", "max_epochs", "patience",
              "batch_size", "validation_fraction", "max_instances", "class_weight", "seed", "device")

    def get_params(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.PARAMS}

    def config(self) -> dict[str, Any]:
        """Everything needed to rebuild the fitted network from its state dict."""
        if self.net_ is None:
            raise RuntimeError("MILClassifier is not fitted")
        return {**self.get_params(), "dim": self.dim_, "best_epoch": self.best_epoch_, "epochs": self.epochs_,
                "fitted_on": self.device_}

    @classmethod
    def from_state(cls, config: dict[str, Any], state: dict[str, torch.Tensor]) -> MILClassifier:
        """A fitted classifier from :meth:`config` and the network's ``state_dict``."""
        model = cls(**{k: config[k] for k in cls.PARAMS if k in config})
        net = MILNet(int(config["dim"]), model.hidden, model.attention_dim, model.pooling, model.dropout)
        net.load_state_dict(state)
        net.eval()
        model.net_, model.dim_ = net, int(config["dim"])
        model.best_epoch_, model.epochs_ = config.get("best_epoch"), config.get("epochs")
        model.device_ = config.get("fitted_on", "cpu")
        return model

    # --- fitting
    def fit(self, bags: Any, y: Sequence[int] | np.ndarray) -> MILClassifier:
        """Train on bags (a sequence of ``(n_i, dim)`` arrays, or :class:`analytics.cohort.Bags`) and 0/1 labels."""
        data = _as_bags(bags)
        y = np.asarray(y).astype(np.int64)
        if len(data) != len(y):
            raise ValueError(f"{len(data)} bags but {len(y)} labels")
        counts = np.bincount(y, minlength=2)
        if len(counts) != 2 or counts.min() == 0:
            raise ValueError(f"MIL training needs both classes, got counts {counts.tolist()}")
        device = resolve_device(self.device)
        with deterministic(device, self.seed):
            self._fit(data, y, device)
        return self

    def _split(self, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        n_val = int(round(self.validation_fraction * len(y)))
        counts = np.bincount(y, minlength=2)
        if counts.min() < 2 or n_val < 2 or len(y) - n_val < 2:
            return np.arange(len(y)), np.zeros(0, dtype=np.int64)
        split = StratifiedShuffleSplit(1, test_size=n_val, random_state=self.seed)
        fit_idx, val_idx = next(split.split(np.zeros(len(y)), y))
        return np.sort(fit_idx), np.sort(val_idx)

    def _fit(self, bags: list[np.ndarray], y: np.ndarray, device: torch.device) -> None:
        fit_idx, val_idx = self._split(y)
        n_pos, n_neg = int(y[fit_idx].sum()), int(len(fit_idx) - y[fit_idx].sum())
        weight = n_neg / max(n_pos, 1) if self.class_weight == "balanced" else 1.0
        loss_fn = nn.BCEWithLogitsLoss(pos_weight=torch.tensor(weight, device=device))
        labels = torch.from_numpy(y.astype(np.float32)).to(device)
        self._train(bags, fit_idx, val_idx, device, lambda logits, idx: loss_fn(logits, labels[idx]))
        log.debug("MIL %s: %d bags, best epoch %d of %d", self.pooling, len(y), self.best_epoch_, self.epochs_)

    def _train(self, bags: list[np.ndarray], fit_idx: np.ndarray, val_idx: np.ndarray, device: torch.device,
               loss: Callable[[torch.Tensor, np.ndarray], torch.Tensor],
               usable: Callable[[np.ndarray], bool] | None = None) -> None:
        """Fit the network by Adam on shuffled batches, early-stopped on the held-out bags' loss.

        ``loss(outputs, rows)`` scores the network's outputs for bags ``rows``;
        a batch for which ``usable(rows)`` is false is skipped (before its
        instances are drawn, so the sampling stream does not depend on it).
        """
        rng = np.random.default_rng(self.seed)
        dim = bags[0].shape[1]
        mean, sd = _instance_moments([bags[i] for i in fit_idx])
        net = MILNet(dim, self.hidden, self.attention_dim, self.pooling, self.dropout)
        net.shift.copy_(torch.from_numpy(mean.astype(np.float32)))
        net.scale.copy_(torch.from_numpy(np.where(sd > 1e-6, sd, 1.0).astype(np.float32)))
        net.to(device)
        opt = torch.optim.Adam(net.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        best_loss, best_state, best_epoch, stale, epoch = np.inf, None, self.max_epochs, 0, 0
        for epoch in range(1, self.max_epochs + 1):
            net.train()
            order = fit_idx[rng.permutation(len(fit_idx))]
            for start in range(0, len(order), self.batch_size):
                batch = order[start : start + self.batch_size]
                if usable is not None and not usable(batch):
                    continue
                x, mask = _pad([self._draw(bags[i], rng) for i in batch], device)
                outputs, _ = net(x, mask)
                step_loss = loss(outputs, batch)
                opt.zero_grad(set_to_none=True)
                step_loss.backward()
                opt.step()
            if len(val_idx) == 0:
                continue
            val_loss = float(loss(self._logits(net, [bags[i] for i in val_idx], device), val_idx))
            if val_loss < best_loss - 1e-6:
                best_loss, best_state, best_epoch, stale = val_loss, copy.deepcopy(net.state_dict()), epoch, 0
            else:
                stale += 1
                if stale >= self.patience:
                    break
        if best_state is not None:
            net.load_state_dict(best_state)
        net.eval()
        self.net_ = net.cpu()
        self.device_ = str(device)
        self.dim_ = dim
        self.best_epoch_ = best_epoch if best_state is not None else epoch
        self.epochs_ = epoch

    def _draw(self, bag: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if len(bag) <= self.max_instances:
            return bag
        return bag[np.sort(rng.choice(len(bag), self.max_instances, replace=False))]

    @staticmethod
    def _logits(net: MILNet, bags: Sequence[np.ndarray], device: torch.device,
                with_weights: bool = False) -> Any:
        net.eval()
        logits, weights = [], []
        with torch.no_grad():
            for b in bags:
                x = torch.tensor(b).unsqueeze(0).to(device)  # a copy: cohort bags are read-only views
                lg, w = net(x, torch.ones(1, len(b), dtype=torch.bool, device=device))
                logits.append(lg[0])
                weights.append(w[0].cpu().numpy().astype(np.float64))
        out = torch.stack(logits)
        return (out, weights) if with_weights else out

    # --- predicting
    def _run(self, bags: Any) -> tuple[np.ndarray, list[np.ndarray]]:
        if self.net_ is None:
            raise RuntimeError("MILClassifier is not fitted")
        data = _as_bags(bags)
        if data and data[0].shape[1] != self.dim_:
            raise ValueError(f"bags have {data[0].shape[1]} features; the model was trained on {self.dim_}")
        device = resolve_device(self.device)
        with deterministic(device, self.seed):
            net = self.net_.to(device)
            logits, weights = self._logits(net, data, device, with_weights=True)
            self.net_ = net.cpu()
        return torch.sigmoid(logits).cpu().numpy().astype(np.float64), weights

    def predict_proba(self, bags: Any) -> np.ndarray:
        """``(n, 2)`` class probabilities, column 1 the positive class."""
        p, _ = self._run(bags)
        return np.column_stack([1.0 - p, p])

    def attention(self, bags: Any) -> list[np.ndarray]:
        """Per bag, the weight of each instance in the bag's embedding (sums to 1 per bag)."""
        return self._run(bags)[1]

    def state_dict(self) -> dict[str, torch.Tensor]:
        if self.net_ is None:
            raise RuntimeError("MILClassifier is not fitted")
        return {k: v.detach().cpu().clone() for k, v in self.net_.state_dict().items()}
