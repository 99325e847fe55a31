"""The image of deploy/Containerfile, built and run on this machine, without a registry.

    python3 -m deploy.image build [--release R]    build it (as root); prints its name
    python3 -m deploy.image run [-e K=V ...] -- COMMAND    run COMMAND in it, as a pod would

``build`` makes the base once, a Debian 12 root filesystem with python3 and venv
(``debootstrap``, trusting this machine's local CAs, imported into podman; reused while
present), then builds the Containerfile on it (``podman build --isolation chroot``),
tagged ``herd:<release>``. podman and debootstrap are installed as the herd's other
Debian packages are (deploy/herd/debian.py). podman's storage is this clone's own,
outside it (``/var/lib/herd-image/<clone>-<hash>``); the suite's build logs to
``.herd/image-build.log``. ``cannot_build()`` names why this machine cannot build (not
root, no podman to be had, podman refused here); any other failure raises ``HerdError``.

``Container`` runs a command of a mounted image (``mounted``) as the cluster would: the
image's USER, ENV and WORKDIR, the root filesystem read-only, a private ``/tmp`` and
``/dev/shm``, the host's network (the herd's services on loopback are reachable), chrooted
in a mount namespace of its own, so nothing it mounts outlives it. No ``podman run``:
this sandbox refuses it (crun: setrlimit RLIMIT_NOFILE, then RLIMIT_NPROC, "Operation not
permitted"). Standard library only.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from deploy.herd.debian import ensure_packages
from deploy.herd.processes import HerdError, Process, spawn
from deploy.herd.profiles import IS_ROOT, PROFILES, ROOT, Profile, outside_the_clone

# podman's storage (whole root filesystems, device nodes included) and the base's making
# stay out of the clone, where anything that walks its tree would wander in; its
# run-time state on /run, which a reboot empties (it records mounts there).
STATE = outside_the_clone(Path("/var/lib/herd-image"))
RUN_STATE = outside_the_clone(Path("/run/herd-image"))
BUILD_LOG = ROOT / ".herd" / "image-build.log"
CONTAINERFILE = ROOT / "deploy" / "Containerfile"
PACKAGES = {"/usr/bin/podman": "podman", "/usr/sbin/debootstrap": "debootstrap"}

DEBIAN_MIRROR = "http://deb.debian.org/debian"
DEBOOTSTRAP = [
    "--variant=minbase",
    "--include=python3,python3-venv,python-is-python3,ca-certificates",
    "bookworm",
]
# This machine's own certificate authorities (an intercepting proxy's, a company's): the
# base trusts them too, so its build reaches PyPI as this machine does.
LOCAL_CAS = Path("/usr/local/share/ca-certificates")
# What the official python images set, and podman import does not.
BASE_CONFIG = ["ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "ENV LANG=C.UTF-8"]

# Exit status of `build` when this machine cannot build (the reason on its last line).
CANNOT_BUILD = 3


def podman_command(*args: str) -> list[str]:
    """podman on this clone's own storage."""
    where = ["--root", str(STATE / "storage"), "--runroot", str(RUN_STATE / "storage")]
    return ["podman", *where, "--tmpdir", str(RUN_STATE / "libpod"), "--events-backend", "file", *args]


def podman(*args: str, stdin=None, stream: bool = False) -> str:
    """Its output (``stream``: shown, not returned); HerdError with its message on failure."""
    captured = None if stream else subprocess.PIPE
    result = subprocess.run(podman_command(*args), stdin=stdin, stdout=captured, stderr=captured, text=True)
    if result.returncode != 0:
        message = (result.stderr or "see its output above").strip()[-2000:]
        raise HerdError(f"podman {args[0]} failed (exit {result.returncode}): {message}")
    return result.stdout or ""


def cannot_build() -> str | None:
    """Why this machine cannot build the image, or None. Installs podman and debootstrap."""
    if not IS_ROOT:
        return "building the image needs root (debootstrap, chroot and podman's storage)"
    if not shutil.which("apt-get") and not all(Path(command).exists() for command in PACKAGES):
        return "podman and debootstrap are missing and there is no apt-get to install them"
    ensure_packages(extra=PACKAGES, herd=False)
    try:
        podman("info")
    except HerdError as error:
        return f"podman cannot run here: {error}"
    return None


def image_exists(name: str) -> bool:
    return subprocess.run(podman_command("image", "exists", name)).returncode == 0


def image_id(name: str) -> str | None:
    return podman("image", "inspect", "--format", "{{.Id}}", name).strip() if image_exists(name) else None


def phase(name: str, started: float) -> None:
    print(f"image: {name} took {time.monotonic() - started:.1f} s", flush=True)


def remove_tree(path: Path) -> None:
    # A root filesystem holds device nodes; never cross into a mount left inside it.
    if path.exists():
        subprocess.run(["rm", "-rf", "--one-file-system", str(path)], check=True)


def base_name() -> str:
    """Named after what makes it: another list of packages or another local CA, another base."""
    made_of = hashlib.sha256(" ".join(DEBOOTSTRAP).encode())
    for ca in sorted(LOCAL_CAS.rglob("*.crt")):
        made_of.update(ca.read_bytes())
    return f"localhost/herd-base:bookworm-{made_of.hexdigest()[:12]}"


def trust_local_cas(rootfs: Path) -> None:
    cas = sorted(LOCAL_CAS.rglob("*.crt"))
    if cas:
        target = rootfs / LOCAL_CAS.relative_to("/")
        target.mkdir(parents=True, exist_ok=True)
        for ca in cas:
            shutil.copyfile(ca, target / ca.name)
        subprocess.run(["chroot", str(rootfs), "update-ca-certificates"], check=True, stdout=subprocess.DEVNULL)


def ensure_base() -> str:
    """The base image: debootstrapped and imported once, then reused."""
    base = base_name()
    with open(STATE / "base.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another suite of this clone may be making it
        if image_exists(base):
            print(f"image: reusing {base}", flush=True)
            return base
        rootfs = STATE / "rootfs"
        remove_tree(rootfs)
        started = time.monotonic()
        # In a mount namespace of its own: the /proc and /sys it mounts die with it.
        command = ["unshare", "--mount", "--propagation", "private", "debootstrap", *DEBOOTSTRAP]
        result = subprocess.run([*command, str(rootfs), DEBIAN_MIRROR])
        if result.returncode != 0:
            raise HerdError(f"debootstrap failed (exit {result.returncode}): see its output above")
        trust_local_cas(rootfs)
        phase("debootstrap", started)
        started = time.monotonic()
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "--numeric-owner", "-c", "."], stdout=subprocess.PIPE)
        changes = [arg for change in BASE_CONFIG for arg in ("--change", change)]
        try:
            podman("import", *changes, "-", base, stdin=tar.stdout)
        finally:
            tar.stdout.close()
            tar.wait()
        remove_tree(rootfs)
        phase("import", started)
        return base


def build(release: str) -> str:
    """Build deploy/Containerfile on the base as ``herd:<release>``; returns its name. The
    steps' output goes to this process's."""
    STATE.mkdir(parents=True, exist_ok=True)
    base = ensure_base()
    image = f"localhost/herd:{release}"
    previous = image_id(image)
    started = time.monotonic()
    podman(
        "build",
        "--isolation",
        "chroot",
        "--pull=never",
        "--file",
        str(CONTAINERFILE),
        "--build-arg",
        f"PYTHON_IMAGE={base}",
        "--build-arg",
        f"HERD_RELEASE={release}",
        "--tag",
        image,
        str(ROOT),
        stream=True,
    )
    phase("build", started)
    if previous and previous != image_id(image):
        # The one this tag named before (hundreds of MB): its layers still in use stay.
        subprocess.run(podman_command("rmi", previous), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return image


@dataclass(frozen=True)
class ImageConfig:
    user: str
    env: dict[str, str]
    workdir: str
    cmd: list[str]


def config(image: str) -> ImageConfig:
    """The image's USER, ENV, WORKDIR and CMD."""
    found = json.loads(podman("image", "inspect", image))[0]["Config"]
    env = dict(item.split("=", 1) for item in found.get("Env", []))
    return ImageConfig(found.get("User", "0"), env, found.get("WorkingDir") or "/", found.get("Cmd") or [])


@contextlib.contextmanager
def mounted(image: str) -> Iterator[Path]:
    """The image's root filesystem, mounted for the block (never written to: see Container)."""
    started = time.monotonic()
    root = Path(podman("image", "mount", image).strip())
    phase("mount", started)
    try:
        yield root
    finally:
        podman("image", "unmount", image)


# Run by sh in the new mount namespace: $1 the image's root, $2 the host folder for /tmp,
# $3 uid:gid, $4 the working directory, then the environment and the command.
ENTER = """
root=$1 tmp=$2 user=$3 workdir=$4; shift 4
mount --bind "$root" "$root"
mount -o remount,bind,ro "$root"
mount --rbind /dev "$root/dev"
mount -t tmpfs -o size=64m,mode=1777 tmpfs "$root/dev/shm"
mount -t proc proc "$root/proc"
mount --bind "$tmp" "$root/tmp"
exec chroot --userspec="$user" "$root" env -i -C "$workdir" "$@"
"""


class Container(Process):
    """``command`` (default: the image's CMD) in the mounted image ``root``, with the
    image's ENV overlaid by ``env``, as a process of ``profile`` named ``name``."""

    own_group = True

    def __init__(
        self,
        profile: Profile,
        name: str,
        root: Path,
        image: ImageConfig,
        command: list[str] | None = None,
        env: dict[str, str] | None = None,
        tmp: Path | None = None,
    ) -> None:
        super().__init__(profile)
        self.name = name
        self.root = root
        self.image = image
        self.command = command or image.cmd
        self.env = {**image.env, **(env or {})}
        # The pod's emptyDir: what the process writes to /tmp, visible here; empty at first
        # unless another container's is given (a probe's, beside its process).
        self.tmp = tmp or profile.state / "tmp" / name
        self.shares_tmp = tmp is not None

    def user(self) -> str:
        """The image's USER as uid:gid; without a group, the user's own from the image."""
        user = self.image.user or "0"
        if ":" in user:
            return user
        for line in (self.root / "etc" / "passwd").read_text().splitlines():
            fields = line.split(":")
            if user in (fields[0], fields[2]):
                return f"{fields[2]}:{fields[3]}"
        return f"{user}:0"

    def command_line(self) -> list[str]:
        if not self.shares_tmp:
            remove_tree(self.tmp)
        self.tmp.mkdir(parents=True, exist_ok=True)
        self.tmp.chmod(0o1777)
        env = [f"{key}={value}" for key, value in self.env.items()]
        enter = ["unshare", "--mount", "--propagation", "private", "sh", "-euc", ENTER, "sh"]
        return [*enter, str(self.root), str(self.tmp), self.user(), self.image.workdir, *env, *self.command]

    def start(self) -> None:
        spawn(self, self.command_line(), {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})

    def run(self, timeout: float | None = 60, capture: bool = True) -> subprocess.CompletedProcess:
        """Run the command to its end here; its exit status (and output, ``capture``d)."""
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
        return subprocess.run(self.command_line(), env=env, capture_output=capture, text=True, timeout=timeout)


class BackgroundBuild:
    """``python3 -m deploy.image build`` in a niced process of its own (the suite starts it
    as it begins and waits for it at the image's test), logging to ``BUILD_LOG``."""

    def __init__(self, release: str) -> None:
        self.release = release
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        BUILD_LOG.parent.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", "deploy.image", "build", "--release", self.release]
        with open(BUILD_LOG, "w") as log:
            self.process = subprocess.Popen(
                ["nice", "-n", "19", "ionice", "-c", "3", *command],
                cwd=ROOT,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def result(self, timeout: float) -> tuple[str | None, str]:
        """(the image, "") once built; (None, why) if this machine cannot build. A failed
        or unfinished build raises HerdError with the log's end."""
        if self.process is None:
            self.start()
        try:
            status = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise HerdError(f"the image was still building after {timeout:.0f} s; see {BUILD_LOG}") from None
        lines = BUILD_LOG.read_text(errors="replace").strip().splitlines() or [""]
        if status == 0:
            return lines[-1], ""
        if status == CANNOT_BUILD:
            return None, lines[-1]
        tail = "\n".join(lines[-40:])
        raise HerdError(f"the image build failed (exit {status}); {BUILD_LOG} ends:\n{tail}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python3 -m deploy.image", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    build_command = commands.add_parser("build", help="build the image (as root)")
    build_command.add_argument("--release", default="local", help="HERD_RELEASE and the tag (default: local)")
    run_command = commands.add_parser("run", help="run a command in the image, read-only, as its USER")
    run_command.add_argument("--release", default="local", help="the image herd:<release> (default: local)")
    run_command.add_argument("-e", "--env", action="append", default=[], metavar="K=V")
    run_command.add_argument("command", nargs=argparse.REMAINDER, help="default: the image's CMD")
    args = parser.parse_args(argv)
    try:
        if args.command == "build":
            reason = cannot_build()
            if reason:
                print(f"image: cannot build here: {reason}", file=sys.stderr)
                print(reason, flush=True)
                return CANNOT_BUILD
            started = time.monotonic()
            image = build(args.release)
            phase("everything", started)
            print(image)
            return 0
        image = f"localhost/herd:{args.release}"
        env = dict(item.split("=", 1) for item in args.env)
        command = args.command[1:] if args.command[:1] == ["--"] else args.command
        with mounted(image) as root:
            container = Container(PROFILES["local"], "image-run", root, config(image), command, env)
            return container.run(timeout=None, capture=False).returncode
    except HerdError as error:
        print(f"image: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
