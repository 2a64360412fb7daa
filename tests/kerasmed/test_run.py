"""`check_run_dir`: which folders training may write into, checked before anything is touched."""

import pytest

from kerasmed.run import BACKUP, BACKUP_METADATA, check_run_dir
from serving.errors import ConfigError
from serving.ownership import RUN, write_marker


def test_new_empty_and_unfinished_runs_are_fine(tmp_path):
    assert check_run_dir(tmp_path / "new") is False
    assert check_run_dir(tmp_path) is False
    write_marker(tmp_path, RUN, "kerasmed train")
    (tmp_path / "config.yaml").write_text("name: x\n")
    assert check_run_dir(tmp_path) is False  # killed before its first backup: starts again


def test_finished_run_needs_overwrite(tmp_path):
    (tmp_path / "config.yaml").write_text("name: x\n")
    (tmp_path / "model.keras").write_bytes(b"model")
    with pytest.raises(ConfigError, match=r"must not hold a finished run.*`kerasmed train --overwrite` "
                       r"\(Python: `train\(config, overwrite=True\)`\).*holding model\.keras$"):
        check_run_dir(tmp_path)
    assert check_run_dir(tmp_path, overwrite=True) is True
    # A committed backup means the run is not finished (killed after writing model.keras): resume.
    (tmp_path / BACKUP).mkdir()
    (tmp_path / BACKUP / BACKUP_METADATA).write_text("{}")
    assert check_run_dir(tmp_path) is False
    # A backup without its metadata was never committed: the run is finished.
    (tmp_path / BACKUP / BACKUP_METADATA).unlink()
    with pytest.raises(ConfigError, match="finished run"):
        check_run_dir(tmp_path)


def test_a_folder_that_is_no_run_needs_overwrite(tmp_path):
    (tmp_path / "thesis.tex").write_text("mine")
    with pytest.raises(ConfigError, match=r"new, empty or a kerasmed run folder.*holding 'thesis.tex'"):
        check_run_dir(tmp_path)
    assert check_run_dir(tmp_path, overwrite=True) is False
    with pytest.raises(ConfigError, match=r"The run folder must be a folder\. Received: .*tex is a file"):
        check_run_dir(tmp_path / "thesis.tex", overwrite=True)
