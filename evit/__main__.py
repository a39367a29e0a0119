import sys

from evit.cli import main

sys.exit(main())
