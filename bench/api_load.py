"""Load test of the REST API's metadata endpoints against gunicorn + PostgreSQL (+ Redis cache).

Creates a scratch database (default `fp_api_bench`), migrates it, seeds clinicians with API
tokens and cases (images, finished predictions, reads), starts gunicorn with production settings
(DEBUG off, Redis cache for throttling, token authentication), then runs N concurrent clients
(processes x threads, each with its own token and keep-alive session) for a fixed time against:

- `GET /api/v1/cases/?page_size=25`             (list, first page)
- `GET /api/v1/cases/?status=predicted&page=2`  (filtered list, second page)
- `GET /api/v1/cases/{id}/`                     (detail with per-image results and reads)

and prints latency percentiles per endpoint as a markdown table. Throttle rates are raised for the
run (the throttle's Redis round trip is still paid on every request): the point is latency.

The load comes from `wrk` (Debian package `wrk`; C, so the client costs little CPU on a small
machine) with one run per endpoint, or from Python threads (`--driver python`, one mixed run).

    .venv/bin/python bench/api_load.py --clients 20 --duration 30
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import random
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import requests

WRK_SCRIPT = """
local tokens = {%(tokens)s}
local ids = {%(ids)s}
local mode = "%(mode)s"
local counter = 0
math.randomseed(%(seed)d)
request = function()
  counter = counter + 1
  local i = (counter %% #tokens) + 1
  local path
  if mode == "list" then
    path = "/api/v1/cases/?page_size=25"
  elseif mode == "filtered" then
    path = "/api/v1/cases/?status=predicted&page=2&page_size=10"
  else
    local mine = ids[i]
    path = "/api/v1/cases/" .. mine[math.random(#mine)] .. "/"
  end
  return wrk.format("GET", path, {["Authorization"] = "Bearer " .. tokens[i]})
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT %%d %%d %%.1f %%.1f %%.1f %%.1f %%d %%d\\n", summary.requests,
    summary.duration, latency:percentile(50) / 1000, latency:percentile(95) / 1000,
    latency:percentile(99) / 1000, latency.max / 1000, e.status,
    e.connect + e.read + e.write + e.timeout))
end
"""
cpu_notes: list[tuple[str, float, float]] = []
LABELS = {
    "list": "GET /api/v1/cases/?page_size=25",
    "filtered": "GET /api/v1/cases/?status=predicted&page=2&page_size=10",
    "detail": "GET /api/v1/cases/{id}/",
}

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable


def _env(args: argparse.Namespace) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "fracture_portal.settings",
            "DJANGO_DEBUG": "0",
            "DJANGO_SECRET_KEY": "bench-" + secrets.token_hex(24),
            "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost",
            "DJANGO_SECURE_SSL_REDIRECT": "0",
            "DJANGO_SESSION_COOKIE_SECURE": "0",
            "DJANGO_CSRF_COOKIE_SECURE": "0",
            "DATABASE_URL": args.database_url,
            "REDIS_CACHE_URL": args.redis_url,
            "CELERY_BROKER_URL": args.broker_url,
            "MEDIA_ROOT": str(ROOT / "var" / "bench-media"),
            "THROTTLE_READ": "1000000/min",
            "DATABASE_CONN_MAX_AGE": "600",
            "LOG_LEVEL": "WARNING",
            "PYTHONPATH": str(ROOT),
        }
    )
    return env


def _recreate_database(url: str) -> None:
    import psycopg2

    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    conn = psycopg2.connect(
        host=parts.hostname, port=parts.port or 5432, user=parts.username, dbname="postgres"
    )
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        cur.execute(f'CREATE DATABASE "{name}"')
    conn.close()


SEED = r"""
import random, sys
import django
django.setup()
from django.core.files.base import ContentFile
from django.utils import timezone
from diagnosis.models import Case, ModelVersion, Prediction, Review, XrayImage
from diagnosis.services.tokens import api_client_create, api_token_create
from diagnosis.tests import factories

clients, cases_per_user = int(sys.argv[1]), int(sys.argv[2])
rng = random.Random(0)
version = ModelVersion.objects.create(
    version="bench-v1", artifact_dir="-", sha256="0" * 64, architecture="plain_cnn",
    thresholds={"balanced": 0.5, "high_sensitivity": 0.2}, status="active",
)
reader = factories.RadiologistFactory(username="bench-reader")
png = b"\x89PNG\r\n\x1a\n" + b"0" * 64
statuses = ["predicted"] * 5 + ["reviewed"] * 3 + ["queued", "in_review"]
for u in range(clients):
    user = factories.ClinicianFactory(username=f"bench-clin-{u}")
    client = api_client_create(user=user, name=f"bench-app-{u}")
    _, raw = api_token_create(client=client, user=user, scopes=["read"], expires_at=None)
    print(raw)
    for c in range(cases_per_user):
        status = rng.choice(statuses)
        case = Case.objects.create(
            patient_ref=f"PSN-{u:03d}-{c:04d}", body_part=rng.choice(["hand", "leg", "hip"]),
            clinical_question="Fall", created_by=user, source="api", api_client=client,
            status=status, final_label="fractured" if status == "reviewed" else "",
            reviewed_at=timezone.now() if status == "reviewed" else None,
        )
        for position in range(2):
            image = XrayImage(case=case, position=position, sha256=f"{u:04d}{c:06d}{position}".ljust(64, "0"),
                              width=512, height=512, source_format="jpeg")
            image.file.save(f"bench-{u}-{c}-{position}.png", ContentFile(png), save=False)
            image.save()
            if status == "queued":
                continue
            p = rng.random()
            prediction = Prediction.objects.create(
                image=image, model_version=version, status="done", probability=p,
                label="fractured" if p >= 0.5 else "not_fractured",
                labels={"balanced": "fractured" if p >= 0.5 else "not_fractured"},
                heatmap=f"heatmaps/bench-{u}-{c}-{position}.png", finished_at=timezone.now(),
            )
            if status == "reviewed":
                Review.objects.create(image=image, prediction=prediction, reviewer=reader,
                                      decision="confirm", final_label=prediction.label)
"""


def _cpu_seconds(pids: list[int]) -> dict[int, float]:
    """pid -> utime + stime in seconds (Linux /proc); vanished processes are left out."""
    ticks = os.sysconf("SC_CLK_TCK")
    usage = {}
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        usage[pid] = (int(fields[11]) + int(fields[12])) / ticks
    return usage


def _cpu_delta(before: dict[int, float], after: dict[int, float]) -> float:
    return sum(cpu - before.get(pid, 0.0) for pid, cpu in after.items())


def _server_pids(gunicorn_pid: int, database_url: str) -> tuple[list[int], list[int]]:
    """(gunicorn master + workers, PostgreSQL backends connected to the bench database)."""
    import psycopg2

    children = subprocess.run(
        ["ps", "-o", "pid=", "--ppid", str(gunicorn_pid)], capture_output=True, text=True
    ).stdout.split()
    parts = urlsplit(database_url)
    conn = psycopg2.connect(
        host=parts.hostname, port=parts.port or 5432, user=parts.username, dbname="postgres"
    )
    with conn.cursor() as cur:
        cur.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s", [parts.path.lstrip("/")])
        backends = [row[0] for row in cur.fetchall()]
    conn.close()
    return [gunicorn_pid, *map(int, children)], backends


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _client(
    base: str, token: str, case_ids: list[str], stop_at: float, warm_until: float, out: mp.Queue
) -> None:
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {token}"
    rng = random.Random(token)
    samples: list[tuple[str, float, int]] = []
    while time.monotonic() < stop_at:
        kind = rng.choice(["list", "filtered", "detail", "detail"])
        if kind == "list":
            url = f"{base}/api/v1/cases/?page_size=25"
        elif kind == "filtered":
            url = f"{base}/api/v1/cases/?status=predicted&page=2&page_size=10"
        else:
            url = f"{base}/api/v1/cases/{rng.choice(case_ids)}/"
        start = time.perf_counter()
        try:
            response = session.get(url, timeout=30)
            code = response.status_code
            response.content  # noqa: B018 (read the whole body)
        except requests.RequestException:
            code = 0
        elapsed = (time.perf_counter() - start) * 1000
        if time.monotonic() >= warm_until:
            samples.append((kind, elapsed, code))
    out.put(samples)


def _process(base, tokens, ids_by_token, stop_at, warm_until, out) -> None:
    threads = [
        threading.Thread(target=_client, args=(base, t, ids_by_token[t], stop_at, warm_until, out))
        for t in tokens
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def _pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, round(q * (len(values) - 1)))]


def _run_wrk(args, base, tokens, ids_by_token, gunicorn_pid) -> list[tuple]:
    import tempfile

    rows = []
    cpu_notes.clear()
    lua_tokens = ", ".join(f'"{t}"' for t in tokens)
    lua_ids = ", ".join("{" + ", ".join(f'"{i}"' for i in ids_by_token[t]) + "}" for t in tokens)
    for mode in ("list", "filtered", "detail"):
        with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as fh:
            fh.write(WRK_SCRIPT % {"tokens": lua_tokens, "ids": lua_ids, "mode": mode, "seed": 1})
        for duration, keep in ((args.warmup, False), (args.duration, True)):
            app_cpu, db_cpu = map(_cpu_seconds, _server_pids(gunicorn_pid, args.database_url))
            out = subprocess.run(
                [
                    "wrk",
                    f"-t{min(args.wrk_threads, args.clients)}",
                    f"-c{args.clients}",
                    f"-d{duration:.0f}s",
                    "--timeout",
                    "10s",
                    "-s",
                    fh.name,
                    f"{base}/",
                ],
                check=True,
                capture_output=True,
                text=True,
            ).stdout
            if keep:
                line = next(x for x in out.splitlines() if x.startswith("RESULT"))
                n, micros, p50, p95, p99, worst, status_err, sock_err = line.split()[1:]
                app_now, db_now = map(_cpu_seconds, _server_pids(gunicorn_pid, args.database_url))
                app_ms = _cpu_delta(app_cpu, app_now) * 1000 / int(n)
                db_ms = _cpu_delta(db_cpu, db_now) * 1000 / int(n)
                cpu_notes.append((LABELS[mode], app_ms, db_ms))
                rows.append(
                    (
                        LABELS[mode],
                        int(n),
                        int(n) / (int(micros) / 1e6),
                        float(p50),
                        float(p95),
                        float(p99),
                        float(worst),
                        int(status_err) + int(sock_err),
                    )
                )
        os.unlink(fh.name)
    return rows


def _run_python(args, base, tokens, ids_by_token) -> list[tuple]:
    now = time.monotonic()
    warm_until, stop_at = now + args.warmup, now + args.warmup + args.duration
    out: mp.Queue = mp.Queue()
    groups = [tokens[i :: args.processes] for i in range(args.processes)]
    procs = [
        mp.Process(target=_process, args=(base, g, ids_by_token, stop_at, warm_until, out))
        for g in groups
        if g
    ]
    for p in procs:
        p.start()
    samples = [s for _ in range(args.clients) for s in out.get()]
    for p in procs:
        p.join()
    rows = []
    for kind in ("list", "filtered", "detail", "all"):
        values = [ms for k, ms, _ in samples if kind in ("all", k)]
        errors = sum(1 for k, _, code in samples if kind in ("all", k) and code != 200)
        rows.append(
            (
                LABELS.get(kind, "all (mixed)"),
                len(values),
                len(values) / args.duration,
                statistics.median(values),
                _pct(values, 0.95),
                _pct(values, 0.99),
                max(values),
                errors,
            )
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument(
        "--skip-setup", action="store_true", help="reuse the database seeded by an earlier run"
    )
    parser.add_argument("--driver", choices=["wrk", "python"], default="wrk")
    parser.add_argument("--wrk-threads", type=int, default=2)
    parser.add_argument("--processes", type=int, default=4, help="python driver: processes")
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--warmup", type=float, default=5.0)
    parser.add_argument("--cases-per-client", type=int, default=60)
    # Defaults: the layout docker-compose.yml deploys (3 sync workers, WEB_CONCURRENCY).
    parser.add_argument("--workers", type=int, default=3, help="gunicorn workers")
    parser.add_argument("--threads", type=int, default=1, help="gunicorn threads per worker")
    parser.add_argument("--database-url", default="postgres://postgres@127.0.0.1:5432/fp_api_bench")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/13")
    parser.add_argument("--broker-url", default="redis://127.0.0.1:6379/13")
    args = parser.parse_args()
    env = _env(args)

    tokens_file = ROOT / "var" / "bench-api-tokens.txt"
    if not args.skip_setup:
        _recreate_database(args.database_url)
    subprocess.run(
        [PYTHON, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=ROOT, env=env, check=True
    )
    if not args.skip_setup:
        seeded = subprocess.run(
            [PYTHON, "-c", SEED, str(args.clients), str(args.cases_per_client)],
            cwd=ROOT,
            env=env,
            check=True,
            capture_output=True,
            text=True,
        )
        tokens_file.parent.mkdir(exist_ok=True)
        tokens_file.write_text(seeded.stdout)
    tokens = [line for line in tokens_file.read_text().split() if line.startswith("fp_")]
    assert len(tokens) >= args.clients, "seed more clients (run without --skip-setup)"

    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    gunicorn = subprocess.Popen(
        [
            str(Path(PYTHON).parent / "gunicorn"),
            "fracture_portal.wsgi",
            "-b",
            f"127.0.0.1:{port}",
            "-w",
            str(args.workers),
            "--threads",
            str(args.threads),
            "--log-level",
            "warning",
        ],
        cwd=ROOT,
        env=env,
    )
    try:
        for _ in range(100):
            try:
                requests.get(f"{base}/healthz", timeout=1)
                break
            except requests.RequestException:
                time.sleep(0.3)
        ids_by_token = {}
        for token in tokens:
            r = requests.get(
                f"{base}/api/v1/cases/?page_size=100",
                headers={"Authorization": f"Bearer {token}"},
                timeout=30,
            )
            r.raise_for_status()
            ids_by_token[token] = [row["id"] for row in r.json()["results"]]

        if args.driver == "wrk":
            rows = _run_wrk(args, base, tokens, ids_by_token, gunicorn.pid)
        else:
            rows = _run_python(args, base, tokens, ids_by_token)
    finally:
        gunicorn.send_signal(signal.SIGTERM)
        gunicorn.wait(timeout=30)

    print(
        f"\n{args.clients} concurrent clients ({args.driver}), {args.duration:.0f} s per run after "
        f"{args.warmup:.0f} s warm-up; gunicorn {args.workers} workers x {args.threads} threads\n"
    )
    print("| endpoint | requests | req/s | p50 | p95 | p99 | max | errors |")
    print("|---|---|---|---|---|---|---|---|")
    for label, n, rate, p50, p95, p99, worst, errors in rows:
        print(
            f"| {label} | {n} | {rate:.0f} | {p50:.0f} ms | {p95:.0f} ms | {p99:.0f} ms "
            f"| {worst:.0f} ms | {errors} |"
        )
    if cpu_notes:
        print(
            "\nServer CPU per request (gunicorn processes; PostgreSQL backends of the bench DB):\n"
        )
        print("| endpoint | app CPU | PostgreSQL CPU | requests/s per busy core |")
        print("|---|---|---|---|")
        for label, app_ms, db_ms in cpu_notes:
            print(f"| {label} | {app_ms:.1f} ms | {db_ms:.1f} ms | {1000 / (app_ms + db_ms):.0f} |")


if __name__ == "__main__":
    main()
