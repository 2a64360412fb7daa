"""Where `kerasmed check-data` may write its report: its own folder, never the data (issue 16)."""

import pandas as pd
import pytest

from kerasmed.config import config_from_dict
from kerasmed.data.check import CheckReport, check_report_folder
from serving.errors import ConfigError
from serving.ownership import CHECK_REPORT, read_marker, write_marker
from tests.helpers import folder_digest


def _config(root, manifest="cases.csv"):
    return config_from_dict({"data": {"root": str(root), "manifest": manifest}})


def _report() -> CheckReport:
    problems = pd.DataFrame({"case_id": ["a"], "file": ["a.dcm"], "reason": ["truncated"]})
    cases = pd.DataFrame({"case_id": ["a"], "split": ["train"]})
    return CheckReport(source=None, cases=cases, good=cases.iloc[:0], problems=problems,
                       stats=pd.DataFrame(), seeded=False)


def test_the_data_folder_and_the_manifests_folder_are_refused(tmp_path):
    data = tmp_path / "data"
    (data / "lists").mkdir(parents=True)
    (data / "cases.csv").write_text("case_id,image_path\na,a.dcm\n")
    (data / "summary.md").write_text("my notes\n")
    before = folder_digest(data)
    with pytest.raises(ConfigError, match=r"^`--output` must be a folder of its own, not the dataset folder "
                       r"`data.root` \(.*data\): the report's problems.csv, cases.csv, summary.md, "
                       r"histogram.png would overwrite the data's files. Received: .*data$"):
        check_report_folder(data, _config(data), "`--output`")
    with pytest.raises(ConfigError, match=r"not the folder of the data manifest .*lists/cases.csv"):
        check_report_folder(data / "lists", _config(data, "lists/cases.csv"), "`--output`")
    assert folder_digest(data) == before


def test_a_rerun_replaces_its_own_report_and_nothing_else(tmp_path):
    data, out = tmp_path / "data", tmp_path / "data" / "check"
    data.mkdir()
    config = _config(data)
    check_report_folder(out, config)  # absent
    _report().write(out)
    assert read_marker(out)["kind"] == CHECK_REPORT
    check_report_folder(out, config)  # its own: a rerun may write there
    (out / ".kerasmed").unlink()  # a report of a version before the marker: recognised by content
    check_report_folder(out, config)
    (out / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match=r"no \.kerasmed marker and is no data check report of an earlier "
                       r"kerasmed version.* holding 'cases.csv', 'histogram.png', 'notes.txt' and 2 more$"):
        check_report_folder(out, config)
    with pytest.raises(ConfigError, match="The check report folder must be absent, empty or a data check"):
        _report().write(out)
    write_marker(tmp_path / "mine", "synthetic dataset", "kerasmed generate")
    (tmp_path / "mine" / "cases.csv").write_text("a dataset's manifest")
    with pytest.raises(ConfigError, match="marker says: synthetic dataset made by kerasmed generate"):
        check_report_folder(tmp_path / "mine", config)
