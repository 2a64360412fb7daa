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


# --- configured columns, ImageFolder trees, patient splits ------------------------------------

def _data(**data):
    from kerasmed.config import config_from_dict

    return config_from_dict({"data": data}).data


def _touch(root, *names):
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"")


def test_configured_columns_with_paths_relative_to_the_csv(tmp_path):
    _touch(tmp_path, "scans/a.npy", "scans/a_seg.npy", "scans/b.npy", "scans/b_seg.npy",
           "scans/a_lungs.npy")
    (tmp_path / "lists").mkdir()
    pd.DataFrame({
        "subject": ["s1", "s2"], "id": ["a", "b"], "ct": ["../scans/a.npy", str(tmp_path / "scans/b.npy")],
        "seg": ["../scans/a_seg.npy", "../scans/b_seg.npy"], "fold": ["train", "val"],
        "age": ["61", "70"], "lung_mask_path": ["../scans/a_lungs.npy", ""],
    }).to_csv(tmp_path / "lists" / "cases.csv", index=False)
    data = _data(root=str(tmp_path), manifest="lists/cases.csv", columns={
        "case_id": "id", "image": "ct", "mask": "seg", "split": "fold", "patient_id": "subject"})
    df = read_manifest(tmp_path, "lists/cases.csv", data)
    assert list(df.columns) == ["case_id", "image_path", "mask_path", "split", "patient_id",
                                "lung_mask_path"]  # `age` is no path column: left out
    lists = tmp_path / "lists"
    assert df["image_path"].tolist() == [str(lists / "../scans/a.npy"), str(tmp_path / "scans/b.npy")]
    assert df["mask_path"].tolist() == [str(lists / "../scans/a_seg.npy"), str(lists / "../scans/b_seg.npy")]
    assert df["lung_mask_path"].tolist() == [str(lists / "../scans/a_lungs.npy"), ""]
    assert df["split"].tolist() == ["train", "val"] and df["patient_id"].tolist() == ["s1", "s2"]
    # A column the config names must be there; the default `split` and `patient_id` may be absent.
    with pytest.raises(DataError, match=r"must have columns \['id', 'ct', 'seg', 'fold', 'visit'\] "
                       r"\(`data.columns`\)\. Received: columns=\['subject', 'id'"):
        read_manifest(tmp_path, "lists/cases.csv", _data(columns={
            "case_id": "id", "image": "ct", "mask": "seg", "split": "fold", "patient_id": "visit"}))


def test_a_mask_column_set_to_null_is_not_read_from_the_csv(tmp_path):
    _manifest(tmp_path, [["c0", "a.npy", "am.npy", "train"]])
    df = read_manifest(tmp_path, data=_data(columns={"mask": None}))
    assert list(df.columns) == ["case_id", "image_path", "split"]


def test_unknown_and_empty_labels_are_refused_naming_the_case(tmp_path):
    _touch(tmp_path, "a.png", "b.png", "c.png")
    pd.DataFrame({"case_id": ["a", "b", "c"], "image_path": ["a.png", "b.png", "c.png"],
                  "split": ["train", "val", "test"], "finding": ["benign", "malignant", "benign"]}
                 ).to_csv(tmp_path / "manifest.csv", index=False)
    data = _data(columns={"mask": None, "label": "finding"})
    assert read_manifest(tmp_path, data=data)["label"].tolist() == ["benign", "malignant", "benign"]
    assert len(read_manifest(tmp_path, data=data, class_names=["benign", "malignant"])) == 3
    with pytest.raises(DataError, match=r"^Manifest .*: `finding` must be one of the class names "
                       r"\['benign', 'cyst'\] \(`model.class_names`\)\. Received: 'malignant' for "
                       r"case 'b' \(line 3\)$"):
        read_manifest(tmp_path, data=data, class_names=["benign", "cyst"])


def test_image_folder_tree(tmp_path):
    _touch(tmp_path, "dog/d1.png", "dog/d0.png", "cat/c0.png", "cat/.hidden.png", "bird/s1/IM1.dcm",
           "cache/x.npy", "check/histogram.png", ".git/HEAD", "README.md")
    data = _data(root=str(tmp_path), format="imagefolder")
    df = read_manifest(tmp_path, data=data)
    # Classes sorted; one case per entry (a folder is a DICOM series); no mask column.
    assert df["case_id"].tolist() == ["bird/s1", "cat/c0.png", "dog/d0.png", "dog/d1.png"]
    assert df["label"].tolist() == ["bird", "cat", "dog", "dog"]
    assert df["image_path"].tolist() == [str(tmp_path / c) for c in df["case_id"]]
    assert list(df.columns) == ["case_id", "image_path", "split", "label"]
    assert set(df["split"]) <= {"train", "val", "test"}
    # The config's class order; a folder it does not name is an unknown label.
    df = read_manifest(tmp_path, data=data, class_names=["dog", "cat", "bird"])
    assert df["label"].tolist() == ["dog", "dog", "cat", "bird"]
    with pytest.raises(DataError, match=r"^ImageFolder .*: `label` must be one of the class names "
                       r"\['dog', 'cat'\] \(`model.class_names`\)\. Received: 'bird' for case "
                       r"'bird/s1'$"):
        read_manifest(tmp_path, data=data, class_names=["dog", "cat"])
    empty = tmp_path / "empty"
    (empty / "cache").mkdir(parents=True)
    with pytest.raises(DataError, match=r"must hold one folder per class in `data.root`\. "
                       r"Received: no class folder in"):
        read_manifest(empty, data=data)


def _patients(root, n_patients=10, split=None):
    rows = []
    for p in range(n_patients):
        for visit in range(1 + p % 3):
            case_id = f"p{p}v{visit}"
            _touch(root, f"{case_id}.npy", f"{case_id}_m.npy")
            rows.append({"case_id": case_id, "image_path": f"{case_id}.npy",
                         "mask_path": f"{case_id}_m.npy", "patient_id": f"P{p}"})
    df = pd.DataFrame(rows)
    if split is not None:
        df["split"] = split(df)
    df.to_csv(root / "manifest.csv", index=False)
    return df


def test_seeded_split_keeps_each_patient_in_one_split_and_is_deterministic(tmp_path):
    rows = _patients(tmp_path)  # 10 patients, 19 cases, no split column
    df = read_manifest(tmp_path)
    per_patient = df.groupby("patient_id")["split"].nunique()
    assert (per_patient == 1).all()  # no patient in two splits
    # 0.7 / 0.15 / 0.15 of 10 patients: 7, 1.5, 1.5 -> 7, 2, 1 (largest remainder, val first).
    assert df.drop_duplicates("patient_id")["split"].value_counts().to_dict() == \
        {"train": 7, "val": 2, "test": 1}
    # The same split in another row order; another seed draws another one.
    rows.sample(frac=1.0, random_state=3).to_csv(tmp_path / "manifest.csv", index=False)
    again = read_manifest(tmp_path).set_index("case_id").loc[df["case_id"], "split"]
    assert again.tolist() == df["split"].tolist()
    other = read_manifest(tmp_path, data=_data(split={"seed": 1})).set_index("case_id")
    assert other.loc[df["case_id"], "split"].tolist() != df["split"].tolist()
    # Without a patient_id column, cases are the groups.
    rows.drop(columns="patient_id").to_csv(tmp_path / "manifest.csv", index=False)
    assert read_manifest(tmp_path)["split"].value_counts().to_dict() == \
        {"train": 13, "val": 3, "test": 3}  # 19 cases: 13.3, 2.85, 2.85


@pytest.mark.parametrize("groups, counts", [(1, [1, 0, 0]), (2, [2, 0, 0]), (3, [1, 1, 1]),
                                            (4, [2, 1, 1]), (20, [14, 3, 3]), (7, [5, 1, 1])])
def test_split_counts_leave_no_split_empty_when_there_are_enough_groups(groups, counts):
    from kerasmed.data.manifest import split_counts

    assert split_counts(groups, (0.7, 0.15, 0.15)) == counts
    assert split_counts(groups, (0.8, 0.2, 0.0))[2] == 0


def test_a_patient_in_two_splits_is_refused_naming_patient_and_splits(tmp_path):
    _patients(tmp_path, split=lambda df: ["val" if c == "p2v1" else "train" for c in df["case_id"]])
    with pytest.raises(DataError, match=r"^Manifest .*: a patient's cases must all be in one split\. "
                       r"Received: one patient \(same `patient_id`\) in splits \['train', 'val'\] "
                       r"\(cases \['p2v0', "
                       r"'p2v1', 'p2v2'\]\); and 2 more problem\(s\), listed by `kerasmed check-data`$"):
        read_manifest(tmp_path)
    _patients(tmp_path, split=lambda df: ["val" if c.startswith("p2") else "train" for c in df["case_id"]])
    assert len(read_manifest(tmp_path)) == 19


def test_data_config_sections_are_strict():
    from kerasmed.config import config_from_dict
    from serving.errors import ConfigError

    with pytest.raises(ConfigError, match=r"Unknown config key `data.columns.imag`"):
        config_from_dict({"data": {"columns": {"imag": "ct"}}})
    with pytest.raises(ConfigError, match=r"`data.split.fractions`: must be 3 non-negative numbers"):
        config_from_dict({"data": {"split": {"fractions": [0.5, 0.5, 0.5]}}})
    with pytest.raises(ConfigError, match=r"data.format"):
        config_from_dict({"data": {"format": "folders"}})
