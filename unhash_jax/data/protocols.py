"""Named retrieval protocols: query / train / database index lists and the protocol's k.

docs/methods.md §1.6. Every draw is seeded (``seed``, the split seed, default 0) and class-stratified;
index lists are ``int64`` source indices (:class:`unhash_jax.data.builders.Source` order), sorted
ascending. :func:`make_splits` checks the protocol's disjointness rules and logs the counts.

| name | pool | query | train | database | k |
|---|---|---|---|---|---|
| ``digits`` | all 1,797 | 30 / class (300) | the other 1,497 | = train | all |
| ``cifar10-i`` | train+test merged | 100 / class | 500 / class | the rest (excludes train) | 1000 |
| ``cifar10-i-59k`` | same draw | 100 / class | 500 / class | everything but the queries | 1000 |
| ``cifar10-ii`` | official splits | official test | official train | = train | 1000 |
| ``cibhash`` | official splits | half the shuffled test set | 500 / class | official train | 1000 |

Validation (model selection, never the query set): a class-stratified ``val_fraction`` of the
training split forms ``val_query``; ``val_database`` is the rest of the training split
(``train \\ val_query``), ranked at the protocol's k. ``train`` itself is the protocol's full training
list; train on ``val_database`` instead if validation images must stay unseen. ``cibhash`` uses its
own validation half instead: ``val_query`` = the test images that are not queries,
``val_database`` = the database (as the official CIBHash code does).
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Callable

import numpy as np

DEFAULT_PROTOCOL = {"digits": "digits", "cifar10": "cifar10-i", "image_folder": "cifar10-ii"}


@dataclasses.dataclass(frozen=True, eq=False)
class Splits:
  """Index lists of one protocol (``int64`` source indices, ascending).

  Attributes:
    protocol: protocol name.
    query: evaluation queries.
    train: images the model trains on (labels unused by unsupervised methods).
    database: the retrieval set queries are ranked against.
    val_query: validation queries (from ``train``; ``cibhash``: the test half that is not query).
    val_database: validation retrieval set (``train`` minus ``val_query``; ``cibhash``: database).
    topk: the protocol's k for mAP@k (``None`` = the whole database).
    seed: the split seed used for the draw.
  """

  protocol: str
  query: np.ndarray
  train: np.ndarray
  database: np.ndarray
  val_query: np.ndarray
  val_database: np.ndarray
  topk: int | None
  seed: int = 0

  def counts(self) -> dict[str, int]:
    return {k: int(len(getattr(self, k)))
            for k in ("query", "train", "database", "val_query", "val_database")}


@dataclasses.dataclass(frozen=True)
class _Protocol:
  draw: Callable  # (source, rng) -> (query, train, database, val_query | None, val_database | None)
  topk: int | None
  train_vs_database: str  # "disjoint" | "subset" | "equal"
  description: str


def _as_index(x) -> np.ndarray:
  return np.sort(np.asarray(x, dtype=np.int64))


def _class_ids(labels: np.ndarray) -> np.ndarray:
  if labels.ndim != 1:
    raise ValueError("Class-stratified protocols need single-label sources (labels of shape [n]); "
                     f"got labels of shape {labels.shape}.")
  return labels


def _per_class_draw(labels, pool, counts, rng, protocol) -> list[np.ndarray]:
  """Splits ``pool`` per class into consecutive chunks of ``counts`` (a trailing -1 = the rest)."""
  labels = _class_ids(labels)
  parts = [[] for _ in counts]
  for c in np.unique(labels[pool]):
    members = pool[labels[pool] == c]
    fixed = sum(k for k in counts if k >= 0)
    if len(members) < fixed:
      raise ValueError(f"Protocol {protocol!r} needs at least {fixed} images of class {c}, "
                       f"the pool has {len(members)}.")
    members = rng.permutation(members)
    start = 0
    for p, k in enumerate(counts):
      stop = len(members) if k < 0 else start + k
      parts[p].append(members[start:stop])
      start = stop
  return [_as_index(np.concatenate(p)) if p else np.zeros(0, np.int64) for p in parts]


def _official(source, split: str, protocol: str) -> np.ndarray:
  idx = source.split_indices(split)
  if not len(idx):
    raise ValueError(f"Protocol {protocol!r} needs official {split!r} images; source "
                     f"{source.name!r} has splits {sorted(set(source.official_split.tolist()))}.")
  return idx


def _draw_digits(source, rng):
  pool = np.arange(len(source), dtype=np.int64)
  query, rest = _per_class_draw(source.labels, pool, [30, -1], rng, "digits")
  return query, rest, rest, None, None


def _draw_cifar10_i(source, rng, *, include_train: bool):
  pool = np.arange(len(source), dtype=np.int64)
  name = "cifar10-i-59k" if include_train else "cifar10-i"
  query, train, rest = _per_class_draw(source.labels, pool, [100, 500, -1], rng, name)
  database = _as_index(np.concatenate([train, rest])) if include_train else rest
  return query, train, database, None, None


def _draw_cifar10_ii(source, rng):
  del rng
  train = _official(source, "train", "cifar10-ii")
  return _official(source, "test", "cifar10-ii"), train, train, None, None


def _draw_cibhash(source, rng):
  test = _official(source, "test", "cibhash")
  train_pool = _official(source, "train", "cibhash")
  shuffled = rng.permutation(test)
  half = len(test) // 2
  query, val_query = _as_index(shuffled[:half]), _as_index(shuffled[half:])
  (train,) = _per_class_draw(source.labels, train_pool, [500], rng, "cibhash")
  return query, train, train_pool, val_query, train_pool


PROTOCOLS: dict[str, _Protocol] = {
    "digits": _Protocol(_draw_digits, None, "equal",
                        "30 queries per class; the other 1,497 images are train and database"),
    "cifar10-i": _Protocol(lambda s, r: _draw_cifar10_i(s, r, include_train=False), 1000, "disjoint",
                           "100/class query, 500/class train, database = the rest (no train)"),
    "cifar10-i-59k": _Protocol(lambda s, r: _draw_cifar10_i(s, r, include_train=True), 1000,
                               "subset", "cifar10-i's draw; database includes train"),
    "cifar10-ii": _Protocol(_draw_cifar10_ii, 1000, "equal",
                            "query = official test, train = database = official train"),
    "cibhash": _Protocol(_draw_cibhash, 1000, "subset",
                         "query = half the test set, validation = other half, train = 500/class "
                         "of official train, database = official train"),
}


def _stratified_fraction(labels, pool, fraction, rng) -> np.ndarray:
  """``round(fraction * n_c)`` images of each class ``c`` of ``pool`` (at least 1 if fraction > 0)."""
  if fraction <= 0:
    return np.zeros(0, np.int64)
  picked = []
  labels = _class_ids(labels)
  for c in np.unique(labels[pool]):
    members = pool[labels[pool] == c]
    k = max(1, int(round(fraction * len(members))))
    k = min(k, len(members) - 1) if len(members) > 1 else 0
    picked.append(rng.permutation(members)[:k])
  return _as_index(np.concatenate(picked)) if picked else np.zeros(0, np.int64)


def check_splits(splits: Splits, *, train_vs_database: str | None = None) -> None:
  """Raises ``ValueError`` unless the protocol's disjointness rules hold.

  Always: query ∩ train = ∅, query ∩ database = ∅, val_query ∩ query = ∅,
  val_query ∩ val_database = ∅, no duplicates in any list. ``train_vs_database``: ``"disjoint"``,
  ``"subset"`` (train ⊆ database) or ``"equal"``.
  """
  def inter(a, b):
    return len(np.intersect1d(getattr(splits, a), getattr(splits, b)))

  for name, n in splits.counts().items():
    if len(np.unique(getattr(splits, name))) != n:
      raise ValueError(f"{splits.protocol}: {name} holds duplicate indices.")
  for a, b in (("query", "train"), ("query", "database"), ("val_query", "query"),
               ("val_query", "val_database")):
    if inter(a, b):
      raise ValueError(f"{splits.protocol}: {a} and {b} overlap in {inter(a, b)} images.")
  rel = train_vs_database
  n_common = inter("train", "database")
  if rel == "disjoint" and n_common:
    raise ValueError(f"{splits.protocol}: train and database overlap in {n_common} images.")
  if rel == "subset" and n_common != len(splits.train):
    raise ValueError(f"{splits.protocol}: train is not a subset of the database.")
  if rel == "equal" and not np.array_equal(splits.train, splits.database):
    raise ValueError(f"{splits.protocol}: train and database differ.")


def make_splits(protocol: str, source, *, seed: int = 0, val_fraction: float = 0.1) -> Splits:
  """Draws the index lists of ``protocol`` on ``source`` (docs/methods.md §1.6).

  Args:
    protocol: one of :data:`PROTOCOLS`.
    source: a :class:`~unhash_jax.data.builders.Source` (only ``labels``, ``official_split`` and
      ``len`` are used).
    seed: split seed; the same seed always gives the same lists (NumPy ``default_rng(seed)``).
    val_fraction: class-stratified fraction of ``train`` used as validation queries, in ``[0, 1)``
      (ignored by ``cibhash``, which has its own validation half).

  Returns:
    :class:`Splits`, checked with :func:`check_splits`; counts are logged.

  Raises:
    ValueError: unknown protocol (lists the valid ones), bad ``val_fraction``, or a source that
      cannot hold the protocol (too few images per class, missing official split).
  """
  if protocol not in PROTOCOLS:
    raise ValueError(f"Unknown protocol {protocol!r}; valid choices: {', '.join(PROTOCOLS)}.")
  if not 0.0 <= val_fraction < 1.0:
    raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}.")
  spec = PROTOCOLS[protocol]
  rng = np.random.default_rng(seed)
  query, train, database, val_query, val_database = spec.draw(source, rng)
  if val_query is None:
    val_rng = np.random.default_rng([seed, 1])  # independent of the protocol draw's rng state
    val_query = _stratified_fraction(source.labels, train, val_fraction, val_rng)
    val_database = np.setdiff1d(train, val_query).astype(np.int64)
  splits = Splits(protocol=protocol, query=query, train=train, database=database,
                  val_query=_as_index(val_query), val_database=_as_index(val_database),
                  topk=spec.topk, seed=seed)
  check_splits(splits, train_vs_database=spec.train_vs_database)
  logging.info("Protocol %s on %s (seed %d): %s, k=%s; disjointness checked (train vs database: "
               "%s).", protocol, source.name, seed, splits.counts(), spec.topk or "all",
               spec.train_vs_database)
  return splits
