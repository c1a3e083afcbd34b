"""The ``conveyor`` command line: a thin shell over the public SDK.

Entry point: :func:`conveyor.cli.main.main` (``main(argv) -> exit code``), so that
tests run every command in-process.
"""
