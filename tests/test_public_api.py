"""Every name `import onnxkit` promises resolves to something real (the lazy table is easy to
leave pointing at a module that moved)."""

import pytest

import onnxkit


@pytest.mark.parametrize("name", sorted(onnxkit._API))
def test_public_name_resolves(name):
    assert callable(getattr(onnxkit, name)) or isinstance(getattr(onnxkit, name), type)


def test_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError):
        onnxkit.no_such_thing  # noqa: B018
