"""unhash_jax: unsupervised deep hashing for image retrieval in JAX/Flax.

Light modules (``ops``, ``losses``, ``sorting``, ``retrieval``) import only jax and numpy; the
training stack (flax, optax, orbax, tfds) is imported only by the modules that need it.
"""

__version__ = "0.1.0"
