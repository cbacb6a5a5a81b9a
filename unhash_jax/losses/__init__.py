"""Pure-function losses of the hashing methods (docs/methods.md §2). Imports only jax and numpy.

Each ``*_loss`` takes arrays positionally and hyper-parameters as keywords and returns a float32
scalar (float64 under x64 with float64 inputs); ``*_loss_with_aux`` variants also return a dict of
the loss terms. Conventions shared by every loss:

* **Inputs** may be any array-like (jax or numpy arrays, nested lists); bf16/f16 are computed in
  float32. Shapes and dtypes are checked at trace time: a wrong rank, an empty axis, a mismatched
  shape or a non-floating dtype raises ``ValueError`` naming the loss and the argument, e.g.
  ``"cibhash_loss: logits2 must be a floating array [batch, bits], got int32"``.
* **Non-finite values** are not checked: values are unknown under ``jit``, so a check would cost a
  host round-trip per step. An inf or NaN input propagates to a non-finite loss (for example
  ±inf CIBHash logits give NaN); the trainer stops at a non-finite loss.
* **Codes** use ``sign₀`` (``0 → +1``, never ``jnp.sign``).

Losses: :func:`cibhash_loss` (§2.1), :func:`nsh_loss` (§2.2), :func:`wch_loss` (§2.3),
:func:`harr_loss` (§2.4, project formulation), :func:`ddh_loss` (§2.5), :func:`fdbh_loss` (§2.6,
project formulation).
"""

from unhash_jax.losses.cibhash import cibhash_loss, cibhash_loss_with_aux
from unhash_jax.losses.ddh import ddh_loss, ddh_loss_with_aux
from unhash_jax.losses.fdbh import fdbh_loss, fdbh_loss_with_aux
from unhash_jax.losses.harr import harr_loss, harr_loss_with_aux
from unhash_jax.losses.nsh import nsh_loss, nsh_loss_with_aux
from unhash_jax.losses.wch import wch_loss, wch_loss_with_aux

__all__ = [
    "cibhash_loss", "cibhash_loss_with_aux", "ddh_loss", "ddh_loss_with_aux", "fdbh_loss",
    "fdbh_loss_with_aux", "harr_loss", "harr_loss_with_aux", "nsh_loss", "nsh_loss_with_aux",
    "wch_loss", "wch_loss_with_aux",
]
