from nni_covid3d.cli import main

raise SystemExit(main())
