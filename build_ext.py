"""cffi builder of microgpt's C core (API mode): the extension module microgpt._cmg; and the
definition of the second extension module, microgpt._values (ext/values.c: the c backend's Value
type, which calls the core's Values functions directly, see csrc/values_api.h).

csrc/microgpt.h is the single source of truth for the binding: it is fed to cdef as it is, and
the C files include it, so the compiler checks the declarations against the implementation.
Every csrc/*.c is a source and every csrc/*.h a dependency (a header edit rebuilds the module).
setup.py uses `cffi_modules=["build_ext.py:ffibuilder"]` (and makes the module optional);
`python build_ext.py` builds both in place. MICROGPT_SANITIZE=1 builds with AddressSanitizer and UBSan,
MICROGPT_SANITIZE=thread with ThreadSanitizer (GCC/Clang only; tests only: the modules then need the
sanitizer's library preloaded into the Python process).
"""
import glob
import os
import sysconfig

import cffi

HERE = os.path.dirname(os.path.realpath(__file__))
if __name__ == "__main__":
    os.chdir(HERE)  # build in place, with the paths relative to the repo root


def _path(rel):
    """rel (from the repo root) as setuptools likes it: relative when building from the root."""
    return rel if os.path.realpath(os.getcwd()) == HERE else os.path.join(HERE, rel)


def _csrc(pattern):
    """csrc files matching pattern, sorted, so a file split or renamed there needs no edit here."""
    return [_path(os.path.join("csrc", os.path.basename(p))) for p in sorted(glob.glob(os.path.join(HERE, "csrc", pattern)))]


def compiler_flags(compiler_type):
    """(compile args, link args, libraries) for a setuptools compiler type ('unix', 'msvc', ...).

    The C core must round every operation as CPython does, so no compiler may contract a*b+c
    into one fused multiply-add (one rounding instead of two). GCC and Clang: -ffp-contract=off
    (either may contract by default, depending on version and language mode). MSVC: /fp:precise, under
    which Visual Studio 2022 (17.0) and later do not contract (/fp:contract, which would, is not
    given); older MSVC may contract under /fp:precise, but only when /arch:AVX2 or higher lets it
    emit FMA instructions, which is not given either. MSVC's C runtime has the math functions
    built in (no libm)."""
    if compiler_type == "msvc":
        return ["/std:c11", "/O2", "/W4", "/fp:precise"], [], []
    compile_args = ["-std=c11", "-O2", "-Wall", "-Wextra", "-ffp-contract=off", "-pthread"]
    link_args = ["-pthread"]  # Adam may split a step over threads (csrc/adam.c)
    if os.environ.get("MICROGPT_SANITIZE") == "1":
        # also: check every cached backward order (csrc/tape.c), wrap the search's stamp early
        # (csrc/arena.c), and run Adam's portable path
        # (csrc/adam.c), so that the tests cover it as the plain build covers the SIMD one
        sanitize = ["-fsanitize=address,undefined", "-fno-omit-frame-pointer", "-fno-sanitize-recover=all"]
        compile_args += ["-DMG_CHECK_ORDER", "-DMG_NO_SIMD"] + sanitize
        link_args += sanitize
    elif os.environ.get("MICROGPT_SANITIZE") == "thread":
        # ThreadSanitizer (tests only, like the above): the worker threads of Adam and of the
        # dense executor, and Values in several Python threads; and Adam's four-lane path (AVX2)
        # on a CPU that would take the eight-lane one (AVX-512), so that the tests cover both
        compile_args += ["-fsanitize=thread", "-g", "-DMG_ADAM_LANES=4"]
        link_args += ["-fsanitize=thread"]
    return compile_args, link_args, ["m"]


def default_compiler_type():
    """The compiler type setuptools picks on this platform when not told otherwise."""
    try:
        from setuptools._distutils.ccompiler import get_default_compiler
    except ImportError:  # a setuptools without its vendored distutils
        from distutils.ccompiler import get_default_compiler
    return get_default_compiler()


SOURCES = _csrc("*.c")
HEADERS = _csrc("*.h")
compile_args, link_args, libraries = compiler_flags(default_compiler_type())

ffibuilder = cffi.FFI()
with open(os.path.join(HERE, "csrc", "microgpt.h"), encoding="utf-8") as f:
    ffibuilder.cdef(f.read())

ffibuilder.set_source(
    "microgpt._cmg",
    '#include <stdint.h>\n#include "microgpt.h"\n',
    sources=SOURCES,
    depends=HEADERS,
    include_dirs=[_path("csrc")],
    extra_compile_args=compile_args,
    extra_link_args=link_args,
    libraries=libraries,
)



def values_extension():
    """microgpt._values as a setuptools Extension: the stable ABI of CPython 3.10 and later (one abi3
    module, like cffi's), except on a free-threaded CPython, which has no stable ABI. Its compiler
    flags are set where it is built (setup.py's build_ext, or build_in_place below)."""
    from setuptools import Extension
    limited = not sysconfig.get_config_var("Py_GIL_DISABLED")
    return Extension(
        "microgpt._values",
        sources=[_path(os.path.join("ext", "values.c"))],
        depends=HEADERS,
        include_dirs=[_path("csrc")],
        define_macros=[("Py_LIMITED_API", "0x030A0000")] if limited else [],
        py_limited_api=limited,
    )


def build_in_place():
    """`python build_ext.py`: both modules beside microgpt's sources, with this platform's flags."""
    from setuptools import Distribution
    ffibuilder.compile(verbose=True)
    ext = values_extension()
    ext.extra_compile_args, ext.extra_link_args, ext.libraries = compiler_flags(default_compiler_type())
    dist = Distribution({"name": "microgpt-values", "ext_modules": [ext],
                         "script_args": ["build_ext", "--inplace", "--build-temp", os.path.join("build", "values")]})
    dist.parse_command_line()
    dist.run_commands()


if __name__ == "__main__":
    build_in_place()
