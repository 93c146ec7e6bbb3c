"""Architectures by name, each with penultimate features and switchable MC dropout."""

from robustal.models import lenet as _lenet  # noqa: F401  (each import registers its models)
from robustal.models import resnet as _resnet  # noqa: F401
from robustal.models import small_cnn as _small_cnn  # noqa: F401
from robustal.models import vgg as _vgg  # noqa: F401
from robustal.models import wide_resnet as _wide_resnet  # noqa: F401
from robustal.models.base import MC_DROPOUT_P, Classifier, MCDropout, has_mc_dropout, mc_dropout
from robustal.models.registry import MODELS, create_model, default_model_for_images, list_models, register_model

__all__ = ["MC_DROPOUT_P", "MODELS", "Classifier", "MCDropout", "create_model", "default_model_for_images",
           "has_mc_dropout", "list_models", "mc_dropout", "register_model"]
