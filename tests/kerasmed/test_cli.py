"""The CLI's contract: helpful --help, and user errors as one line with exit code 2."""

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "configs" / "lung_nodule_seg_2d.yaml"
COMMANDS = ("generate", "train", "evaluate", "export", "compare", "demo")


def run_cli(*args, cwd=None):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run(
        [sys.executable, "-m", "kerasmed.cli", *map(str, args)],
        capture_output=True, text=True, cwd=cwd or ROOT, env=env, timeout=300,
    )


def test_top_level_help_lists_every_command():
    out = run_cli("--help")
    assert out.returncode == 0
    for command in COMMANDS:
        assert command in out.stdout


@pytest.mark.parametrize("command", COMMANDS)
def test_each_subcommand_help_describes_its_arguments(command):
    out = run_cli(command, "--help")
    assert out.returncode == 0, out.stderr
    assert f"usage: kerasmed {command}" in out.stdout
    assert "options:" in out.stdout and len(out.stdout.splitlines()) >= 6


def _assert_one_line_error(out, *needles):
    assert out.returncode == 2, (out.stdout, out.stderr)
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, out.stderr
    assert "Traceback" not in out.stderr
    for needle in needles:
        assert needle in lines[0]


def test_unknown_config_key_is_one_line_exit_2(tmp_path):
    bad = tmp_path / "bad.yaml"
    text = CONFIG.read_text()
    assert "  filters: " in text
    bad.write_text(text.replace("  filters: ", "  filterz: "))
    _assert_one_line_error(run_cli("train", bad), "model.filterz", "Received")


def test_negative_patch_size_is_one_line_exit_2(tmp_path):
    bad = tmp_path / "bad.yaml"
    text = CONFIG.read_text()
    assert "patch_size: [" in text
    bad.write_text(text.replace("patch_size: [", "patch_size: [-96, "))
    _assert_one_line_error(run_cli("train", bad), "sampling.patch_size", "-96")


def test_missing_data_folder_is_one_line_exit_2(tmp_path):
    _assert_one_line_error(
        run_cli("train", CONFIG, "--set", f"data.root={tmp_path / 'nowhere'}",
                "--run-dir", tmp_path / "run"),
        "Data folder not found", "nowhere",
    )


def test_evaluate_and_export_on_non_run_folder(tmp_path):
    _assert_one_line_error(run_cli("evaluate", tmp_path), "run folder")
    _assert_one_line_error(run_cli("export", tmp_path), "run folder")


def test_train_help_documents_workers_and_resume():
    out = run_cli("train", "--help")
    assert "--workers N" in out.stdout and "resumes" in out.stdout


def test_zero_workers_is_one_line_exit_2():
    _assert_one_line_error(run_cli("train", CONFIG, "--workers", "0"), "--workers", "Received")


@pytest.mark.parametrize("how", ["file", "--set"])
def test_nan_pad_value_is_one_line_exit_2(tmp_path, how):
    # A NaN pad value used to train and predict all-NaN without an error.
    if how == "--set":
        out = run_cli("train", CONFIG, "--set", "preprocessing.pad_value=.nan")
    else:
        bad = tmp_path / "bad.yaml"
        text = CONFIG.read_text()
        assert "  pad_value: " in text
        bad.write_text("\n".join(
            "  pad_value: .nan" if line.startswith("  pad_value: ") else line
            for line in text.splitlines()
        ))
        out = run_cli("train", bad)
    _assert_one_line_error(
        out, "preprocessing.pad_value", "finite", "Received: preprocessing.pad_value=nan"
    )


# Issue 6: each of these gave a traceback, ran on silently, or said something misleading.
def _write_config(path, **sections):
    """The shipped config with some keys replaced: `_write_config(p, model={"depth": 4})`."""
    import yaml

    raw = yaml.safe_load(CONFIG.read_text())
    for section, values in sections.items():
        if isinstance(values, dict):
            raw[section].update(values)
        else:
            raw[section] = values
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


@pytest.mark.parametrize("sections, needles", [
    ({"sampling": {"patch_size": [60, 64]}}, ("sampling.patch_size", "2**model.depth = 8", "[60, 64]")),
    ({"preprocessing": {"size": [None, 250, 250]}}, ("preprocessing.size", "[None, 250, 250]")),
    ({"model": {"hu_window": [400, -1000]}}, ("model.hu_window", "low < high", "[400, -1000]")),
    ({"model": {"num_classes": 3}}, ("model.class_names", "model.num_classes=3")),
    ({"synthetic": {"split_fractions": [0.9, 0.3, -0.2]}}, ("synthetic.split_fractions", "[0.9, 0.3, -0.2]")),
])
def test_config_rules_are_one_line_exit_2_before_training(tmp_path, sections, needles):
    bad = _write_config(tmp_path / "bad.yaml", **sections)
    _assert_one_line_error(run_cli("train", bad, "--run-dir", tmp_path / "run"), str(bad), *needles)
    assert not (tmp_path / "run").exists()


def test_empty_and_non_utf8_config_files_are_one_line_exit_2(tmp_path):
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    _assert_one_line_error(run_cli("train", empty), str(empty), "Received: an empty file")
    latin = tmp_path / "latin.yaml"
    latin.write_bytes(CONFIG.read_bytes() + "# café\n".encode("latin-1"))
    _assert_one_line_error(run_cli("generate", latin), str(latin), "must be UTF-8", "0xe9")


@pytest.mark.parametrize("override, needles", [
    ("training.epochs=[1,", ("override `training.epochs` must be valid YAML", "'training.epochs=[1,'")),
    ("noequals", ("`--set`", "section.key=value", "'noequals'")),
])
def test_malformed_set_is_one_line_exit_2(override, needles):
    _assert_one_line_error(run_cli("train", CONFIG, "--set", override), *needles)


def _fake_run(run_dir, model_bytes, config_text=None):
    """A run folder as `train` leaves it, as far as `evaluate`/`export` look before loading."""
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text(config_text or CONFIG.read_text())
    (run_dir / "model.keras").write_bytes(model_bytes)
    return run_dir


def test_non_utf8_run_config_is_one_line_exit_2(tmp_path):
    run = _fake_run(tmp_path / "run", b"")
    (run / "config.yaml").write_bytes(b"name: caf\xe9\n")
    with zipfile.ZipFile(run / "model.keras", "w") as archive:
        archive.writestr("config.json", "{}")
    for command in ("evaluate", "export"):
        _assert_one_line_error(run_cli(command, run), str(run / "config.yaml"), "must be UTF-8")


@pytest.mark.parametrize("command", ["export", "evaluate"])
def test_truncated_model_keras_is_one_line_exit_2(tmp_path, command):
    # Keras said "File not found" for this file, which exists.
    run = _fake_run(tmp_path / "run", b"PK\x03\x04" + bytes(300))
    _assert_one_line_error(
        run_cli(command, run), f"`{run / 'model.keras'}` must be a readable .keras archive",
        "truncated or corrupt", "Received: a 304-byte file that is not a zip archive",
    )
    assert sorted(p.name for p in run.iterdir()) == ["config.yaml", "model.keras"]


def test_compare_refuses_a_file_as_output_before_any_work(tmp_path):
    report = tmp_path / "report.md"
    report.write_text("mine")
    # The bundle does not even exist: the output is checked first.
    _assert_one_line_error(run_cli("compare", tmp_path / "no_bundle", "--output", report),
                           "`--output` (the report folder) must be a folder", str(report))
    assert report.read_text() == "mine"


def test_empty_mask_path_cell_is_one_line_exit_2(tmp_path):
    # An empty cell used to become the data folder itself, read as a DICOM series.
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.npy").write_bytes(b"")
    (data / "manifest.csv").write_text(
        "case_id,image_path,mask_path,split\nc0,a.npy,a.npy,train\nc1,a.npy,,val\n")
    _assert_one_line_error(
        run_cli("train", CONFIG, "--set", f"data.root={data}", "--run-dir", tmp_path / "run"),
        "`mask_path` must name a file in every row", "case 'c1' (line 3)",
    )


def test_demo_finds_its_default_config_from_any_folder(tmp_path):
    # `--config` defaulted to configs/lung_nodule_seg_2d.yaml relative to the current folder, so
    # outside the repository `kerasmed demo` failed with "Config file not found". A bad override
    # shows the shipped config was read, and stops the demo before it writes anything.
    out = run_cli("demo", "--workdir", tmp_path / "w", "--set", "model.depth=0", cwd=tmp_path)
    _assert_one_line_error(out, "lung_nodule_seg_2d.yaml", "model.depth")
    assert "not found" not in out.stderr
    assert sorted(tmp_path.iterdir()) == []


def test_a_write_the_file_system_refuses_is_one_line_exit_2_and_a_bug_keeps_its_traceback(
        monkeypatch, capsys):
    # Outside `serving.atomic` (which names its target), as an OSError or as TensorFlow's C++
    # writers report it, with no errno: "<path>; <strerror>".
    import errno

    import kerasmed.cli as cli

    class OutOfRangeError(Exception):  # as tensorflow.python.framework.errors_impl names it
        __module__ = "tensorflow.python.framework.errors_impl"

    def refused(args):
        raise PermissionError(errno.EACCES, "Permission denied", "/data/cache/.lock")

    monkeypatch.setattr(cli, "_generate", refused)
    assert cli.main(["generate", str(CONFIG)]) == 2
    err = capsys.readouterr().err
    assert err == ("kerasmed generate: error: Cannot write /data/cache/.lock: permission denied (make "
                   "it writable or choose another folder). Received: [Errno 13] Permission denied\n")

    tf_error = OutOfRangeError("{{function_node __wrapped__SaveV2_device_/job:localhost/replica:0}} "
                               "/out/.bundle.tmp-0a1b2c3d/saved_model/variables/x.tempstate1; "
                               "File too large [Op:SaveV2]")
    assert str(cli.file_system_refusal(tf_error)).startswith(
        "Cannot write /out/bundle/saved_model/variables/x.tempstate1: no space left for the file")
    assert cli.file_system_refusal(OutOfRangeError("End of sequence")) is None
    assert cli.file_system_refusal(ValueError("/x; File too large")) is None  # not TensorFlow's

    def bug(args):
        raise FileNotFoundError(errno.ENOENT, "No such file or directory", "/x")

    monkeypatch.setattr(cli, "_generate", bug)
    with pytest.raises(FileNotFoundError):
        cli.main(["generate", str(CONFIG)])
