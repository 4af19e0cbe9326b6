"""``python -m procvisor``: the same as the ``procvisor`` command."""

from procvisor.cli import main

if __name__ == "__main__":
    main()
