"""Load a report's HTML page in headless Chromium and fail on any error.

    python tests/report/chromium_check.py reports/demo/report.html

A copy of the page gets a probe script that records script and resource errors, images that did not
decode, and every resource the page fetched (a self-contained page fetches none); Chromium's
``--dump-dom`` then returns the probe's findings.  The page itself is not modified.
Exit status: 0 clean, 1 errors found, 2 Chromium missing or failed.
"""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
PROBE = r"""<script>
window.__probeErrors = [];
window.addEventListener("error", e => window.__probeErrors.push(
  String(e.message || (e.target && (e.target.src || e.target.href)) || "error")), true);
window.addEventListener("load", () => {
  const images = [...document.images];
  const report = {
    title: document.title,
    tables: document.querySelectorAll("table").length,
    // each table as rendered: caption, then rows of cell texts (what a reader sees, intervals included)
    table_text: [...document.querySelectorAll("table")].map(t => [t.caption ? t.caption.innerText : "",
      ...[...t.rows].map(r => [...r.cells].map(c => c.innerText.replace(/\s+/g, " ").trim()))]),
    images: images.length,
    broken_images: images.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.alt),
    fetched: performance.getEntriesByType("resource").map(r => r.name),
    errors: window.__probeErrors,
  };
  const out = document.createElement("pre");
  out.id = "roma-eval-probe";
  out.textContent = JSON.stringify(report);
  document.body.appendChild(out);
});
</script>"""


def find_browser() -> str | None:
    return next((path for name in BROWSERS if (path := shutil.which(name))), None)


def probe(page: Path, browser: str, timeout: float = 120) -> dict:
    """What the probe saw when ``browser`` loaded a copy of ``page``."""
    text = page.read_text(encoding="utf-8")
    with tempfile.TemporaryDirectory() as work:
        copy = Path(work) / page.name
        copy.write_text(re.sub(r"<head>", lambda head: head[0] + PROBE, text, count=1), encoding="utf-8")
        command = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                   "--no-first-run", f"--user-data-dir={Path(work) / 'profile'}", "--virtual-time-budget=10000",
                   "--dump-dom", copy.as_uri()]
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    match = re.search(r'<pre id="roma-eval-probe">(.*?)</pre>', done.stdout, re.S)
    if done.returncode != 0 or not match:
        raise RuntimeError(f"{browser} exited {done.returncode} without the probe's report; "
                           f"stderr: {done.stderr[-2000:]}")
    return json.loads(html.unescape(match.group(1)))


def problems(found: dict) -> list[str]:
    out = [f"script or resource error: {e}" for e in found["errors"]]
    out += [f"image did not decode: {alt}" for alt in found["broken_images"]]
    out += [f"fetched an external resource: {url}" for url in found["fetched"]]
    return out


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    browser = find_browser()
    if browser is None:
        print("no Chromium found (apt-get install chromium)", file=sys.stderr)
        return 2
    try:
        found = probe(Path(argv[0]), browser)
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        print(exc, file=sys.stderr)
        return 2
    print(json.dumps(found, indent=1))
    issues = problems(found)
    for issue in issues:
        print(issue, file=sys.stderr)
    print(f"{argv[0]}: {'FAIL' if issues else 'OK'} ({found['tables']} tables, {found['images']} images)")
    return 1 if issues else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
