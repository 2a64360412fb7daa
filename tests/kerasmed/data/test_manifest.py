import numpy as np
import pandas as pd
import pytest

from kerasmed.data.manifest import check_case_geometry, read_manifest, require_column
from serving.errors import DataError
from serving.image import Image


def _manifest(root, rows, columns=("case_id", "image_path", "mask_path", "split")):
    for row in rows:
        for column, cell in zip(columns, row):
            if column.endswith("_path") and cell.strip():
                (root / cell).write_bytes(b"")
    pd.DataFrame(rows, columns=list(columns)).to_csv(root / "manifest.csv", index=False)


@pytest.mark.parametrize("column", ["image_path", "mask_path"])
@pytest.mark.parametrize("cell", ["", "  "])
def test_empty_required_path_cell_names_case_line_and_column(tmp_path, column, cell):
    # An empty cell used to become the data folder itself, which a reader opened as a DICOM series.
    rows = [["c0", "a.npy", "am.npy", "train"], ["c1", "b.npy", "bm.npy", "val"]]
    rows[1][1 if column == "image_path" else 2] = cell
    _manifest(tmp_path, rows)
    with pytest.raises(DataError, match=rf"^Manifest .*manifest\.csv: `{column}` must name a file in "
                       rf"every row\. Received: an empty `{column}` cell for case 'c1' \(line 3\)$"):
        read_manifest(tmp_path)


def test_a_row_cut_short_is_an_empty_cell(tmp_path):
    _manifest(tmp_path, [["c0", "a.npy", "train", "am.npy"]],
              ("case_id", "image_path", "split", "mask_path"))
    with open(tmp_path / "manifest.csv", "a") as f:
        f.write("c1,b.npy,val\n")
    with pytest.raises(DataError, match=r"`mask_path` must name a file.*case 'c1' \(line 3\)"):
        read_manifest(tmp_path)


def test_optional_path_columns_may_be_empty_but_required_ones_are_checked(tmp_path):
    columns = ("case_id", "image_path", "mask_path", "split", "lung_mask_path")
    _manifest(tmp_path, [["c0", "a.npy", "am.npy", "train", "al.npy"],
                         ["c1", "b.npy", "bm.npy", "val", ""]], columns)
    df = read_manifest(tmp_path)
    assert df["lung_mask_path"].tolist() == [str(tmp_path / "al.npy"), ""]
    require_column(df.head(1), "lung_mask_path", "the baseline")
    with pytest.raises(DataError, match=r"`lung_mask_path` must name a file for every case \(the "
                       r"baseline needs it\)\. Received: an empty `lung_mask_path` cell for "
                       r"case\(s\) \['c1'\]"):
        require_column(df, "lung_mask_path", "the baseline")
    with pytest.raises(DataError, match=r"needs a `other_path` column for the baseline"):
        require_column(df, "other_path", "the baseline")


def test_check_case_geometry_names_case_and_file():
    image = Image(np.zeros((4, 20, 20)), spacing=(2.5, 1.0, 1.0))
    check_case_geometry(image, image.with_array(np.zeros((4, 20, 20), np.uint8)), "c0", "m.nii.gz")
    with pytest.raises(DataError, match=r"^Mask of case c0 must share the image geometry\. Received: "
                       r"image shape=\(4, 20, 20\).*mask shape=\(4, 20, 18\).*\(m\.nii\.gz\)$"):
        check_case_geometry(image, Image(np.zeros((4, 20, 18)), spacing=(2.5, 1.0, 1.0)), "c0",
                            "m.nii.gz")


def test_path_too_long_for_the_file_system_names_case_line_and_column(tmp_path):
    # Found by the seeded fuzzer: `Path.exists` raises OSError (errno 36) for a name over 255 bytes.
    _manifest(tmp_path, [["c0", "a.npy", "am.npy", "train"], ["c1", "b.npy", "bm.npy", "val"]])
    text = (tmp_path / "manifest.csv").read_text().replace("bm.npy", "b" * 300 + ".npy")
    (tmp_path / "manifest.csv").write_text(text)
    with pytest.raises(DataError, match=r"^Manifest .*manifest\.csv: `mask_path` of case 'c1' "
                       r"\(line 3\) must be a valid file path\. Received: a \d+-character path "
                       r"'.*'\.\.\. \(File name too long\)$"):
        read_manifest(tmp_path)
