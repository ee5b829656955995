"""Methods, one file per family, all built through `create_method(name, **params)`."""

from . import actionmae, anysubset, crossl, features, perturb, redcore, supervised, ume  # noqa: F401  (registers joint, dropout, actionmae, anysubset, crossl, features, perturb, redcore, ume, mma, ume_mma)
from .base import METHODS, Method, MethodTags, create_method, register_method

__all__ = ["METHODS", "Method", "MethodTags", "create_method", "register_method"]
