import pytest

from tests.kerasmed.training.tiny_run import RESUMABLE, tiny_config


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    """The tiny profile's synthetic dataset (4 cases of 12 x 96 x 96), with its cache built."""
    from kerasmed.data.generate import generate_dataset
    from kerasmed.training.inputs import cache_for

    root = tmp_path_factory.mktemp("tiny") / "data"
    s = tiny_config(root).synthetic
    generate_dataset(root, num_cases=s.num_cases, seed=s.seed, shape=s.shape,
                     split_fractions=s.split_fractions, progress=False)
    cache_for(tiny_config(root), progress=False)
    return root


@pytest.fixture(scope="session")
def reference_run(tiny_data, tmp_path_factory):
    """One uninterrupted deterministic tiny run of 3 epochs: `(run_dir, summary)`."""
    from kerasmed.training.trainer import train

    run_dir = tmp_path_factory.mktemp("reference") / "run"
    summary = train(tiny_config(tiny_data, *RESUMABLE), run_dir, progress=False)
    return run_dir, summary
