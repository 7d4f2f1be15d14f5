import sys

from mmgap_core.cli import main

sys.exit(main())
