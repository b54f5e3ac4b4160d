"""`python -m training.trainer` and `accelerate launch -m training.trainer`."""

import sys

from training.trainer.lora import main

sys.exit(main())
