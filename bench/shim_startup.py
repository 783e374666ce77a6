"""What the lm-eval registration shim (roma_eval_lm_eval.pth) costs every Python start-up.

Prints the shim's own import time (from `python -X importtime -c pass`, the modules it imports at
site initialisation) and the median wall time of `python -c pass`, both measured in this run.
Target (issue 2): the shim adds < 50 ms.
"""

import re
import statistics
import subprocess
import sys
import time

RUNS = 20


def shim_import_us() -> int:
    """Cumulative import time of the shim: the outermost roma_eval import, which includes everything
    it pulls in (its parent packages, importlib.abc)."""
    err = subprocess.run([sys.executable, "-X", "importtime", "-c", "pass"], capture_output=True, text=True).stderr
    cumulative = [int(m.group(1)) for m in re.finditer(r"import time:\s+\d+ \|\s+(\d+) \|\s+roma_eval", err)]
    return max(cumulative, default=0)


def startup_ms() -> float:
    times = []
    for _ in range(RUNS):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def main() -> None:
    shim = statistics.median(shim_import_us() for _ in range(5)) / 1000
    if shim == 0:
        sys.exit("the shim was not imported at start-up: is roma-eval installed in this interpreter?")
    total = startup_ms()
    print(f"python -c pass, median of {RUNS}: {total:.1f} ms")
    print(f"roma-eval shim at start-up (importtime cumulative, median of 5): {shim:.2f} ms "
          f"= {shim / total:.1%} of start-up; target < 50 ms")


if __name__ == "__main__":
    main()
