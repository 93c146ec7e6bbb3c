"""The training engine: standard and adversarial training (:mod:`~robustal.engine.training`), training on the
unlabeled pool (:mod:`~robustal.engine.pool_training`), attacks (:mod:`~robustal.engine.attacks`,
:mod:`~robustal.engine.autoattack`), clean and robust evaluation (:mod:`~robustal.engine.evaluation`) and the
gradient-masking check (:mod:`~robustal.engine.masking`). It works on tensors, models and datasets only
(``robustal.models``, ``robustal.data``) and knows nothing of stores, loops or studies. Modules are imported by their
own path (``robustal.training``, ``robustal.attacks`` and ``robustal.evaluation`` re-export the public names), so
importing the package does not import torch.
"""
