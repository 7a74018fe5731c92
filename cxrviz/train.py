"""The trainer: one loop for every registered architecture, independent of Streamlit.

``train(config, callback=..., stop=...)`` loads the (cached) data, holds out a validation split
(``val_fraction``), trains, evaluates on validation every epoch, scores the test split once at the end (on
the final or the best-on-validation weights: ``select``) and returns a :class:`TrainResult` that
:mod:`cxrviz.runs` stores. Progress goes to the callback as :class:`Progress` events; ``stop`` (a
``threading.Event``) ends the run within a second, even in the middle of a long batch.

It is one module (about 640 lines) because it is one concept, a training run: a new setting touches
:class:`TrainConfig`, its validation, the steps of :class:`TrainSession` and the stored :class:`TrainResult`
together, and the helpers here (``predict_probs``, ``recalibrate_bn``, ``measure_latency``) are the session's
own evaluation steps (``predict_probs`` is reused by the CLI, the probes and external scoring, so all score
images the same way).
"""
from __future__ import annotations

import math
import os
import platform
import random
import threading
import time
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .data.augment import AUGMENT_LEVELS, augment_batch
from .data.dataset import DatasetSource, load_split, open_dataset
from .data.preprocess import prepare_uint8, standardize_per_image
from .data.validation import split_validation
from .errors import CxrvizError
from .metrics import evaluate_predictions, per_source
from .models import get_spec
from .precision import FP32, PRECISIONS, Precision, autocast, to_memory_format
from .precision import choose as choose_precision

OPTIMIZERS = ("adamw", "sgd", "adam")
SCHEDULES = ("cosine", "step", "constant")
SELECTS = ("final", "best_val")


class ConfigError(CxrvizError):
    """A training configuration that cannot run; the message says which setting and why."""


class StopTraining(Exception):
    """Raised inside forward/backward hooks when a stop is requested."""


@dataclass
class TrainConfig:
    arch: str = "resnet18"
    data: str | None = None  # dataset folder; None = the built-in synthetic set
    img_size: int | None = None  # None = the architecture's recipe (same for the settings below)
    epochs: int | None = None
    batch_size: int | None = None
    optimizer: str | None = None
    lr: float | None = None
    weight_decay: float | None = None
    momentum: float | None = None
    schedule: str | None = None
    warmup_epochs: int | None = None
    label_smoothing: float | None = None
    augment: str | None = None  # none | light | standard; None = the recipe's
    hflip: bool = False
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | mps
    in_channels: int = 1
    aux_weight: float = 0.3  # GoogLeNet auxiliary losses
    precise_bn: bool = True  # re-estimate BatchNorm statistics on the clean train set before each evaluation
    ema: float | None = None  # exponential moving average of the weights, decay per step (0 = off)
    precision: str = "auto"  # auto | bf16 | fp32 (cxrviz/precision.py); the one used is in the run's environment
    val_fraction: float = 0.15  # training images held out for per-epoch metrics (0 = the old way: test every epoch)
    val_seed: int = 0  # the split's seed: fixed, independent of ``seed``, so seeds share validation images
    val_folds: int = 0  # k-fold cross-validation: >= 2 holds out fold ``val_fold`` of a stratified k-fold partition
    val_fold: int = 0  # (data/validation.py) instead of ``val_fraction``, which is then recorded as 1 / val_folds
    select: str = "final"  # final | best_val: the weights scored once on the test split at the end
    clahe: bool = False  # adaptive histogram equalisation of every image (cxrviz/data/preprocess.py)
    standardize: bool | None = None  # per-image intensity standardisation instead of the set's mean/sd; None = recipe
    lung_crop: bool = False  # crop to the lung-field template's box (+ margin), resized back (data/preprocess.py)

    def resolved(self) -> "TrainConfig":
        """Fill unset values from the architecture's recipe and validate everything."""
        spec = get_spec(self.arch)
        r = spec.recipe
        c = replace(self, arch=spec.name)
        for f in ("img_size", "epochs", "batch_size", "optimizer", "lr", "weight_decay", "momentum", "schedule",
                  "warmup_epochs", "label_smoothing", "augment", "ema", "standardize"):
            if getattr(c, f) is None:
                setattr(c, f, getattr(r, f))
        if c.img_size < spec.min_size:
            raise ConfigError(f"image size {c.img_size} px is below {spec.display}'s minimum of {spec.min_size} px")
        if c.img_size > 1024:
            raise ConfigError(f"image size {c.img_size} px is too large (at most 1024 px)")
        if c.epochs < 1 or c.batch_size < 2:
            raise ConfigError("epochs must be >= 1 and batch size >= 2")
        if not (c.lr > 0 and math.isfinite(c.lr)):
            raise ConfigError(f"learning rate must be a positive number, not {c.lr}")
        if c.optimizer not in OPTIMIZERS:
            raise ConfigError(f"optimizer must be one of {OPTIMIZERS}, not {c.optimizer!r}")
        if c.schedule not in SCHEDULES:
            raise ConfigError(f"schedule must be one of {SCHEDULES}, not {c.schedule!r}")
        if c.augment not in AUGMENT_LEVELS:
            raise ConfigError(f"augment must be one of {tuple(AUGMENT_LEVELS)}, not {c.augment!r}")
        if not 0.0 <= c.ema < 1.0:
            raise ConfigError(f"ema must be in [0, 1), not {c.ema}")
        if not (isinstance(c.val_fraction, (int, float)) and 0.0 <= c.val_fraction <= 0.5):
            raise ConfigError(f"validation fraction must be in [0, 0.5], not {c.val_fraction}")
        if c.val_folds:
            if not (isinstance(c.val_folds, int) and 2 <= c.val_folds <= 20):
                raise ConfigError(f"validation folds must be a whole number from 2 to 20 (0: off), not {c.val_folds}")
            if not (isinstance(c.val_fold, int) and 0 <= c.val_fold < c.val_folds):
                raise ConfigError(f"validation fold must be in 0..{c.val_folds - 1}, not {c.val_fold}")
            if c.val_fraction == 0:
                raise ConfigError("validation folds need a validation split: leave val_fraction above 0")
            c.val_fraction = round(1.0 / c.val_folds, 4)
        if c.select not in SELECTS:
            raise ConfigError(f"select must be one of {SELECTS}, not {c.select!r}")
        if c.select == "best_val" and c.val_fraction == 0:
            raise ConfigError("select best_val needs a validation split (val_fraction > 0)")
        if c.precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {PRECISIONS}, not {c.precision!r}")
        if c.in_channels not in (1, 3):
            raise ConfigError("in_channels must be 1 (grayscale) or 3")
        return c

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


@dataclass
class Progress:
    kind: str  # "data" | "start" | "batch" | "epoch" | "end"
    epoch: int = 0
    epochs: int = 0
    step: int = 0
    total_steps: int = 0
    loss: float | None = None
    elapsed: float = 0.0
    eta: float | None = None
    metrics: dict = field(default_factory=dict)
    message: str = ""

    @property
    def fraction(self) -> float:
        return self.step / self.total_steps if self.total_steps else 0.0


Callback = Callable[[Progress], None]


@dataclass
class TrainResult:
    config: dict
    status: str  # "done" | "stopped"
    history: list[dict]
    batch_losses: list[float]
    evaluation: dict | None
    predictions: dict | None  # {"paths", "labels", "sources", "probs"} on the test split (each image's source)
    timings: dict
    environment: dict
    dataset: dict
    norm: dict
    state_dict: dict[str, torch.Tensor] | None = field(default=None, repr=False)


def select_device(pref: str = "auto") -> torch.device:
    pref = (pref or "auto").lower()
    if pref == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if pref.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' requested but no CUDA GPU is available")
    if pref == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ConfigError("device 'mps' requested but MPS is not available")
    try:
        return torch.device(pref)
    except RuntimeError as e:
        raise ConfigError(f"unknown device {pref!r}") from e


def environment(device: torch.device) -> dict:
    env = {"device": str(device), "torch": torch.__version__, "python": platform.python_version(),
           "cpu_threads": torch.get_num_threads(), "platform": platform.platform(terse=True)}
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
    return env


def seed_everything(seed: int) -> torch.Generator:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def make_optimizer(model: nn.Module, c: TrainConfig) -> torch.optim.Optimizer:
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": c.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if c.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=c.lr, momentum=c.momentum, nesterov=c.momentum > 0)
    if c.optimizer == "adam":
        return torch.optim.Adam(groups, lr=c.lr)
    return torch.optim.AdamW(groups, lr=c.lr)


def lr_lambda(c: TrainConfig, steps_per_epoch: int) -> Callable[[int], float]:
    total = c.epochs * steps_per_epoch
    warm = min(c.warmup_epochs * steps_per_epoch, total // 2)

    def f(step: int) -> float:
        if step < warm:
            return 0.1 + 0.9 * step / max(1, warm)
        if c.schedule == "cosine":
            t = (step - warm) / max(1, total - warm)
            return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))
        if c.schedule == "step":
            return 0.1 ** sum(step >= total * m for m in (0.5, 0.75))
        return 1.0

    return f


def _install_stop_hooks(model: nn.Module, stop: threading.Event) -> list:
    """Check the stop flag inside forward (every module) and backward (every parameter's gradient), so a
    stop lands within one layer's compute rather than after a whole batch."""

    def check(*_):
        if stop.is_set():
            raise StopTraining()

    handles = [m.register_forward_pre_hook(check) for m in model.modules() if next(m.children(), None) is None]
    handles += [p.register_hook(lambda g: (check(), g)[1]) for p in model.parameters() if p.requires_grad]
    return handles


def loss_fn(out, y: torch.Tensor, c: TrainConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """The training loss (label-smoothed cross-entropy, plus GoogLeNet's weighted auxiliary losses) and the logits."""
    if isinstance(out, tuple):  # GoogLeNet in training mode: (logits, aux1, aux2)
        logits = out[0]
        loss = F.cross_entropy(logits, y, label_smoothing=c.label_smoothing)
        for aux in out[1:]:
            if aux is not None:
                loss = loss + c.aux_weight * F.cross_entropy(aux, y, label_smoothing=c.label_smoothing)
        return loss, logits
    return F.cross_entropy(out, y, label_smoothing=c.label_smoothing), out




class Preprocess:
    """uint8 [B,1,S,S] -> normalised float input in the model's channel count (also used at predict time).

    ``lung_crop`` crops uint8 input to the lung fields first and ``clahe`` equalises it (a run trained with
    them stores them, so predictions match: the trainer applies them to its cached tensors once instead, in
    the same order); ``standardize`` gives each image zero mean and unit
    standard deviation instead of the training set's ``mean``/``std`` (cxrviz/data/preprocess.py)."""

    def __init__(self, mean: float, std: float, in_channels: int, standardize: bool = False,
                 clahe: bool = False, lung_crop: bool = False) -> None:
        self.mean, self.std, self.in_channels = mean, std, in_channels
        self.standardize, self.clahe, self.lung_crop = standardize, clahe, lung_crop

    @classmethod
    def from_norm(cls, norm: dict, in_channels: int = 1) -> "Preprocess":
        """The prediction-time preprocessing a run stored as its ``norm`` (``in_channels``: where it has none)."""
        return cls(norm.get("mean", 0.5), norm.get("std", 0.25), norm.get("in_channels", in_channels),
                   standardize=bool(norm.get("standardize")), clahe=bool(norm.get("clahe")),
                   lung_crop=bool(norm.get("lung_crop")))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.uint8:
            x = prepare_uint8(x, crop=self.lung_crop, clahe=self.clahe)
        x = x.float() / 255 if x.dtype == torch.uint8 else x
        return self.normalise(x)

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        x = standardize_per_image(x) if self.standardize else (x - self.mean) / self.std
        return x.expand(-1, self.in_channels, -1, -1) if self.in_channels != x.shape[1] else x


def _default_precision(device: torch.device, precision: Precision | None) -> Precision:
    """Evaluation without an explicit precision: bf16 + channels-last on a GPU (as always), fp32 elsewhere."""
    if precision is not None:
        return precision
    return Precision("bf16", True, "GPU default") if device.type == "cuda" else FP32


@torch.no_grad()
def predict_probs(model: nn.Module, images: torch.Tensor, pre: Preprocess, device: torch.device,
                  batch_size: int = 64, stop: threading.Event | None = None,
                  precision: Precision | None = None) -> torch.Tensor:
    """Softmax probabilities [N, C] on the CPU (float32) for uint8 images [N,1,S,S]."""
    model.eval()
    outs = []
    p = _default_precision(device, precision)
    for i in range(0, len(images), batch_size):
        if stop is not None and stop.is_set():
            raise StopTraining()
        x = to_memory_format(pre(images[i:i + batch_size].to(device, non_blocking=True)), p.channels_last)
        with autocast(device, p.bf16):
            logits = model(x)
        outs.append(torch.softmax(logits.float(), 1))
    return torch.cat(outs).cpu()


@torch.no_grad()
def recalibrate_bn(model: nn.Module, images: torch.Tensor, pre: Preprocess, device: torch.device,
                   batch_size: int = 64, max_images: int = 192, precision: Precision | None = None) -> bool:
    """"Precise BN": replace the running BatchNorm statistics by their exact average over (up to
    ``max_images``) un-augmented training images. With ~8 steps per epoch the usual exponential average
    still remembers the first steps' activations for many epochs, and an eval-mode model then predicts one
    class; this pass costs a fraction of an epoch and makes every epoch's test figures honest."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return False
    momenta = [b.momentum for b in bns]
    for b in bns:
        b.reset_running_stats()
        b.momentum = None  # cumulative average over this pass
    model.train()
    p = _default_precision(device, precision)
    if len(images) > max_images:  # a fixed, class-balanced-in-expectation subset (files are class-ordered)
        idx = torch.randperm(len(images), generator=torch.Generator().manual_seed(0))[:max_images]
        images = images[idx.to(images.device)]
    n = len(images)
    bs = max(2, batch_size)
    for i in range(0, n - 1, bs):
        x = to_memory_format(pre(images[i:min(i + bs, n)]), p.channels_last)
        with autocast(device, p.bf16):
            model(x)
    for b, m in zip(bns, momenta):
        b.momentum = m
    model.eval()
    return True


def measure_latency(model: nn.Module, images: torch.Tensor, pre: Preprocess, device: torch.device,
                    n: int = 10, precision: Precision | None = None) -> float:
    """Median milliseconds to classify one image (batch of 1), after a warm-up, in the run's precision (fp32
    when not given: what :mod:`cxrviz.predict` uses)."""
    model.eval()
    times = []
    p = precision or FP32
    with torch.no_grad():
        for i in range(min(n, len(images)) + 2):
            x = to_memory_format(pre(images[i % len(images):i % len(images) + 1].to(device)), p.channels_last)
            t = time.perf_counter()
            with autocast(device, p.bf16):
                model(x)
            if device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t)
    return float(np.median(times[2:]) * 1000) if len(times) > 2 else float(times[-1] * 1000)


class TrainSession:
    """One training run in named steps, so each can be read (and changed) on its own:

    ``setup()`` loads the (cached) data, seeds, builds the model, optimiser and schedule; ``run_epoch(e)``
    trains one epoch; ``evaluate(e, ...)`` re-estimates BatchNorm and scores the held-out images, emitting the
    epoch's row; ``finish(status)`` scores the final weights and packs the :class:`TrainResult`.
    :func:`train` drives them; a stop (``StopTraining``) can land in any step after ``setup``."""

    def __init__(self, config: TrainConfig, *, callback: Callback | None = None,
                 stop: threading.Event | None = None, source: DatasetSource | None = None,
                 max_batch_losses: int = 5000) -> None:
        self.c = config.resolved()
        self.spec = get_spec(self.c.arch)
        self.device = select_device(self.c.device)
        self.cuda = self.device.type == "cuda"
        self.stop = stop or threading.Event()
        self.emit = callback or (lambda p: None)
        self.source = source
        self.max_batch_losses = max_batch_losses
        self.t0 = time.perf_counter()
        self.history: list[dict] = []
        self.batch_losses: list[float] = []
        self.last_eval: tuple[torch.Tensor, dict] | None = None
        self.eval_state: dict[str, torch.Tensor] | None = None  # copy (on the device) of the weights last_eval used
        self.best: tuple[float, int, dict[str, torch.Tensor]] | None = None  # (val acc, epoch, weights) if best_val
        self.hooks: list = []
        self.step = 0
        self.t_train = 0.0
        self.t_eval = 0.0
        self.t_data = 0.0
        self.t_start = 0.0

    # -- setup ------------------------------------------------------------------------------------------------
    def setup(self) -> None:
        self._load_data()
        self._build()
        self.t_start = time.perf_counter()
        self.emit(Progress("start", epochs=self.c.epochs, total_steps=self.total_steps,
                           elapsed=self.t_start - self.t0,
                           message=f"training {self.spec.display} on {self.device}"))

    def _load_data(self) -> None:
        c, t0 = self.c, self.t0
        self.src = self.source if self.source is not None else open_dataset(c.data)

        def data_progress(done: int, total: int) -> None:
            self.emit(Progress("data", message=f"decoding images {done}/{total}", step=done, total_steps=total,
                               elapsed=time.perf_counter() - t0))

        self.train_set = load_split(self.src, "train", c.img_size, progress=data_progress)
        self.test_set = load_split(self.src, "test", c.img_size, progress=data_progress)
        if c.lung_crop or c.clahe:  # on the cached uint8 tensors, once (new ImageSets: the loaded ones are shared)
            self.train_set, self.test_set = (replace(s, images=prepare_uint8(s.images, crop=c.lung_crop, clahe=c.clahe))
                                             for s in (self.train_set, self.test_set))
        self.val_set, self.stratified = None, None
        if c.val_fraction > 0:
            self.train_set, self.val_set, self.stratified = split_validation(self.train_set, c.val_fraction,
                                                                             c.val_seed, c.val_fold, c.val_folds)
            if len(self.val_set) == 0:
                raise ConfigError(f"a validation fraction of {c.val_fraction} holds out no image: use a larger "
                                  "fraction, or 0 for no validation split")
        if len(self.train_set) < 2:
            raise ConfigError("the training split needs at least two readable images")
        self.t_data = time.perf_counter() - t0

    def _build(self) -> None:
        c, device = self.c, self.device
        # decided before seeding: an "auto" probe on a bf16 CPU leaves the random generators as they were anyway
        self.precision = choose_precision(c.precision, device, c.arch, c.img_size, c.in_channels)
        self.g = seed_everything(c.seed)
        model = self.spec.build(num_classes=len(self.src.classes), in_channels=c.in_channels).to(device)
        if self.precision.channels_last:
            model = model.to(memory_format=torch.channels_last)
        if self.cuda:
            # cuDNN autotuning is off by default: on runs this short its per-shape tuning costs more than it saves
            # (H200, the deck's four models at 224 px: 84 s with it, 40 s without).
            # CXRVIZ_CUDNN_BENCHMARK=1 turns it on.
            torch.backends.cudnn.benchmark = os.environ.get("CXRVIZ_CUDNN_BENCHMARK", "0") == "1"
        self.model = model
        self.mean, self.std = self.train_set.mean_std()
        self.pre = Preprocess(self.mean, self.std, c.in_channels, standardize=c.standardize)  # images: cropped, CLAHE'd
        self.x_train = self.train_set.images.to(device)  # uint8; on a GPU the whole cached set lives there
        self.y_train = self.train_set.labels.to(device)
        self.x_test = self.test_set.images.to(device)
        self.x_val = self.val_set.images.to(device) if self.val_set is not None else None
        aug = AUGMENT_LEVELS[c.augment]
        self.aug = replace(aug, hflip=True) if c.hflip else aug
        self.bs = min(c.batch_size, len(self.train_set))
        # drop the last partial batch (BatchNorm dislikes tiny ones)
        self.steps_per_epoch = len(self.train_set) // self.bs
        self.total_steps = self.steps_per_epoch * c.epochs
        self.opt = make_optimizer(model, c)
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lr_lambda(c, self.steps_per_epoch))
        # on a GPU a batch takes milliseconds: the check between batches is enough, and per-layer hooks would
        # cost a Python call per module (GoogLeNet has ~200)
        self.hooks = [] if self.cuda else _install_stop_hooks(model, self.stop)
        self.ema_model = None
        if c.ema > 0:  # evaluated and stored instead of the raw weights
            from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

            self.ema_model = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(c.ema), use_buffers=True)
        self.net = self.ema_model.module if self.ema_model is not None else model  # what is evaluated and stored

    # -- one epoch --------------------------------------------------------------------------------------------
    def run_epoch(self, epoch: int) -> dict:
        """Train one epoch; returns its training loss, accuracy and seconds."""
        c, device, model, cuda, bs = self.c, self.device, self.model, self.cuda, self.bs
        te = time.perf_counter()
        model.train()
        perm = torch.randperm(len(self.train_set), generator=self.g).to(device)
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device, dtype=torch.int64)
        seen = 0
        epoch_losses: list[torch.Tensor] = []
        for b in range(self.steps_per_epoch):
            if self.stop.is_set():
                raise StopTraining()
            idx = perm[b * bs:(b + 1) * bs]
            x = self.x_train[idx].float().div_(255)
            x = self.pre.normalise(augment_batch(x, self.aug, self.g))
            y = self.y_train[idx]
            x = to_memory_format(x, self.precision.channels_last)
            with autocast(device, self.precision.bf16):
                out = model(x)
                loss, logits = loss_fn(out, y, c)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
            self.sched.step()
            if self.ema_model is not None:
                self.ema_model.update_parameters(model)
            self.step += 1
            ld = loss.detach()
            loss_sum += ld * len(y)
            correct += (logits.detach().argmax(1) == y).sum()
            seen += len(y)
            if cuda:
                epoch_losses.append(ld)
            else:
                lv = float(ld)
                self.batch_losses.append(lv)
                el = time.perf_counter() - self.t_start
                self.emit(Progress("batch", epoch=epoch, epochs=c.epochs, step=self.step, total_steps=self.total_steps,
                                   loss=lv, elapsed=el, eta=el / self.step * (self.total_steps - self.step)))
        if cuda:  # one host sync per epoch
            self.batch_losses.extend(torch.stack(epoch_losses).float().cpu().tolist())
        seconds = time.perf_counter() - te
        self.t_train += seconds
        return {"train_loss": float(loss_sum) / max(1, seen), "train_acc": float(correct) / max(1, seen),
                "train_s": seconds}

    def evaluate(self, epoch: int, trained: dict) -> dict:
        """Score the epoch's weights on the held-out images (validation; the test split for runs without one),
        record and emit the epoch's row."""
        c, net = self.c, self.net
        tv = time.perf_counter()
        if c.precise_bn:
            recalibrate_bn(net, self.x_train, self.pre, self.device, batch_size=self.bs, precision=self.precision)
        held = self.val_set if self.val_set is not None else self.test_set
        x_held = self.x_val if self.val_set is not None else self.x_test
        probs = predict_probs(net, x_held, self.pre, self.device, stop=self.stop, precision=self.precision)
        loss = float(F.nll_loss(torch.log(probs.clamp_min(1e-12)), held.labels))
        acc = float((probs.argmax(1) == held.labels).float().mean())
        self.t_eval += time.perf_counter() - tv
        self.last_eval = (probs, {"epoch": epoch})
        if epoch < c.epochs:  # a stop in a later epoch stores these weights, not half-trained ones
            self.eval_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
        if c.select == "best_val" and (self.best is None or acc > self.best[0]):  # the earliest epoch on ties
            state = (self.eval_state if epoch < c.epochs
                     else {k: v.detach().clone() for k, v in net.state_dict().items()})
            self.best = (acc, epoch, state)
        el = time.perf_counter() - self.t_start
        split = "val" if self.val_set is not None else "test"
        row = {"epoch": epoch, "train_loss": trained["train_loss"], "train_acc": trained["train_acc"],
               f"{split}_loss": loss, f"{split}_acc": acc, "lr": self.opt.param_groups[0]["lr"], "time": el,
               "train_s": trained["train_s"]}
        self.history.append(row)
        if len(self.batch_losses) > self.max_batch_losses:  # bounded: keep every other point
            self.batch_losses[:] = self.batch_losses[::2]
        self.emit(Progress("epoch", epoch=epoch, epochs=c.epochs, step=self.step, total_steps=self.total_steps,
                           loss=trained["train_loss"], elapsed=el,
                           eta=el / self.step * (self.total_steps - self.step), metrics=row))
        return row

    def score_test(self, status: str) -> tuple[torch.Tensor, int] | None:
        """With a validation split: score the test split once, on the selected weights (the last completed
        epoch's, or the best on validation), which become the run's weights. None if no epoch completed."""
        if not self.history:
            return None
        if self.best is not None:
            _, epoch, state = self.best
            self.net.load_state_dict(state)
        elif status == "stopped" and self.eval_state is not None:
            epoch = len(self.history)
            self.net.load_state_dict(self.eval_state)
        else:
            epoch = len(self.history)
        tv = time.perf_counter()
        probs = predict_probs(self.net, self.x_test, self.pre, self.device, precision=self.precision)  # no stop
        self.t_eval += time.perf_counter() - tv
        self.eval_state = None  # the net now holds the selected weights
        return probs, epoch

    def release(self) -> None:
        """Remove the stop hooks and free the gradients (after the last epoch, or a stop)."""
        for h in self.hooks:
            h.remove()
        self.hooks = []
        if getattr(self, "opt", None) is not None:
            self.opt.zero_grad(set_to_none=True)

    # -- the end ----------------------------------------------------------------------------------------------
    def run(self) -> TrainResult:
        """All the steps: setup, every epoch (trained, then evaluated) until done or stopped, finish."""
        self.setup()
        status = "done"
        try:
            for epoch in range(1, self.c.epochs + 1):
                trained = self.run_epoch(epoch)
                self.evaluate(epoch, trained)
        except StopTraining:
            status = "stopped"
        finally:
            self.release()
        return self.finish(status)

    def finish(self, status: str) -> TrainResult:
        c, src, test_set, net = self.c, self.src, self.test_set, self.net
        evaluation = predictions = None
        if self.val_set is not None:  # the test split, once, at the end
            scored = self.score_test(status)
            self.last_eval = None if scored is None else (scored[0], {"epoch": scored[1]})
        if self.last_eval is not None:
            probs, info = self.last_eval
            evaluation = evaluate_predictions(test_set.labels.tolist(), probs.numpy(), src.classes)
            evaluation["epoch"] = info["epoch"]
            evaluation["split"] = "test"
            evaluation["selected_on"] = "validation" if self.val_set is not None else "test (every epoch)"
            evaluation["select"] = c.select
            if len(set(test_set.sources)) > 1:  # a multi-source dataset: accuracy of each source's test images
                evaluation["per_source"] = per_source(test_set.labels.tolist(), probs.argmax(1).tolist(),
                                                      test_set.sources, src.classes)
            if status == "done":
                evaluation["latency_ms"] = measure_latency(net, test_set.images, self.pre, self.device,
                                                           precision=self.precision)
            predictions = {"paths": test_set.paths, "labels": test_set.labels.tolist(), "sources": test_set.sources,
                           "probs": [[round(float(v), 6) for v in row] for row in probs.tolist()]}
        t_total = time.perf_counter() - self.t0
        timings = {"data_s": self.t_data, "train_s": self.t_train, "eval_s": self.t_eval, "total_s": t_total,
                   "train_eval_s": time.perf_counter() - self.t_start}
        if status == "stopped" and self.eval_state is not None:
            # stopped in a later epoch (mid-batch, or mid-evaluation where precise BN resets the BatchNorm
            # statistics): store the weights of the last evaluated epoch, so the run's evaluation and predictions
            # match its weights
            state = {k: v.to("cpu").contiguous() for k, v in self.eval_state.items()}
        else:  # the model is dropped right after: on the CPU its tensors can be handed over without a copy
            state = {k: v.detach().to("cpu").contiguous() for k, v in net.state_dict().items()}
        self.eval_state = None
        result = TrainResult(
            config={**c.to_dict(), "precision_used": self.precision.name}, status=status, history=self.history,
            batch_losses=self.batch_losses,
            evaluation=evaluation, predictions=predictions, timings=timings,
            environment={**environment(self.device), **self.precision.record()},
            dataset={**src.describe(), "img_size": c.img_size, "train_n": len(self.train_set),
                     "test_n": len(test_set), "skipped": self.train_set.errors + test_set.errors,
                     **({"val_n": len(self.val_set), "val_stratified_by": self.stratified,
                         "val_paths": self.val_set.paths,
                         **({"val_fold": f"{c.val_fold + 1} of {c.val_folds}"} if c.val_folds else {})}
                      if self.val_set is not None else {})},
            norm={"mean": self.mean, "std": self.std, "in_channels": c.in_channels,
                  **({"standardize": True} if c.standardize else {}), **({"clahe": True} if c.clahe else {}),
                  **({"lung_crop": True} if c.lung_crop else {})},
            state_dict=state)
        self.emit(Progress("end", epoch=len(self.history), epochs=c.epochs, step=self.step,
                           total_steps=self.total_steps, elapsed=t_total, eta=0.0, message=status,
                           metrics=({"test_acc": evaluation["accuracy"]} if evaluation else {})))
        self.model = self.net = self.opt = self.x_train = self.y_train = self.x_test = self.x_val = None
        self.ema_model = self.best = None
        if self.cuda:
            torch.cuda.empty_cache()
        return result


def train(config: TrainConfig, *, callback: Callback | None = None, stop: threading.Event | None = None,
          source: DatasetSource | None = None, max_batch_losses: int = 5000) -> TrainResult:
    """Train one model. Raises ConfigError / DatasetError on bad settings or data (nothing is written)."""
    return TrainSession(config, callback=callback, stop=stop, source=source, max_batch_losses=max_batch_losses).run()
