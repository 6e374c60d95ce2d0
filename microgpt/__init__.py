"""microgpt: the GPT of Karpathy's microgpt.py, bit-identical to it, with a python and a c backend."""
from .backend import BackendError, get_backend, set_backend
from .model import GPT, Config, ConfigError
from .modes import new_graph
from .tokenizer import Tokenizer, VocabularyError

__all__ = ["Value", "get_backend", "set_backend", "BackendError", "new_graph", "GPT", "Config",
           "ConfigError", "Tokenizer", "VocabularyError"]
__version__ = "0.1.0"


def __getattr__(name):
    # microgpt.Value is the live backend's Value class, looked up when asked for
    if name == "Value":
        from .backend import value_class
        return value_class()
    raise AttributeError(f"module 'microgpt' has no attribute {name!r}")
