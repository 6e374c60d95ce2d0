"""cffi builder of microgpt's C core (API mode): the extension module microgpt._cmg.

csrc/microgpt.h is the single source of truth for the binding: it is fed to cdef as it is, and
the C files include it, so the compiler checks the declarations against the implementation.
setup.py uses `cffi_modules=["build_ext.py:ffibuilder"]`; `python build_ext.py` builds in place.
MICROGPT_SANITIZE=1 builds with AddressSanitizer and UBSan (tests only: the module then needs
libasan preloaded into the Python process).
"""
import os

import cffi

HERE = os.path.dirname(os.path.realpath(__file__))
if __name__ == "__main__":
    os.chdir(HERE)  # build in place, with the paths relative to the repo root


def _path(rel):
    """rel (from the repo root) as setuptools likes it: relative when building from the root."""
    return rel if os.path.realpath(os.getcwd()) == HERE else os.path.join(HERE, rel)


compile_args = ["-std=c11", "-O2", "-Wall", "-Wextra", "-ffp-contract=off"]
link_args = []
if os.environ.get("MICROGPT_SANITIZE") == "1":
    # also: check every cached backward order (csrc/tape.c), and run Adam's portable path (csrc/adam.c)
    # so that the tests cover it as the plain build covers the SIMD one
    sanitize = ["-fsanitize=address,undefined", "-fno-omit-frame-pointer", "-fno-sanitize-recover=all"]
    compile_args += ["-DMG_CHECK_ORDER", "-DMG_NO_SIMD"]
    compile_args += sanitize
    link_args += sanitize

ffibuilder = cffi.FFI()
with open(os.path.join(HERE, "csrc", "microgpt.h"), encoding="utf-8") as f:
    ffibuilder.cdef(f.read())

ffibuilder.set_source(
    "microgpt._cmg",
    '#include <stdint.h>\n#include "microgpt.h"\n',
    sources=[_path(f"csrc/{name}") for name in sorted(os.listdir(os.path.join(HERE, "csrc"))) if name.endswith(".c")],
    include_dirs=[_path("csrc")],
    extra_compile_args=compile_args,
    extra_link_args=link_args,
    libraries=["m"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
