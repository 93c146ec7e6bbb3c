"""The text of tiny digits study files, written by one function for every test folder that needs one (the study,
report and error tests), so that a change to the study file format is made once. Imported by name: pytest puts this
folder on ``sys.path`` for ``tests/conftest.py``.
"""

from __future__ import annotations

#: The ``[loop]`` of a tiny study: two stages of 30 digits, no robust evaluation.
TINY_LOOP = {"initial": 30, "per_stage": 30, "budget": 60, "eval_steps": 0}
#: The ``[train]`` of a tiny study: one cheap epoch.
TINY_TRAIN = {"epochs": 1, "min_steps": 0, "batch_size": 32}


def toml_value(value: object) -> str:
    """``value`` as TOML: strings quoted, lists in brackets, dicts as inline tables (``{ a = 1, b = 2 }``)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + " }"
    return str(value)


def toml_table(header: str, values: dict) -> str:
    """A TOML table: ``[header]`` and one ``key = value`` line each, then a blank line."""
    return f"[{header}]\n" + "".join(f"{k} = {toml_value(v)}\n" for k, v in values.items()) + "\n"


def grid_toml(acquisitions=("random",), training=("standard",), seeds=(0,), *, several: bool = False,
              **overrides) -> str:
    """A grid of small-cnn runs on digits (``several``: a ``[[grid]]`` table, one of several); ``overrides``: the
    grid's own ``loop``/``train`` settings (dicts) or other grid keys."""
    grid = {"datasets": ["digits"], "models": ["small-cnn"], "training": list(training),
            "acquisitions": list(acquisitions), "seeds": list(seeds), **overrides}
    return toml_table("[grid]" if several else "grid", grid)


def settings_toml(loop: dict = TINY_LOOP, train: dict = TINY_TRAIN) -> str:
    """The ``[loop]`` and ``[train]`` tables shared by every run of a study."""
    return toml_table("loop", loop) + toml_table("train", train)


def study_toml(*grids: str, name: str = "tiny", settings: str | None = None, extra: str = "") -> str:
    """A whole study file: ``[study]``, the ``grids`` (:func:`grid_toml`; one default grid if none), the ``settings``
    (:func:`settings_toml`; default: :data:`TINY_LOOP` and :data:`TINY_TRAIN`), then ``extra`` (e.g.
    ``[acquisition.NAME]`` tables)."""
    settings = settings_toml() if settings is None else settings
    return toml_table("study", {"name": name}) + "".join(grids or (grid_toml(),)) + settings + extra
