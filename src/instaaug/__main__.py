"""``python -m instaaug`` is the ``instaaug`` command."""

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
