# Stand-in for a compiled extension that cannot be installed in the scratch environment: every
# attribute, of the module or of its classes, is a placeholder class (pydantic accepts it as "any").
def _schema(cls, source, handler):
    from pydantic_core import core_schema

    return core_schema.any_schema()


class _Placeholder(type):
    def __getattr__(cls, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return _placeholder(name)


def _placeholder(name):
    return _Placeholder(name, (), {"__init__": lambda self, *a, **k: None, "__call__": lambda self, *a, **k: None, "__get_pydantic_core_schema__": classmethod(_schema)})


def __getattr__(name):
    if name.startswith("__"):
        raise AttributeError(name)
    return _placeholder(name)
