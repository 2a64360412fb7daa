import pytest

from serving.errors import ConfigError
from serving.registry import Registry


def test_registry_keeps_order_registers_and_names_the_valid_entries():
    things = Registry("widget", {"b": 2, "a": 1})
    assert list(things) == ["b", "a"] and things.names() == ["a", "b"]

    @things.register("c")
    def make_c():
        return 3

    assert things.register("d", 4) == 4
    assert things.lookup("c") is make_c and things["d"] == 4 and len(things) == 4
    with pytest.raises(ConfigError, match=r"^Unknown widget `z`; valid names: \['a', 'b', 'c', 'd'\]\. "
                       r"Received: 'z'$"):
        things.lookup("z")


def test_lazy_entries_are_imported_on_first_use():
    things = Registry("codec", {"json": "json:dumps"})
    import json

    assert things.lookup("json") is json.dumps
    with pytest.raises(ModuleNotFoundError):
        Registry("codec", {"x": "no_such_module_kerasmed:thing"})["x"]
