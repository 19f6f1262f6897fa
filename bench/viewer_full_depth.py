"""Full-depth viewing cost in headless Chromium: decoding the 16-bit PNG the server stores (inflate
with DecompressionStream, rows unfiltered in the page) and one re-windowing paint, for the 12-bit
2500 x 3000 synthetic radiograph of `intake_validate.py`. Usage:

    .venv/bin/python bench/viewer_full_depth.py [--repeat 5]

Needs /usr/bin/chromium (or CHROMIUM_PATH) and Playwright, as the browser tests do.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

MEASURE = """async ([b64, repeat]) => {
  const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  const decode = [];
  let image = null;
  for (let k = 0; k < repeat; k++) {
    const t = performance.now();
    image = await FractureViewer.decodePng16(bytes.buffer.slice(0));
    decode.push(performance.now() - t);
  }
  const root = document.getElementById('root');
  const viewer = new FractureViewer(root, {
    stage: document.getElementById('stage'), canvas: document.getElementById('canvas'),
    heatmap: document.getElementById('heatmap'), status: document.getElementById('status'),
  });
  // The 8-bit side as _setImage leaves it, then the full-depth values through loadDepth.
  viewer.naturalW = image.width;
  viewer.naturalH = image.height;
  viewer.canvas.width = image.width;
  viewer.canvas.height = image.height;
  viewer.imageData = viewer.ctx.getImageData(0, 0, image.width, image.height);
  window.fetch = async () => new Response(bytes);
  await viewer.loadDepth('full-depth.png', {
    slope: 1, intercept: 0, min: 0, max: 4095, window: [2048, 2048], invert: false, exact: true,
  });
  const paint = [];
  for (let k = 0; k < repeat * 4; k++) {
    const t = performance.now();
    viewer.level = 1500 + k;
    viewer._depthPaint();
    paint.push(performance.now() - t);
  }
  return { decode, paint, fullDepth: viewer.isFullDepth(), size: [image.width, image.height] };
}"""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    from intake_validate import _radiograph
    from playwright.sync_api import sync_playwright

    from diagnosis.imaging import depth

    png = depth.encode_png16(_radiograph(3000, 2500, bits=12))
    chromium = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium, args=["--headless", "--no-sandbox", "--disable-gpu"]
        )
        page = browser.new_page()
        page.set_content(
            "<div id=root><div id=stage><canvas id=canvas></canvas><img id=heatmap></div>"
            "<p id=status></p></div>"
        )
        page.add_script_tag(path=str(ROOT / "static" / "js" / "viewer.js"))
        result = page.evaluate(MEASURE, [base64.b64encode(png).decode(), args.repeat])
        browser.close()
    print(
        json.dumps(
            {
                "size": result["size"],
                "png_kb": len(png) // 1024,
                "full_depth": result["fullDepth"],
                "decode_ms_median": round(statistics.median(result["decode"]), 1),
                "decode_ms_max": round(max(result["decode"]), 1),
                "paint_ms_median": round(statistics.median(result["paint"]), 1),
                "paint_ms_max": round(max(result["paint"]), 1),
            }
        )
    )


if __name__ == "__main__":
    main()
