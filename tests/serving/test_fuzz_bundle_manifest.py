"""Fuzzing `load_bundle` with >= 1,000 mutated manifest.json files (byte-level and structured:
keys deleted, renamed or retyped, odd artefact paths), slow tier: the only outcomes allowed are a
valid `Bundle` or a `BundleError`. The mutator is tests/serving/fuzzing.py."""

from __future__ import annotations

import copy
import json
import math
import shutil
from collections import Counter

import pytest

from serving.bundle import DIGEST_KEY, manifest_digest
from serving.errors import KerasmedError
from tests.serving.fuzzing import (
    N_MUTATIONS,
    Outcomes,
    _pick,
    _short,
    case_rng,
    mutate,
)

# ---------------------------------------------------------------------------------------------
# manifest.json: byte-level and structured mutations of a copied bundle's manifest.

# Values written where the schema expects something else. "@@...@@" strings become raw JSON
# text after dumping: integers json.dumps cannot write, and nesting deeper than any parser stack.
_ODD_VALUES = (
    None, True, False, 0, -1, 1.5, math.nan, math.inf, -math.inf, 2**63, -(2**63) - 1, 1e308,
    "@@BIG@@", "@@HUGE@@", "@@DEEP@@", "", " ", "x" * 10000, "\u0000", "\ud800", "../x", "onnx",
    [], [None], ["a", 1], {}, {"": None}, {"format": "onnx"},
)
_RAW = {
    '"@@BIG@@"': "1" + "0" * 400,  # parses, but overflows float()
    '"@@HUGE@@"': "9" * 5000,  # beyond Python's int string-conversion limit
    '"@@DEEP@@"': "[" * 100_000 + "]" * 100_000,
}
ODD_FILES = (
    "../x", "../../etc/passwd", "/etc/passwd", "", "a\u0000b", "x" * 300, "a/" * 3000,
    "C:\\model.onnx", "C:model.onnx", "\\\\server\\share\\x", "model.onnx/", ".", "./",
    "saved_model/../model.onnx", "manifest.json", "saved_model", "model.onnx\n", " model.onnx",
    "\ud800", "nonexistent.onnx", "~/x", "//etc/passwd", "file:///etc/passwd",
    "saved_model/variables", "saved_model/saved_model.pb", "\u00e9.onnx",
)
_IMPORTANT = (
    ("task",), ("input",), ("artefacts",), ("class_names",), ("postprocessing",), ("parity",),
    ("postprocessing", "threshold"), ("input", "preprocessing"),
    ("input", "preprocessing", "target_spacing"), ("input", "preprocessing", "size"),
    ("input", "preprocessing", "pad_value"), ("name",),
)
_ARTEFACT_FIELDS = ("format", "key", "precision", "converter", "file", "sha256")


def _slots(node, out: list) -> list:
    """Every `(container, key)` under `node`, depth first."""
    if isinstance(node, dict):
        for k in list(node):
            out.append((node, k))
            _slots(node[k], out)
    elif isinstance(node, list):
        for i in range(len(node)):
            out.append((node, i))
            _slots(node[i], out)
    return out


def _odd_value(rng):
    # A copy: the constants' lists and dicts must not be shared, or mutated by a later edit.
    return copy.deepcopy(_pick(_ODD_VALUES, rng))


def _artefacts(m) -> list:
    a = m.get("artefacts") if isinstance(m, dict) else None
    return [e for e in a if isinstance(e, dict)] if isinstance(a, list) else []


def _breaking_op(m, rng) -> tuple[object, str]:
    """One schema-breaking (or at least suspicious) edit of the parsed manifest `m`."""
    how = int(rng.integers(9))
    entries = _artefacts(m)
    if how == 0 and isinstance(m, dict):
        path = _pick(_IMPORTANT, rng)
        node = m
        for k in path[:-1]:
            node = node.get(k) if isinstance(node, dict) else None
        if isinstance(node, dict):
            value = _odd_value(rng)
            node[path[-1]] = value
            return m, f"{'.'.join(path)}={_short(value)}"
    if how == 1 and entries:
        entry, field = _pick(entries, rng), _pick(_ARTEFACT_FIELDS, rng)
        value = _odd_value(rng)
        entry[field] = value
        return m, f"artefact.{field}={_short(value)}"
    if how == 2 and entries:
        entry, value = _pick(entries, rng), _pick(ODD_FILES, rng)
        entry["file"] = value
        return m, f"artefact.file={_short(value)}"
    if how == 3 and entries:
        entry = _pick(entries, rng)
        sha = entry.get("sha256") if isinstance(entry.get("sha256"), str) else "0" * 64
        value = _pick((sha.upper(), sha[:63], rng.bytes(32).hex(), sha + "0",
                       _pick(entries, rng).get("sha256")), rng)
        entry["sha256"] = value
        return m, f"artefact.sha256={_short(value)}"
    if how == 4 and isinstance(m.get("artefacts") if isinstance(m, dict) else None, list) and entries:
        m["artefacts"].append(copy.deepcopy(_pick(entries, rng)))
        return m, "duplicate artefact"
    slots = _slots(m, [])
    if how == 5 and slots:
        parent, key = _pick(slots, rng)
        del parent[key]
        return m, f"delete {key!r}"
    dict_slots = [(p, k) for p, k in slots if isinstance(p, dict)]
    if how == 6 and dict_slots:
        parent, key = _pick(dict_slots, rng)
        new = _pick((key + "_", key.upper(), "", " " + key, key[:-1]), rng)
        parent[new] = parent.pop(key)
        return m, f"rename {key!r}->{new!r}"
    if how == 7:
        value = _odd_value(rng)
        return value, f"root={_short(value)}"
    if slots:
        parent, key = _pick(slots, rng)
        value = _odd_value(rng)
        parent[key] = value
        return m, f"[{key!r}]={_short(value)}"
    return _odd_value(rng), "root replaced"


def _valid_op(m, rng) -> str:
    """One edit that keeps a valid manifest valid (the bundle must still load)."""
    entries = m["artefacts"]
    how = int(rng.integers(9))
    if how == 0:
        m["extra_" + rng.bytes(3).hex()] = _pick((1, "x", [1, 2], {"a": None}, None), rng)
        return "extra top-level key"
    if how == 1:
        m["name"] = "n\u00e9 " + rng.bytes(4).hex()
        return "rename bundle"
    if how == 2:
        order = rng.permutation(len(entries))
        m["artefacts"] = [entries[j] for j in order]
        return f"reorder artefacts {order.tolist()}"
    if how == 3 and len(entries) > 1:
        dropped = entries.pop(int(rng.integers(len(entries))))
        return f"drop artefact {artefact_key_of(dropped)}"
    if how == 4:
        entry = _pick(entries, rng)
        entry["file"] = "./" + entry["file"]
        return f"file {entry['file']}"
    if how == 5:
        m["class_names"] = [rng.bytes(2).hex() for _ in range(int(rng.integers(0, 4)))]
        return "class names"
    if how == 6:
        m.setdefault("postprocessing", {})["threshold"] = float(rng.random())
        return "threshold"
    if how == 7:
        entry = _pick(entries, rng)
        entry["key"] = "k_" + rng.bytes(4).hex()
        return "new artefact key"
    m["parity"] = {"verdict": _pick(("pass", "fail", "not_run", "?"), rng)}
    return "parity"


def artefact_key_of(entry) -> str:
    return entry.get("key", entry.get("format"))


def _dump(m, rng) -> bytes:
    text = json.dumps(m, indent=_pick((None, 2, 4), rng), ensure_ascii=bool(rng.random() < 0.7))
    for sentinel, raw in _RAW.items():
        text = text.replace(sentinel, raw)
    return text.encode("utf-8", "surrogatepass")


def json_case(index: int, seed_text: bytes) -> tuple[bytes, list[str], bool]:
    """Case `index` of the manifest.json fuzzer: `(bytes, operations, must_load)`.

    Even cases are byte-level mutations of the text; odd ones structured: a third of those keep
    the manifest valid (must load, its `manifest_sha256` recomputed), the rest apply 1-3
    breaking edits."""
    rng = case_rng("manifest-json", index)
    if index % 2 == 0:
        data, ops = mutate(seed_text, rng, None)
        return data, ops, False
    m = json.loads(seed_text)
    if rng.random() < 1 / 3:
        ops = [_valid_op(m, rng) for _ in range(int(rng.integers(1, 4)))]
        # Sealed again, as `export` would write them: an unsealed edit is refused (manifest_sha256).
        m[DIGEST_KEY] = manifest_digest(m)
        return _dump(m, rng), ops, True
    ops = []
    for _ in range(int(rng.integers(1, 4))):
        m, op = _breaking_op(m, rng)
        ops.append(op)
    return _dump(m, rng), ops, False


ACCESSORS = ("name", "task", "class_names", "preprocess_spec", "postprocess", "threshold",
             "parity", "artefact_keys")


def _use_bundle(bundle, refusals: Counter):
    """Touch every manifest-backed accessor of a loaded bundle: each must return or raise a
    KerasmedError (counted in `refusals`, the bundle still counts as loaded)."""
    for name in ACCESSORS:
        try:
            getattr(bundle, name)
        except KerasmedError as err:
            refusals[f"{name}: {type(err).__name__}"] += 1
    repr(bundle)
    return bundle


@pytest.mark.slow
def test_fuzz_bundle_manifest_json(bundle_dir, tmp_path, capsys):
    from serving.bundle import Bundle, load_bundle

    bundle = shutil.copytree(bundle_dir, tmp_path / "bundle")
    seed_text = (bundle / "manifest.json").read_bytes()
    outcomes = Outcomes("manifest-json")
    loaded_by_kind: Counter[str] = Counter()
    accessor_refusals: Counter[str] = Counter()

    def check(result):
        return None if isinstance(result, Bundle) else f"not a Bundle: {type(result).__name__}"

    for i in range(N_MUTATIONS):
        data, ops, must_load = json_case(i, seed_text)
        (bundle / "manifest.json").write_bytes(data)
        kind = "byte" if i % 2 == 0 else ("keep-valid" if must_load else "structured")
        before = outcomes.valid
        outcomes.run(f"manifest-json#{i} ({kind}) ops={ops}",
                     lambda: _use_bundle(load_bundle(bundle), accessor_refusals), check,
                     must_succeed=must_load)
        loaded_by_kind[kind] += outcomes.valid - before
    outcomes.notes.append(f"loaded by kind: {dict(loaded_by_kind)}; accessors of loaded bundles "
                          f"that refused: {dict(accessor_refusals)}")
    outcomes.finish(capsys)
