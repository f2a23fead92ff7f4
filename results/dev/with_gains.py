"""train.py with other gains for recipe.SpeedupController, to compare them on small runs:

    python results/dev/with_gains.py RAMP KI [train.py's flags ...]

RAMP: the fraction of the skim stage over which the target moves from 1x to S; KI: the integral gain
(the proportional gain stays 1). The two runs in results/README.md:
    python results/dev/with_gains.py 0.5 0.02 --task sst2 --max-train-samples 4000 \\
        --stages dense:1,skim:1,frozen:0.5 --predictor-lr 1e-3 --timing-repeats 0
and the same with 0.25 0.1 (recipe.py's defaults are 0.5 and 0.02)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
import recipe  # noqa: E402
import train  # noqa: E402

ramp, ki = float(sys.argv[1]), float(sys.argv[2])
recipe.SpeedupController.__init__.__defaults__ = (ramp, 1.0, ki)  # (ramp, kp, ki)
sys.exit(train.cli(sys.argv[3:]))
