"""microgpt: the GPT of Karpathy's microgpt.py, bit-identical to it, with a python and a c backend."""
__version__ = "0.1.0"

from .api import Model, load, train  # noqa: E402 (the version first: the CLI imports it)
from .backend import BackendError, get_backend, set_backend  # noqa: E402
from .guard import TrainingFailed  # noqa: E402
from .model import GPT, Config, ConfigError  # noqa: E402
from .modes import new_graph  # noqa: E402
from .tokenizer import Tokenizer, VocabularyError  # noqa: E402

__all__ = ["train", "load", "Model", "TrainingFailed", "Value", "get_backend", "set_backend", "BackendError",
           "new_graph", "GPT", "Config", "ConfigError", "Tokenizer", "VocabularyError"]


def __getattr__(name):
    # microgpt.Value is the live backend's Value class, looked up when asked for
    if name == "Value":
        from .backend import value_class
        return value_class()
    raise AttributeError(f"module 'microgpt' has no attribute {name!r}")
