"""Jobs and sockets on the bench herd: no-op jobs per second through RabbitMQ, the time
from a job's completion to its owner's socket receiving it (p50, p99), and how many
sockets one replica holds while delivering an event to all within 1 s.
``measure()`` returns the figures, ``render(part)`` writes its section of the report.

The sockets are opened from client processes of their own (bench/socket_clients.py), so
the load generator is not what gives out first; at each step the replica's CPU use while
it delivers, its open-file limit and the clients' failures say what limits it.
"""

from __future__ import annotations

import io
import os
import platform
import random
import statistics
import threading
import time
import uuid
from dataclasses import dataclass, field

from bench import socket_clients
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
SOCKET_STEPS = [int(n) for n in os.environ.get("BENCH_SOCKETS", "1000,2500,5000,7500").split(",")]
SOCKET_CLIENTS = int(os.environ.get("BENCH_SOCKET_CLIENTS", "4"))  # client processes the sockets spread over
SOCKET_TARGET = 5000
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


def completion_latencies(user: User, cookie: str) -> list[float]:
    """Milliseconds from each job's finishing commit (its ``finished_at``) to the moment its
    ``succeeded`` event reached a socket held by a process of its own."""
    url = PROFILE.url.replace("http://", "ws://") + "ws/notifications/"
    headers = {"Cookie": f"sessionid={cookie}", "Origin": PROFILE.url.rstrip("/")}

    def start_jobs() -> list[Job]:
        jobs = []
        for _ in range(JOBS):
            jobs.append(job_services.start_job(user, "picture_thumbnail", idempotency_key=uuid.uuid4().hex))
            time.sleep(0.05)
        return jobs

    received, jobs = socket_clients.listen(url, headers, JOBS, 120, start_jobs)
    mine = Job.objects.for_user(user.pk).filter(pk__in=[j.pk for j in jobs])
    finished = {str(j.pk): j.finished_at for j in mine}
    return [(received[key] - finished[key].timestamp()) * 1000 for key in received if finished.get(key)]


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of a process so far."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far, all cores."""
    with open("/proc/stat") as stat:
        ticks = [int(n) for n in stat.readline().split()[1:]]
    idle = ticks[3] + ticks[4]  # idle, iowait
    return (sum(ticks) - idle) / os.sysconf("SC_CLK_TCK"), sum(ticks) / os.sysconf("SC_CLK_TCK")


def file_limit(pid: int) -> int | None:
    """The soft open-file limit of a running process."""
    with open(f"/proc/{pid}/limits") as limits:
        for line in limits:
            if line.startswith("Max open files"):
                value = line.split()[3]
                return None if value == "unlimited" else int(value)
    return None


@dataclass
class Step:
    """One event to ``sockets`` sockets on one replica."""

    sockets: int
    opened: int
    open_failures: int
    first_error: str
    received: int  # sockets that got the event within socket_clients.WAIT_SECONDS
    last_seconds: float | None  # from the push to the last socket that got it
    median_seconds: float | None
    replica_cpu: float | None  # share of one core the replica used from the push to the last arrival
    open_seconds: float = 0.0
    machine_busy: float | None = None  # share of all the machine's cores busy meanwhile

    @property
    def replica_us_per_socket(self) -> float | None:
        if self.replica_cpu is None or self.last_seconds is None or not self.received:
            return None
        return self.replica_cpu * self.last_seconds / self.received * 1e6

    @property
    def all_within_1s(self) -> bool:
        return self.received == self.sockets and self.last_seconds is not None and self.last_seconds <= 1.0

    def shortfall(self) -> str:
        """What this step says limits the replica, from what was measured."""
        if self.open_failures:
            return (
                f"{self.open_failures:,} of {self.sockets:,} sockets could not open (first error: {self.first_error})"
            )
        if self.received < self.opened:
            return f"{self.opened - self.received:,} of {self.opened:,} open sockets did not get the event within 10 s"
        said = f"the last socket got the event after {self.last_seconds * 1000:,.0f} ms"
        if self.replica_cpu is not None:
            said += f"; the replica's process used {self.replica_cpu:.0%} of a core meanwhile"
            said += f" ({self.replica_us_per_socket:,.0f} µs of CPU per socket)"
        if self.machine_busy is not None:
            said += f", while the machine's {os.cpu_count()} cores were {self.machine_busy:.0%} busy"
            if self.replica_cpu is not None and self.replica_cpu < 0.8 and self.machine_busy > 0.9:
                said += " (the replica waited for a core: the machine, shared with the clients, is what ran out)"
        return said


def broadcast(port: int, cookie: str, user: User, sockets: int) -> Step:
    """Open ``sockets`` sockets on the replica at ``port`` from client processes, push one
    event to their user, and time its arrival at each."""
    url = f"ws://127.0.0.1:{port}/ws/notifications/"
    headers = {"Cookie": f"sessionid={cookie}", "Origin": f"http://127.0.0.1:{port}"}
    marker = random.randrange(1_000_000, 2_000_000_000)
    pid = next(web.pid() for web in Herd(PROFILE).webs() if web.port == port)
    samples: list[tuple[float, float, float, float]] = []  # wall clock, replica CPU, machine busy, total
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            samples.append((time.time(), cpu_seconds(pid), *machine_cpu()))
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)

    def send() -> None:
        sampler.start()
        push(user.pk, {"type": "notification.read", "unread": marker})

    try:
        sent, held = socket_clients.hold(url, headers, sockets, SOCKET_CLIENTS, marker, send)
    finally:
        stop.set()
    arrivals = sorted(a - sent for h in held for a in h.arrivals)
    last = arrivals[-1] if arrivals else None
    cpu = busy = None
    if last is not None and samples:
        inside = [s for s in samples if s[0] <= sent + last + 0.02] or samples[:1]
        window = inside[-1][0] - samples[0][0]
        if window >= 0.05:
            cpu = (inside[-1][1] - samples[0][1]) / window
            busy = (inside[-1][2] - samples[0][2]) / max(inside[-1][3] - samples[0][3], 1e-9)
    return Step(
        sockets=sockets,
        opened=sum(h.opened for h in held),
        open_failures=sum(h.failed for h in held),
        first_error=next((h.first_error for h in held if h.first_error), ""),
        received=len(arrivals),
        last_seconds=last,
        median_seconds=statistics.median(arrivals) if arrivals else None,
        replica_cpu=cpu,
        machine_busy=busy,
        open_seconds=max((h.open_seconds for h in held), default=0.0),
    )


@dataclass
class JobsFigures:
    pings: int
    pings_per_second: float  # median of 3 runs
    jobs: int
    latency_p50_ms: float
    latency_p99_ms: float
    steps: list[Step] = field(default_factory=list)  # one event to more and more sockets on one replica
    replica_file_limit: int | None = None
    client_processes: int = SOCKET_CLIENTS

    def held(self) -> int:
        """The most sockets one event reached, all of them, within 1 s."""
        return max((step.sockets for step in self.steps if step.all_within_1s), default=0)

    def limit(self) -> str | None:
        """Why the target was missed, from the first step that fell short (None if met)."""
        if self.held() >= SOCKET_TARGET:
            return None
        short = next((step for step in self.steps if not step.all_within_1s), None)
        if short is None:
            return f"the steps stopped at {self.held():,} sockets (BENCH_SOCKETS)"
        return f"at {short.sockets:,} sockets, {short.shortfall()}"


def measure(herd: Herd | None = None) -> JobsFigures:
    """Needs the app replicas up with sessions in Redis (the herd's configuration)."""
    socket_clients.raise_file_limit()
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
        web = herd.webs()[0]
        steps = []
        for count in SOCKET_STEPS:
            steps.append(broadcast(web.port, cookie, user, count))
            print(f"   {count:,} sockets: {steps[-1]}", flush=True)
            if not steps[-1].all_within_1s:
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
        steps=steps,
        replica_file_limit=file_limit(web.pid()),
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
    lines += ["", *socket_lines(figures), ""]
    return lines


def ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:,.0f} ms"


def socket_lines(figures: JobsFigures) -> list[str]:
    """The socket steps' table and what they say: sockets held, and what limits them."""
    lines = [
        f"One event (one `group_send` to the user's group) to more and more sockets of one user on one "
        f"replica, opened from {figures.client_processes} client processes; the replica's open-file "
        f"limit: {figures.replica_file_limit or 'unlimited'}.",
        "",
        "| sockets | opened (failed) | got the event | median | last socket | replica CPU meanwhile "
        "| replica CPU per socket | machine busy |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for step in figures.steps:
        cpu = "-" if step.replica_cpu is None else f"{step.replica_cpu:.0%}"
        per = "-" if step.replica_us_per_socket is None else f"{step.replica_us_per_socket:,.0f} µs"
        busy = "-" if step.machine_busy is None else f"{step.machine_busy:.0%}"
        lines.append(
            f"| {step.sockets:,} | {step.opened:,} ({step.open_failures:,}) | {step.received:,} "
            f"| {ms(step.median_seconds)} | {ms(step.last_seconds)} | {cpu} | {per} | {busy} |"
        )
    held = figures.held()
    last_step = figures.steps[-1] if figures.steps else None
    more = " or more" if last_step is not None and last_step.all_within_1s else ""
    lines += [
        "",
        f"- sockets one replica holds while one event still reaches all of them within 1 s: **{held:,}**{more}"
        if held
        else "- sockets per replica: no step delivered within 1 s",
    ]
    limit = figures.limit()
    if limit:
        lines.append(f"- short of {SOCKET_TARGET:,}: {limit}")
    return lines


def history(figures: JobsFigures) -> Figures:
    """This part's figures for the history (bench/rendering.py): the job rate, the socket
    latency, how many sockets one event reached within 1 s, and the last socket's time at
    each step."""
    measures = {
        "job completion to the socket, p50 ms": figures.latency_p50_ms,
        "job completion to the socket, p99 ms": figures.latency_p99_ms,
        "sockets one event reaches within 1 s (one replica)": figures.held(),
    }
    for step in figures.steps:
        if step.last_seconds is not None and step.received == step.sockets:
            measures[f"one event to {step.sockets:,} sockets, last socket ms"] = step.last_seconds * 1000
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
    print()
    print("\n".join(socket_lines(figures)))


if __name__ == "__main__":
    main()
