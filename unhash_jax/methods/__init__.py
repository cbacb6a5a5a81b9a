"""Registered hashing methods. Importing this package registers every method."""

from unhash_jax.methods.registry import REGISTRY, MethodSpec, get_method, register, resolve_config
from unhash_jax.methods import cibhash  # noqa: F401  (registers "cibhash")
from unhash_jax.methods import nsh  # noqa: F401  (registers "nsh")
from unhash_jax.methods import classical  # noqa: F401  (registers "lsh", "pcah", "itq", "sh")

__all__ = ["REGISTRY", "MethodSpec", "get_method", "register", "resolve_config"]
