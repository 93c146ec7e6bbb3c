"""The attacks live in :mod:`robustal.engine.attacks`; this module keeps the public import path."""
from robustal.engine.attacks import (
    ATTACKS,
    RULES,
    Attack,
    AttackConfig,
    deepfool,
    fgsm,
    list_attacks,
    pgd,
    pgd_robust,
    trades_adversary,
)

__all__ = ["ATTACKS", "Attack", "AttackConfig", "RULES", "deepfool", "fgsm", "list_attacks", "pgd", "pgd_robust",
           "trades_adversary"]
