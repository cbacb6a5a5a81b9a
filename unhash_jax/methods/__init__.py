"""Registered hashing methods. Importing this package registers every method."""

from unhash_jax.methods.registry import REGISTRY, MethodSpec, get_method, register, resolve_config
from unhash_jax.methods import cibhash  # noqa: F401  (registers "cibhash")
from unhash_jax.methods import nsh  # noqa: F401  (registers "nsh")
from unhash_jax.methods import classical  # noqa: F401  (registers "lsh", "pcah", "itq", "sh")
from unhash_jax.methods import ddh  # noqa: F401  (registers "ddh")
from unhash_jax.methods import fdbh  # noqa: F401  (registers "fdbh")
from unhash_jax.methods import harr  # noqa: F401  (registers "harr")
from unhash_jax.methods import wch  # noqa: F401  (registers "wch")

__all__ = ["REGISTRY", "MethodSpec", "get_method", "register", "resolve_config"]
