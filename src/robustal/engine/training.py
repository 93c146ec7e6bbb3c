"""Standard and adversarial training (Madry PGD, TRADES) with per-epoch validation and best-epoch restore.

Under ``pgd`` every batch is replaced by its PGD adversarial examples before the optimizer step (Madry et al. 2018);
under ``trades`` the loss is the clean cross-entropy plus β·KL(p(x) ‖ p(x_adv)), with ``x_adv`` maximising that KL
(Zhang et al. 2019). For both, the validation score is robust accuracy under the training PGD attack; under
``standard`` it is clean accuracy. The model and optimizer of the best epoch are restored at the end, so a caller can
continue training from them (the active-learning loop does).

A model whose validation clean accuracy is no better than predicting the majority class is *at chance*
(:attr:`FitResult.at_chance`): adversarial training from a few hundred labels often ends there, with the network
predicting one class for every input (clean = robust accuracy ≈ 1/classes). The loop reports and recovers from it.
A model that is accurate but not yet robust (TRADES learns clean accuracy first) is not at chance.
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
from dataclasses import asdict, dataclass, field, replace

import torch
import torch.nn.functional as F
from torch import nn

from robustal._runtime import make_generator
from robustal._validation import check_choice, check_float, check_int
from robustal.data.dataset import Dataset, Split, to_float
from robustal.engine.attacks import AttackConfig, trades_adversary
from robustal.engine.evaluation import evaluate
from robustal.engine.pool_training import Unlabeled, pool_loss
from robustal.engine.weight_average import WeightAverage
from robustal.models.memory_format import MEMORY_FORMATS, apply_memory_format

TRAINING_MODES = ("standard", "pgd", "trades")
OPTIMIZERS = ("adam", "sgd")
AUGMENTATIONS = ("crop", "flip")
PRECISIONS = ("fp32", "bf16")
#: A model whose validation clean accuracy is at most this many times the majority class's share of the validation
#: labels is at chance: no better than a constant prediction (0.15 for 10 balanced classes).
CHANCE_FACTOR = 1.5


@dataclass(frozen=True)
class TrainConfig:
    """How to train.

    Attributes:
        mode: ``standard``, ``pgd`` (adversarial training on PGD examples) or ``trades`` (clean cross-entropy +
            ``trades_beta``·KL to the prediction on the KL-maximising PGD example).
        epochs, batch_size, optimizer, lr, momentum, weight_decay: The usual; ``momentum`` is SGD's. The default
            of 15 epochs (with ``min_steps`` 150) is the recipe measured against AutoAttack in docs/recipe.md: at
            1 000 MNIST labels it gained 6.5 AutoAttack points over 10 epochs (3 of 3 seeds) for 1.40x the CPU time.
        epsilon: L∞ budget of the training attack (None: the dataset's, see :meth:`for_dataset`).
        attack_steps: PGD steps k of the training attack.
        step_size: PGD step (None: 2.5·ε/k).
        random_start: Start the training attack at a random point of the ε-ball (the authors' code did not).
        augment: Batched on-device augmentations: ``crop`` (4-pixel padded random crop) and ``flip``; None: the
            dataset's (see :meth:`for_dataset`), ``()``: none.
        epsilon_warmup: Epochs over which the training ε (and step) rise linearly to their full value, counted
            from this call's first epoch (0: full ε from the start, as the reference). Small nets often start PGD
            training at MNIST's ε = 0.3 with several epochs at chance level; LeNet-5 on 8 000 MNIST images, seed 0,
            10 epochs: 30.6 % PGD-50 robust without warm-up, 61.0 % with 2 epochs. Validation always uses the full ε.
        trades_beta: TRADES's β, the weight of the robustness (KL) term (the authors' default: 6).
        precision: ``fp32``, or ``bf16`` mixed precision (autocast) for the training forward and backward passes and
            the training attack -- with channels-last memory for conv nets on CUDA. Validation (and every robust
            accuracy robustal reports) is always measured in fp32: a low-precision attack can understate robustness.
        min_steps: A floor on the optimizer steps of one :func:`fit`: when one pass over a small training set has
            fewer than ``ceil(min_steps / epochs)`` batches, an epoch continues with further shuffled passes up to
            that many steps (100 labels at batch 128 would otherwise get one step per epoch). 0: no floor. A floor
            is the recipe measured in docs/recipe.md: with 100 steps, robust active learning on MNIST from 100 labels
            was never at chance level (robustal 0.1's schedule left its runs there for 9 or 10 of 10 stages); the
            default, 150, goes with the 15 epochs (robustal 0.3's 10 epochs and 100 steps: ``epochs=10,
            min_steps=100``).
        validate_last: Validate (and consider keeping) only the last N epochs of each :func:`fit` (None: every
            epoch). The default, 5, halved the cost of validation at 10 epochs per stage and kept the same epoch as
            validating every epoch in all the stages measured (docs/recipe.md, scripts/validation_options.py):
            continuing from the previous stage, the best epoch is a late one. At 15 epochs it validates a third.
        memory_format: ``auto`` (channels-last where :mod:`robustal.models.memory_format` measured it faster: LeNet-5,
            small-cnn and VGG8 on the CPU; conv nets under bf16 on CUDA), ``channels-last`` or ``contiguous``. The
            model is put in that layout for training, attacks and evaluation; results differ from the other
            layout's in the last bits.
        ema: Keep an exponential moving average of the weights with this decay (:mod:`~robustal.engine.weight_average`;
            0.999 is the usual choice) and validate, keep and return the average in place of the raw weights. 0: off.
    """

    mode: str = "standard"
    epochs: int = 15
    batch_size: int = 128
    optimizer: str = "adam"
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 0.0
    epsilon: float | None = None
    attack_steps: int = 10
    step_size: float | None = None
    random_start: bool = True
    augment: tuple[str, ...] | None = None
    epsilon_warmup: int = 2
    trades_beta: float = 6.0
    min_steps: int = 150
    precision: str = "fp32"
    memory_format: str = "auto"
    validate_last: int | None = 5
    ema: float = 0.0

    def __post_init__(self) -> None:
        caller = "TrainConfig"
        check_choice(self.mode, "mode", caller, TRAINING_MODES)
        check_choice(self.optimizer, "optimizer", caller, OPTIMIZERS)
        check_choice(self.precision, "precision", caller, PRECISIONS)
        check_choice(self.memory_format, "memory_format", caller, MEMORY_FORMATS)
        check_int(self.epochs, "epochs", caller, min_value=1)
        check_int(self.batch_size, "batch_size", caller, min_value=1)
        check_int(self.attack_steps, "attack_steps", caller, min_value=1)
        check_int(self.epsilon_warmup, "epsilon_warmup", caller, min_value=0)
        check_int(self.min_steps, "min_steps", caller, min_value=0)
        if self.validate_last is not None:
            check_int(self.validate_last, "validate_last", caller, min_value=1)
        check_float(self.trades_beta, "trades_beta", caller, min_value=0)
        check_float(self.ema, "ema", caller, min_value=0, max_value=1, max_inclusive=False)
        check_float(self.lr, "lr", caller, min_value=0, min_inclusive=False)
        check_float(self.weight_decay, "weight_decay", caller, min_value=0)
        if self.epsilon is not None:
            check_float(self.epsilon, "epsilon", caller, min_value=0, max_value=1)
        if self.step_size is not None:
            check_float(self.step_size, "step_size", caller, min_value=0, max_value=1, min_inclusive=False)
        if self.augment is not None:
            if isinstance(self.augment, str) or not isinstance(self.augment, (tuple, list)):
                raise _augment_error(self.augment)
            for a in self.augment:
                check_choice(a, "augment", caller, AUGMENTATIONS)
            object.__setattr__(self, "augment", tuple(self.augment))

    @property
    def adversarial(self) -> bool:
        """Whether training is adversarial (``pgd`` or ``trades``): validated by robust accuracy."""
        return self.mode != "standard"

    def for_dataset(self, dataset: Dataset) -> TrainConfig:
        """This configuration with the dataset's ε (if unset) and augmentations (if None) filled in."""
        return replace(self, epsilon=dataset.epsilon if self.epsilon is None else self.epsilon,
                       augment=dataset.augment if self.augment is None else self.augment)

    def train_attack(self) -> AttackConfig | None:
        """The PGD attack of adversarial training: it makes ``pgd``'s training batches and measures the validation
        robust accuracy of ``pgd`` and ``trades`` (None under ``standard``)."""
        if not self.adversarial:
            return None
        if self.epsilon is None:
            raise ValueError("TrainConfig.epsilon is unset; call for_dataset(dataset) or give epsilon.")
        step = self.step_size if self.step_size is not None else 2.5 * self.epsilon / self.attack_steps
        return AttackConfig("pgd", self.epsilon, step, self.attack_steps, self.random_start)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["augment"] = None if self.augment is None else list(self.augment)
        return d


def _augment_error(value: object):
    from robustal.errors import ConfigError

    return ConfigError(f"The 'augment' parameter of TrainConfig must be a list of {', '.join(AUGMENTATIONS)} "
                       f"(empty: no augmentation). Got {value!r} instead.")


@dataclass
class FitResult:
    """The epoch kept (1-based), its validation score, and one record per epoch.

    Attributes:
        best_clean: The kept epoch's validation clean accuracy (None without validation).
        chance_level: The majority class's share of the validation labels: what a constant prediction scores.
        steps: Optimizer steps taken.
    """

    best_epoch: int
    best_score: float
    history: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    best_clean: float | None = None
    chance_level: float | None = None
    steps: int = 0

    @property
    def at_chance(self) -> bool:
        """Whether the kept epoch's validation clean accuracy is no better than chance (:data:`CHANCE_FACTOR`)."""
        return (self.chance_level is not None and self.best_clean is not None
                and is_at_chance(self.best_clean, self.chance_level))


def is_at_chance(clean_accuracy: float, chance_level: float) -> bool:
    """A clean accuracy at most :data:`CHANCE_FACTOR` times the majority-class share is at chance."""
    return clean_accuracy <= CHANCE_FACTOR * chance_level + 1e-12


def chance_level(labels: torch.Tensor) -> float:
    """The accuracy of always predicting the most frequent of ``labels``."""
    return float(torch.bincount(labels.cpu()).max()) / len(labels) if len(labels) else float("nan")


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """Adam or SGD (with momentum) over the model's parameters, as configured."""
    if config.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                           weight_decay=config.weight_decay)


def augment_batch(x: torch.Tensor, kinds: tuple[str, ...], generator: torch.Generator | None = None,
                  pad: int = 4) -> torch.Tensor:
    """Random ``pad``-pixel crops and/or horizontal flips of a float batch ``(n, C, H, W)``, all in one indexing op."""
    if not kinds or len(x) == 0:
        return x
    n, _, h, w = x.shape
    if "crop" in kinds:
        padded = F.pad(x, (pad, pad, pad, pad))
        oy = torch.randint(0, 2 * pad + 1, (n, 1), device=x.device, generator=generator)
        ox = torch.randint(0, 2 * pad + 1, (n, 1), device=x.device, generator=generator)
        rows = (oy + torch.arange(h, device=x.device))[:, None, :, None]  # (n, 1, H, 1)
        cols = (ox + torch.arange(w, device=x.device))[:, None, None, :]  # (n, 1, 1, W)
        batch = torch.arange(n, device=x.device)[:, None, None, None]
        chan = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
        x = padded[batch, chan, rows, cols]
    if "flip" in kinds:
        flip = torch.rand(n, device=x.device, generator=generator) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(3), x)
    return x


def _batches(n: int, batch_size: int, generator: torch.Generator) -> list[torch.Tensor]:
    """A shuffled partition of ``range(n)``; a last batch of one joins the previous (BatchNorm needs two)."""
    parts = list(torch.randperm(n, generator=generator).split(batch_size))
    if len(parts) > 1 and len(parts[-1]) == 1:
        last = parts.pop()  # before the assignment: parts[-1] is then the batch it joins
        parts[-1] = torch.cat([parts[-1], last])
    return parts


def _epoch_batches(n: int, config: TrainConfig, generator: torch.Generator) -> list[torch.Tensor]:
    """One epoch's batches: a shuffled pass over ``range(n)``, continued with further shuffled passes (cut at the
    step count) while the epoch has fewer than ``ceil(min_steps / epochs)`` steps."""
    want = math.ceil(config.min_steps / config.epochs)
    batches = _batches(n, config.batch_size, generator)
    while len(batches) < want:
        batches += _batches(n, config.batch_size, generator)[:want - len(batches)]
    return batches


def _trades_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, attack: AttackConfig, beta: float,
                 generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
    """TRADES: CE(f(x), y) + β·KL(p(x) ‖ p(x_adv)) (batch mean), the adversary found in eval mode as the authors do."""
    was_training = model.training
    model.eval()
    x_adv = trades_adversary(model, x, epsilon=attack.epsilon, step_size=attack.step_size, steps=attack.steps,
                             generator=generator)
    model.train(was_training)
    logits = model(x)
    logits_adv = model(x_adv)
    kl = F.kl_div(F.log_softmax(logits_adv.float(), 1), F.softmax(logits.float(), 1), reduction="batchmean")
    return F.cross_entropy(logits, y) + beta * kl, logits_adv


def fit(model: nn.Module, train: Split, val: Split | None, config: TrainConfig, *,
        optimizer: torch.optim.Optimizer | None = None, device: torch.device | str = "cpu", seed: int = 0,
        progress: bool = False, desc: str = "train", unlabeled: Unlabeled | None = None) -> FitResult:
    """Train ``model`` on ``train`` for ``config.epochs`` epochs and restore the epoch with the best validation score.

    The best epoch has the highest validation score; equal scores go to the higher validation clean accuracy, then
    to the later epoch (a model still at chance scores the same every epoch: keeping its first epoch would throw the
    rest of the training away). Only the last ``config.validate_last`` epochs are validated and can be kept.

    Args:
        model: On ``device`` already.
        train: Labeled training data (uint8 images).
        val: Validation data; the score is robust accuracy under the training attack for ``pgd`` and ``trades``,
            clean accuracy for ``standard``. Without ``val`` the last epoch is kept.
        config: A :class:`TrainConfig` with ``epsilon`` set for adversarial modes.
        optimizer: Continue with this optimizer (and its state); a new one from ``config`` otherwise.
        seed: Seeds shuffling, augmentation and attack random starts.
        progress: Show a progress bar on stderr.
        unlabeled: Pool images trained on beside the labeled batches (:mod:`robustal.engine.pool_training`): each step
            adds ``unlabeled.per_batch`` of them to its labeled batch; the steps are the same as without them.

    Returns:
        A :class:`FitResult`; ``model`` and ``optimizer`` hold the best epoch's state (with ``config.ema``, ``model``
        holds the best epoch's weight average, the weights that were validated).
    """
    if len(train) == 0:
        raise ValueError("Cannot train on an empty training set.")
    if len(train) == 1 and any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        raise ValueError("Training a BatchNorm model needs at least 2 labeled samples.")
    optimizer = optimizer or make_optimizer(model, config)
    attack = config.train_attack()
    augment = config.augment or ()
    shuffle_gen = make_generator(seed, "fit-shuffle")
    device_gen = make_generator(seed, "fit-device", device=device)
    x_all, y_all = train.x.to(device), train.y.to(device)
    if val is not None and len(val) == 0:
        val = None
    device = torch.device(device)
    autocast = _autocast(config.precision, device)
    channels_last = apply_memory_format(model, device, config.memory_format, config.precision)
    average = WeightAverage(model, config.ema) if config.ema > 0 else None
    kept = model if average is None else average.model  # the weights validated, kept and returned
    if val is not None:  # validated every epoch: move it once
        val = Split(val.x.to(device), val.y.to(device))
    if unlabeled is not None:
        if not config.adversarial:
            raise ValueError("Training on the unlabeled pool needs adversarial training (pgd or trades).")
        xu_all = unlabeled.x.to(device)
        tu_all = unlabeled.targets.to(device) if unlabeled.targets is not None else None
        pool_batches = unlabeled.batches(make_generator(seed, "fit-pool"))
    batches_per_epoch = len(_epoch_batches(len(train), config, torch.Generator().manual_seed(0)))
    bar = _progress_bar(config.epochs * batches_per_epoch, desc) if progress else None
    best = FitResult(best_epoch=0, best_score=float("-inf"), chance_level=chance_level(val.y) if val else None)
    best_key = (float("-inf"), float("-inf"))
    best_state: tuple[dict, dict] | None = None
    started = time.perf_counter()
    for epoch in range(1, config.epochs + 1):
        t0 = time.perf_counter()
        model.train()
        epoch_attack = attack
        if attack is not None and epoch <= config.epsilon_warmup:
            frac = epoch / (config.epsilon_warmup + 1)
            epoch_attack = replace(attack, epsilon=attack.epsilon * frac, step_size=attack.step_size * frac)
        total_loss = correct = seen = 0
        for idx in _epoch_batches(len(train), config, shuffle_gen):
            idx = idx.to(device)
            x, y = augment_batch(to_float(x_all[idx]), augment, device_gen), y_all[idx]
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with autocast():
                if unlabeled is not None:
                    u = next(pool_batches).to(device)
                    xu = augment_batch(to_float(xu_all[u]), augment, device_gen)
                    if channels_last:
                        xu = xu.contiguous(memory_format=torch.channels_last)
                    loss, logits = pool_loss(model, config.mode, x, y, xu, unlabeled,
                                             None if tu_all is None else tu_all[u], epoch_attack, device_gen)
                elif config.mode == "trades":
                    loss, logits = _trades_loss(model, x, y, epoch_attack, config.trades_beta, device_gen)
                else:
                    if epoch_attack is not None:
                        x = epoch_attack.run(model, x, y, generator=device_gen)
                    logits = model(x)
                    loss = F.cross_entropy(logits.float(), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if average is not None:
                average.update()
            best.steps += 1
            total_loss += loss.item() * len(y)
            correct += int((logits.argmax(1) == y).sum())
            seen += len(y)
            if bar is not None:
                bar.update(1)
        record = {"epoch": epoch, "loss": total_loss / seen, "train_acc": correct / seen}
        clean = float("-inf")
        if val is not None and epoch <= config.epochs - (config.validate_last or config.epochs):
            record.update(seconds=time.perf_counter() - t0)  # not validated: not a candidate
            best.history.append(record)
            if bar is not None:
                bar.set_postfix(epoch=epoch, loss=f"{record['loss']:.3f}", val="-")
            continue
        if val is not None:
            result = evaluate(kept, val, attack, device=device, seed=seed + epoch)
            record.update(val_clean=result.clean, val_robust=result.robust)
            score = result.robust if attack is not None else result.clean
            clean = result.clean
        else:
            score = float(epoch)  # no validation: keep the last epoch
        record.update(score=score, seconds=time.perf_counter() - t0)
        best.history.append(record)
        if bar is not None:
            bar.set_postfix(epoch=epoch, loss=f"{record['loss']:.3f}", val=f"{score:.3f}" if val else "-")
        if (score, clean) >= best_key:
            best_key = (score, clean)
            best.best_epoch, best.best_score = epoch, score
            best.best_clean = clean if val is not None else None
            if epoch < config.epochs or average is not None:  # the last epoch's raw weights are already in place
                best_state = (copy.deepcopy(kept.state_dict()), copy.deepcopy(optimizer.state_dict()))
            else:
                best_state = None
    if bar is not None:
        bar.close()
    if best_state is not None:
        model.load_state_dict(best_state[0])
        optimizer.load_state_dict(best_state[1])
    best.seconds = time.perf_counter() - started
    return best


def _autocast(precision: str, device: torch.device):
    """The autocast context factory of ``precision`` on ``device`` (bf16 mixed precision, or none)."""
    if precision != "bf16":
        return contextlib.nullcontext
    return lambda: torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def _progress_bar(total: int, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="batch", leave=False, dynamic_ncols=True,
                disable=None)  # none when stderr is not a terminal: no escape codes in logs and pipes
