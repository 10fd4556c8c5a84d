"""Immutable value classes declared by their annotated fields, as a frozen dataclass is,
without the import cost of the standard constructs.

qsub builds these values on every call, and its own imports take ~3 ms: dataclasses
imports inspect and ast (~12 ms), typing.NamedTuple needs typing (~8 ms), and
collections.namedtuple needs collections (~1.5 ms) and leaves its fields untyped.

A subclass lists its fields as annotated class attributes, in order, each with its
default if it has one (every annotation in the class body is a field). ``__init__``
takes the fields by position or by name, then calls ``__post_init__`` where the class
defines one. Equality, hashing, repr and pickling go over the fields; assigning or
deleting an attribute raises FrozenInstanceError (an AttributeError). Type checkers see
a frozen dataclass (``dataclass_transform``).
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing is not imported at run time (qsub's start)
if TYPE_CHECKING:
    from typing import Any, ClassVar, dataclass_transform
else:

    def dataclass_transform(**_options: object) -> object:
        return lambda cls: cls


class FrozenInstanceError(AttributeError):
    """Assignment to a field of an immutable value (as ``dataclasses.FrozenInstanceError``)."""


@dataclass_transform(frozen_default=True)
class Frozen:
    """Base of immutable values: see the module's description."""

    _fields: ClassVar[tuple[str, ...]] = ()
    _defaults: ClassVar[dict[str, Any]] = {}

    def __init_subclass__(cls) -> None:
        super().__init_subclass__()
        cls._fields = tuple(cls.__dict__.get("__annotations__", ()))
        cls._defaults = {name: cls.__dict__[name] for name in cls._fields if name in cls.__dict__}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        name = type(self).__qualname__
        if len(args) > len(self._fields):
            raise TypeError(f"{name} takes at most {len(self._fields)} positional arguments")
        values = {**self._defaults, **dict(zip(self._fields, args, strict=False))}
        for key, value in kwargs.items():
            if key not in self._fields or key in self._fields[: len(args)]:
                raise TypeError(f"{name} got an unexpected or repeated argument {key!r}")
            values[key] = value
        missing = [key for key in self._fields if key not in values]
        if missing:
            raise TypeError(f"{name} is missing the arguments {', '.join(missing)}")
        self.__dict__.update(values)
        post_init = getattr(self, "__post_init__", None)
        if post_init is not None:
            post_init()

    def _values(self) -> tuple[Any, ...]:
        return tuple(self.__dict__[key] for key in self._fields)

    def __setattr__(self, name: str, value: object) -> None:
        raise FrozenInstanceError(f"cannot assign to field {name!r}")

    def __delattr__(self, name: str) -> None:
        raise FrozenInstanceError(f"cannot delete field {name!r}")

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        assert isinstance(other, Frozen)
        return self._values() == other._values()

    def __hash__(self) -> int:
        return hash(self._values())

    def __repr__(self) -> str:
        items = ", ".join(
            f"{key}={value!r}" for key, value in zip(self._fields, self._values(), strict=True)
        )
        return f"{type(self).__qualname__}({items})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), self._values())  # the fields are positional parameters, in order
