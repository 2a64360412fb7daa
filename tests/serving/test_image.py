import numpy as np
import pytest

from serving.errors import DataError
from serving.image import Image


def test_index_physical_round_trip_with_oblique_direction():
    theta = np.deg2rad(20)
    direction = np.array([[1, 0, 0], [0, np.cos(theta), -np.sin(theta)], [0, np.sin(theta), np.cos(theta)]])
    image = Image(np.zeros((4, 5, 6)), spacing=(2.5, 0.7, 0.8), origin=(10, -20, 30), direction=direction)
    idx = np.array([[1, 2, 3], [3, 4, 5]], float)
    np.testing.assert_allclose(image.physical_to_index(image.index_to_physical(idx)), idx, atol=1e-9)
    np.testing.assert_allclose(image.affine()[:3, 3], (10, -20, 30))


def test_geometry_validation_names_the_field():
    with pytest.raises(DataError, match="spacing"):
        Image(np.zeros((2, 2, 2)), spacing=(1.0, 0.0, 2.5))
    with pytest.raises(DataError, match="origin"):
        Image(np.zeros((2, 2, 2)), spacing=(1, 1, 1), origin=(0, 0))
    with pytest.raises(DataError, match="array"):
        Image(np.zeros((2,)), spacing=(1,))


def test_metadata_refuses_patient_identifiers():
    with pytest.raises(DataError, match="PatientName"):
        Image(np.zeros((2, 2)), spacing=(1, 1), metadata={"PatientName": "DOE^JOHN"})
