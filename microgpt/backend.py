"""Which backend is live: 'python' (pure Python) or 'c' (the compiled arena).

Chosen by, in order: set_backend() from code, the MICROGPT_BACKEND environment variable, else
'auto', which takes c when the extension is compiled and otherwise python with a notice on stderr.
Asking for c when it cannot load is an error that names the cause, never a silent fallback."""
import importlib.util
import os
import sys

ENV_VAR = "MICROGPT_BACKEND"
CHOICES = ("auto", "python", "c")

_override = None
_noticed = False


class BackendError(RuntimeError):
    """The requested backend cannot be used."""


def c_status():
    """(True, '') when the c extension loads, else (False, why), why saying what to do about it."""
    try:
        from . import native  # noqa: F401
    except ImportError as e:
        if importlib.util.find_spec(f"{__package__}._cmg") is not None:
            return False, f"its compiled extension microgpt._cmg did not load ({e}); reinstalling microgpt may fix it"
        package = os.path.dirname(os.path.abspath(__file__))
        if os.path.exists(os.path.join(package, "..", "build_ext.py")):
            return False, (f"this microgpt is the source checkout at {package}, which has no compiled extension "
                           f"(microgpt._cmg): `pip install .` there builds it (with a C compiler), or run from "
                           f"outside the checkout")
        return False, ("its C extension (microgpt._cmg) was not built when microgpt was installed, most likely "
                       "because no working C compiler was found then; to get it, install a C compiler (gcc or "
                       "clang; on macOS `xcode-select --install`; on Windows the Visual Studio Build Tools) and "
                       "reinstall microgpt with pip's --force-reinstall --no-cache-dir")
    return True, ""


def set_backend(name):
    """Choose the backend for this process ('auto', 'python', 'c'); None goes back to the env var."""
    global _override
    if name is not None:
        _check_name(name)
        resolve(name)  # fail now, not at first use
    _override = name


def _check_name(name):
    if name not in CHOICES:
        raise BackendError(f"unknown backend {name!r}: choose one of {', '.join(CHOICES)}")


def resolve(name=None):
    """The backend that a request for `name` (default: the live choice) gets: 'c' or 'python'."""
    global _noticed
    name = name or _override or os.environ.get(ENV_VAR) or "auto"
    _check_name(name)
    if name == "python":
        return "python"
    ok, why = c_status()
    if ok:
        return "c"
    if name == "c":
        raise BackendError(f"backend 'c' was requested but {why}; or use --backend python")
    if not _noticed:
        print(f"microgpt: note: using the python backend (the same results, about 100 times slower than c): {why}. "
              f"{ENV_VAR}=python silences this note.", file=sys.stderr)
        _noticed = True
    return "python"


def get_backend():
    """'c' or 'python': the backend in use now."""
    return resolve()


def value_class(name=None):
    if resolve(name) == "c":
        from .native import CValue
        return CValue
    from .engine import Value
    return Value
