from ripp_cli import main

raise SystemExit(main())
