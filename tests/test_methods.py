"""The method registry of the experiments: declaring, checking, building and listing methods."""

from __future__ import annotations

import pytest

from instaaug.experiments.methods import MethodRegistry


def _registry() -> MethodRegistry:
    methods = MethodRegistry("toy")

    @methods.register("none", "nothing")
    def _none(config, scale=1):
        return ("none", config, scale)

    @methods.register("random", "random at a setting", setting=float)
    def _random(config, setting=0.5):
        return ("random", config, setting)

    return methods


def test_registration_order_names_and_membership():
    methods = _registry()
    assert methods.names == ("none", "random") and list(methods) == ["none", "random"] and len(methods) == 2
    assert "none" in methods and "random-0.7" in methods
    assert "random-x" not in methods and "none-0.5" not in methods and "bogus" not in methods and 3 not in methods
    assert methods.describe() == [("none", "nothing"), ("random", "random at a setting")]
    assert methods["random-0.25"].name == "random"


def test_build_passes_arguments_and_the_parsed_setting():
    methods = _registry()
    assert methods.build("none", "cfg", scale=3) == ("none", "cfg", 3)
    assert methods.build("random", "cfg") == ("random", "cfg", 0.5)
    assert methods.build("random-0.7", "cfg") == ("random", "cfg", 0.7)
    with pytest.raises(ValueError, match="unknown method 'magic' of the toy experiment; known: \\['none', 'random'\\]"):
        methods.build("magic", "cfg")
    with pytest.raises(ValueError, match="unknown method"):
        methods["random-"]


def test_check_accepts_lists_and_comma_strings_and_names_the_known_methods():
    methods = _registry()
    assert methods.check("none,random-0.5") == ("none", "random-0.5")
    assert methods.check(["random"]) == ("random",)
    for bad in ((), "", ("none", "magic"), [1]):
        with pytest.raises(ValueError, match="methods must be"):
            methods.check(bad)


def test_a_name_registers_once():
    methods = _registry()
    with pytest.raises(ValueError, match="already registered"):
        methods.register("none", "again")
