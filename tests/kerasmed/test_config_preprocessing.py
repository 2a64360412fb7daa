"""The `preprocessing` section's version-2 keys: defaults off, shorthands, and errors that name
the key."""

import re

import pytest

from kerasmed.config import config_from_dict
from serving.errors import ConfigError
from serving.preprocessing import PreprocessSpec


def test_defaults_leave_every_new_step_off():
    spec = config_from_dict({}).preprocessing.spec()
    assert spec == PreprocessSpec((None, 1.5, 1.5), (None, 240, 240), -1024.0)
    assert (spec.clip, spec.crop_foreground, spec.multiple_of, spec.zscore, spec.order) == (
        None, None, None, False, "linear")


def test_every_key_reaches_the_spec_and_one_integer_means_y_and_x():
    raw = {"preprocessing": {"clip": [-1000, 400], "crop_foreground": -500, "foreground_margin": 4,
                             "multiple_of": 16, "zscore": True, "order": "cubic"}}
    spec = config_from_dict(raw).preprocessing.spec()
    assert spec == PreprocessSpec(
        (None, 1.5, 1.5), (None, 240, 240), clip=(-1000.0, 400.0), crop_foreground=-500.0,
        foreground_margin=(None, 4, 4), multiple_of=(None, 16, 16), zscore=True, order="cubic",
    )
    explicit = {"preprocessing": {"crop_foreground": 0.2, "foreground_margin": [1, None, 2]}}
    assert config_from_dict(explicit).preprocessing.spec().foreground_margin == (1, None, 2)


@pytest.mark.parametrize(
    "section, message",
    [
        ({"clip": [400, -1000]}, "config key `preprocessing.clip`: must be [low, high] with low < "
         "high. Received: preprocessing.clip=[400, -1000]"),
        ({"multiple_of": 0}, "config key `preprocessing.multiple_of`: must be a positive integer or "
         "3 of them (null = leave the axis). Received: preprocessing.multiple_of=0"),
        ({"multiple_of": [None, 16, -8]}, "config key `preprocessing.multiple_of.2`: Input should be "
         "greater than 0. Received: preprocessing.multiple_of.2=-8"),
        ({"crop_foreground": -500, "foreground_margin": -1}, "config key "
         "`preprocessing.foreground_margin`: must be a non-negative integer or 3 of them (null = "
         "leave the axis). Received: preprocessing.foreground_margin=-1"),
        ({"foreground_margin": 2}, "config key `preprocessing.foreground_margin` needs "
         "`preprocessing.crop_foreground` (the threshold of the box it widens). Received: "
         "preprocessing.foreground_margin=[None, 2, 2], preprocessing.crop_foreground=None"),
        ({"order": "nearest"}, "config key `preprocessing.order`: Input should be 'linear' or "
         "'cubic'. Received: preprocessing.order='nearest'"),
        ({"crop_foreground": float("nan")}, "config key `preprocessing.crop_foreground`"),
    ],
)
def test_bad_values_name_the_key_and_what_was_received(section, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        config_from_dict({"preprocessing": section})
