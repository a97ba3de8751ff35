"""Subcommands of the ``hybridgpu`` command line, one module each."""
