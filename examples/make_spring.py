"""Make ``examples/spring.csv``: a spring's extension (cm) under loads of 0 to 5 kg, measured with noise, that grows
linearly at first and then stiffens: a bend no straight line fits, which a wider ``MyNN`` follows better. Run it::

    python examples/make_spring.py          # writes examples/spring.csv (the same file every time)
"""

from __future__ import annotations

import math
import random
from pathlib import Path

#: Loads measured, the largest load (kg), the noise of the ruler (cm) and the spring's reach (cm).
SAMPLES, MAX_LOAD, NOISE_CM, REACH_CM = 120, 5.0, 0.15, 10.0
#: Where the data set goes: beside this script.
PATH = Path(__file__).with_name("spring.csv")


def extension(load: float) -> float:
    """The spring's true extension: about 5 cm per kg at first, bending towards ``REACH_CM``."""
    return REACH_CM * (1.0 - math.exp(-load / 2.0))


def main(path: Path = PATH) -> None:
    """Write the measurements, one ``load_kg,extension_cm`` row each, in the order they were taken (shuffled)."""
    rng = random.Random(0)
    loads = [round(MAX_LOAD * i / (SAMPLES - 1), 3) for i in range(SAMPLES)]
    rng.shuffle(loads)
    rows = [f"{x},{extension(x) + rng.gauss(0.0, NOISE_CM):.3f}" for x in loads]
    path.write_text("# a spring's extension under load, measured with a ruler (examples/make_spring.py)\n"
                    "load_kg,extension_cm\n" + "\n".join(rows) + "\n")  # fmt: skip
    print(f"wrote {len(rows)} rows to {path}")


if __name__ == "__main__":
    main()
