from trailgeo.cli import main

raise SystemExit(main())
