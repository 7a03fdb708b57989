"""``python -m composite_store``: the ``composite-store`` command line."""

from .cli import main

if __name__ == "__main__":
    main()
