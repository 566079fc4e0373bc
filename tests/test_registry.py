import pytest

from polyfuse.registry import Registry, RegistryError


def test_register_and_build():
    reg: Registry = Registry("thing")

    @reg.register("double", modalities=("image", "video"))
    def double(x: int = 1) -> int:
        """Twice x."""
        return 2 * x

    assert reg.build("double", x=4) == 8
    assert "double" in reg and len(reg) == 1
    assert reg.names(modality="image") == ["double"]
    assert reg.names(modality="text") == []
    assert reg.get("double").help == "Twice x."
    assert list(reg.get("double").parameters()) == ["x"]


def test_duplicate_name_is_an_error():
    reg: Registry = Registry("thing")
    reg.add("a", lambda: 1)
    with pytest.raises(RegistryError, match="already registered"):
        reg.add("a", lambda: 2)


def test_unknown_name_lists_allowed():
    reg: Registry = Registry("fusion")
    reg.add("concat", lambda: 1)
    reg.add("gated", lambda: 2)
    with pytest.raises(RegistryError, match="allowed: concat, gated"):
        reg.get("gatd")
