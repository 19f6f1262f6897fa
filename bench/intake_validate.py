"""Upload validation cost: time and peak memory of `diagnosis.imaging.validate_upload` per input.

Each input runs in a fresh interpreter so its peak RSS is its own. Usage:

    .venv/bin/python bench/intake_validate.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import io
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _configure() -> None:
    from django.conf import settings

    if not settings.configured:
        settings.configure(
            SECRET_KEY="bench",  # noqa: S106
            UPLOAD_MAX_FILE_BYTES=60 * 1024 * 1024,
            UPLOAD_MAX_PIXELS=40_000_000,
            KEEP_ORIGINAL_UPLOADS=False,
        )


def _radiograph(height: int, width: int, *, bits: int = 8):
    """A smooth synthetic 'radiograph': bone-like bright bands over a noisy background."""
    import numpy as np

    rng = np.random.default_rng(0)
    y = np.linspace(0, 1, height, dtype=np.float32)[:, None]
    x = np.linspace(0, 1, width, dtype=np.float32)[None, :]
    img = 0.3 + 0.5 * np.exp(-(((x - 0.5) / 0.08) ** 2)) * (0.6 + 0.4 * np.sin(8 * y))
    img = img + rng.normal(0, 0.02, (height, width)).astype(np.float32)
    top = (1 << bits) - 1
    return np.clip(img * top, 0, top).astype(np.uint8 if bits == 8 else np.uint16)


def build(name: str) -> tuple[bytes, str]:
    from PIL import Image

    from diagnosis.tests.imaging import builders

    if name == "fracatlas-jpeg":
        return sorted((ROOT / "samples").glob("*.jpg"))[0].read_bytes(), "x.jpg"
    if name == "jpeg-5mpx":
        return builders.encode(
            Image.fromarray(_radiograph(2500, 2000)), "JPEG", quality=92
        ), "x.jpg"
    if name == "png16-7.5mpx":
        return builders.encode(Image.fromarray(_radiograph(3000, 2500, bits=16)), "PNG"), "x.png"
    if name == "dicom12-7.5mpx":
        ds = builders.dicom_dataset(
            _radiograph(3000, 2500, bits=12), bits_stored=12, window=(2048, 2048), phi=True
        )
        return builders.dicom_bytes(ds), "x.dcm"
    if name == "jpeg-39.6mpx":
        return builders.encode(
            Image.fromarray(_radiograph(6600, 6000)), "JPEG", quality=90
        ), "x.jpg"
    if name == "reject-png-bomb":
        return builders.png_pixel_bomb(), "x.png"
    if name == "reject-truncated-jpeg":
        data, _ = build("jpeg-5mpx")
        return data[: len(data) // 2], "x.jpg"
    raise SystemExit(f"unknown input {name}")


CASES = (
    "fracatlas-jpeg",
    "jpeg-5mpx",
    "png16-7.5mpx",
    "dicom12-7.5mpx",
    "jpeg-39.6mpx",
    "reject-png-bomb",
    "reject-truncated-jpeg",
)


def _peak_rss_kb() -> int:
    """This process's own high-water mark (VmHWM; ru_maxrss would include the parent's)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def run_one(path: Path, filename: str, repeat: int) -> dict[str, object]:
    _configure()
    from diagnosis.exceptions import InvalidUploadError
    from diagnosis.imaging import validate_upload

    data = path.read_bytes()
    rss_before = _peak_rss_kb()
    times, outcome = [], ""
    for _ in range(repeat):
        started = time.perf_counter()
        try:
            result = validate_upload(data, filename)
            outcome = (
                f"accepted {result.width}x{result.height}, png {len(result.png_bytes) // 1024} KB"
            )
            if result.depth_png_bytes is not None:
                outcome += f", full depth {len(result.depth_png_bytes) // 1024} KB"
        except InvalidUploadError as exc:
            outcome = f"refused: {exc.code}"
        times.append((time.perf_counter() - started) * 1000)
    rss_after = _peak_rss_kb()
    return {
        "bytes": len(data),
        "median_ms": round(statistics.median(times), 1),
        "max_ms": round(max(times), 1),
        "peak_rss_growth_mb": round(max(0, rss_after - rss_before) / 1024, 1),
        "outcome": outcome,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--one", nargs=2, metavar=("PATH", "FILENAME"))
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(Path(args.one[0]), args.one[1], args.repeat)))
        return
    _configure()
    out = io.StringIO()
    out.write(
        "| input | size | median | max | peak RSS growth | result |\n|---|---|---|---|---|---|\n"
    )
    with tempfile.TemporaryDirectory() as tmp:
        for name in CASES:
            data, filename = build(name)
            path = Path(tmp) / name
            path.write_bytes(data)
            del data
            proc = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--one",
                    str(path),
                    filename,
                    "--repeat",
                    str(args.repeat),
                ],
                capture_output=True,
                text=True,
                check=True,
            )
            row = json.loads(proc.stdout.strip().splitlines()[-1])
            out.write(
                f"| {name} | {row['bytes'] / 1024:.0f} KB | {row['median_ms']} ms | "
                f"{row['max_ms']} ms | {row['peak_rss_growth_mb']} MB | {row['outcome']} |\n"
            )
    print(out.getvalue())


if __name__ == "__main__":
    main()
