"""The ``faces`` command line."""
