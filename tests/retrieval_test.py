"""Tests of the Hamming ranking evaluator against independent float64 references written here."""

import itertools
import json
import math
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from unhash_jax import ops, retrieval

# ---------------------------------------------------------------------------------------------------
# Independent references: literal per-query loops in float64 / Python ints.


def ref_distances(qc, dbc):
  qb = np.where(np.asarray(qc) >= 0, 1, -1)
  db = np.where(np.asarray(dbc) >= 0, 1, -1)
  return np.array([[int(np.sum(a != b)) for b in db] for a in qb])


def ref_relevance(ql, dbl):
  ql, dbl = np.asarray(ql), np.asarray(dbl)
  if ql.ndim == 1:
    return np.array([[int(a == b) for b in dbl] for a in ql])
  return np.array([[int(np.dot(a > 0, b > 0) >= 1) for b in dbl] for a in ql])


def ref_order(d, rel, policy):
  n = len(d)
  if policy == "index":
    return sorted(range(n), key=lambda j: (d[j], j))
  if policy == "optimistic":
    return sorted(range(n), key=lambda j: (d[j], -rel[j], j))
  if policy == "pessimistic":
    return sorted(range(n), key=lambda j: (d[j], rel[j], j))
  raise ValueError(policy)


def ref_ap_sorted(r, k):
  """AP@k of one ranked relevance list: (1/T_k) Σ r_p prec(p), 0 if T_k = 0."""
  hits, total = 0, 0.0
  for p in range(1, k + 1):
    if r[p - 1]:
      hits += 1
      total += hits / p
  return total / hits if hits else 0.0


def ref_average_terms(d, rel, k):
  """Slot-by-slot tie-aware sums of methods.md §1.3: (E[Σ r_p prec(p)], E[T_k])."""
  num, tk, s, rb = 0.0, 0.0, 0, 0
  for v in sorted(set(d)):
    group = [j for j in range(len(d)) if d[j] == v]
    n, rho = len(group), sum(rel[j] for j in group)
    for i in range(1, n + 1):
      if s + i > k:
        break
      extra = (i - 1) * (rho - 1) / (n - 1) if n > 1 else 0.0
      num += (rho / n) * (rb + 1 + extra) / (s + i)
      tk += rho / n
    s += n
    rb += rho
  return num, tk


def ref_ap(qc, dbc, ql, dbl, k=None, policy="index", ddh=False):
  dist, rel = ref_distances(qc, dbc), ref_relevance(ql, dbl)
  n = dist.shape[1]
  k = n if k is None else min(k, n)
  out = []
  for d, r in zip(dist, rel):
    if policy == "average":
      num, tk = ref_average_terms(list(d), list(r), k)
      ap = num / tk if tk > 0 else 0.0
    else:
      order = ref_order(list(d), list(r), policy)
      ranked = [r[j] for j in order]
      ap = ref_ap_sorted(ranked, k)
    if ddh:
      ap = ap if r.sum() > 0 else float("nan")
    out.append(ap)
  return np.array(out)


def tie_heavy_codes(rng, n, bits, *, proto=None, flip=0.2):
  """Codes near a few prototypes, so distances repeat a lot; some exact zeros (0 -> +1)."""
  if proto is None:
    proto = rng.choice([-1.0, 1.0], size=(3, bits))
  which = rng.integers(0, len(proto), n)
  x = proto[which] * np.where(rng.random((n, bits)) < flip, -1, 1)
  x = x * rng.uniform(0.1, 2.0, size=x.shape)
  x[rng.random(x.shape) < 0.05] = 0.0
  return x, which, proto


# ---------------------------------------------------------------------------------------------------
# Distances and packing.


@pytest.mark.parametrize("bits", [8, 13, 32, 48, 64, 128])
def test_hamming_distances_match_reference(bits):
  rng = np.random.default_rng(bits)
  q = rng.standard_normal((7, bits))
  q[0, :3] = 0.0
  db = rng.standard_normal((11, bits))
  np.testing.assert_array_equal(retrieval.hamming_distances(q, db), ref_distances(q, db))
  # Packed input gives the same answer.
  np.testing.assert_array_equal(
      retrieval.hamming_distances(ops.pack_bits(q), ops.pack_bits(db)), ref_distances(q, db))


@pytest.mark.parametrize("bits", [1, 13, 32, 33, 64, 100])
def test_host_packing_matches_ops_pack_bits(bits):
  x = np.random.default_rng(0).standard_normal((9, bits))
  x[:, 0] = 0.0
  np.testing.assert_array_equal(retrieval._pack_host(x), np.asarray(ops.pack_bits(x)))


def test_reexports():
  assert retrieval.binarize is ops.binarize
  assert retrieval.pack_bits is ops.pack_bits and retrieval.unpack_bits is ops.unpack_bits


# ---------------------------------------------------------------------------------------------------
# AP against the literal loop.

ENGINES = ["jax", "numba"]


@pytest.mark.parametrize("bits", [8, 13, 32, 48, 64, 128])
@pytest.mark.parametrize("policy", retrieval.TIE_POLICIES)
@pytest.mark.parametrize("engine", ENGINES)
def test_ap_single_label_matches_reference(bits, policy, engine):
  rng = np.random.default_rng(bits)
  nq, ndb = 12, 90
  q, qw, proto = tie_heavy_codes(rng, nq, bits)
  db, dw, _ = tie_heavy_codes(rng, ndb, bits, proto=proto)
  ql = (qw + rng.integers(0, 2, nq)) % 4
  dl = (dw + rng.integers(0, 2, ndb)) % 4
  ql[0] = 9  # a query with no relevant item at all
  for k in (1, 7, 40, None, 10_000):
    got = retrieval.average_precision(q, db, ql, dl, topk=k, tie_policy=policy, engine=engine)
    want = ref_ap(q, db, ql, dl, k, policy)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-9, err_msg=f"k={k}")
    assert got.dtype == np.float64 and got[0] == 0.0


@pytest.mark.parametrize("bits", [13, 64])
@pytest.mark.parametrize("policy", retrieval.TIE_POLICIES)
@pytest.mark.parametrize("engine", ENGINES)
def test_ap_multi_label_matches_reference(bits, policy, engine):
  rng = np.random.default_rng(100 + bits)
  nq, ndb, classes = 10, 80, 37  # 37 classes: two label words
  q, _, proto = tie_heavy_codes(rng, nq, bits, flip=0.3)
  db, _, _ = tie_heavy_codes(rng, ndb, bits, proto=proto, flip=0.3)
  ql = (rng.random((nq, classes)) < 0.06).astype(np.float32)
  dl = (rng.random((ndb, classes)) < 0.06).astype(np.int64)
  ql[0] = 0
  for k in (1, 25, None):
    got = retrieval.average_precision(q, db, ql, dl, topk=k, tie_policy=policy, engine=engine)
    np.testing.assert_allclose(got, ref_ap(q, db, ql, dl, k, policy), rtol=0, atol=1e-9)


@pytest.mark.parametrize("policy", retrieval.TIE_POLICIES)
@pytest.mark.parametrize("engine", ENGINES)
def test_all_equal_distances(policy, engine):
  # Every database item is at distance 0: the whole ranking is one tie group.
  rng = np.random.default_rng(1)
  q = np.ones((4, 16))
  db = np.ones((30, 16))
  ql, dl = rng.integers(0, 3, 4), rng.integers(0, 3, 30)
  for k in (1, 10, None):
    got = retrieval.average_precision(q, db, ql, dl, topk=k, tie_policy=policy, engine=engine)
    np.testing.assert_allclose(got, ref_ap(q, db, ql, dl, k, policy), rtol=0, atol=1e-9)
  # With one tie group and k = n the average AP is the expected AP of a random order; the
  # index order is the database order.
  r = (dl == ql[0]).astype(int)
  assert retrieval.average_precision(q[:1], db, ql[:1], dl, tie_policy="index",
                                     engine=engine)[0] == pytest.approx(
      ref_ap_sorted(list(r), 30), abs=1e-12)


def test_no_relevant_items_counts_zero_in_denominator():
  rng = np.random.default_rng(2)
  q, db = rng.standard_normal((5, 8)), rng.standard_normal((20, 8))
  ql = np.array([0, 0, 7, 7, 7])
  dl = np.zeros(20, np.int32)
  ap = retrieval.average_precision(q, db, ql, dl, topk=5)
  assert ap[0] == 1.0 and ap[1] == 1.0 and np.all(ap[2:] == 0.0)
  assert retrieval.mean_average_precision(q, db, ql, dl, topk=5) == pytest.approx(0.4)


def test_hand_computed_case():
  # distances to q: [1, 0, 2, 1]; rel: [1, 0, 1, 1]; index order: j1(d0) j0(d1) j3(d1) j2(d2)
  q = np.array([[1, 1]])
  db = np.array([[1, -1], [1, 1], [-1, -1], [-1, 1]])
  ql, dl = np.array([3]), np.array([3, 1, 3, 3])
  # ranked rel = [0, 1, 1, 1] -> AP = (1/2 + 2/3 + 3/4) / 3
  ap = retrieval.average_precision(q, db, ql, dl)
  assert ap[0] == pytest.approx((1 / 2 + 2 / 3 + 3 / 4) / 3, abs=1e-15)
  # k = 2 -> ranked [0, 1] -> (1/2) / 1
  assert retrieval.average_precision(q, db, ql, dl, topk=2)[0] == pytest.approx(0.5, abs=1e-15)
  # ddh_full equals AP@all here; a query with no relevant item is excluded from the mean.
  q2, ql2 = np.array([[1, 1], [1, 1]]), np.array([3, 5])
  ap2 = retrieval.average_precision(q2, db, ql2, dl, mode="ddh_full")
  assert ap2[0] == pytest.approx(ap[0]) and np.isnan(ap2[1])
  assert retrieval.mean_average_precision(q2, db, ql2, dl, mode="ddh_full") == pytest.approx(ap[0])
  assert retrieval.mean_average_precision(q2, db, ql2, dl) == pytest.approx(ap[0] / 2)


@pytest.mark.parametrize("engine", ENGINES)
def test_ddh_full_matches_reference(engine):
  rng = np.random.default_rng(3)
  q, _, proto = tie_heavy_codes(rng, 9, 16)
  db, _, _ = tie_heavy_codes(rng, 50, 16, proto=proto)
  ql, dl = rng.integers(0, 6, 9), rng.integers(0, 5, 50)
  got = retrieval.average_precision(q, db, ql, dl, mode="ddh_full", engine=engine)
  want = ref_ap(q, db, ql, dl, None, "index", ddh=True)
  np.testing.assert_allclose(got, want, rtol=0, atol=1e-9)
  assert np.isnan(got).any()
  assert retrieval.mean_average_precision(q, db, ql, dl, mode="ddh_full") == pytest.approx(
      np.nanmean(want), abs=1e-12)


# ---------------------------------------------------------------------------------------------------
# Tie-aware average against an exhaustive average over all tie orderings.


def exhaustive_average(d, rel, k):
  """E[Σ r_p prec(p)], E[T_k] and E[AP@k] over all orderings inside tie groups (brute force)."""
  n = len(d)
  nums, tks, aps = [], [], []
  for perm in itertools.permutations(range(n)):
    order = sorted(perm, key=lambda j: d[j])  # stable: ties keep the permutation's order
    r = [rel[j] for j in order]
    hits, num = 0, 0.0
    for p in range(1, k + 1):
      if r[p - 1]:
        hits += 1
        num += hits / p
    nums.append(num)
    tks.append(hits)
    aps.append(num / hits if hits else 0.0)
  return np.mean(nums), np.mean(tks), np.mean(aps)


@pytest.mark.parametrize("seed", range(6))
def test_average_policy_equals_exhaustive_tie_average(seed):
  rng = np.random.default_rng(seed)
  bits, ndb = 3, 7
  q = rng.choice([-1.0, 1.0], size=(1, bits))
  db = rng.choice([-1.0, 1.0], size=(ndb, bits))
  ql, dl = np.array([1]), rng.integers(0, 2, ndb)
  d = ref_distances(q, db)[0]
  rel = (dl == 1).astype(int)
  boundaries = set(np.cumsum(np.bincount(d)).tolist())
  for k in range(1, ndb + 1):
    e_num, e_t, e_ap = exhaustive_average(list(d), list(rel), k)
    got = retrieval.average_precision(q, db, ql, dl, topk=k, tie_policy="average")[0]
    want = e_num / e_t if e_t > 0 else 0.0
    assert got == pytest.approx(want, abs=1e-12), (k, d, rel)
    if k in boundaries:  # there the ratio of expectations is the exact expected AP
      assert got == pytest.approx(e_ap, abs=1e-12)


# ---------------------------------------------------------------------------------------------------
# Properties (hypothesis).


@st.composite
def small_problem(draw):
  bits = draw(st.sampled_from([1, 5, 32, 40]))  # few distinct shapes: fewer compilations
  nq = draw(st.integers(1, 5))
  ndb = draw(st.integers(1, 25))
  seed = draw(st.integers(0, 2**31 - 1))
  rng = np.random.default_rng(seed)
  q = rng.choice([-1, 1], size=(nq, bits)).astype(np.int8)
  db = rng.choice([-1, 1], size=(ndb, bits)).astype(np.int8)
  ql, dl = rng.integers(0, 3, nq), rng.integers(0, 3, ndb)
  k = draw(st.one_of(st.none(), st.integers(1, 30)))
  return q, db, ql, dl, k, rng


@settings(max_examples=15, deadline=None)
@given(small_problem())
def test_average_policy_is_invariant_to_database_permutation(problem):
  q, db, ql, dl, k, rng = problem
  perm = rng.permutation(len(db))
  a = retrieval.average_precision(q, db, ql, dl, topk=k, tie_policy="average", devices=1)
  b = retrieval.average_precision(q, db[perm], ql, dl[perm], topk=k, tie_policy="average", devices=1)
  np.testing.assert_allclose(a, b, rtol=0, atol=1e-12)


@settings(max_examples=15, deadline=None)
@given(small_problem(), st.data())
def test_flipping_a_bit_everywhere_changes_nothing(problem, data):
  q, db, ql, dl, k, _ = problem
  bit = data.draw(st.integers(0, q.shape[1] - 1))
  q2, db2 = q.copy(), db.copy()
  q2[:, bit] *= -1
  db2[:, bit] *= -1
  np.testing.assert_array_equal(retrieval.hamming_distances(q, db),
                                retrieval.hamming_distances(q2, db2))
  for policy in ("index", "average"):
    np.testing.assert_array_equal(
        retrieval.average_precision(q, db, ql, dl, topk=k, tie_policy=policy, devices=1),
        retrieval.average_precision(q2, db2, ql, dl, topk=k, tie_policy=policy, devices=1))


@settings(max_examples=15, deadline=None)
@given(small_problem())
def test_identical_codes_have_distance_zero_and_policy_bounds(problem):
  q, db, ql, dl, _, _ = problem
  np.testing.assert_array_equal(np.diag(np.asarray(retrieval.hamming_distances(db, db))), 0)
  # Bounds hold when k is a tie-group boundary (here the whole database): then T_k does not depend on
  # the order inside groups. (With k inside a group they need not: hypothesis found that retrieving one
  # more relevant item at low precision can lower AP@k.)
  kw = dict(topk=None, devices=1)
  lo = retrieval.average_precision(q, db, ql, dl, tie_policy="pessimistic", **kw)
  hi = retrieval.average_precision(q, db, ql, dl, tie_policy="optimistic", **kw)
  for policy in ("index", "average"):
    ap = retrieval.average_precision(q, db, ql, dl, tie_policy=policy, **kw)
    assert np.all(lo <= ap + 1e-12) and np.all(ap <= hi + 1e-12)


# ---------------------------------------------------------------------------------------------------
# evaluate(): every metric against the reference.


@pytest.mark.parametrize("policy", retrieval.TIE_POLICIES)
@pytest.mark.parametrize("engine", ENGINES)
def test_evaluate_metrics_match_reference(policy, engine, tmp_path):
  rng = np.random.default_rng(5)
  bits, nq, ndb = 12, 15, 120
  q, qw, proto = tie_heavy_codes(rng, nq, bits)
  db, dw, _ = tie_heavy_codes(rng, ndb, bits, proto=proto)
  ql, dl = qw.copy(), dw.copy()
  ql[0] = 5
  res = retrieval.evaluate(q, db, ql, dl, topk=30, tie_policy=policy, topk_grid=(1, 10, 50, 500),
                           per_query=True, engine=engine)
  dist, rel = ref_distances(q, db), ref_relevance(ql, dl)
  want_ap = ref_ap(q, db, ql, dl, 30, policy)
  np.testing.assert_allclose(res["per_query_ap"], want_ap, rtol=0, atol=1e-9)
  assert res["map"] == pytest.approx(want_ap.mean(), abs=1e-12) and res["map@30"] == res["map"]
  assert res["topk"] == 30 and isinstance(res["map"], float)
  assert res["pr_topk_k"] == [1, 10, 30, 50, 120]
  n_rel = rel.sum(1)
  for kk in res["pr_topk_k"]:
    tks = []
    for d, r in zip(dist, rel):
      if policy == "average":
        tks.append(ref_average_terms(list(d), list(r), kk)[1])
      else:
        tks.append(sum(r[j] for j in ref_order(list(d), list(r), policy)[:kk]))
    tks = np.array(tks, float)
    assert res[f"p@{kk}"] == pytest.approx(np.mean(tks / kk), abs=1e-12)
    assert res[f"r@{kk}"] == pytest.approx(
        np.mean([t / n if n else 0.0 for t, n in zip(tks, n_rel)]), abs=1e-12)
  prec, rec = [], []
  for r_ in range(bits + 1):
    ball = dist <= r_
    size, hit = ball.sum(1), (ball & (rel > 0)).sum(1)
    prec.append(np.mean([h / s if s else 0.0 for h, s in zip(hit, size)]))
    rec.append(np.mean([h / n if n else 0.0 for h, n in zip(hit, n_rel)]))
  np.testing.assert_allclose(res["pr_radius_precision"], prec, atol=1e-12)
  np.testing.assert_allclose(res["pr_radius_recall"], rec, atol=1e-12)
  assert res["p@h<=2"] == pytest.approx(prec[2], abs=1e-12)
  assert res["p@h<=2_empty_fraction"] == pytest.approx(np.mean((dist <= 2).sum(1) == 0))
  # JSON-ready scalars/lists, and the plot helper draws from the same dict.
  flat = {k: v for k, v in res.items() if not k.startswith("per_query")}
  json.dumps(flat)
  path = retrieval.plot_pr_curve(json.loads(json.dumps(flat)), str(tmp_path / "pr.png"))
  with open(path, "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_evaluate_topk_none_and_ddh_keys():
  rng = np.random.default_rng(6)
  q, db = rng.standard_normal((4, 8)), rng.standard_normal((10, 8))
  ql, dl = rng.integers(0, 2, 4), rng.integers(0, 2, 10)
  res = retrieval.evaluate(q, db, ql, dl)
  assert res["topk"] == 10 and res["map@all"] == res["map"]
  assert res["map"] == pytest.approx(ref_ap(q, db, ql, dl).mean(), abs=1e-12)
  res = retrieval.evaluate(q, db, ql, dl, mode="ddh_full")
  assert res["map"] == pytest.approx(np.nanmean(ref_ap(q, db, ql, dl, ddh=True)), abs=1e-12)


# ---------------------------------------------------------------------------------------------------
# Chunking and devices.


@pytest.mark.parametrize("policy", ["index", "average"])
def test_query_and_database_chunking_is_exact(policy):
  rng = np.random.default_rng(7)
  q, qw, proto = tie_heavy_codes(rng, 37, 20)
  db, dw, _ = tie_heavy_codes(rng, 301, 20, proto=proto)
  base = retrieval.average_precision(q, db, qw, dw, topk=50, tie_policy=policy, engine="jax",
                                     devices=1)
  for chunk, pairs in ((64, 500), (7, 64), (301, 1)):
    got = retrieval.average_precision(q, db, qw, dw, topk=50, tie_policy=policy, engine="jax",
                                      devices=1, database_chunk=chunk, block_pairs=pairs)
    np.testing.assert_array_equal(got, base)
  np.testing.assert_allclose(base, ref_ap(q, db, qw, dw, 50, policy), atol=1e-9)


@pytest.mark.multidevice
@pytest.mark.parametrize("policy", retrieval.TIE_POLICIES)
def test_sharded_database_equals_single_device(policy):
  if jax.device_count() != 8:
    pytest.skip("needs 8 (fake CPU) devices; set XLA_FLAGS before JAX starts")
  rng = np.random.default_rng(8)
  q, qw, proto = tie_heavy_codes(rng, 23, 16)
  db, dw, _ = tie_heavy_codes(rng, 203, 16, proto=proto)  # not a multiple of 8: padded shards
  one = retrieval.evaluate(q, db, qw, dw, topk=40, tie_policy=policy, devices=1, per_query=True,
                           topk_grid=(1, 100))
  eight = retrieval.evaluate(q, db, qw, dw, topk=40, tie_policy=policy, per_query=True,
                             topk_grid=(1, 100), engine="jax")
  eight_chunked = retrieval.evaluate(q, db, qw, dw, topk=40, tie_policy=policy, devices=8,
                                     per_query=True, topk_grid=(1, 100), database_chunk=64)
  for other in (eight, eight_chunked):
    np.testing.assert_array_equal(other["per_query_ap"], one["per_query_ap"])
    for key in ("map", "p@100", "r@100", "pr_radius_precision", "pr_radius_recall", "p@h<=2"):
      assert other[key] == one[key], key
  np.testing.assert_allclose(one["per_query_ap"], ref_ap(q, db, qw, dw, 40, policy), atol=1e-9)


@pytest.mark.multidevice
def test_sharded_path_in_a_fresh_process(tmp_path):
  """The 8-device path in a subprocess that sets XLA_FLAGS itself before JAX starts."""
  code = (
      "import os; os.environ['XLA_FLAGS']='--xla_force_host_platform_device_count=8'\n"
      "import jax, numpy as np\n"
      "from unhash_jax import retrieval as R\n"
      "assert jax.device_count() == 8\n"
      "r = np.random.default_rng(0)\n"
      "q, db = r.standard_normal((9, 24)), r.standard_normal((77, 24))\n"
      "ql, dl = r.integers(0, 3, 9), r.integers(0, 3, 77)\n"
      "a = R.average_precision(q, db, ql, dl, topk=20, devices=1)\n"
      "b = R.average_precision(q, db, ql, dl, topk=20, engine='jax')\n"
      "assert (a == b).all(), (a, b)\n"
      "print('ok')\n")
  out = _run_python(code, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu")
  assert out.returncode == 0 and "ok" in out.stdout, out.stderr[-2000:]


def _run_python(code: str, **env) -> subprocess.CompletedProcess:
  """Runs ``python -c code`` from the repository root with extra environment variables."""
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  return subprocess.run([sys.executable, "-c", code], cwd=root, env=dict(os.environ, **env),
                        capture_output=True, text=True, timeout=300)


# ---------------------------------------------------------------------------------------------------
# Bad input.


def _ok():
  rng = np.random.default_rng(0)
  return rng.standard_normal((3, 8)), rng.standard_normal((5, 8)), np.arange(3), np.arange(5)


@pytest.mark.parametrize("change, match", [
    (lambda a: a.update(db=np.ones((5, 9))), "bits"),
    (lambda a: a.update(ql=np.arange(4)), "query_labels has 4 rows"),
    (lambda a: a.update(dl=np.arange(6)), "database_labels has 6 rows"),
    (lambda a: a.update(ql=np.zeros((3, 2, 2), int)), "rank 3"),
    (lambda a: a.update(ql=np.zeros(3, np.float32), dl=np.zeros(5, np.float32)), "integer class ids"),
    (lambda a: a.update(ql=np.zeros((3, 4))), "rank 2 but database_labels rank 1|rank 1"),
    (lambda a: a.update(ql=np.zeros((3, 4)), dl=np.zeros((5, 3))), "classes"),
    (lambda a: a.update(q=np.zeros((0, 8)), ql=np.arange(0)), "query_codes is empty"),
    (lambda a: a.update(db=np.zeros((0, 8)), dl=np.arange(0)), "database_codes is empty"),
    (lambda a: a.update(q=np.ones(8)), r"shape \[n, bits\]"),
    (lambda a: a.update(q=np.ones((3, 8), bool)), "0/1 bits"),
    (lambda a: a.update(kw={"tie_policy": "random"}), "unknown tie_policy"),
    (lambda a: a.update(kw={"topk": 0}), "topk must be >= 1"),
    (lambda a: a.update(kw={"topk": -1}), "topk must be >= 1"),
    (lambda a: a.update(kw={"topk": 2.5}), "topk must be a positive int"),
    (lambda a: a.update(kw={"mode": "ddh"}), "unknown mode"),
    (lambda a: a.update(kw={"mode": "ddh_full", "topk": 3}), "ddh_full"),
    (lambda a: a.update(kw={"devices": 99}), "devices=99"),
    (lambda a: a.update(kw={"engine": "faiss"}), "unknown engine"),
])
def test_bad_input_raises_value_error(change, match):
  q, db, ql, dl = _ok()
  args = {"q": q, "db": db, "ql": ql, "dl": dl, "kw": {}}
  change(args)
  with pytest.raises(ValueError, match=match):
    retrieval.mean_average_precision(args["q"], args["db"], args["ql"], args["dl"], **args["kw"])


def test_topk_above_database_size_is_clipped():
  q, db, ql, dl = _ok()
  assert retrieval.mean_average_precision(q, db, ql, dl, topk=1000) == \
      retrieval.mean_average_precision(q, db, ql, dl)
  assert retrieval.evaluate(q, db, ql, dl, topk=1000)["topk"] == 5


def test_jax_inputs_and_bf16_codes_accepted():
  q, db, ql, dl = _ok()
  a = retrieval.mean_average_precision(q, db, ql, dl)
  b = retrieval.mean_average_precision(jnp.asarray(q, jnp.bfloat16), jnp.asarray(db), jnp.asarray(ql),
                                       jnp.asarray(dl))
  assert a == b and math.isfinite(a)


@pytest.mark.parametrize("k", [1, 10, 100, 777])
def test_two_stage_block_selection_on_a_larger_database(k):
  """n = 5,000 rows, 12 bits (heavy ties): block sizes up to 64 against a stable-argsort reference."""
  rng = np.random.default_rng(k)
  q, qw, proto = tie_heavy_codes(rng, 6, 12, flip=0.3)
  db, dw, _ = tie_heavy_codes(rng, 5000, 12, proto=proto, flip=0.3)
  dist, rel = ref_distances(q, db), ref_relevance(qw, dw)
  want = [ref_ap_sorted(list(r[np.argsort(d, kind="stable")]), k) for d, r in zip(dist, rel)]
  for engine in ENGINES:
    got = retrieval.average_precision(q, db, qw, dw, topk=k, engine=engine, devices=1)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-9, err_msg=engine)


def test_engine_resolution(monkeypatch):
  cpu = jax.local_devices()[0].platform == "cpu"
  assert retrieval._resolve_engine("jax", None) == "jax"
  if cpu:
    assert retrieval._resolve_engine("auto", None) == "numba"
    assert retrieval._resolve_engine("auto", 1) == "numba"
    if jax.device_count() > 1:  # several devices asked for explicitly: the sharded JAX engine
      assert retrieval._resolve_engine("auto", 2) == "jax"
  monkeypatch.setattr(retrieval, "_numba_available", lambda: False)
  assert retrieval._resolve_engine("auto", None) == "jax"
  with pytest.raises(ValueError, match="needs numba"):
    retrieval._resolve_engine("numba", None)


def test_numba_engine_on_a_larger_database_matches_the_jax_engine():
  """59 x 20,000 codes at 64/100/200/300 bits (1 and 2 uint64 words, the generic loop, distances above
  255), k inside a tie group."""
  rng = np.random.default_rng(11)
  for bits in (64, 100, 200, 300):
    q, qw, proto = tie_heavy_codes(rng, 59, bits, flip=0.35)
    db, dw, _ = tie_heavy_codes(rng, 20_000, bits, proto=proto, flip=0.35)
    for k in (1000, None):
      a = retrieval.evaluate(q, db, qw, dw, topk=k, engine="numba", per_query=True)
      b = retrieval.evaluate(q, db, qw, dw, topk=k, engine="jax", devices=1, per_query=True)
      np.testing.assert_array_equal(a["per_query_ap"], b["per_query_ap"])
      assert a["pr_radius_precision"] == b["pr_radius_precision"] and a["p@1000"] == b["p@1000"]


def test_numba_engine_from_several_threads_at_once():
  """Concurrent evaluations (e.g. a training thread and a notebook) neither crash nor mix results, even
  under numba's workqueue threading layer, which aborts on concurrent parallel launches (subprocess)."""
  code = (
      "import sys; sys.path.insert(0, 'tests')\n"
      "from concurrent.futures import ThreadPoolExecutor\n"
      "import numba, numpy as np\n"
      "from retrieval_test import tie_heavy_codes\n"
      "from unhash_jax import retrieval\n"
      "rng = np.random.default_rng(12)\n"
      "q, qw, proto = tie_heavy_codes(rng, 200, 32)\n"
      "db, dw, _ = tie_heavy_codes(rng, 20000, 32, proto=proto)\n"
      "want = retrieval.average_precision(q, db, qw, dw, topk=100, engine='jax', devices=1)\n"
      "f = lambda _: retrieval.average_precision(q, db, qw, dw, topk=100, engine='numba')\n"
      "with ThreadPoolExecutor(4) as pool:\n"
      "  outs = list(pool.map(f, range(8)))\n"
      "assert all((o == want).all() for o in outs)\n"
      "print('ok', numba.threading_layer())\n")
  out = _run_python(code, NUMBA_THREADING_LAYER="workqueue")
  assert out.returncode == 0 and "ok workqueue" in out.stdout, out.stderr[-2000:]


@pytest.mark.parametrize("engine", ENGINES)
def test_distances_above_255_bits(engine):
  """Near-opposite codes at 300 bits: distances up to 300 must not wrap around (uint8 would)."""
  rng = np.random.default_rng(13)
  q = rng.choice([-1.0, 1.0], size=(4, 300))
  db = np.concatenate([-q[rng.integers(0, 4, 30)], q[rng.integers(0, 4, 30)]])
  db = db * np.where(rng.random(db.shape) < 0.05, -1, 1)
  ql, dl = rng.integers(0, 2, 4), rng.integers(0, 2, 60)
  assert ref_distances(q, db).max() > 255
  for policy in ("index", "average"):
    got = retrieval.average_precision(q, db, ql, dl, topk=40, tie_policy=policy, engine=engine)
    np.testing.assert_allclose(got, ref_ap(q, db, ql, dl, 40, policy), rtol=0, atol=1e-9)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_codes_are_refused_naming_where(bad):
  """sign₀(NaN) is False >= 0, i.e. -1: NaN codes would be ranked silently as -1 bits."""
  q = np.ones((3, 8), np.float32)
  db = np.ones((70000, 8), np.float32)  # spans two chunks of the finite scan
  db[65540, 5] = bad
  db[2, 1] = bad
  for fn in (retrieval.mean_average_precision, retrieval.evaluate):
    with pytest.raises(ValueError, match=r"database_codes holds 2 non-finite value\(s\).*row 2, bit 1"):
      fn(q, db, np.zeros(3, int), np.zeros(70000, int))
  with pytest.raises(ValueError, match="query_codes holds 1 non-finite"):
    retrieval.hamming_distances(np.where(np.arange(8) == 3, bad, 1.0)[None], db[:4])
  # Inside a user's jit the values are unknown: no check, and the trace still works.
  jax.jit(retrieval.hamming_distances)(jnp.ones((2, 8)), jnp.ones((3, 8)))
