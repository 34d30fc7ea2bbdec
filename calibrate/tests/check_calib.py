"""Checks a calibration file written by ggml-qat-calibrate.

  check_calib.py layout OURS.gguf
      llama-imatrix's layout and metadata; each Gram symmetric, its diagonal
      equal to in_sum2 / counts of every weight reading it (rel. 1e-5).
  check_calib.py factors OURS.gguf MIN MAX
      the sensitivities: the restored model's KL divergence (the floor) at
      most 1e-5, every group's KL divergence in [MIN, MAX]; the
      planner's role factors equal to KLD / mean relative squared error of
      each role with both above zero, the depth factors to the thirds' KLD.
  check_calib.py imatrix OURS.gguf THEIRS.gguf TOL
      every weight of llama-imatrix's file is in ours with the same counts
      and in_sum2 within relative TOL (max over columns of |a-b| / max|b|).

Prints one summary line; exits 1 with a message on a mismatch."""

import sys

import numpy as np
from gguf import GGUFReader


def load(path):
    r = GGUFReader(path)
    tensors = {t.name: np.array(t.data, dtype=np.float64) for t in r.tensors}
    fields = {}
    for name, f in r.fields.items():
        if f.types and f.types[0] == 8:  # string
            fields[name] = bytes(f.parts[-1]).decode()
        elif f.types and f.types[0] == 9:  # array
            if f.types[-1] == 8:
                fields[name] = [bytes(f.parts[i]).decode() for i in f.data]
            elif f.types[-1] == 6:  # float32
                fields[name] = [float(f.parts[i][0]) for i in f.data]
            else:
                fields[name] = None
        else:
            fields[name] = f.parts[-1].tolist()[0] if len(f.parts) else None
    return tensors, fields


def fail(msg):
    print("check_calib: FAIL:", msg)
    sys.exit(1)


HEADS = ("output.weight", "token_embd.weight")


def layout(path, want_head=False):
    t, f = load(path)
    if f.get("general.type") != "imatrix":
        fail("general.type is not imatrix")
    for k in ("imatrix.datasets", "imatrix.chunk_count", "imatrix.chunk_size"):
        if k not in f:
            fail(f"missing {k}")
    names = [n[: -len(".in_sum2")] for n in t if n.endswith(".in_sum2")]
    if not names or any(n + ".counts" not in t for n in names):
        fail("in_sum2 without counts")
    users, grams = f.get("ggml_qat.gram.weights", []), f.get("ggml_qat.gram.tensors", [])
    if len(users) != len(grams):
        fail("gram weights and tensors differ in length")
    worst, heads = 0.0, []
    for w, g in zip(users, grams):
        G = t[g]
        if not np.allclose(G, G.T, rtol=0, atol=0):
            fail(f"{g} is not symmetric")
        if w + ".in_sum2" not in t:
            # the output head: a Gram matrix only, unless --process-output
            if w not in HEADS:
                fail(f"{w} has a Gram matrix but no in_sum2")
            if np.min(np.diag(G)) < 0 or np.max(np.diag(G)) <= 0:
                fail(f"{g}: diagonal negative or all zero")
            heads.append(w)
            continue
        diag = t[w + ".in_sum2"].reshape(-1) / t[w + ".counts"].reshape(-1)[0]
        err = np.max(np.abs(np.diag(G) - diag)) / max(np.max(np.abs(diag)), 1e-30)
        worst = max(worst, err)
        if err > 1e-5:
            fail(f"{g} diagonal differs from {w} in_sum2/counts by {err:.3g}")
    if want_head and not any(h in users for h in HEADS):
        fail("no Gram matrix for the output head")
    print(f"check_calib: layout ok: {len(names)} weights, {len(set(grams))} Gram matrices "
          f"shared by {len(users)} weights (output head: {heads or 'in the imatrix part' if any(h in users for h in HEADS) else 'none'}), "
          f"Gram diagonal vs in_sum2/counts max rel err {worst:.2e}")


def imatrix(ours, theirs, tol):
    a, _ = load(ours)
    b, _ = load(theirs)
    names = [n[: -len(".in_sum2")] for n in b if n.endswith(".in_sum2")]
    if not names:
        fail("llama-imatrix's file holds no entries")
    extra = sorted(n[: -len(".in_sum2")] for n in a if n.endswith(".in_sum2") and n[: -len(".in_sum2")] not in names)
    if extra:
        fail(f"ours has entries llama-imatrix does not write: {extra}")
    worst = 0.0
    for n in names:
        if n + ".in_sum2" not in a:
            fail(f"{n} missing from ours")
        if not np.array_equal(a[n + ".counts"], b[n + ".counts"]):
            fail(f"{n}: counts {a[n + '.counts']} vs {b[n + '.counts']}")
        x, y = a[n + ".in_sum2"], b[n + ".in_sum2"]
        err = np.max(np.abs(x - y)) / max(np.max(np.abs(y)), 1e-30)
        worst = max(worst, err)
        if err > tol:
            fail(f"{n}: in_sum2 differs by {err:.3g} > {tol}")
    print(f"check_calib: {len(names)} weights equal to llama-imatrix's, max rel err {worst:.2e} (tol {tol})")


def factors(path, lo, hi):
    _, f = load(path)
    groups, kld, nsr = (f.get("ggml_qat.sensitivity." + k) for k in ("groups", "kld", "nsr"))
    if not groups or len(kld) != len(groups) or len(nsr) != len(groups):
        fail("sensitivity groups, kld and nsr missing or of different lengths")
    floor = f.get("ggml_qat.sensitivity.floor", [None])[0]
    if floor is None or not 0 <= floor <= 1e-5:
        fail(f"the restored model's KL divergence (floor) is {floor}, not near 0: a weight was not restored")
    for g, k in zip(groups, kld):
        if not lo <= k <= hi:
            fail(f"{g}: KL divergence {k:.3g} outside [{lo}, {hi}]")
    roles, values = f.get("ggml_qat.factors.roles", []), f.get("ggml_qat.factors.values", [])
    want = {g: k / n for g, k, n in zip(groups, kld, nsr) if not g.startswith("depth") and k > 0 and n > 0}
    if set(roles) != set(want) or len(values) != len(roles):
        fail(f"factor roles {roles} vs measured {sorted(want)}")
    for r, v in zip(roles, values):
        if abs(v - want[r]) > 1e-4 * abs(want[r]):
            fail(f"{r}: factor {v} vs KLD/NSR {want[r]}")
    depth = [k for g, k in zip(groups, kld) if g.startswith("depth")]
    if len(depth) == 3 and min(depth) > 0 and f.get("ggml_qat.factors.depth") is None:
        fail("three depth thirds measured but no depth factors")
    print("check_calib: factors ok: " + ", ".join(f"{g} {k:.3g}" for g, k in zip(groups, kld))
          + f"; floor {floor:.3g}")


if __name__ == "__main__":
    if sys.argv[1] == "layout":
        layout(sys.argv[2], want_head=sys.argv[3:] == ["head"])
    elif sys.argv[1] == "factors":
        factors(sys.argv[2], float(sys.argv[3]), float(sys.argv[4]))
    else:
        imatrix(sys.argv[2], sys.argv[3], float(sys.argv[4]))
