"""`python -m personaplex_tui` runs the `ppx-tui` command line."""

from personaplex_tui.entry import main

raise SystemExit(main())
