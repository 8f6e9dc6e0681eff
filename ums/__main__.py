"""``python -m ums`` is the ``ums`` command."""

from ums.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
