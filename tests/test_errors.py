"""`sentinel.errors` is the one exceptions module: every exception lives there, its
docstring draws the whole tree, and the abstract kinds cannot be raised."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

import sentinel
from sentinel import errors
from sentinel.errors import SentinelError, SinkError, SinkUnavailable


def exception_classes() -> dict[str, type[BaseException]]:
    """Every exception class defined in sentinel/errors.py, by name."""
    return {name: cls for name, cls in vars(errors).items()
            if inspect.isclass(cls) and issubclass(cls, BaseException)
            and cls.__module__ == errors.__name__}


def test_no_module_outside_errors_defines_an_exception() -> None:
    """Importing every module of the package finds no exception class defined elsewhere."""
    elsewhere = []
    for info in pkgutil.walk_packages(sentinel.__path__, "sentinel."):
        if info.name.endswith(".__main__"):  # importing it runs the CLI
            continue
        module = importlib.import_module(info.name)
        for name, cls in vars(module).items():
            if inspect.isclass(cls) and issubclass(cls, BaseException) \
                    and cls.__module__ == info.name and info.name != errors.__name__:
                elsewhere.append(f"{info.name}.{name}")
    assert elsewhere == []


def test_every_exception_is_a_sentinel_error_drawn_in_the_tree() -> None:
    """Each class derives from SentinelError and is named in the module docstring's tree."""
    classes = exception_classes()
    tree = errors.__doc__ or ""
    assert set(classes) >= {"OutboxLocked", "ProtocolError", "SignatureError",
                            "IllegalTransition", "BadRequest"}
    for name, cls in classes.items():
        assert issubclass(cls, SentinelError), name
        assert f"── {name} " in tree or name == "SentinelError", name


def test_every_exception_is_public() -> None:
    """`sentinel` exports each of them (the public API pins the errors)."""
    assert set(exception_classes()) <= set(sentinel.__all__)


@pytest.mark.parametrize("abstract", [SentinelError, SinkError])
def test_an_abstract_kind_cannot_be_raised(abstract: type[SentinelError]) -> None:
    """SentinelError and SinkError are caught, never raised: making one is a TypeError."""
    with pytest.raises(TypeError, match="is abstract"):
        abstract("what went wrong?")


def test_a_concrete_kind_is_caught_by_its_abstract_bases() -> None:
    """A subclass of an abstract kind is made as usual and caught by both bases."""
    with pytest.raises(SinkError) as caught:
        raise SinkUnavailable("no socket")
    assert isinstance(caught.value, SentinelError)
    assert str(caught.value) == "no socket"


def test_bad_request_carries_its_status_and_body() -> None:
    """BadRequest is a 400 by default; its body is the error plus the extra keys."""
    assert errors.BadRequest("nope").status == 400
    refused = errors.BadRequest("unknown backends: x", status=422, extra={"unknown": ["x"]})
    assert (refused.status, refused.body) == (
        422, {"error": "unknown backends: x", "unknown": ["x"]})
