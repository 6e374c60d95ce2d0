"""microgpt: the GPT of Karpathy's microgpt.py, bit-identical to it, with a python and a c backend."""
__version__ = "0.1.0"

from contextlib import nullcontext  # noqa: E402

from .api import Model, load, train  # noqa: E402 (the version first: the CLI imports it)
from .backend import BackendError, get_backend, set_backend  # noqa: E402
from .guard import TrainingFailed  # noqa: E402
from .model import GPT, Config, ConfigError  # noqa: E402
from .modes import new_graph  # noqa: E402
from .teach import gradcheck, to_dot  # noqa: E402
from .tokenizer import Tokenizer, VocabularyError  # noqa: E402

__all__ = ["train", "load", "Model", "TrainingFailed", "Value", "get_backend", "set_backend", "BackendError",
           "new_graph", "GPT", "Config", "ConfigError", "Tokenizer", "VocabularyError", "to_dot", "gradcheck",
           "scope"]


def scope():
    """`with microgpt.scope(): ...` frees every c-backend Value made inside (in this thread) at its
    end, even one still referred to (using it afterwards is a clear error). Optional: the c
    backend frees unreachable Values by itself; this frees at once. Nothing to do on python."""
    from .backend import c_status
    if not c_status()[0]:
        return nullcontext()
    from .native import scope as c_scope
    return c_scope()


def __getattr__(name):
    # microgpt.Value is the live backend's Value class, looked up when asked for (so
    # `from microgpt import Value` binds the class of that moment: set_backend() after it does
    # not change it; use microgpt.Value, or import after choosing)
    if name == "Value":
        from .backend import value_class
        return value_class()
    raise AttributeError(f"module 'microgpt' has no attribute {name!r}")
