"""`python -m keras_vtn.cli`: the `keras-vtn` command line."""

import sys

from keras_vtn.cli import main

sys.exit(main())
