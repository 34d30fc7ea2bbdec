#!/usr/bin/env python3
"""Compares two GGUF files tensor by tensor (by name) with the `gguf` Python
package: types, shapes and data bytes; and their key/values (except the
listed ones). Usage: compare-gguf.py A.gguf B.gguf [--ignore-kv KEY ...]
Exit status 0 when every tensor matches."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".deps", "python"))
from gguf import GGUFReader  # noqa: E402

a, b = GGUFReader(sys.argv[1]), GGUFReader(sys.argv[2])
ignore = set(sys.argv[4:]) if len(sys.argv) > 3 and sys.argv[3] == "--ignore-kv" else set()
ta = {t.name: t for t in a.tensors}
tb = {t.name: t for t in b.tensors}
bad = 0
if set(ta) != set(tb):
    print("tensor names differ:", sorted(set(ta) ^ set(tb)))
    bad += 1
same_bytes = 0
for name in ta:
    if name not in tb:
        continue
    x, y = ta[name], tb[name]
    if x.tensor_type != y.tensor_type or list(x.shape) != list(y.shape):
        print(f"{name}: {x.tensor_type.name} {list(x.shape)} vs {y.tensor_type.name} {list(y.shape)}")
        bad += 1
    elif bytes(x.data.tobytes()) != bytes(y.data.tobytes()):
        print(f"{name}: same type {x.tensor_type.name}, different bytes")
        bad += 1
    else:
        same_bytes += 1
fa = {f.name: f for f in a.fields.values()}
fb = {f.name: f for f in b.fields.values()}
for k in sorted(set(fa) | set(fb)):
    if k in ignore or k.startswith("GGUF."):
        continue
    if k not in fa or k not in fb:
        print(f"key {k} only in {'A' if k in fa else 'B'}")
        bad += 1
        continue
    va = [bytes(p.tobytes()) for p in fa[k].parts]
    vb = [bytes(p.tobytes()) for p in fb[k].parts]
    if va != vb:
        print(f"key {k}: values differ")
        bad += 1
print(f"{same_bytes}/{len(ta)} tensors byte-identical, {len(fa)} keys; {bad} differences")
sys.exit(1 if bad else 0)
