"""`python -m controller` is `envctl`."""

import sys

from controller.cli import main

sys.exit(main())
