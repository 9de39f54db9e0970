"""``python -m trailgeo_tools``: the ``trailgeo-tools`` command line."""

from trailgeo_tools.cli import main

raise SystemExit(main())
