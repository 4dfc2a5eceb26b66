"""The package's version, written here only: ``lit_ssgan.__version__`` and the package metadata
(``setup.cfg``) read it, and a module that records it imports it from here, not from the package."""

__version__ = "0.2.0"
