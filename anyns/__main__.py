"""``python -m anyns``: see ``anyns._cli``."""

from ._cli import main

raise SystemExit(main())
