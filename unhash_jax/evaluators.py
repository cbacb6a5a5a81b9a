"""Evaluators found by name (a method lists the ones it reports), and code-collapse statistics.

Each evaluator maps the test codes and labels of a protocol to a dict of metrics whose names carry
their protocol (``map@1000``, ``map@all``, ``map@ddh_full``...) plus the ``tie_policy`` it used. The
trainer runs ``spec.evaluators`` and :func:`code_statistics`, whose ``collapse_warnings`` say when the
database codes have collapsed (a run that diverged or never left its initialisation reports chance
mAP and nothing else would say why).
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from unhash_jax import retrieval

Evaluator = Callable[..., dict[str, Any]]


def _protocol_map(query_codes, database_codes, query_labels, database_labels, *, topk):
  """Every metric of :func:`unhash_jax.retrieval.evaluate` at the protocol's k, ties by index."""
  return retrieval.evaluate(query_codes, database_codes, query_labels, database_labels, topk=topk,
                            tie_policy="index")


def _ddh_full(query_codes, database_codes, query_labels, database_labels, *, topk):
  """DDH's own protocol (docs/methods.md §1.4): whole database, AP over all relevant items, queries
  without a relevant item excluded, stable ranking."""
  del topk
  value = retrieval.mean_average_precision(query_codes, database_codes, query_labels,
                                           database_labels, topk=None, mode="ddh_full",
                                           tie_policy="index")
  return {"map@ddh_full": value, "ddh_full_tie_policy": "index"}


EVALUATORS: dict[str, Evaluator] = {"map": _protocol_map, "ddh_full": _ddh_full}


def run_evaluators(names, query_codes, database_codes, query_labels, database_labels, *,
                   topk) -> dict[str, Any]:
  """Runs the named evaluators and merges their results (the first one's ``map`` is the headline)."""
  results: dict[str, Any] = {}
  for name in names:
    if name not in EVALUATORS:
      raise ValueError(f"unknown evaluator {name!r}; valid choices: {', '.join(EVALUATORS)}.")
    for key, value in EVALUATORS[name](query_codes, database_codes, query_labels, database_labels,
                                       topk=topk).items():
      results.setdefault(key, value)
  return results


# A run whose database codes take fewer distinct values than this fraction of the database (or of
# 2^bits, when smaller), or that has at least this fraction of constant bits, is reported as collapsed.
MIN_DISTINCT_FRACTION = 0.01
MAX_CONSTANT_BIT_FRACTION = 0.5


def code_statistics(codes) -> dict[str, Any]:
  """Diversity of ``codes`` ``[n, bits]`` (real or ±1; ``sign₀`` is applied) and collapse warnings.

  Returns:
    ``distinct_codes`` (number of different codes), ``bit_balance`` (``mean_k |mean_n b_nk|``: 0 for
    balanced bits, 1 when every bit is constant), ``constant_bits`` (bits with one value on every
    item) and ``collapse_warnings``: a list of sentences, empty unless the codes collapsed (fewer
    distinct codes than :data:`MIN_DISTINCT_FRACTION` of ``min(n, 2^bits)``, at least 2, or
    at least :data:`MAX_CONSTANT_BIT_FRACTION` of the bits constant).
  """
  b = np.asarray(retrieval.binarize(np.asarray(codes)))
  n, bits = b.shape
  distinct = int(len(np.unique(b, axis=0))) if n else 0
  means = b.astype(np.float64).mean(axis=0) if n else np.zeros(bits)
  constant = int(np.sum(np.abs(means) == 1.0)) if n else 0
  warnings = []
  reachable = min(n, 2.0 ** bits)
  floor = max(2, int(np.ceil(MIN_DISTINCT_FRACTION * reachable)))
  if n > 1 and distinct < floor:
    warnings.append(f"the {n} database codes take only {distinct} distinct value(s) (fewer than "
                    f"{floor}): the codes collapsed, so mAP is near chance level. Usual causes: a "
                    f"learning rate too high (the loss diverged) or too low, or too few steps.")
  if bits and constant >= MAX_CONSTANT_BIT_FRACTION * bits:
    warnings.append(f"{constant} of {bits} bits are constant over the database: those bits carry no "
                    f"information.")
  return {"distinct_codes": distinct, "bit_balance": float(np.mean(np.abs(means))) if bits else 0.0,
          "constant_bits": constant, "collapse_warnings": warnings}
