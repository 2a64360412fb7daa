"""Corpus cases: output flags that must never land on the user's files nor inside a bundle
(issue 16, item 1), and bundles whose manifest was edited or names a data manifest outside the
data folder (item 7).

Every case here fails before TensorFlow is imported, so each runs the installed `kerasmed` as a
process in about half a second. The harness proves the user's files byte-identical afterwards:
they all lie under the work folder, and no case declares an output.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from tests.corpus.harness import (
    Api,
    Cli,
    Work,
    case,
)

# --- item 1: the three data-loss cases of the issue ------------------------------------------------


@case("cli/export-output-holding-a-stray-manifest-json")
def _(w):
    # It used to replace the folder whole, deleting precious.txt, because it held a manifest.json.
    run = w.run_folder()
    out = w.path / "mine"
    w.file("mine/manifest.json", '{"images": ["a.png", "b.png"]}\n')
    w.file("mine/precious.txt", b"precious \x00\xff bytes")
    return Cli(("export", run, "--output", out),
               ("`--output` (the bundle folder) must be absent, empty or a model bundle folder that "
                "kerasmed made", "no .kerasmed marker and is no model bundle of an earlier kerasmed version",
                f"Received: {out} holding 'manifest.json', 'precious.txt'"))


def _data_with_cases_csv(w: Work) -> tuple[Path, Path]:
    """A copy of the tiny dataset whose manifest is `cases.csv` (the README's own example name),
    beside the user's `summary.md`, and a config reading it."""
    data = w.data()
    shutil.move(data / "manifest.csv", data / "cases.csv")
    w.file("data/summary.md", "# My notes on these cases\n")
    return data, w.config({"data": {"root": str(data), "manifest": "cases.csv"}})


@case("cli/check-data-output-is-the-data-folder")
def _(w):
    # It used to overwrite cases.csv (the manifest) and summary.md with the report's.
    data, config = _data_with_cases_csv(w)
    return Cli(("check-data", config, "--output", data),
               ("`--output` (the report folder) must be a folder of its own, not the dataset folder "
                f"`data.root` ({data})", "would overwrite the data's files", f"Received: {data}"))


@case("cli/compare-output-in-a-bundles-saved-model")
def _(w):
    # It used to write the report into the artefact folder; the bundle then failed its own sha256.
    bundle = w.bundle()
    return Cli(("compare", bundle, "--output", bundle / "saved_model"),
               (f"`--output` (the report folder) must not lie inside the model bundle {bundle}",
                "only `compare` writes there, into the bundle's own parity/ or parity_narrower/",
                f"Received: {bundle / 'saved_model'}"))


# --- item 1: every other output flag ------------------------------------------------------------


@case("cli/check-data-output-is-the-manifests-folder")
def _(w):
    data = w.data()
    (data / "lists").mkdir()
    shutil.move(data / "manifest.csv", data / "lists" / "cases.csv")
    config = w.config({"data": {"root": str(data), "manifest": "lists/cases.csv"}})
    return Cli(("check-data", config, "--output", data / "lists"),
               (f"not the folder of the data manifest {data / 'lists' / 'cases.csv'}",
                f"Received: {data / 'lists'}"))


@case("cli/check-data-output-a-users-folder")
def _(w):
    data = w.data()
    config = w.config({"data": {"root": str(data)}})
    w.file("notes/cases.csv", "case,comment\na,good\n")
    w.file("notes/summary.md", "mine\n")
    return Cli(("check-data", config, "--output", w.path / "notes"),
               ("`--output` (the report folder) must be absent, empty or a data check report folder",
                f"Received: {w.path / 'notes'} holding 'cases.csv', 'summary.md'"))


@case("cli/check-data-default-output-a-users-folder")
def _(w):
    data = w.data()
    config = w.config({"data": {"root": str(data)}})
    w.file("data/check/todo.txt", "check these by hand\n")
    return Cli(("check-data", config),
               ("The report folder (default: <data.root>/check) must be absent, empty or a data check "
                "report folder", f"Received: {data / 'check'} holding 'todo.txt'"))


@case("cli/check-data-output-inside-a-bundle")
def _(w):
    bundle = w.bundle()
    config = w.config({"data": {"root": str(w.data())}})
    return Cli(("check-data", config, "--output", bundle / "check"),
               (f"must not lie inside the model bundle {bundle}", f"Received: {bundle / 'check'}"))


@case("cli/compare-output-inside-another-bundle")
def _(w):
    bundle, other = w.bundle(), w.bundle("other")
    return Cli(("compare", bundle, "--output", other / "parity"),
               (f"must not lie inside the model bundle {other}", f"Received: {other / 'parity'}"))


@case("cli/compare-output-a-users-folder-with-a-manifest-json")
def _(w):
    bundle = w.bundle()
    w.file("mine/manifest.json", '{"mine": true}\n')
    w.file("mine/precious.txt", "precious\n")
    return Cli(("compare", bundle, "--output", w.path / "mine"),
               ("`--output` (the report folder) must be absent, empty or a parity report folder that "
                "kerasmed made", f"Received: {w.path / 'mine'} holding 'manifest.json', 'precious.txt'"))


@case("cli/compare-output-the-bundle-itself")
def _(w):
    bundle = w.bundle()
    return Cli(("compare", bundle, "--output", bundle),
               ("must be absent, empty or a parity report folder that kerasmed made",
                "marker says: model bundle made by kerasmed export", f"Received: {bundle} holding"))


@case("cli/export-output-inside-a-bundle")
def _(w):
    run, bundle = w.run_folder(), w.bundle()
    return Cli(("export", run, "--output", bundle / "v2"),
               (f"`--output` (the bundle folder) must not lie inside the model bundle {bundle}",
                f"Received: {bundle / 'v2'}"))


@case("cli/export-default-output-a-users-folder")
def _(w):
    run = w.run_folder()
    w.file("run/bundle/readme.txt", "my own notes\n")
    return Cli(("export", run),
               ("The bundle folder (default: RUN_DIR/bundle) must be absent, empty or a model bundle",
                f"Received: {run / 'bundle'} holding 'readme.txt'"))


@case("cli/export-output-a-bundle-with-a-users-file")
def _(w):
    # A bundle of an earlier version (no marker) is replaced only if it holds nothing else.
    run, bundle = w.run_folder(), w.bundle()
    (bundle / ".kerasmed").unlink()
    w.file("bundle/my-notes.txt", "which run this was\n")
    return Cli(("export", run, "--output", bundle),
               ("no .kerasmed marker and is no model bundle of an earlier kerasmed version",
                f"Received: {bundle} holding"))


@case("cli/generate-output-inside-a-bundle")
def _(w):
    bundle = w.bundle()
    return Cli(("generate", w.config(), "--output", bundle / "data"),
               (f"must not lie inside the model bundle {bundle}", f"Received: {bundle / 'data'}"))


@case("cli/explain-output-is-a-file")
def _(w):
    run = w.run_folder()
    path = w.file("explain.png", b"\x89PNG mine")
    return Cli(("explain", run, w.file("image.png", b"not read"), "--output", path),
               ("`--output` (the explanation folder) must be a folder", f"Received: {path} is a file"))


@case("cli/explain-output-a-users-folder")
def _(w):
    run = w.run_folder()
    w.file("figures/explain.csv", "mine\n")
    w.file("figures/figure1.png", b"\x89PNG mine")
    return Cli(("explain", run, w.file("image.png", b"not read"), "--output", w.path / "figures"),
               ("`--output` (the explanation folder) must be absent, empty or a saliency report folder",
                f"Received: {w.path / 'figures'} holding 'explain.csv', 'figure1.png'"))


@case("cli/explain-output-inside-a-bundle")
def _(w):
    run, bundle = w.run_folder(), w.bundle()
    return Cli(("explain", run, w.file("image.png", b"not read"), "--output", bundle / "saved_model"),
               (f"must not lie inside the model bundle {bundle}", f"Received: {bundle / 'saved_model'}"))


def _bench_case(command: str, w: Work) -> Cli:
    w.file("results/train.json", '{"mine": 1}\n')
    w.file("results/thesis.tex", "\\section{Results}\n")
    return Cli((command, w.config(), "--output", w.path / "results"),
               ("`--output` (the benchmark folder) must be absent, empty or a benchmark report folder",
                f"Received: {w.path / 'results'} holding 'thesis.tex', 'train.json'"))


for _command in ("bench-train", "bench-ingest", "bench-seeds"):
    case(f"cli/{_command}-output-a-users-folder")(lambda w, c=_command: _bench_case(c, w))


@case("cli/bench-train-output-inside-a-bundle")
def _(w):
    bundle = w.bundle()
    return Cli(("bench-train", w.config(), "--output", bundle / "bench"),
               (f"must not lie inside the model bundle {bundle}", f"Received: {bundle / 'bench'}"))


# --- item 7: bundles --------------------------------------------------------------------------------


@case("cli/compare-hand-edited-manifest")
def _(w):
    # A full compare used to pass and then rewrite the certificate over the edit.
    bundle = w.bundle()
    path = bundle / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["postprocessing"]["threshold"] = 0.05
    path.write_text(json.dumps(manifest, indent=2) + "\n")
    return Cli(("compare", bundle),
               (f"{path} was edited after kerasmed wrote it", "no longer matches its recorded "
                "`manifest_sha256`", "export the bundle again", "Received: sha256="))


def _data_manifest(w: Work, name) -> Path:
    bundle = w.bundle()
    path = bundle / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["extra"]["manifest"] = name
    path.write_text(json.dumps(manifest))
    return bundle


_OUTSIDE = ("`extra.manifest` in manifest.json (the validation data's manifest) must be a relative POSIX "
            "path inside the data folder")


@case("cli/compare-data-manifest-dotdot-etc-passwd")
def _(w):
    bundle = _data_manifest(w, "../../etc/passwd")
    return Cli(("compare", bundle, "--data", w.data()), (_OUTSIDE, "Received: '../../etc/passwd'"))


@case("cli/compare-data-manifest-etc-passwd")
def _(w):
    bundle = _data_manifest(w, "/etc/passwd")
    return Cli(("compare", bundle), (_OUTSIDE, "Received: '/etc/passwd'"))


@case("bundle/data-manifest-symlink-out-of-the-data-folder")
def _(w):
    from serving.bundle import data_manifest_path
    from serving.errors import BundleError

    data = w.data()
    (data / "val.csv").symlink_to("/etc/passwd")
    return Api(lambda: data_manifest_path(data, "val.csv"), BundleError,
               ("must resolve inside the data folder", "Received: 'val.csv' -> '/etc/passwd'"))


@case("bundle/manifest-version-2-without-its-digest")
def _(w):
    from serving.bundle import load_bundle
    from serving.errors import BundleError

    bundle = w.bundle()
    path = bundle / "manifest.json"
    manifest = json.loads(path.read_text())
    del manifest["manifest_sha256"]
    path.write_text(json.dumps(manifest))
    return Api(lambda: load_bundle(bundle), BundleError,
               ("was edited after kerasmed wrote it", "recorded None"))
