import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.multiclass import OneVsRestClassifier
from sklearn.preprocessing import StandardScaler

from kerasmed.config import ColumnsConfig, DataConfig
from kerasmed.data.manifest import read_manifest
from kerasmed.data.synthetic_patches import generate_patch_dataset
from kerasmed.evaluation.histogram_baseline import (
    HistogramBaseline,
    histogram_features,
    percentile_range,
)
from serving.errors import ConfigError, DataError
from serving.io import read_image
from tests.helpers import assert_allclose


def _images(rng, n, fill, spots=(), shape=(16, 16)):
    """`n` noisy images of `fill` HU, each with a 4x4 block of every `(hu, present)` spot where
    `present[i]` is true."""
    x = fill + 20.0 * rng.standard_normal((n, *shape))
    for k, (hu, present) in enumerate(spots):
        x[present, 4 * k : 4 * k + 4, 4:8] = hu
    return x


def test_features_match_numpy_histograms():
    rng = np.random.default_rng(0)
    images = np.concatenate([rng.uniform(-1200, 600, (5, 3, 8, 8)),  # ends beyond the range
                             rng.integers(-1024, 500, (3, 3, 8, 8)).astype(np.int16)])
    features = histogram_features(images, bins=32, intensity_range=(-1000, 400))
    assert features.shape == (8, 34)
    for row, image in zip(features, images):
        clipped = np.clip(image.astype(float).ravel(), -1000, 400)
        counts, _ = np.histogram(clipped, bins=32, range=(-1000, 400))
        assert_allclose(row[:32], counts / clipped.size, atol=1e-12)
        assert_allclose(row[32:], [np.mean((clipped + 1000) / 1400), np.std((clipped + 1000) / 1400)],
                        atol=1e-12)
    # Air below the range counts in the first bin, bone above it in the last.
    ends = histogram_features(np.array([[-3000.0, -1000.0, 399.0, 3000.0]]), bins=4,
                              intensity_range=(-1000, 400))
    assert_allclose(ends[0, :4], [0.5, 0.0, 0.0, 0.5])


def test_feature_argument_errors():
    with pytest.raises(ConfigError, match="`bins` must be a positive integer"):
        histogram_features(np.zeros((2, 4)), bins=0)
    with pytest.raises(ConfigError, match="low < high"):
        histogram_features(np.zeros((2, 4)), intensity_range=(400, -1000))
    with pytest.raises(DataError, match=r"Received: shape=\(0, 4\)"):
        histogram_features(np.zeros((0, 4)))
    with pytest.raises(DataError, match="1 NaN or inf"):
        histogram_features(np.array([[0.0, np.nan]]))


def test_percentile_range_of_16_bit_images():
    rng = np.random.default_rng(0)
    images = rng.uniform(10000, 50000, (20, 32, 32))
    low, high = percentile_range(images)
    assert low == pytest.approx(10200, rel=0.01) and high == pytest.approx(49800, rel=0.01)
    assert percentile_range(images, 0, 100) == (images.min(), images.max())
    sampled = percentile_range(images, samples=1000)  # seeded: the same range every time
    assert sampled == percentile_range(images, samples=1000) and sampled[0] < sampled[1]
    # Mostly one value (a dark background): the whole range.
    sparse = np.zeros((4, 32, 32))
    sparse[0, 0, :3] = 900.0
    assert percentile_range(sparse) == (0.0, 900.0)
    with pytest.raises(DataError, match="every sampled value is 7"):
        percentile_range(np.full((2, 4, 4), 7.0))
    with pytest.raises(DataError, match="no image value"):
        percentile_range(np.zeros((0, 4)))
    with pytest.raises(DataError, match="1 NaN or inf"):
        percentile_range(np.array([[0.0, np.inf]]))


def test_binary_baseline_is_a_standardised_logistic_regression():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 200)
    images = _images(rng, 200, -800.0, [(40.0, labels == 1)])  # soft tissue only in class 1
    baseline = HistogramBaseline(bins=16).fit(images[:150], labels[:150])
    steps = baseline.pipeline.named_steps
    assert isinstance(steps["scale"], StandardScaler) and isinstance(steps["logistic"],
                                                                     LogisticRegression)
    probs = baseline.predict_proba(images[150:])
    assert probs.shape == (50, 2) and list(baseline.classes_) == [0, 1]
    assert_allclose(probs.sum(axis=1), 1.0, atol=1e-12)
    assert roc_auc_score(labels[150:], probs[:, 1]) > 0.99
    # The same model built by hand on the same features gives the same probabilities.
    features = histogram_features(images, bins=16)
    scaler = StandardScaler().fit(features[:150])
    reference = LogisticRegression(max_iter=2000).fit(scaler.transform(features[:150]), labels[:150])
    assert_allclose(probs, reference.predict_proba(scaler.transform(features[150:])), atol=1e-6)


def test_multiclass_and_multilabel():
    rng = np.random.default_rng(2)
    classes = rng.integers(0, 3, 300)
    images = _images(rng, 300, -850.0, [(-450.0, classes == 1), (60.0, classes == 2)])
    baseline = HistogramBaseline().fit(images[:200], np.array(["air", "glass", "solid"])[classes[:200]])
    probs = baseline.predict_proba(images[200:])
    assert probs.shape == (100, 3) and list(baseline.classes_) == ["air", "glass", "solid"]
    assert_allclose(probs.sum(axis=1), 1.0, atol=1e-12)
    assert (probs.argmax(axis=1) == classes[200:]).mean() >= 0.95

    # Multi-label: two independent findings, each its own one-vs-rest logistic regression.
    findings = rng.integers(0, 2, (300, 2))
    images = _images(rng, 300, -850.0, [(-450.0, findings[:, 0] == 1), (60.0, findings[:, 1] == 1)])
    baseline = HistogramBaseline().fit(images[:200], findings[:200])
    assert baseline.multilabel and isinstance(baseline.pipeline.named_steps["logistic"],
                                              OneVsRestClassifier)
    probs = baseline.predict_proba(images[200:])
    assert probs.shape == (100, 2)
    assert not np.allclose(probs.sum(axis=1), 1.0)  # independent, not a softmax
    for c in range(2):
        assert roc_auc_score(findings[200:, c], probs[:, c]) > 0.99


def test_fit_errors():
    images = np.zeros((4, 8, 8))
    with pytest.raises(DataError, match="at least two classes"):
        HistogramBaseline().fit(images, [1, 1, 1, 1])
    with pytest.raises(DataError, match=r"labels shape=\(3,\)"):
        HistogramBaseline().fit(images, [0, 1, 0])
    with pytest.raises(DataError, match=r"constant column\(s\) \[1\]"):
        HistogramBaseline().fit(images, [[0, 1], [1, 1], [0, 1], [1, 1]])
    with pytest.raises(DataError, match="0/1 indicators"):
        HistogramBaseline().fit(images, [[0, 2], [1, 1], [0, 1], [1, 0]])
    with pytest.raises(DataError, match="call `fit` first"):
        HistogramBaseline().predict_proba(images)


@pytest.fixture(scope="module")
def default_patches(tmp_path_factory):
    """The default-size patch dataset (64 phantoms, 3072 2.5D patches), read by kerasmed."""
    root = generate_patch_dataset(tmp_path_factory.mktemp("patches") / "nodules", progress=False)
    data = DataConfig(root=str(root), columns=ColumnsConfig(mask=None, label="label"))
    cases = read_manifest(root, data=data)
    images = np.stack([read_image(p).array for p in cases.image_path])
    return cases, images, (cases.label == "nodule").to_numpy().astype(int)


@pytest.mark.slow  # 64 phantoms take 80 s; with fewer, the histograms score at chance
def test_histogram_does_not_solve_the_synthetic_nodule_task(default_patches):
    """Whether a patch holds a nodule is a matter of shape: intensity histograms alone score a
    validation AUC well under 0.85 (0.60 at seed 0), yet above chance."""
    cases, images, labels = default_patches
    assert images.shape == (3072, 3, 64, 64) and labels.mean() == 0.5
    split = cases.split.to_numpy()
    assert pd.Series(split).value_counts().to_dict() == {"train": 2112, "val": 480, "test": 480}
    baseline = HistogramBaseline().fit(images[split == "train"], labels[split == "train"])
    val = split == "val"
    auc = roc_auc_score(labels[val], baseline.predict_proba(images[val])[:, 1])
    assert 0.5 < auc <= 0.85, auc
