# cffi's setuptools hook is the setup() keyword cffi_modules, which pyproject.toml cannot express.
import importlib.machinery
import os
import shutil

from setuptools import setup
from setuptools.command.build_ext import build_ext

HERE = os.path.dirname(os.path.abspath(__file__))


class build_ext_also_in_tree(build_ext):
    """Build as usual, then put a copy of each compiled module beside its package's sources.

    The package sits at the checkout's root (microgpt/), so anything run from there (python -c,
    python -m microgpt) imports ./microgpt before the installed copy, and would find it without
    its extension after a plain `pip install .`. An editable install builds in place anyway."""

    def run(self):
        super().run()
        if self.inplace:
            return
        for ext in self.extensions:
            *package, name = ext.name.split(".")
            folder = os.path.join(HERE, *package)
            if not os.path.isdir(folder):
                continue
            for suffix in importlib.machinery.EXTENSION_SUFFIXES:  # an older build's name could win the import
                old = os.path.join(folder, name + suffix)
                if os.path.exists(old):
                    os.remove(old)
            shutil.copy2(self.get_ext_fullpath(ext.name), folder)


setup(cffi_modules=["build_ext.py:ffibuilder"], cmdclass={"build_ext": build_ext_also_in_tree})
