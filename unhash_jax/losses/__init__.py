"""Pure-function losses of the hashing methods. Imports only jax and numpy.

Each ``*_loss`` takes arrays positionally and hyper-parameters as keywords and returns a float32
scalar; ``*_loss_with_aux`` variants also return a dict of the loss terms.
"""

from unhash_jax.losses.cibhash import cibhash_loss, cibhash_loss_with_aux
from unhash_jax.losses.nsh import nsh_loss, nsh_loss_with_aux

__all__ = ["cibhash_loss", "cibhash_loss_with_aux", "nsh_loss", "nsh_loss_with_aux"]
