"""Register ``--model roma`` / ``c3po`` / ``hf-peft`` with lm-eval 0.4.13, which has no plugin discovery.

Imported at every interpreter start by ``roma_eval_lm_eval.pth``, so it must cost almost nothing:
it only installs a meta-path finder.  When (and only when) ``lm_eval.models`` is imported, the
finder lets the real module execute and then adds lazy ``"module:Class"`` placeholders to lm-eval's
model registry.  Neither lm_eval nor torch is imported by this module.  Newer lm-eval versions
discover the same names through the ``lm_eval.models`` entry-point group in pyproject.toml.
"""

import sys

_TARGET = "lm_eval.models"


def register(model_registry) -> None:
    from roma_eval.registry import LM_EVAL_MODELS  # read only once lm_eval.models is imported: nothing at startup

    for name, target in LM_EVAL_MODELS.items():
        if name not in model_registry:
            model_registry.register(name, target=target)


class _AfterLmEvalModels:
    # A duck-typed meta-path finder: subclassing importlib.abc.MetaPathFinder would import
    # importlib.resources and cost ~15 ms at every interpreter start.

    def find_spec(self, fullname, path=None, target=None):
        if fullname != _TARGET:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None and spec.loader is not None:
                _wrap(spec.loader)
                return spec
        return None


def _wrap(loader) -> None:
    exec_module = loader.exec_module

    def exec_then_register(module):
        exec_module(module)
        from lm_eval.api.registry import model_registry

        register(model_registry)

    loader.exec_module = exec_then_register


if not any(isinstance(f, _AfterLmEvalModels) for f in sys.meta_path):
    sys.meta_path.insert(0, _AfterLmEvalModels())
