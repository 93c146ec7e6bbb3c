"""Evaluation lives in :mod:`robustal.engine.evaluation`; this module keeps the public import path."""
from robustal.engine.evaluation import (
    EVAL_STEPS,
    EvalResult,
    RobustTest,
    accuracy_masks,
    eval_step_size,
    evaluate,
    from_masks,
    paper_attack,
    robust_mask,
)

__all__ = ["EVAL_STEPS", "EvalResult", "RobustTest", "accuracy_masks", "eval_step_size", "evaluate", "from_masks",
           "paper_attack", "robust_mask"]
