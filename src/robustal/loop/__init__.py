"""The active-learning loop and a run of it: the loop itself (:mod:`~robustal.loop.active`: train, attack, acquire,
label, stage by stage) and its settings (:mod:`~robustal.loop.loop_config`), when to stop
(:mod:`~robustal.loop.stopping`), pseudo-labels for the pool (:mod:`~robustal.loop.pseudo_labels`), a run from its
spec (:mod:`~robustal.loop.experiment`), its final model saved with what rebuilds it (:mod:`~robustal.loop.checkpoint`,
:mod:`~robustal.loop.checkpoint_data`) and its final attack (:mod:`~robustal.loop.final_eval`). It sits on the
engine, acquisition, labeling and storage layers.

``from robustal.loop import LoopConfig, run_active_learning`` is the public entry point: the names below are
re-exported from :mod:`robustal.loop.active` and :mod:`robustal.loop.loop_config`.
"""
from robustal.loop.active import ActiveLearningLoop, RunResult, StageResult, Waiting, run_active_learning
from robustal.loop.loop_config import CHANCE_RECOVERIES, MAX_SEED, LoopConfig

__all__ = ["CHANCE_RECOVERIES", "MAX_SEED", "ActiveLearningLoop", "LoopConfig", "RunResult", "StageResult", "Waiting",
           "run_active_learning"]
