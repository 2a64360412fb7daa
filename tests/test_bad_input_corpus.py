"""Issue 6's bad-input corpus: every bad input gets one clear line, and nothing else changes.

One parametrised table of cases across config, data, bundle, runner and CLI, each run the same
way in its own work folder (the current folder during the case), with the same four checks:

1. the documented error type (API) or exit code 2 (CLI; 143 after SIGTERM, and 0 for a narrower
   `compare`, which is no error but must leave the bundle's recorded certificate alone);
2. exactly one line (the error's text, or stderr) that names the file or key, what was expected
   and what was received (the case's needles);
3. no traceback;
4. nothing under the work folder (nor the shared fixtures a case reads) created, changed or
   deleted, except the command's own declared output.

API cases run in this process. CLI cases run the installed `kerasmed` console script in the work
folder, and are chosen to fail before the CLI imports TensorFlow (half a second each; the
narrower `compare`, which must run, takes three). The two that can only fail after TensorFlow
loads (the data or model is read first) call `kerasmed.cli.main` in this process instead, with
the process's stderr captured, rather than start TensorFlow in a new process for each.
`ISSUE_6` maps every bad input the issue lists to its case.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time

import pytest

# Importing the case modules (one per area, in tests/corpus/) registers their cases in CASES.
from tests.corpus import (  # noqa: F401
    bundle_cases,
    cli_cases,
    cluster_cases,
    config_cases,
    data_cases,
    filesystem_cases,
    output_cases,
    runner_cases,
    training_cases,
)
from tests.corpus.harness import (
    CASES,
    KERASMED,
    Api,
    Work,
    corpus_data,  # noqa: F401 - the fixture the cases ask for
    limited_env,
    limited_file_size,
    preexec,
)
from tests.helpers import (
    changes_outside,
    kerasmed_in_process,
    kerasmed_process,
    tree_snapshot,
)

# --- the one test ---------------------------------------------------------------------------------

def _check_message(text: str, needles, absent) -> None:
    assert "\n" not in text.strip(), f"more than one line:\n{text}"
    assert "Traceback" not in text, text
    for needle in needles:
        if isinstance(needle, re.Pattern):
            assert needle.search(text), (needle.pattern, text)
        else:
            assert needle in text, (needle, text)
    for word in absent:
        assert word not in text, (word, text)


def _run_cli_until(args, cwd, terminate_when) -> subprocess.CompletedProcess:
    proc = subprocess.Popen([str(KERASMED), *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=cwd,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    try:
        deadline = time.monotonic() + 120
        while not terminate_when():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the command never reached the point to stop it"
            time.sleep(0.05)
        time.sleep(0.5)  # well into the work
        assert proc.poll() is None, "the command finished before it could be stopped"
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return subprocess.CompletedProcess(args, proc.returncode, stdout, stderr)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_one_line_and_changes_nothing(case, tmp_path, request, monkeypatch, capfd):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)  # a command that writes to a relative default path writes here
    w = Work(work, request)
    expect = case.build(w)
    watched = {"<work>": work, **{str(p): p for p in w.watched}}
    before = {name: tree_snapshot(p) for name, p in watched.items()}

    if isinstance(expect, Api):
        with pytest.raises(expect.error) as info:
            expect.call()
        _check_message(str(info.value), expect.needles, expect.absent)
    else:
        args = ("-q", *expect.args)
        if expect.terminate_when is not None:
            proc = _run_cli_until(args, work, expect.terminate_when)
        elif expect.in_process:
            assert not expect.unprivileged, "only a subprocess can drop root's capabilities"
            with limited_file_size(expect.file_size_limit):
                proc = kerasmed_in_process(capfd, *args)
        else:
            proc = kerasmed_process(*args, cwd=work, preexec_fn=preexec(expect),
                                    env=limited_env(expect))
        assert proc.returncode == expect.code, (proc.returncode, proc.stdout, proc.stderr)
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        if expect.code == 0:  # a narrower check is no error: it succeeds, stderr stays silent
            assert not lines, proc.stderr
            for needle in expect.needles:
                assert needle in proc.stdout, (needle, proc.stdout)
        else:
            assert len(lines) == 1, f"stderr must be one line:\n{proc.stderr}"
            assert lines[0].startswith("kerasmed"), lines[0]
            _check_message(lines[0], expect.needles, expect.absent)

    for name, path in watched.items():
        outputs = expect.outputs if name == "<work>" else ()
        changed = changes_outside(before[name], tree_snapshot(path), outputs)
        assert not changed, f"changed under {name} ({path}): {changed}"


# Every bad input that issue 6 lists, and the case that runs it.
ISSUE_6 = {
    "1. artefact file: ../../../etc/passwd": "bundle/file-dotdot-etc-passwd",
    "1. artefact file: /etc/passwd with a matching sha256": "bundle/file-absolute-etc-passwd",
    "1. manifest.json holding null": "bundle/manifest-null",
    "1. manifest.json holding 5": "bundle/manifest-5",
    "1. an artefact entry that is a string": "bundle/artefact-a-string",
    "1. an artefact entry with file: 5": "bundle/artefact-file-5",
    "2. demo --workdir deleting the user's data": "cli/demo-workdir-holding-users-data",
    "2. demo deleting data before validating the config": "cli/demo-bad-config-with-overwrite",
    "2. train into a finished run": "cli/train-into-a-finished-run",
    "2. a retrain failing on a truncated DICOM": "cli/train-overwrite-finished-run-with-a-truncated-dicom",
    "3. a narrower compare keeps the certificate": "cli/compare-narrower-keeps-the-certificate",
    "3. compare --max-cases 0": "cli/compare-max-cases-0",
    "3. compare --max-cases negative": "cli/compare-max-cases-negative",
    "4. one NaN voxel into the ONNX runner": "runner/onnx-nan",
    "4. one NaN voxel into the TFLite runner": "runner/tflite-nan",
    "4. a NaN image into predict_image": "runner/predict_image-nan",
    "4. preprocessing.pad_value: .nan": "config/pad-value-nan",
    "4. complex, string or None inputs": "runner/onnx-none",
    "5. patch size not a multiple of 2**depth": "cli/train-patch-size-not-multiple-of-2**depth",
    "5. a non-UTF-8 config": "cli/train-non-utf8-config",
    "5. a non-UTF-8 run config.yaml": "cli/evaluate-non-utf8-run-config",
    "5. a malformed --set value": "cli/train-set-malformed-yaml",
    "5. a reversed hu_window": "cli/train-hu-window-reversed",
    "5. masks of the wrong shape in evaluate": "cli/evaluate-mask-of-another-shape",
    "5. a truncated model.keras in export": "cli/export-truncated-model",
    "5. compare --output <a file>": "cli/compare-output-is-a-file",
    "5. demo --workdir <a file>": "cli/demo-workdir-is-a-file",
    "5. an empty YAML": "cli/train-empty-yaml",
    "5. num_classes: 3 with two class names": "cli/train-num-classes-3-with-two-names",
    "5. bad split_fractions accepted by train": "cli/train-bad-split-fractions",
    "5. an empty mask_path cell": "cli/train-empty-mask-path-cell",
    "5. a 200-byte DICOM": "data/dicom-200-byte-file",
    "5. the CLI advising overwrite=True": "cli/generate-into-a-users-folder",
    "5. demo's default --config outside the repository": "cli/demo-default-config-outside-the-repository",
    "6. SIGTERM during generate": "cli/generate-sigterm",
}

# Issue 16's findings, by its numbered groups, and the cases that run them.
ISSUE_16 = {
    "1. export --output over a stray manifest.json": "cli/export-output-holding-a-stray-manifest-json",
    "1. check-data --output the data folder": "cli/check-data-output-is-the-data-folder",
    "1. compare --output inside a bundle's artefact": "cli/compare-output-in-a-bundles-saved-model",
    "1. explain --output a file": "cli/explain-output-is-a-file",
    "2. a diverging learning rate": "cli/train-learning-rate-1e12-diverges",
    "2. NaN in a cached image": "data/cached-image-with-nan",
    "2. evaluate on NaN weights": "cli/evaluate-a-run-with-nan-weights",
    "2. export of NaN weights": "cli/export-a-run-with-nan-weights",
    "3. a peer that never starts": "cluster/peer-never-starts",
    "3. SIGTERM while waiting for a peer": "cluster/sigterm-while-waiting-for-a-peer",
    "3. --workers 64 on 2 CPUs": "cluster/workers-beyond-cpus-and-memory",
    "3. TF_CONFIG cluster as a list": "cluster/tf-config-cluster-a-list",
    "3. TF_CONFIG index as a string": "cluster/tf-config-index-a-string",
    "3. a worker index outside the cluster": "cluster/tf-config-index-outside-the-cluster",
    "4. full disk: generate": "cli/generate-no-space-left",
    "4. full disk: preprocess": "cli/preprocess-no-space-left",
    "4. full disk: train": "cli/train-no-space-left-for-the-checkpoint",
    "4. full disk: export": "cli/export-no-space-left",
    "4. full disk: evaluate": "cli/evaluate-no-space-left",
    "4. full disk: check-data": "cli/check-data-no-space-left",
    "4. full disk: compare": "cli/compare-no-space-left",
    "4. full disk: explain": "cli/explain-no-space-left",
    "4. a read-only dataset with the default cache": "cli/preprocess-read-only-dataset-default-cache",
    "4. a complete read-only cache": "cli/preprocess-read-only-complete-cache-is-used-as-it-is",
    "4. a read-only bundle with compare's default output": "cli/compare-read-only-bundle-default-output",
    "4. data.cache_dir a file": "cli/train-cache-dir-is-a-file",
    "5. a truncated cached case": "data/cache-truncated-case-refused-by-load_cache",
    "5. a reshaped cached case": "data/cache-reshaped-case-refused-by-load_cache",
    "5. two cached cases swapped": "data/cache-swapped-images-case-refused-by-load_cache",
    "6. RGB PNG in a classifier's data": "data/check-data-classifier-rgb-image",
    "6. palette PNG in a classifier's data": "data/check-data-classifier-palette-image",
    "6. RGB DICOM in a classifier's data": "data/check-data-classifier-dicom-image",
    "6. --skip-bad on a classifier's colour images": "cli/train-skip-bad-skips-a-classifiers-colour-images",
    "6. a split with one class": "cli/train-classifier-val-split-of-one-class",
    "6. a manifest without validation rows": "cli/train-classifier-manifest-without-val-rows",
    "6. model.backbone on a cnn": "cli/train-backbone-on-a-cnn",
    "6. a transfer model on 8x8 input": "cli/train-transfer-on-8x8-images",
    "6. bench-train on a classification config": "cli/bench-train-on-a-classifier",
    "6. temperature scaling at its bound": "cli/evaluate-temperature-scaling-at-its-bound",
    "7. a hand-edited manifest.json": "cli/compare-hand-edited-manifest",
    "7. extra.manifest ../../etc/passwd": "cli/compare-data-manifest-dotdot-etc-passwd",
    "7. extra.manifest /etc/passwd": "cli/compare-data-manifest-etc-passwd",
    "8. name: ../../x": "config/run-name-dotdot-path",
    "8. name: a/b": "config/run-name-subfolder",
}


def test_the_corpus_is_large_distinct_and_covers_issues_6_and_16():
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids)), sorted(i for i in ids if ids.count(i) > 1)
    assert len(ids) >= 100
    areas = {i.split("/")[0] for i in ids}
    assert areas == {"config", "data", "bundle", "runner", "cli", "cluster"}, areas
    missing = {what: i for what, i in {**ISSUE_6, **ISSUE_16}.items() if i not in ids}
    assert not missing, missing
