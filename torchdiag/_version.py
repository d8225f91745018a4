"""torchdiag's version: one place, read by the package, the record, the report and the build."""

__version__ = "0.1.0"
