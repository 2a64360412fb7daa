import re
import subprocess
import sys
import warnings

import numpy as np
import pytest

from serving.errors import ConfigError, DataError
from serving.image import Image
from serving.io import READERS, read_image, write_dicom_series, write_nifti
from serving.io.registry import format_of, read_npy


def _image():
    array = np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6) - 60
    return Image(array, spacing=(2.0, 0.5, 0.6), origin=(1.0, 2.0, 3.0), modality="CT")


def test_registry_names():
    assert {"dicom", "nifti", "npy", "npz", "png", "jpeg", "tiff"} <= set(READERS)


def test_dispatch_on_folder_and_suffix(tmp_path):
    image = _image()
    dicom = write_dicom_series(image, tmp_path / "series")
    nii = write_nifti(image, tmp_path / "ct.nii")
    niigz = write_nifti(image, tmp_path / "CT.NII.GZ")
    npy = tmp_path / "ct.npy"
    np.save(npy, image.array)
    assert [format_of(p) for p in (dicom, nii, niigz, npy)] == ["dicom", "nifti", "nifti", "npy"]
    for path in (dicom, nii, niigz):
        back = read_image(path)
        np.testing.assert_allclose(back.array, image.array, atol=0.5 + 1e-3)
        assert back.same_geometry(image, atol=1e-4)


def test_npy_reader_has_unit_spacing_and_no_warnings(tmp_path):
    path = tmp_path / "slice.npy"
    np.save(path, np.ones((7, 8), np.int16))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        image = read_image(path)
    assert image.spacing == (1.0, 1.0) and image.origin == (0.0, 0.0)
    assert image.metadata["spacing_source"] == "assumed" and image.assumed_spacing_axes == (0, 1)
    assert image.array.dtype == np.int16 and image.shape == (7, 8)


def test_npy_reader_refuses_bad_arrays(tmp_path):
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match=r"obj\.npy.*object arrays are refused"):
        read_npy(tmp_path / "obj.npy")
    np.save(tmp_path / "vec.npy", np.zeros(5))
    with pytest.raises(DataError, match=r"2D \(y, x\) or 3D.*shape=\(5,\)"):
        read_npy(tmp_path / "vec.npy")
    (tmp_path / "cut.npy").write_bytes((tmp_path / "vec.npy").read_bytes()[:70])
    with pytest.raises(DataError, match=r"cut\.npy"):
        read_npy(tmp_path / "cut.npy")


@pytest.mark.parametrize("suffix", [".npy", ".nii", ".nii.gz"])
@pytest.mark.parametrize("bad, received", [(np.nan, "1 NaN and 0 inf"), (-np.inf, "0 NaN and 1 inf")])
def test_non_finite_voxels_are_refused_naming_the_file(tmp_path, suffix, bad, received):
    # One check in `read_image` for every reader: the cache, evaluation and export read through it.
    image = _image()
    image.array[2, 3, 4] = bad
    path = tmp_path / f"ct{suffix}"
    if suffix == ".npy":
        np.save(path, image.array)
    else:
        write_nifti(image, path)
    with pytest.raises(
        DataError,
        match=rf"^Image `{re.escape(str(path))}` must be finite\. Received: {received} values in a "
        r"\(4, 5, 6\) float32 array$",
    ):
        read_image(path)


def test_complex_nifti_is_refused_not_cast(tmp_path):
    import nibabel as nib

    path = tmp_path / "complex.nii"
    nib.save(nib.Nifti1Image(np.ones((3, 4, 5), np.complex64), np.eye(4)), path)
    with pytest.raises(
        DataError,
        match=rf"^Image `{re.escape(str(path))}` must be an array of real numbers .*"
        r"Received: dtype=complex64$",
    ):
        read_image(path)


def test_unknown_suffix_lists_valid_formats(tmp_path):
    path = tmp_path / "photo.gif"
    path.write_bytes(b"GIF89a")
    with pytest.raises(
        DataError,
        match=r"Unknown image format.*\.nii\.gz \(nifti\).*\.npy \(npy\).*\.tiff \(tiff\).*"
        r"Received: suffix='\.gif'",
    ):
        read_image(path)
    with pytest.raises(DataError, match="existing DICOM folder or image file"):
        read_image(tmp_path / "missing.gif")


def test_forced_format(tmp_path):
    path = tmp_path / "volume.bin"
    with open(path, "wb") as f:
        np.save(f, np.zeros((2, 3, 4), np.float32))
    assert read_image(path, format="npy").shape == (2, 3, 4)
    with pytest.raises(ConfigError, match=r"Unknown image format `mha`; valid names: \[.*'nifti', 'npy', "
                       r"'npz', 'png', 'tiff'\]\. Received: 'mha'$"):
        read_image(path, format="mha")


def test_importing_serving_io_does_not_import_pydicom_or_nibabel():
    code = (
        "import sys, serving.io; "
        "print(sorted(m for m in ('pydicom', 'nibabel', 'scipy', 'PIL') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
