"""A run by names: dataset + model + loop settings → a stored, resumable active-learning run.

Shared by ``robustal run``, ``robustal demo`` and studies, so that a run started by any of them resumes under any.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import nn

from robustal.acquisition import create_acquisition
from robustal.data import Dataset, load_dataset
from robustal.engine.evaluation import EVAL_STEPS, paper_attack
from robustal.loop import ActiveLearningLoop, LoopConfig, RunResult
from robustal.models import create_model
from robustal.storage.store import Store


@dataclass(frozen=True)
class RunSpec:
    """One run: ``dataset`` (name or .npz path), ``model`` (None: the dataset's default), loop settings.

    ``loop.train.epsilon`` None means the dataset's ε; ``eval_steps`` is the PGD steps of the per-stage robust
    accuracy (the paper: 50) with the dataset's ε and step. ``acquisition_label`` names a variant of the acquisition
    function (a study's ``dre-proportional``) in the store and the report. ``image_size`` and ``channels`` read an
    image-folder dataset.
    """

    dataset: str
    loop: LoopConfig
    model: str | None = None
    eval_steps: int = EVAL_STEPS
    eval_attack: str = "pgd"
    acquisition_label: str | None = None
    image_size: int | None = None
    channels: int | None = None

    def to_dict(self) -> dict:
        """The spec as stored with the run: a study compares it before reusing a finished run."""
        return {"dataset": self.dataset, "model": self.model, "loop": self.loop.to_dict(),
                "eval_steps": self.eval_steps, "eval_attack": self.eval_attack,
                "acquisition_label": self.acquisition_label, "image_size": self.image_size, "channels": self.channels}

    def load_data(self, data_dir: str | Path | None = None) -> Dataset:
        """The spec's dataset (an image folder read at ``image_size``/``channels`` with the training ε)."""
        return load_dataset(self.dataset, data_dir, image_size=self.image_size, channels=self.channels,
                            epsilon=self.loop.train.epsilon)

    def default_name(self) -> str:
        ds = Path(self.dataset).stem if self.dataset.endswith(".npz") else self.dataset
        acq = self.acquisition_label or self.loop.acquisition
        from robustal.engine.pool_training import training_label

        training = training_label(self.loop.train.mode, self.loop.pool.mode)
        return f"{ds}-{self.model or 'default'}-{training}-{acq}-s{self.loop.seed}"


def model_factory(name: str, dataset: Dataset | None = None, *, num_classes: int | None = None,
                  in_channels: int | None = None, image_size: int | None = None, source: str = "--model"):
    """A zero-argument factory building model ``name`` for ``dataset``'s images and classes (or the ones given);
    ``source``: the flag or file that named it, for messages."""
    if dataset is not None:
        num_classes, (in_channels, image_size, _) = dataset.num_classes, dataset.image_shape

    def build() -> nn.Module:
        return create_model(name, num_classes=num_classes, in_channels=in_channels, image_size=image_size,
                            source=source)

    return build


def resolve(spec: RunSpec, dataset: Dataset) -> tuple[str, LoopConfig]:
    """The model name and a loop configuration with the dataset's ε, augmentation and evaluation attack filled in.

    A training ε set in the spec is also the evaluation's (the step scales with it, see
    :meth:`~robustal.data.Dataset.with_epsilon`)."""
    model = spec.model or dataset.default_model
    dataset = dataset.with_epsilon(spec.loop.train.epsilon)  # a chosen ε is the evaluation's budget too
    loop = replace(spec.loop, train=spec.loop.train.for_dataset(dataset),
                   eval_attack=paper_attack(dataset, spec.eval_steps, spec.eval_attack) if spec.eval_steps else None)
    return model, loop


def dataset_locator(dataset: str) -> str:
    """A registered name as is; a file made absolute, so a relative and an absolute path name the same data."""
    path = Path(dataset).expanduser()
    return str(path.resolve()) if path.exists() else dataset


def describe_model(model_name: str, dataset: Dataset, source: str, train: dict) -> dict:
    """What a stage checkpoint records of its model and data besides the weights (the keys of a ``train --save``
    checkpoint, :mod:`robustal.loop.checkpoint`): it can then be rebuilt and evaluated away from its results folder."""
    return {"model_name": model_name, "dataset": dataset_locator(source), "num_classes": dataset.num_classes,
            "image_shape": [int(s) for s in dataset.image_shape], "epsilon": dataset.epsilon,
            "classes": None if dataset.class_names is None else list(dataset.class_names),
            "data_fingerprint": dataset.fingerprint(), "train_config": train}


def spec_for_store(spec: RunSpec) -> dict:
    """:meth:`RunSpec.to_dict` with the dataset located absolutely (see :func:`dataset_locator`)."""
    return {**spec.to_dict(), "dataset": dataset_locator(spec.dataset)}


def run_experiment(spec: RunSpec, out: str | Path | None, *, name: str | None = None,
                   data_dir: str | Path | None = None, device: str | torch.device = "auto", progress: bool = False,
                   on_stage=None, dataset: Dataset | None = None, tracker=None, final_attack=None) -> RunResult:
    """Load the data, build the model and run (or resume) the loop, storing into ``out/results.db`` if given.

    ``final_attack`` (a :class:`~robustal.loop.final_eval.FinalAttackConfig`, with ``out``): once the run is finished,
    its final model is attacked and the row stored, unless a row with that setting exists (a finished run is not
    retrained).
    It is not part of the run's stored configuration."""
    dataset = dataset or spec.load_data(data_dir)
    model_name, loop_cfg = resolve(spec, dataset)
    factory = model_factory(model_name, dataset)
    model = factory()  # fail early on a model that cannot take this data
    loop_cfg.check_pool(len(dataset.train))  # before the store is created
    create_acquisition(loop_cfg.acquisition, **loop_cfg.acquisition_options).check(model)  # and what it needs
    store = Store(out) if out is not None else None
    meta = {"dataset": dataset_locator(spec.dataset), "model_name": model_name,
            "data_fingerprint": dataset.fingerprint(), "spec": spec_for_store(spec)}
    if spec.acquisition_label:
        meta["acquisition_label"] = spec.acquisition_label
    loop = ActiveLearningLoop(None, dataset.splits(), loop_cfg, store=store, name=name or spec.default_name(),
                              device=device, reinit=factory, progress=progress, on_stage=on_stage,
                              meta=meta, tracker=tracker,
                              describe=describe_model(model_name, dataset.with_epsilon(spec.loop.train.epsilon),
                                                      spec.dataset, loop_cfg.train.to_dict()))
    result = loop.run()
    if final_attack is not None and store is not None and result.waiting is None:
        from robustal.loop.final_eval import attack_run, is_due

        if is_due(store, loop.name, final_attack):
            factory_name = model_name if ":" in model_name else None  # named by the person (spec or study file)
            attack_run(store, loop.name, final_attack, device=device, data_dir=data_dir, factory=factory_name,
                       dataset=dataset)
    return result


__all__ = ["RunSpec", "model_factory", "resolve", "run_experiment"]
