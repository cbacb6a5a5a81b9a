"""Vision Transformer (Dosovitskiy et al., ICLR 2021) ViT-B/16 in Flax NNX, loadable from both
torchvision's ``vit_b_16`` and timm's ``vit_base_patch16_224`` state dicts.

Forward (both libraries): non-overlapping ``p×p`` patches → linear embedding (a stride-p convolution)
→ prepend a learned CLS token → add learned position embeddings → ``depth`` pre-norm encoder
blocks ``x + MHSA(LN(x))``, ``x + MLP(LN(x))`` with ``MLP = Linear → GELU (exact, erf) →
Linear`` → final LayerNorm. LayerNorm eps 1e-6. The classifier reads the CLS token.

:class:`Features`: ``pooled`` = the CLS token after the final LayerNorm ``[B, D]``; ``tokens`` =
the ``(H/p)·(W/p)`` patch tokens after the final LayerNorm, without the CLS token (196 × 768 for
ViT-B/16 at 224 px; WCH's mutual attention works on them, docs/methods.md §2.3).

Dropouts are 0 in both libraries' ViT-B/16 and are not modelled.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from unhash_jax.models.backbones import Features
from unhash_jax.models.layers import host_constant, host_normal, layer_norm, linear
from unhash_jax.models.weight_table import (CONV, COPY, LINEAR, WeightEntry, WeightTable,
                                            layer_norm_entries, linear_entries)

LN_EPS = 1e-6
NUM_CLASSES = 1000


class MLP(nnx.Module):
  def __init__(self, dim: int, hidden: int, *, dtype, rngs: nnx.Rngs):
    self.fc1 = linear(dim, hidden, dtype=dtype, rngs=rngs)
    self.fc2 = linear(hidden, dim, dtype=dtype, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.fc2(jax.nn.gelu(self.fc1(x), approximate=False))


class SelfAttention(nnx.Module):
  """Multi-head self-attention with a fused ``qkv`` projection (rows q, k, v, as torch's
  ``in_proj_weight`` and timm's ``attn.qkv``) and an output projection."""

  def __init__(self, dim: int, num_heads: int, *, dtype, rngs: nnx.Rngs):
    if dim % num_heads:
      raise ValueError(f"SelfAttention: width {dim} is not a multiple of {num_heads} heads")
    self.qkv = linear(dim, 3 * dim, dtype=dtype, rngs=rngs)
    self.proj = linear(dim, dim, dtype=dtype, rngs=rngs)
    self.num_heads = num_heads

  def __call__(self, x: jax.Array) -> jax.Array:
    b, n, d = x.shape
    hd = d // self.num_heads
    q, k, v = jnp.split(self.qkv(x).reshape(b, n, 3, self.num_heads, hd), 3, axis=2)
    q, k, v = q[:, :, 0], k[:, :, 0], v[:, :, 0]                    # [B, N, heads, hd]
    scores = jnp.einsum("bqhd,bkhd->bhqk", q * (hd ** -0.5), k)
    out = jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(scores, axis=-1), v)
    return self.proj(out.reshape(b, n, d))


class EncoderBlock(nnx.Module):
  def __init__(self, dim: int, num_heads: int, mlp_dim: int, *, dtype, rngs: nnx.Rngs):
    self.ln1 = layer_norm(dim, epsilon=LN_EPS, dtype=dtype, rngs=rngs)
    self.attn = SelfAttention(dim, num_heads, dtype=dtype, rngs=rngs)
    self.ln2 = layer_norm(dim, epsilon=LN_EPS, dtype=dtype, rngs=rngs)
    self.mlp = MLP(dim, mlp_dim, dtype=dtype, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    x = x + self.attn(self.ln1(x))
    return x + self.mlp(self.ln2(x))


class ViT(nnx.Module):
  """A ViT with a CLS token; the defaults are ViT-B/16 at 224 px.

  Args:
    image_size: the square input size (fixed: the position embeddings have one entry per patch).
    patch_size, hidden_dim, depth, num_heads, mlp_dim: the architecture (B/16: 16, 768, 12, 12,
      3072).
    include_classifier: also build the ``head`` (``num_classes`` logits of the CLS token).
    dtype: computation dtype (parameters stay float32).
  """

  def __init__(self, *, image_size: int = 224, patch_size: int = 16, hidden_dim: int = 768,
               depth: int = 12, num_heads: int = 12, mlp_dim: int = 3072,
               include_classifier: bool = False, num_classes: int = NUM_CLASSES,
               in_channels: int = 3, dtype=jnp.float32, rngs: nnx.Rngs):
    if image_size % patch_size:
      raise ValueError(f"ViT: image size {image_size} is not a multiple of the patch size {patch_size}")
    grid = image_size // patch_size
    patch_fan_in = patch_size * patch_size * in_channels
    self.patch_kernel = nnx.Param(host_normal(patch_fan_in ** -0.5)(   # HWIO, LeCun normal
        rngs.params(), (patch_size, patch_size, in_channels, hidden_dim)))
    self.patch_bias = nnx.Param(host_constant(0.0)(None, (hidden_dim,)))
    self.cls_token = nnx.Param(host_constant(0.0)(None, (1, 1, hidden_dim)))
    self.pos_embed = nnx.Param(host_normal(0.02)(rngs.params(), (1, grid * grid + 1, hidden_dim)))
    self.blocks = nnx.List([EncoderBlock(hidden_dim, num_heads, mlp_dim, dtype=dtype, rngs=rngs)
                            for _ in range(depth)])
    self.norm = layer_norm(hidden_dim, epsilon=LN_EPS, dtype=dtype, rngs=rngs)
    self.head = (linear(hidden_dim, num_classes, dtype=dtype, rngs=rngs)
                 if include_classifier else None)
    self.image_size, self.patch_size, self.depth = image_size, patch_size, depth
    self.feature_dim = self.token_dim = hidden_dim
    self.dtype = dtype

  def embed(self, x: jax.Array) -> jax.Array:
    """``[B, H, W, C]`` → patch embeddings ``[B, (H/p)·(W/p), D]`` (row-major patches, as torch's
    ``conv_proj(x).flatten(2).transpose(1, 2)``)."""
    b, h, w, c = x.shape
    if (h, w) != (self.image_size, self.image_size):
      raise ValueError(f"ViT built for {self.image_size}x{self.image_size} images got {h}x{w}")
    p = self.patch_size
    patches = x.astype(self.dtype).reshape(b, h // p, p, w // p, p, c).transpose(0, 1, 3, 2, 4, 5)
    patches = patches.reshape(b, (h // p) * (w // p), p * p * c)
    kernel = self.patch_kernel[...].astype(self.dtype).reshape(p * p * c, -1)
    return patches @ kernel + self.patch_bias[...].astype(self.dtype)

  def __call__(self, x: jax.Array, *, train: bool = False, key: jax.Array | None = None
               ) -> Features:
    """Images ``[B, H, W, 3]`` (normalised as the weights expect) → ``Features(CLS [B, D],
    patch tokens [B, P, D])``. ``train`` and ``key`` are unused (no BatchNorm, no dropout)."""
    del train, key
    tokens = self.embed(x)
    cls = jnp.broadcast_to(self.cls_token[...].astype(tokens.dtype), (tokens.shape[0], 1, tokens.shape[-1]))
    h = jnp.concatenate([cls, tokens], axis=1) + self.pos_embed[...].astype(tokens.dtype)
    for block in self.blocks:
      h = block(h)
    h = self.norm(h)
    return Features(h[:, 0], h[:, 1:])

  def logits(self, x: jax.Array) -> jax.Array:
    """Logits ``[B, num_classes]`` of the CLS token (needs ``include_classifier=True``)."""
    if self.head is None:
      raise ValueError("ViT.logits needs the classifier: build it with include_classifier=True")
    return self.head(self(x).pooled)


def detect_source(keys) -> str | None:
  """``"torchvision"`` or ``"timm"`` by the state dict's key names, ``None`` if neither."""
  keys = set(keys)
  if "conv_proj.weight" in keys or "encoder.pos_embedding" in keys:
    return "torchvision"
  if "patch_embed.proj.weight" in keys or "pos_embed" in keys:
    return "timm"
  return None


def torch_weight_table(model: ViT, keys=None) -> WeightTable:
  """torchvision ``vit_b_16`` or timm ``vit_base_patch16_224`` names, by :func:`detect_source`
  (torchvision when ``keys`` is ``None`` or matches neither)."""
  keys = set(keys or ())
  source = detect_source(keys) or "torchvision"
  if source == "timm":
    names = dict(patch="patch_embed.proj", cls="cls_token", pos="pos_embed", norm="norm",
                 head="head", block="blocks.{i}", ln1="norm1", ln2="norm2", qkv="attn.qkv",
                 proj="attn.proj", fc1="mlp.fc1", fc2="mlp.fc2")
  else:
    # torchvision < 0.12 called the MLP's layers linear_1/linear_2 (VisionTransformer's
    # _load_from_state_dict renames them); accept both.
    old = any(".mlp.linear_1." in k for k in keys)
    names = dict(patch="conv_proj", cls="class_token", pos="encoder.pos_embedding",
                 norm="encoder.ln", head="heads.head", block="encoder.layers.encoder_layer_{i}",
                 ln1="ln_1", ln2="ln_2", qkv="self_attention.in_proj",
                 proj="self_attention.out_proj",
                 fc1="mlp.linear_1" if old else "mlp.0", fc2="mlp.linear_2" if old else "mlp.3")
  entries = [WeightEntry(f"{names['patch']}.weight", ("patch_kernel",), CONV),
             WeightEntry(f"{names['patch']}.bias", ("patch_bias",), COPY),
             WeightEntry(names["cls"], ("cls_token",)),
             WeightEntry(names["pos"], ("pos_embed",))]
  for i in range(model.depth):
    t, path = names["block"].format(i=i), ("blocks", i)
    entries += layer_norm_entries(f"{t}.{names['ln1']}", (*path, "ln1"))
    if source == "timm":
      entries += linear_entries(f"{t}.{names['qkv']}", (*path, "attn", "qkv"))
    else:   # nn.MultiheadAttention: in_proj_weight / in_proj_bias
      entries += [WeightEntry(f"{t}.{names['qkv']}_weight", (*path, "attn", "qkv", "kernel"), LINEAR),
                  WeightEntry(f"{t}.{names['qkv']}_bias", (*path, "attn", "qkv", "bias"))]
    entries += linear_entries(f"{t}.{names['proj']}", (*path, "attn", "proj"))
    entries += layer_norm_entries(f"{t}.{names['ln2']}", (*path, "ln2"))
    entries += linear_entries(f"{t}.{names['fc1']}", (*path, "mlp", "fc1"))
    entries += linear_entries(f"{t}.{names['fc2']}", (*path, "mlp", "fc2"))
  entries += layer_norm_entries(names["norm"], ("norm",))
  ignored = ()
  if model.head is not None:
    entries += linear_entries(names["head"], ("head",))
  else:
    ignored = (names["head"] + ".",)
  return WeightTable(tuple(entries), ignored_prefixes=ignored, source=source)
