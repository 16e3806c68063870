"""Allow `python -m sentinel`."""

from sentinel.cli.main import main

raise SystemExit(main())
