"""Names that load on first use: a package's ``__getattr__`` and ``__all__`` (PEP 562), standard library only."""

from importlib import import_module


def lazy_exports(package: str, exports: dict[str, str]):
    """``exports`` maps a name to the module defining it: absolute, or relative to ``package``."""

    def __getattr__(name):
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module = exports[name]
        return getattr(import_module(module if module.startswith("roma_eval.") else f"{package}.{module}"), name)

    return __getattr__, sorted(exports)
