"""Build script for tools that call `python setup.py`; every piece of metadata lives in pyproject.toml."""

from setuptools import setup

setup()
