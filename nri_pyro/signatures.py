"""Wrappers that forward instead of restating: a function that passes its arguments on to
another shows that one's parameters (to ``help()``, ``inspect.signature`` and IDEs), so a
new option is written once, where it is used."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])


def forwarding(target: Callable[..., Any]) -> Callable[[F], F]:
    """Decorator for ``def wrapper(*args, **kwargs)`` that passes them on to ``target``:
    the wrapper's signature becomes ``target``'s parameters with the wrapper's return
    annotation."""

    def wrap(wrapper: F) -> F:
        parameters = list(inspect.signature(target).parameters.values())
        returns = inspect.signature(wrapper).return_annotation
        wrapper.__signature__ = inspect.Signature(parameters, return_annotation=returns)
        return wrapper

    return wrap
