"""Methods, one file per family, all built through `create_method(name, **params)`."""

from . import actionmae, perturb, redcore, supervised  # noqa: F401  (registers joint, dropout, actionmae, perturb, redcore)
from .base import METHODS, Method, MethodTags, create_method, register_method

__all__ = ["METHODS", "Method", "MethodTags", "create_method", "register_method"]
