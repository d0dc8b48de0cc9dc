"""Memoizes wasmtime-py's per-value type lookups (a variant's cases, whether it is tagged, a
list's element type, a record's fields) on the type object, which it otherwise recomputes through
the C API for every value: the store's query rows are lowered value by value."""

from wasmtime.component import _types as t


def _memo(cls, name, prop=False):
    original = getattr(cls, name)
    getter = original.fget if prop else original
    key = "_memo_" + name

    def cached(self):
        d = self.__dict__
        if key not in d:
            d[key] = getter(self)
        return d[key]

    setattr(cls, name, property(cached) if prop else cached)


def install() -> None:
    if getattr(t, "_agent_relay_speedups", False):
        return
    for cls in (t.VariantType, t.OptionType, t.ResultType):
        _memo(cls, "_cases")
    _memo(t.VariantLikeType, "_tagged")
    _memo(t.ListType, "element", prop=True)
    _memo(t.RecordType, "fields", prop=True)
    t._agent_relay_speedups = True
