# cffi's setuptools hook is the setup() keyword cffi_modules, which pyproject.toml cannot express.
from setuptools import setup

setup(cffi_modules=["build_ext.py:ffibuilder"])
