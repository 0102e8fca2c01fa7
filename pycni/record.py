"""`dataclass`, `field` and `replace` for the runtime's hot modules, without `inspect`.

The stdlib `dataclasses` imports `inspect` (and through it `ast`, `dis`, `enum`,
`tokenize`): about 7 ms of a `netctl network ls` that has 15 ms to spend in all.
The runtime's records use a small part of it: fields with defaults or a
`default_factory`, `frozen`, `kw_only`, `__post_init__`, `replace()`. This module
builds exactly that: `__init__` (generated source, as dataclasses does), `__repr__`,
`__eq__`, `__hash__` (frozen classes) and the frozen `__setattr__` guard. `slots` is
accepted and ignored (it only saves memory).

Type checkers see the real `dataclasses` (the TYPE_CHECKING branch below), so mypy
checks constructor calls as before; tests/unit/test_record.py holds the two to the
same behaviour.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from dataclasses import dataclass, field, replace
else:
    _MISSING = object()
    _FIELDS = "__record_fields__"

    class _Field:
        __slots__ = ("default", "default_factory", "name")

        def __init__(self, default=_MISSING, default_factory=_MISSING):
            self.name = ""
            self.default = default
            self.default_factory = default_factory

    def field(*, default=_MISSING, default_factory=_MISSING):
        if default is not _MISSING and default_factory is not _MISSING:
            raise ValueError("cannot specify both default and default_factory")
        return _Field(default, default_factory)

    class FrozenInstanceError(AttributeError):
        pass

    def _frozen_setattr(self, name, value):
        raise FrozenInstanceError(f"cannot assign to field {name!r}")

    def _frozen_delattr(self, name):
        raise FrozenInstanceError(f"cannot delete field {name!r}")

    def _process(cls, frozen, kw_only):
        fields = []
        for base in reversed(cls.__mro__[1:]):
            fields.extend(getattr(base, _FIELDS, ()))
        own = cls.__dict__.get("__annotations__", {})  # noqa: RUF063 (inspect is what this avoids)
        for name, annotation in own.items():
            if "ClassVar" in str(annotation):
                continue
            value = cls.__dict__.get(name, _MISSING)
            f = value if isinstance(value, _Field) else _Field(default=value)
            f.name = name
            fields = [x for x in fields if x.name != name] + [f]
            if isinstance(value, _Field):
                if f.default is _MISSING:
                    delattr(cls, name)
                else:
                    setattr(cls, name, f.default)
        setattr(cls, _FIELDS, tuple(fields))
        names = [f.name for f in fields]
        glob = {"_MISSING": _MISSING, "_setattr": object.__setattr__}
        params, body = [], []
        for f in fields:
            if f.default_factory is not _MISSING:
                glob[f"_factory_{f.name}"] = f.default_factory
                params.append(f"{f.name}=_MISSING")
                value = f"_factory_{f.name}() if {f.name} is _MISSING else {f.name}"
            elif f.default is not _MISSING:
                glob[f"_default_{f.name}"] = f.default
                params.append(f"{f.name}=_default_{f.name}")
                value = f.name
            else:
                params.append(f.name)
                value = f.name
            if frozen:
                body.append(f"_setattr(self, {f.name!r}, {value})")
            else:
                body.append(f"self.{f.name} = {value}")
        if "__post_init__" in dir(cls):
            body.append("self.__post_init__()")
        star = ["*"] if kw_only and params else []
        src = f"def __init__(self, {', '.join(star + params)}):\n    " + (
            "\n    ".join(body) or "pass"
        )
        exec(src, glob)
        init = glob["__init__"]
        init.__qualname__ = f"{cls.__qualname__}.__init__"
        cls.__init__ = init

        def __repr__(self):
            inner = ", ".join(f"{n}={getattr(self, n)!r}" for n in names)
            return f"{type(self).__qualname__}({inner})"

        def __eq__(self, other):
            if other.__class__ is not self.__class__:
                return NotImplemented
            return all(getattr(self, n) == getattr(other, n) for n in names)

        cls.__repr__ = __repr__
        cls.__eq__ = __eq__
        if frozen:

            def __hash__(self):
                return hash(tuple(getattr(self, n) for n in names))

            cls.__hash__ = __hash__
            cls.__setattr__ = _frozen_setattr
            cls.__delattr__ = _frozen_delattr
        else:
            cls.__hash__ = None
        return cls

    def dataclass(
        cls=None,
        *,
        frozen=False,
        kw_only=False,
        slots=False,
    ):
        if cls is None:
            return lambda c: _process(c, frozen, kw_only)
        return _process(cls, frozen, kw_only)

    def replace(obj, **changes):
        values = {f.name: getattr(obj, f.name) for f in getattr(type(obj), _FIELDS)}
        unknown = set(changes) - set(values)
        if unknown:
            raise TypeError(f"{type(obj).__qualname__} has no field {sorted(unknown)[0]!r}")
        values.update(changes)
        return type(obj)(**values)


__all__ = ["dataclass", "field", "replace"]
