"""The CLI's contract: helpful --help, and user errors as one line with exit code 2."""

import os
import subprocess
import sys
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
