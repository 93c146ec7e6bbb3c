"""Every stored model as a :class:`~robustal.loop.checkpoint.Checkpoint`: a run's stage checkpoint
(``DIR/checkpoints/RUN/stage-NNN.pt``, or the copy MLflow keeps of it), a run named in its results folder, or a
standalone file (``train --save``, :func:`export_run`).

A stage checkpoint holds the weights, the optimizer and the labeled set. Since robustal 0.4 it also records what a
``train --save`` checkpoint records (model name, data, classes, image shape) and how the run evaluated it (attack,
seed, accuracies), so that a copy of it far from its results folder can be rebuilt and evaluated. An earlier one is
described by its results folder: the run's configuration in ``DIR/results.db`` gives dataset, model and attack.

``evaluate`` measures a run's model by default with the run's own evaluation attack and seed stream (the seed
:func:`~robustal.engine.evaluation.evaluate` got from the loop: ``derive_seed(run seed, "eval", stage)``) on the same
test split, so it reproduces the stored clean and robust accuracy (:func:`run_evaluation`).
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote

import torch

from robustal._runtime import derive_seed
from robustal.engine.attacks import AttackConfig
from robustal.errors import ConfigError, nearest
from robustal.loop.checkpoint import (
    CHECKPOINT_KEYS,
    MODEL_SOURCES,
    Checkpoint,
    checkpoint_from_dict,
    read_checkpoint_file,
)
from robustal.storage.outputs import atomic_torch_save
from robustal.storage.store import Store

#: The keys of a stage checkpoint that a standalone checkpoint leaves out (resuming a run needs them, a model not).
STAGE_ONLY = ("optimizer", "labeled", "stage")


def stage_location(path: Path) -> tuple[Path, str, int] | None:
    """``(results folder, run, stage)`` when ``path`` is a stage checkpoint inside its results folder
    (``DIR/checkpoints/RUN/stage-NNN.pt`` beside ``DIR/results.db``); else None."""
    path = path.expanduser().resolve()
    stem = path.stem
    if path.suffix != ".pt" or not stem.startswith("stage-") or not stem[6:].isdigit():
        return None
    root = path.parent.parent.parent
    if path.parent.parent.name != "checkpoints" or not (root / "results.db").is_file():
        return None
    return root, unquote(path.parent.name), int(stem[6:])


def load_model(path: str | Path, factory: str | None = None) -> Checkpoint:
    """The model checkpoint at ``path``: a standalone one, or a run's stage checkpoint (read with its results folder
    when it lies in one; else it must describe itself, as robustal 0.4's do).

    Raises:
        ConfigError: not found, unreadable, not a model checkpoint; or an earlier robustal's stage checkpoint away
            from its results folder.
        StoreError: the results folder around a stage checkpoint cannot be read.
    """
    path = Path(path)
    where = stage_location(path) if path.is_file() else None
    if where is not None:
        root, run, stage = where
        return run_checkpoint(root, run, stage, factory, path=path)
    obj = read_checkpoint_file(path)
    if _is_stage(obj) and not all(k in obj for k in CHECKPOINT_KEYS):
        raise ConfigError(f"{path} is a stage checkpoint of a run made before robustal 0.4: it records only the "
                          "weights, not which model and data they are for. Evaluate it from its results folder: "
                          "robustal evaluate DIR --run NAME (MLflow: DIR is the run's robustal.out tag, NAME its "
                          "robustal.run tag); or give the file where the run stored it, DIR/checkpoints/RUN/.")
    return checkpoint_from_dict(_standalone(obj) if _is_stage(obj) else obj, path, factory)


def _is_stage(obj: object) -> bool:
    return isinstance(obj, dict) and {"model", "optimizer", "labeled"} <= set(obj)


def _standalone(state: dict) -> dict:
    """A stage checkpoint's state as a standalone checkpoint's: its labeled set as ``selected``."""
    out = {k: v for k, v in state.items() if k not in STAGE_ONLY}
    out["selected"] = [int(i) for i in torch.as_tensor(state["labeled"]).tolist()]
    return out


def run_checkpoint(root: str | Path, run: str | None = None, stage: int | None = None, factory: str | None = None,
                   *, path: Path | None = None) -> Checkpoint:
    """Run ``run``'s model at ``stage`` (default: its last stored stage) in the results folder ``root``.

    ``run`` may be left out when the folder holds one run. Only the last stage's checkpoint is kept, so ``stage``
    is that one (earlier ones are named in the error). ``path``: the file as the person named it, for messages.
    """
    from robustal.reports.results import collect

    root = Path(root)
    store = Store(root, create=False)
    names = [r["name"] for r in store.runs()]
    if run is None:
        if len(names) != 1:
            raise ConfigError(f"{root} holds {len(names)} runs; name one with --run ("
                              + (", ".join(names[:20]) + (" ..." if len(names) > 20 else "") if names else "none")
                              + ").")
        run = names[0]
    if run not in names:
        near = nearest(run, names)
        raise ConfigError(f"--run {run!r}: {root} holds no such run" + (f"; did you mean {near!r}?" if near else "")
                          + f" Its runs: {', '.join(names[:20])}{' ...' if len(names) > 20 else ''}.")
    result = collect(root, [run])[0]
    if not result.stages:
        raise ConfigError(f"Run {run!r} in {root} has no finished stage yet, so no model; run it (or wait for its "
                          "first stage).")
    stored = {s.stage: s for s in result.stages}
    last = result.stages[-1].stage
    stage = last if stage is None else stage
    if stage not in stored:
        raise ConfigError(f"--stage {stage}: run {run!r} has stages {', '.join(map(str, stored))}; give one of them "
                          f"(default: the last, {last}).")
    if not store.checkpoint_path(run, stage).is_file() and stage != last:
        raise ConfigError(f"--stage {stage}: run {run!r} keeps only its last stage's checkpoint (stage {last}); "
                          f"leave --stage out or give --stage {last}.")
    state = store.load_checkpoint(run, stage)
    path = path or store.checkpoint_path(run, stage)
    if all(k in state for k in CHECKPOINT_KEYS):
        return checkpoint_from_dict(_standalone(state), path, factory)
    return checkpoint_from_dict(_described(result, state, stage, root), path, factory)


def _described(result, state: dict, stage: int, root: Path) -> dict:
    """An earlier robustal's stage checkpoint described from its run's stored configuration."""
    from robustal.data import load_dataset

    config, record = result.config, next(s for s in result.stages if s.stage == stage)
    loop, train = config.get("loop", {}), result.train_config
    spec = config.get("spec") or {}
    try:
        dataset = load_dataset(config["dataset"], image_size=spec.get("image_size"), channels=spec.get("channels"),
                               epsilon=train.get("epsilon"))
    except KeyError:
        hint = (" It is a labeling project made before robustal 0.4: save its model with robustal label ... --save "
                "FILE.pt and evaluate that" if (root / "project.json").is_file() else "")
        raise ConfigError(f"Run {result.name!r} does not record its dataset, so its stage checkpoint cannot be "
                          f"rebuilt from its results folder.{hint}") from None
    attack = loop.get("eval_attack")
    if attack is not None:
        attack = {**attack, "rule": result.eval_rule}
    return {**_standalone(state), "model_name": result.model, "dataset": config["dataset"],
            "num_classes": dataset.num_classes, "image_shape": list(dataset.image_shape), "epsilon": dataset.epsilon,
            "classes": None if dataset.class_names is None else list(dataset.class_names),
            "data_fingerprint": config.get("data_fingerprint"), "train_config": train,
            "evaluation": {"run": result.name, "stage": stage, "attack": attack,
                           "seed": derive_seed(result.seed, "eval", stage), "clean": record.clean,
                           "robust": record.robust}}


def run_evaluation(ckpt: Checkpoint) -> tuple[AttackConfig | None, int] | None:
    """The attack and the seed with which the run that made ``ckpt`` evaluated it (None: not a run's model)."""
    if ckpt.evaluation is None:
        return None
    attack = ckpt.evaluation.get("attack")
    try:
        return (None if attack is None else AttackConfig(**attack)), int(ckpt.evaluation["seed"])
    except (TypeError, ValueError, ConfigError) as e:
        raise ConfigError(f"Checkpoint {ckpt.path}: its recorded evaluation attack {attack!r} cannot be used ({e}); "
                          "give the attack with --attack.") from None


def export_checkpoint(ckpt: Checkpoint, out: str | Path) -> Path:
    """Write ``ckpt`` as a standalone checkpoint (``train --save``'s format, with the run's evaluation) to ``out``,
    atomically; ``robustal evaluate --model OUT`` reads it from any folder."""
    if ckpt.dataset is None:
        raise ConfigError(f"Checkpoint {ckpt.path} does not record its data; it cannot be exported standalone.")
    state = {"model": ckpt.state, "model_name": ckpt.model_name, "dataset": ckpt.dataset,
             "num_classes": ckpt.num_classes, "image_shape": list(ckpt.image_shape), "epsilon": ckpt.epsilon,
             "train_config": ckpt.train_config}
    optional = {"train_size": ckpt.train_size, "selected": ckpt.selected, "classes": ckpt.classes,
                "data_fingerprint": ckpt.data_fingerprint, "factory_file": ckpt.factory_file,
                "evaluation": ckpt.evaluation}
    state.update({k: v for k, v in optional.items() if v is not None})
    out = Path(out)
    atomic_torch_save(state, out)
    return out


__all__ = ["MODEL_SOURCES", "export_checkpoint", "load_model", "run_checkpoint", "run_evaluation", "stage_location"]
