"""Which backend is live: 'python' (pure Python) or 'c' (the compiled arena).

Chosen by, in order: set_backend() from code, the MICROGPT_BACKEND environment variable, else
'auto', which takes c when the extension is compiled and otherwise python with a notice on stderr.
Asking for c when it cannot load is an error that names the cause, never a silent fallback."""
import os
import sys

ENV_VAR = "MICROGPT_BACKEND"
CHOICES = ("auto", "python", "c")

_override = None
_noticed = False


class BackendError(RuntimeError):
    """The requested backend cannot be used."""


def c_status():
    """(True, '') when the c extension loads, else (False, why)."""
    try:
        from . import native  # noqa: F401
    except ImportError as e:
        why = f"the compiled extension microgpt._cmg did not load ({e})"
        package = os.path.dirname(os.path.abspath(__file__))
        if os.path.exists(os.path.join(package, "..", "build_ext.py")):
            why += (f"; this microgpt is the source checkout at {package}, which has no compiled extension: "
                    f"`pip install .` there builds it, or run from outside the checkout")
        return False, why
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
        raise BackendError(f"backend 'c' was requested but {why}; reinstall with a C compiler "
                           f"available (pip install .), or use --backend python")
    if not _noticed:
        print(f"microgpt: note: using the python backend, {why}", file=sys.stderr)
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
