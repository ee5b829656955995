"""Methods, one file per family, all built through `create_method(name, **params)`."""

from . import actionmae, perturb, supervised  # noqa: F401  (registers joint, dropout, actionmae, perturb)
from .base import METHODS, Method, MethodTags, create_method, register_method

__all__ = ["METHODS", "Method", "MethodTags", "create_method", "register_method"]
