import sys

from app.demo import main

sys.exit(main())
