"""Browser waits must work under the product's Content-Security-Policy (`script-src 'self'`, no
`unsafe-eval`). Playwright's `wait_for_function` compiles its predicate in the page with
`new Function`, which that policy refuses ("EvalError: Evaluating a string as JavaScript violates
the following Content Security Policy directive"), so it fails intermittently. Browser tests wait
with selectors, `expect(...)` or `tests.browser.conftest.wait_for_js` instead; this guard keeps it so.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN = re.compile(r"\.wait_for_function\(|\.waitForFunction\(")


def test_no_browser_test_waits_through_page_eval():
    offenders = []
    for folder in ("tests", "diagnosis", "ml", "bench"):
        for path in (ROOT / folder).rglob("*.py"):
            if path.resolve() == Path(__file__).resolve():
                continue
            for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                if FORBIDDEN.search(line):
                    offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert offenders == [], "use wait_for_js / expect() instead:\n" + "\n".join(offenders)
