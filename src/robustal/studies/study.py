"""Studies: grids of runs declared in a TOML file, run by :mod:`robustal.studies.executors` (local processes or Ray).

A study file declares datasets × models × training modes × acquisition functions × seeds and the loop settings
shared by every run::

    [study]
    name = "tiny"
    [grid]                             # or several [[grid]] tables, run one after the other
    datasets = ["digits"]              # registered names, or .npz files (relative to this file's folder)
    models = ["small-cnn"]             # or a table {digits = ["small-cnn"]}; left out: each dataset's default
    training = ["standard", "pgd"]
    acquisitions = ["random", "entropy", "dre"]
    seeds = [0, 1, 2]
    [loop]                             # initial, per_stage, budget, from_scratch, eval_steps, eval_attack
    [train]                            # any TrainConfig field: epochs, batch_size, lr, attack_steps, ...
    [acquisition.dre]                  # options of one acquisition function
    bins = 50
    [acquisition.dre-proportional]     # a named variant: `function` says which function it is
    function = "dre"
    rounding = "proportional"
    [pool]                             # training on the unlabeled pool: PoolConfig's settings but its mode
    share = 0.5                        # (a grid's `pool = ["none", "self-training"]` runs each mode)

    [final_attack]                     # optional: attack each run's final model after its last stage
    attack = "autoattack"              # AutoAttack standard (APGD-CE, APGD-T, FAB-T, Square), or "autoattack-fast"
    n = 200                            # the first n test images (default 200)
    seed = 0                           # seed of the attack's random choices (default 0)

``[final_attack]`` runs a final evaluation attack on each run's final model once its last stage is done, as part of
that run's task (so the workers share the attacks), and stores clean, PGD (the run's own evaluation attack) and
AutoAttack robust accuracy in the store's ``final_attacks`` table (:mod:`robustal.loop.final_eval`). It is not part of
the runs' configuration: adding it to a finished study attacks the final models without retraining them; a run attacked
with the same setting is skipped, one attacked with another ``n`` or seed is attacked again. ``robustal attack DIR``
does the same for any results folder.

A grid may override the study's ``[loop]`` and ``[train]`` settings for its own runs with ``loop = {...}`` and
``train = {...}`` (e.g. a reference trained on every label: ``loop = {initial = 8000, budget = 8000}``).

Each run is a :class:`~robustal.studies.executors.RunTask` (a unique name and a
:class:`~robustal.loop.experiment.RunSpec`); :func:`~robustal.studies.study_run.run_study` checks the stored runs,
copies the study file beside the results and hands the tasks to an executor.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path

from robustal.errors import ConfigError, DataError, UnknownNameError
from robustal.loop.experiment import RunSpec
from robustal.loop.final_eval import FinalAttackConfig
from robustal.reports.results import dataset_label
from robustal.studies.executors import RunTask

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib


# --- study files ----------------------------------------------------------------------------------------------------
SECTIONS = ("study", "grid", "loop", "train", "acquisition", "tracking", "pool", "final_attack")
FINAL_ATTACK_KEYS = ("attack", "n", "seed")
TRACKING_KEYS = ("kind", "uri", "experiment", "log_model")
STUDY_KEYS = ("name", "description")
GRID_KEYS = ("datasets", "models", "training", "acquisitions", "seeds", "loop", "train", "pool")
#: ``[pool]`` keys: :class:`~robustal.engine.pool_training.PoolConfig`'s settings; its mode is a grid dimension.
POOL_KEYS = ("share", "weight", "teacher", "teacher_epochs", "confidence", "stages", "steps")
LOOP_KEYS = ("initial", "per_stage", "budget", "from_scratch", "chance_recovery", "eval_steps", "eval_attack")


def _check_keys(table: object, valid: Sequence[str], where: str, path: object) -> dict:
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: [{where}] must be a table. Got {table!r} instead.")
    for key in table:
        if key not in valid:
            from robustal.errors import nearest

            close = nearest(key, list(valid))
            hint = f" Did you mean {close!r}?" if close else ""
            raise ConfigError(f"{path}: unknown key {key!r} in [{where}].{hint} Valid keys: {', '.join(valid)}.")
    return table


def _str_list(value: object, key: str, path: object, allow_empty: bool = False) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value) or (not value and not allow_empty):
        raise ConfigError(f"{path}: [grid] {key} must be a non-empty list of strings. Got {value!r} instead.")
    if len(set(value)) != len(value):
        raise ConfigError(f"{path}: [grid] {key} lists a name twice: {value!r}.")
    return tuple(value)


def _loop_section(table: object, where: str, source: object) -> dict:
    """A ``[loop]`` table (the study's or a grid's), its keys and ``eval_steps`` checked."""
    loop = dict(_check_keys(table, LOOP_KEYS, where, source))
    if "eval_steps" in loop:
        from robustal._validation import check_int

        check_int(loop["eval_steps"], "eval_steps", f"[{where}] of {source}", min_value=0)
    return loop


def _train_section(table: object, where: str, source: object) -> dict:
    """A ``[train]`` table (the study's or a grid's): TrainConfig's keys, ``augment`` as a tuple."""
    from robustal.engine.training import TrainConfig

    train = dict(_check_keys(table, [f.name for f in fields(TrainConfig) if f.name != "mode"], where, source))
    if "augment" in train:
        aug = train["augment"]
        train["augment"] = (aug,) if isinstance(aug, str) else tuple(aug) if isinstance(aug, list) else aug
    return train


@dataclass(frozen=True)
class Grid:
    """One grid of runs: datasets × models × training modes × acquisition functions × seeds.

    Attributes:
        datasets: Registered dataset names or .npz paths (resolved against the study's ``base``).
        models: Per dataset entry, the model names (None: the dataset's default model).
        training: Training modes (``standard``, ``pgd``, ``trades``).
        acquisitions: Acquisition function names (or named variants, see :class:`Study`).
        seeds: Seeds; one run per seed and grid cell.
        loop, train: This grid's overrides of the study's ``[loop]`` and ``[train]`` settings.
        pool: Modes of training on the unlabeled pool (:data:`~robustal.engine.pool_training.POOL_MODES`), one run each;
            a mode other than ``none`` names the run's training ``pgd+self-training`` (and so on).
    """

    datasets: tuple[str, ...]
    models: dict[str, tuple[str | None, ...]]
    training: tuple[str, ...]
    acquisitions: tuple[str, ...]
    seeds: tuple[int, ...]
    loop: dict = field(default_factory=dict)
    train: dict = field(default_factory=dict)
    pool: tuple[str, ...] = ("none",)

    @classmethod
    def parse(cls, grid: object, where: str, source: object) -> Grid:
        from robustal.data import DATASETS
        from robustal.models import MODELS

        grid = _check_keys(grid, GRID_KEYS, where, source)
        for key in ("datasets", "training", "acquisitions", "seeds"):
            if key not in grid:
                raise ConfigError(f"{source}: [{where}] needs {key!r} (a list).")
        datasets = _str_list(grid["datasets"], "datasets", source)
        for ds in datasets:
            if not ds.endswith(".npz"):
                DATASETS.get(ds)  # UnknownNameError with the valid names
        models_value = grid.get("models")
        if models_value is None:
            models = {ds: (None,) for ds in datasets}
        elif isinstance(models_value, dict):
            _check_keys(models_value, datasets, f"{where}.models", source)
            models = {ds: _str_list(models_value[ds], f"models.{ds}", source) if ds in models_value else (None,)
                      for ds in datasets}
        else:
            names = _str_list(models_value, "models", source)
            models = {ds: names for ds in datasets}
        for names in models.values():
            for m in names:
                if m is not None and ":" not in m:  # a user's module:factory is imported when its runs start
                    MODELS.get(m)
        seeds = grid["seeds"]
        from robustal.loop import MAX_SEED

        if (not isinstance(seeds, list) or not seeds or len(set(seeds)) != len(seeds)
                or not all(isinstance(s, int) and not isinstance(s, bool) and 0 <= s <= MAX_SEED for s in seeds)):
            raise ConfigError(f"{source}: [{where}] seeds must be a non-empty list of distinct ints in "
                              f"[0, {MAX_SEED}]. Got {seeds!r} instead.")
        loop = _loop_section(grid.get("loop", {}), f"{where}.loop", source)
        train = _train_section(grid.get("train", {}), f"{where}.train", source)
        from robustal._validation import check_choice
        from robustal.engine.pool_training import POOL_MODES

        pool = _str_list(grid.get("pool", ["none"]), "pool", source)
        for mode in pool:
            check_choice(mode, "pool", f"[{where}] of {source}", POOL_MODES)
        return cls(datasets=datasets, models=models, training=_str_list(grid["training"], "training", source),
                   acquisitions=_str_list(grid["acquisitions"], "acquisitions", source), seeds=tuple(seeds),
                   loop=loop, train=train, pool=pool)


def _union(values) -> tuple:
    return tuple(dict.fromkeys(v for vs in values for v in vs))


@dataclass(frozen=True)
class Study:
    """A study: one or more grids and the settings shared by every run. Build with :meth:`load` or :meth:`from_dict`.

    ``[grid]`` is one grid; ``[[grid]]`` (an array of tables) several, run one after the other -- for a comparison
    that is not a full cross product (e.g. four functions under ``pgd`` but two under ``trades``).
    ``[acquisition.NAME]`` tables hold a function's options; a table with ``function = "dre"`` makes NAME a named
    variant (``dre-proportional``) usable in the grid beside the function itself.

    Attributes:
        name: The study's name.
        grids: The grids.
        loop: ``[loop]`` settings (initial, per_stage, budget, from_scratch, chance_recovery, eval_steps, eval_attack).
        train: ``[train]`` settings, :class:`~robustal.engine.training.TrainConfig` fields.
        acquisition_options: Per acquisition function (or named variant), its options.
        pool: ``[pool]``: the settings of training on the unlabeled pool (its modes are the grids' ``pool``).
        tracking: ``[tracking]``: ``kind`` (``mlflow``; implied by ``uri`` or ``experiment``), ``uri``,
            ``experiment``, ``log_model`` (false: the final checkpoint only) -- the study gets one MLflow run, its
            runs are nested under it and logged live, and the report of ``robustal study`` is attached to it.
        base: The folder that relative .npz paths are resolved against (the study file's folder).
        final_attack: ``[final_attack]``: the attack run on each run's final model (None: none).
    """

    name: str
    grids: tuple[Grid, ...]
    loop: dict = field(default_factory=dict)
    train: dict = field(default_factory=dict)
    acquisition_options: dict = field(default_factory=dict)
    tracking: dict = field(default_factory=dict)
    pool: dict = field(default_factory=dict)
    base: Path = Path(".")
    source: str = "study"
    final_attack: FinalAttackConfig | None = None

    @property
    def datasets(self) -> tuple[str, ...]:
        return _union(g.datasets for g in self.grids)

    @property
    def training(self) -> tuple[str, ...]:
        return _union(g.training for g in self.grids)

    @property
    def acquisitions(self) -> tuple[str, ...]:
        return _union(g.acquisitions for g in self.grids)

    @property
    def seeds(self) -> tuple[int, ...]:
        return _union(g.seeds for g in self.grids)

    @classmethod
    def load(cls, path: str | Path, base: str | Path | None = None) -> Study:
        """Read a study file; relative .npz paths resolve against ``base`` (default: the file's folder)."""
        path = Path(path)
        try:
            with open(path, "rb") as f:
                data = tomllib.load(f)
        except FileNotFoundError:
            raise ConfigError(f"Study file {str(path)!r} not found.") from None
        except IsADirectoryError:
            raise ConfigError(f"Study file {str(path)!r} is a directory; give a .toml file (see studies/).") from None
        except UnicodeDecodeError as e:
            raise ConfigError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start}); a study file is TOML, "
                              "saved as UTF-8.") from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{path}: not valid TOML ({e}).") from None
        except OSError as e:
            raise ConfigError(f"Study file {str(path)!r} cannot be read ({e.strerror}).") from None
        return cls.from_dict(data, base=Path(base) if base is not None else path.resolve().parent, source=path)

    @classmethod
    def from_dict(cls, data: dict, base: str | Path = ".", source: object = "study") -> Study:
        """Validate a parsed study file (the same checks and messages as :meth:`load`); every message names the
        file."""
        try:
            return cls._from_dict(data, base, source)
        except ConfigError as e:
            if str(e).startswith(str(source)):
                raise
            if isinstance(e, UnknownNameError):
                named = UnknownNameError(e.kind, e.name, e.choices)
                named.args = (f"{source}: {e}",)
                raise named from None
            raise type(e)(f"{source}: {e}") from None

    @classmethod
    def _from_dict(cls, data: dict, base: str | Path, source: object) -> Study:
        from robustal.engine.training import TrainConfig

        _check_keys(data, SECTIONS, "top level", source)
        study = _check_keys(data.get("study", {}), STUDY_KEYS, "study", source)
        grid_value = data.get("grid", {})
        if isinstance(grid_value, list):
            if not grid_value:
                raise ConfigError(f"{source}: [[grid]] is empty; give at least one grid.")
            grids = tuple(Grid.parse(g, f"grid #{i + 1}", source) for i, g in enumerate(grid_value))
        else:
            grids = (Grid.parse(grid_value, "grid", source),)
        loop = _loop_section(data.get("loop", {}), "loop", source)
        train = _train_section(data.get("train", {}), "train", source)
        options = data.get("acquisition", {})
        tracking = dict(_check_keys(data.get("tracking", {}), TRACKING_KEYS, "tracking", source))
        pool = dict(_check_keys(data.get("pool", {}), POOL_KEYS, "pool", source))
        from robustal.engine.pool_training import PoolConfig

        PoolConfig(mode="self-training", **pool)  # bad values fail now, even where no grid uses the pool
        if "kind" in tracking:
            from robustal._validation import check_choice
            from robustal.tracking.tracking import TRACKERS

            check_choice(tracking["kind"], "kind", f"[tracking] of {source}", TRACKERS)
        for key in ("uri", "experiment"):
            if key in tracking and (not isinstance(tracking[key], str) or not tracking[key].strip()):
                raise ConfigError(f"{source}: [tracking] {key} must be a non-empty string. Got {tracking[key]!r} "
                                  "instead.")
        if "log_model" in tracking and not isinstance(tracking["log_model"], bool):
            raise ConfigError(f"{source}: [tracking] log_model must be true or false. Got {tracking['log_model']!r} "
                              "instead.")
        name = study.get("name", Path(str(source)).stem)
        if not isinstance(name, str) or not name:
            raise ConfigError(f"{source}: [study] name must be a non-empty string. Got {name!r} instead.")
        acquisitions = _union(g.acquisitions for g in grids)
        if not isinstance(options, dict):
            raise ConfigError(f"{source}: [acquisition] must hold one table per function. Got {options!r} instead.")
        _check_keys(options, acquisitions, "acquisition", source)
        for acq, opts in options.items():
            if not isinstance(opts, dict):
                raise ConfigError(f"{source}: [acquisition.{acq}] must be a table. Got {opts!r} instead.")
            if "function" in opts and not isinstance(opts["function"], str):
                raise ConfigError(f"{source}: [acquisition.{acq}] function must be the name of an acquisition "
                                  f"function. Got {opts['function']!r} instead.")
        final = None
        if "final_attack" in data:
            final = FinalAttackConfig(**_check_keys(data["final_attack"], FINAL_ATTACK_KEYS, "final_attack", source))
        self = cls(name=name, grids=grids, loop=loop, train=train, acquisition_options=dict(options),
                   tracking=tracking, pool=pool, base=Path(base), source=str(source), final_attack=final)
        # Build every loop configuration once: bad values fail now, with the configuration classes' messages.
        for grid in grids:
            for mode in grid.training:
                TrainConfig(mode=mode, **{**train, **grid.train})
            for acq, mode, pool_mode in itertools.product(grid.acquisitions, grid.training, grid.pool):
                self._loop_config(acq, mode, grid.seeds[0], grid, pool_mode)
            _check_eval_attack({**loop, **grid.loop}.get("eval_attack"), source)
        self.tasks()  # run names must be unique across the grids
        return self

    def _loop_config(self, acquisition: str, mode: str, seed: int, grid: Grid, pool: str = "none"):
        from robustal.engine.pool_training import PoolConfig
        from robustal.engine.training import TrainConfig
        from robustal.loop import LoopConfig

        loop = {k: v for k, v in {**self.loop, **grid.loop}.items() if k not in ("eval_steps", "eval_attack")}
        options = dict(self.acquisition_options.get(acquisition, {}))
        function = options.pop("function", acquisition)
        return LoopConfig(acquisition=function, acquisition_options=options,
                          train=TrainConfig(mode=mode, **{**self.train, **grid.train}), seed=seed,
                          pool=PoolConfig(mode=pool, **self.pool) if pool != "none" else PoolConfig(), **loop)

    def dataset_path(self, dataset: str) -> str:
        """A registered name as is; an .npz path made absolute against :attr:`base` (or the working folder)."""
        if not dataset.endswith(".npz") or Path(dataset).is_absolute():
            return dataset
        for candidate in (self.base / dataset, Path(dataset)):
            if candidate.is_file():
                return str(candidate.resolve())
        return str((self.base / dataset).resolve())

    def tasks(self) -> list[RunTask]:
        """Every run of the grids, in grid order, named ``dataset-model-training-acquisition-sSEED`` (training:
        e.g. ``pgd+self-training`` with the pool, :func:`~robustal.engine.pool_training.training_label`)."""
        from robustal.data.registry import default_model_for
        from robustal.engine.pool_training import training_label

        out = []
        for grid in self.grids:
            loop_settings = {**self.loop, **grid.loop}
            eval_keys = {k: loop_settings[k] for k in ("eval_steps", "eval_attack") if k in loop_settings}
            for ds in grid.datasets:
                for model in grid.models[ds]:
                    model_label = model or default_model_for(ds) or "default"
                    # the pool innermost: a run with it follows the same run without it
                    for mode, acq, seed, pool in itertools.product(grid.training, grid.acquisitions, grid.seeds,
                                                                   grid.pool):
                        loop = self._loop_config(acq, mode, seed, grid, pool)
                        spec = RunSpec(dataset=self.dataset_path(ds), model=model, loop=loop,
                                       acquisition_label=acq if acq != loop.acquisition else None, **eval_keys)
                        training = training_label(mode, pool)
                        out.append(RunTask(f"{dataset_label(ds)}-{model_label}-{training}-{acq}-s{seed}", spec,
                                           self.final_attack))
        names = [t.name for t in out]
        if len(set(names)) != len(names):
            twice = sorted({n for n in names if names.count(n) > 1})
            raise ConfigError(f"Study {self.name!r}: the grids give the same run twice ({', '.join(twice[:3])}): "
                              "overlapping [[grid]] entries, or two .npz files with the same stem; remove the overlap "
                              "or rename one file.")
        return out

    def check_data(self) -> None:
        """Fail early, before any run starts, on an .npz entry that does not exist."""
        for ds in self.datasets:
            if ds.endswith(".npz") and not Path(self.dataset_path(ds)).is_file():
                raise DataError(f"Study {self.name!r}: dataset file {ds!r} not found (looked in {self.base} and the "
                                "working folder). Paths in a study file are relative to the file's folder.")

    def check_models(self, data_dir: str | Path | None = None) -> None:
        """Fail early, before anything is written, on a model named in the grid that cannot be built for its
        dataset: a user's factory that cannot be imported or whose model does not fit the data
        (:func:`~robustal.models.registry.check_user_model`), or a registered architecture too big for the images.
        Each dataset with such a model is loaded once; a dataset's default model needs no check."""
        from robustal.models import create_model

        checked: set[tuple[str, str]] = set()
        data = {}
        for task in self.tasks():
            spec = task.spec
            if spec.model is None or (spec.dataset, spec.model) in checked:
                continue
            checked.add((spec.dataset, spec.model))
            if spec.dataset not in data:
                data[spec.dataset] = spec.load_data(data_dir)
            dataset = data[spec.dataset]
            channels, size, _ = dataset.image_shape
            create_model(spec.model, num_classes=dataset.num_classes, in_channels=channels, image_size=size,
                         source=f"models in {self.source}")


def _check_eval_attack(attack: object, source: object) -> None:
    """An ``eval_attack`` that names no attack is refused when the study is read, not when its first run has
    trained a stage."""
    from robustal.engine.attacks import ATTACKS

    if attack is None:
        return
    try:
        ATTACKS.get(attack if isinstance(attack, str) else repr(attack))
    except UnknownNameError as e:
        raise ConfigError(f"{source}: eval_attack in [loop]: {e}") from None


__all__ = ["Grid", "Study", "dataset_label"]
