# cffi's setuptools hook is the setup() keyword cffi_modules, which pyproject.toml cannot express.
import importlib.machinery
import os
import shutil
import sys
import sysconfig

from setuptools import setup
from setuptools.command.build_ext import build_ext
from setuptools.errors import CCompilerError, ExecError, PlatformError

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)  # build_ext.py beside this file, also under pip's isolated build
from build_ext import compiler_flags, values_extension  # noqa: E402

# What a missing or broken C compiler raises (ExecError: a compiler that is not there or fails).
BUILD_ERRORS = (CCompilerError, ExecError, PlatformError, OSError)
REQUIRE_C = "MICROGPT_REQUIRE_C"  # =1: a failed build fails the install (CI, packagers)


def warn(message):
    """On stderr, and on the terminal too when stderr is not one: pip hides a build's output
    unless it fails (or -v is given), and this is the only place a user can learn it at install."""
    print(message, file=sys.stderr, flush=True)
    if not sys.stderr.isatty():
        try:
            with open("/dev/tty", "w") as tty:
                tty.write("\n" + message + "\n")
        except OSError:
            pass


class optional_build_ext(build_ext):
    """Build the C core (microgpt._cmg, by cffi) and the c backend's Value type (microgpt._values)
    with flags for the compiler in use; if either cannot be built (no compiler, a failed compile),
    warn and install without both (neither is any use alone): microgpt then runs on the python backend,
    which computes the same bits (the way msgpack and python-zstandard make theirs optional).
    Then put a copy of each compiled module beside its package's sources.

    The package sits at the checkout's root (microgpt/), so anything run from there (python -c,
    python -m microgpt) imports ./microgpt before the installed copy, and would find it without
    its extension after a plain `pip install .`. An editable install builds in place anyway."""

    def build_extension(self, ext):
        ext.extra_compile_args, ext.extra_link_args, ext.libraries = compiler_flags(self.compiler.compiler_type)
        super().build_extension(ext)

    def run(self):
        try:
            super().run()
        except BUILD_ERRORS as e:
            if os.environ.get(REQUIRE_C) == "1":
                raise
            self.remove_in_tree_copies()  # an older build would not match these sources
            self.remove_built()
            warn(f"microgpt: WARNING: the C extension could not be built ({type(e).__name__}: {e}). "
                 f"Installing without it: microgpt will use its python backend, which gives the same "
                 f"results about 100 times slower. For the c backend, install a C compiler (gcc or clang; "
                 f"on macOS `xcode-select --install`; on Windows the Visual Studio Build Tools) and reinstall "
                 f"with pip's --force-reinstall --no-cache-dir. ({REQUIRE_C}=1 makes this an error.)")
            return
        if self.inplace:
            return
        self.remove_in_tree_copies()  # all first: each copy must survive the next one's cleanup
        for ext in self.extensions:
            folder = self.in_tree_folder(ext)
            if folder:
                shutil.copy2(self.get_ext_fullpath(ext.name), folder)

    def remove_built(self):
        """The modules built before one failed: the c backend needs both, so install neither."""
        for ext in self.extensions:
            built = self.get_ext_fullpath(ext.name)
            if os.path.exists(built):
                os.remove(built)

    def in_tree_folder(self, ext):
        *package, _ = ext.name.split(".")
        folder = os.path.join(HERE, *package)
        return folder if os.path.isdir(folder) else None

    def remove_in_tree_copies(self):
        for ext in self.extensions:
            folder = self.in_tree_folder(ext)
            if not folder or self.inplace:
                continue
            name = ext.name.split(".")[-1]
            for suffix in importlib.machinery.EXTENSION_SUFFIXES:  # an older build's name could win the import
                old = os.path.join(folder, name + suffix)
                if os.path.exists(old):
                    os.remove(old)


# Both modules use only the stable ABI (cffi builds its module with py_limited_api; values_extension
# defines Py_LIMITED_API for 3.10), so one wheel serves every CPython from 3.10; a free-threaded
# CPython has no stable ABI and gets a version-specific tag.
options = {} if sysconfig.get_config_var("Py_GIL_DISABLED") else {"bdist_wheel": {"py_limited_api": "cp310"}}

setup(cffi_modules=["build_ext.py:ffibuilder"], ext_modules=[values_extension()],
      cmdclass={"build_ext": optional_build_ext}, options=options)
