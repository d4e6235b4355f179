"""``python -m libero_tgrpo``: the same as the ``libero-tgrpo`` console script."""

from libero_tgrpo.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
