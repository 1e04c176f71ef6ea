"""``python -m tagrec_models suggest ...``: the ``tagrec`` command (``tagrec_models.cli``)."""

from tagrec_models.cli import main

raise SystemExit(main())
