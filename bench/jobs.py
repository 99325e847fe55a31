"""Jobs and sockets on the bench herd: no-op jobs per second through RabbitMQ, the time
from a job's completion to its owner's socket receiving it (p50, p99), and how many
sockets one replica holds while delivering an event to all within 1 s.
``measure()`` returns the figures, ``render(part)`` writes its section of the report.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import platform
import resource
import statistics
import time
import uuid
from dataclasses import dataclass

from bench.rendering import Figures, Part, failed
from deploy.herd.app import Worker
from deploy.herd.control import Herd
from deploy.herd.profiles import PROFILES

PROFILE = PROFILES["bench"]
os.environ.update(PROFILE.django_env())
os.environ.setdefault("DJANGO_LOG_LEVEL", "WARNING")

import django  # noqa: E402

django.setup()

import httpx  # noqa: E402
import websockets  # noqa: E402
from django.utils import timezone  # noqa: E402
from django_redis import get_redis_connection  # noqa: E402
from PIL import Image  # noqa: E402

from accounts import services as accounts_services  # noqa: E402
from accounts.models import User  # noqa: E402
from accounts.pictures import process_picture  # noqa: E402
from jobs import services as job_services  # noqa: E402
from jobs.models import Job  # noqa: E402
from jobs.tasks import ping  # noqa: E402
from notifications.push import push  # noqa: E402

PINGS = int(os.environ.get("BENCH_PINGS", "2000"))
JOBS = int(os.environ.get("BENCH_JOBS", "60"))
SOCKET_STEPS = [int(n) for n in os.environ.get("BENCH_SOCKETS", "100,250,500,1000,2000").split(",")]
PASSWORD = "bench-password-1234"


def bench_user() -> User:
    user = User.objects.filter(username="bench-jobs").first()
    if user is None:
        user = accounts_services.create_user(username="bench-jobs", email="b@example.com", password=PASSWORD)
    picture = io.BytesIO()
    Image.new("RGB", (640, 480), (30, 90, 160)).save(picture, "JPEG")
    picture.seek(0)
    picture.size = len(picture.getvalue())
    accounts_services.update_profile(user, display_name="Bench", bio="", picture=process_picture(picture))
    return user


def session_cookie() -> str:
    with httpx.Client(base_url=PROFILE.url) as client:
        page = client.get("/accounts/login/")
        token = page.text.split('name="csrfmiddlewaretoken" value="', 1)[1].split('"', 1)[0]
        client.post(
            "/accounts/login/", data={"username": "bench-jobs", "password": PASSWORD, "csrfmiddlewaretoken": token}
        )
        return client.cookies["sessionid"]


def pings_per_second() -> float:
    token = uuid.uuid4().hex
    redis = get_redis_connection("default")
    started = time.monotonic()
    for _ in range(PINGS):
        ping.send(token)
    while int(redis.get(f"herd:ping:{token}") or 0) < PINGS:
        if time.monotonic() - started > 300:
            raise SystemExit("the worker did not finish the pings in 5 minutes")
        time.sleep(0.01)
    return PINGS / (time.monotonic() - started)


async def completions(user: User, cookie: str) -> tuple[dict[str, float], list[Job]]:
    """When the socket heard each job succeed (wall clock), and the jobs."""
    received: dict[str, float] = {}
    url = PROFILE.url.replace("http://", "ws://") + "ws/notifications/"
    headers = {"Cookie": f"sessionid={cookie}", "Origin": PROFILE.url.rstrip("/")}
    async with websockets.connect(url, additional_headers=headers, max_queue=None) as socket:

        def start_jobs() -> list[Job]:
            jobs = []
            for _ in range(JOBS):
                jobs.append(job_services.start_job(user, "picture_thumbnail", idempotency_key=uuid.uuid4().hex))
                time.sleep(0.05)
            return jobs

        starter = asyncio.ensure_future(asyncio.to_thread(start_jobs))
        deadline = time.monotonic() + 120
        while len(received) < JOBS and time.monotonic() < deadline:
            event = json.loads(await asyncio.wait_for(socket.recv(), timeout=120))
            if event.get("type") == "job.progress" and event.get("state") == "succeeded":
                received[event["job"]] = time.time()
        jobs = await starter
    return received, jobs


def completion_latencies(user: User, cookie: str) -> list[float]:
    received, jobs = asyncio.run(completions(user, cookie))
    mine = Job.objects.for_user(user.pk).filter(pk__in=[j.pk for j in jobs])
    finished = {str(j.pk): j.finished_at for j in mine}
    return [(received[key] - finished[key].timestamp()) * 1000 for key in received if finished.get(key)]


async def broadcast_time(port: int, cookie: str, user: User, sockets: int) -> float | None:
    url = f"ws://127.0.0.1:{port}/ws/notifications/"
    headers = {"Cookie": f"sessionid={cookie}", "Origin": f"http://127.0.0.1:{port}"}
    connections = []
    try:
        for _ in range(sockets):
            connections.append(await websockets.connect(url, additional_headers=headers, open_timeout=30))
        await asyncio.sleep(0.5)
        marker = uuid.uuid4().hex
        sent = time.monotonic()
        await asyncio.to_thread(push, user.pk, {"type": "notification.read", "unread": 0, "marker": marker})

        async def wait(connection) -> float:
            while True:
                event = json.loads(await connection.recv())
                if event.get("type") == "notification.read":
                    return time.monotonic()

        arrivals = await asyncio.wait_for(asyncio.gather(*(wait(c) for c in connections)), timeout=10)
        return max(arrivals) - sent
    except (TimeoutError, OSError, websockets.exceptions.WebSocketException):
        return None
    finally:
        await asyncio.gather(*(c.close() for c in connections), return_exceptions=True)


@dataclass
class JobsFigures:
    pings: int
    pings_per_second: float  # median of 3 runs
    jobs: int
    latency_p50_ms: float
    latency_p99_ms: float
    sockets: list[tuple[int, float | None]]  # (sockets on one replica, seconds to reach all; None: failed)


def measure(herd: Herd | None = None) -> JobsFigures:
    """Needs the app replicas up with sessions in Redis (the herd's configuration)."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 65536), hard))
    if herd is None:
        herd = Herd(PROFILE, replicas=2)
        herd.start_services()
        herd.start_herd_processes()
    worker = Worker(PROFILE)
    worker.ensure()
    try:
        user = bench_user()
        cookie = session_cookie()
        rates = [pings_per_second() for _ in range(3)]
        latencies = completion_latencies(user, cookie)
        held = []
        for count in SOCKET_STEPS:
            seconds = asyncio.run(broadcast_time(herd.webs()[0].port, cookie, user, count))
            held.append((count, seconds))
            if seconds is None or seconds > 1.0:
                break
    finally:
        worker.stop()
    if len(latencies) < 2:
        raise RuntimeError(f"only {len(latencies)} of {JOBS} jobs reached the socket")
    return JobsFigures(
        pings=PINGS,
        pings_per_second=statistics.median(rates),
        jobs=len(latencies),
        latency_p50_ms=statistics.median(latencies),
        latency_p99_ms=statistics.quantiles(latencies, n=100)[98],
        sockets=held,
    )


def render(part: Part) -> list[str]:
    """This part's section of the report (bench/report.py): its table, or why it failed."""
    lines = ["### Jobs and sockets (bench/jobs.py)", ""]
    if not part.ok:
        return lines + failed(part)
    figures = part.value
    lines += [
        "| measure | value |",
        "|---|---:|",
        f"| no-op jobs per second through RabbitMQ and the worker (1 process x 4 threads; "
        f"median of 3 x {figures.pings}) | {figures.pings_per_second:.0f} |",
        f"| job completion commit to the browser's socket, p50 ({figures.jobs} jobs) "
        f"| {figures.latency_p50_ms:.0f} ms |",
        f"| job completion commit to the browser's socket, p99 | {figures.latency_p99_ms:.0f} ms |",
    ]
    for count, seconds in figures.sockets:
        shown = "failed" if seconds is None else f"{seconds * 1000:.0f} ms"
        lines.append(f"| one event to {count:,} sockets held by one replica | {shown} |")
    held = [count for count, seconds in figures.sockets if seconds is not None and seconds <= 1.0]
    lines += [
        "",
        f"- sockets one replica holds while one event still reaches all of them within 1 s: "
        f"**{max(held):,}**{' or more' if held and held[-1] == figures.sockets[-1][0] else ''}"
        if held
        else "- sockets per replica: no step delivered within 1 s",
        "",
    ]
    return lines


def history(figures: JobsFigures) -> Figures:
    """This part's figures for the history (bench/rendering.py): the job rate, the socket
    latency and how many sockets one event reached within 1 s."""
    held = [count for count, seconds in figures.sockets if seconds is not None and seconds <= 1.0]
    measures = {
        "job completion to the socket, p50 ms": figures.latency_p50_ms,
        "job completion to the socket, p99 ms": figures.latency_p99_ms,
        "sockets one event reaches within 1 s (one replica)": max(held, default=0),
    }
    return {"requests/s": {"no-op jobs/s": figures.pings_per_second}, "measures": measures}


def main() -> None:
    figures = measure()
    print(
        f"## Jobs and sockets ({platform.node()}, {os.cpu_count()} cores, 1 worker process x 4 threads, "
        f"{timezone.now():%Y-%m-%d})\n"
    )
    print("| measure | value |")
    print("|---|---:|")
    print(
        f"| no-op jobs per second through RabbitMQ and the worker (median of 3 x {figures.pings}) | "
        f"{figures.pings_per_second:.0f} |"
    )
    print(f"| completion commit to the browser's socket, p50 ({figures.jobs} jobs) | {figures.latency_p50_ms:.0f} ms |")
    print(f"| completion commit to the browser's socket, p99 | {figures.latency_p99_ms:.0f} ms |")
    for count, seconds in figures.sockets:
        shown = "failed" if seconds is None else f"{seconds * 1000:.0f} ms"
        print(f"| one event to {count} sockets on one replica | {shown} |")


if __name__ == "__main__":
    main()
