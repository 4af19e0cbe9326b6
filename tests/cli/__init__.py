"""Tests of the ``procvisor`` command (a package: ``cli.test_run`` is not ``test_run``)."""
