"""Build and run the worker image with podman as root, with no Docker engine and, if need be, no
container registry: the base is the one the CDK builds on (stacks/config.py WORKER_BASE_IMAGE, the
Dockerfile's default `ARG BASE_IMAGE` too) when it is here or can be pulled, else a stand-in built
from Debian's packages with debootstrap on the Debian release of that base (trixie: Python 3.13, the
production Python, like python:3.13-slim-trixie) and cached by tag, so a warm build costs seconds.

    python -m tests.image.podman [--arch amd64|arm64]     # build, print the image's tag

podman reads tests/image/containers.conf (runc, ulimits) through CONTAINERS_CONF.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Callable

from stacks.config import PRODUCTION_PYTHON, WORKER_BASE_IMAGE

ROOT = Path(__file__).resolve().parents[2]
CONTAINERS_CONF = Path(__file__).resolve().with_name("containers.conf")
DOCKERFILE = ROOT / "worker_image" / "Dockerfile"
IGNOREFILE = ROOT / "worker_image" / "Dockerfile.dockerignore"
# A TLS-intercepting proxy in front of the package index is trusted through the host's bundle.
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")


def base_suite(reference: str = WORKER_BASE_IMAGE) -> str:
    """The Debian release of an official python:<minor>-slim-<release> base (its tag says it), whose own
    python3 is that minor version: the stand-in is built from that release's packages."""
    tag = reference.partition("@")[0].rsplit("/", 1)[-1].partition(":")[2]
    match = re.fullmatch(r"(\d+\.\d+)-slim-([a-z]+)", tag)
    if not match:
        raise RuntimeError(f"the worker's base {reference!r} is not tagged python:<minor>-slim-<debian release>")
    return match.group(2)


# The stand-in base: the Debian release and what the Dockerfile needs of its base (python3 with venv).
SUITE = base_suite()
BASE_PACKAGES = ("python3", "python3-venv", "ca-certificates")
BASE_CHANGES = ("ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "ENV LANG=C.UTF-8",
                'CMD ["python3"]')
DEFAULT_MIRROR = "http://deb.debian.org/debian"
QEMU = {"arm64": "qemu-aarch64"}
# Emulated, Debian trixie's arm64 binaries are ~5x slower than bookworm's under bookworm's qemu-user
# (7.2): built with branch protection, they run pointer-authentication instructions, which qemu
# computes in full. On a CPU without that extension (Cortex-A72, ARMv8.0, Debian's arm64 baseline)
# they are NOPs. qemu-user reads QEMU_CPU from the emulated process's environment: debootstrap's
# second stage gets it, and so does the stand-in's image config (the worker build's RUN steps and
# the test's runs); natively it means nothing. The official base, the one deployed, has none.
QEMU_CPU = {"arm64": "cortex-a72"}

INSTALL_HINT = ("run `make deps` (it installs podman buildah runc uidmap debootstrap from Debian's packages; "
                "`make image-test` adds qemu-user-static binfmt-support)")

Log = Callable[[str], None]


class ToolMissing(RuntimeError):
    """A tool the image build needs is not installed: the message says how to install it."""


def host_arch() -> str:
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())


def environment() -> dict[str, str]:
    return dict(os.environ, CONTAINERS_CONF=str(CONTAINERS_CONF))


def require(*tools: str) -> None:
    path = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
    missing = [tool for tool in tools if not shutil.which(tool, path=path)]
    if missing:
        raise ToolMissing(f"{', '.join(missing)} not installed: {INSTALL_HINT}")


def podman(*args: str, timeout_s: float = 120, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    """`podman ARGS` with the project's containers.conf; its output captured as text."""
    require("podman")
    kwargs.setdefault("capture_output", "stdout" not in kwargs)
    result = subprocess.run(["podman", *args], env=environment(), text=True, timeout=timeout_s, **kwargs)
    if check and result.returncode != 0:
        output = (result.stdout or "")[-4000:] + (result.stderr or "")[-4000:]
        raise RuntimeError(f"podman {' '.join(args)} exited {result.returncode}:\n{output}")
    return result


def image_exists(reference: str, arch: str) -> bool:
    result = podman("image", "inspect", "--format", "{{.Architecture}}", reference, check=False)
    return result.returncode == 0 and result.stdout.strip() == arch


# -- the base -------------------------------------------------------------------------------------
def default_base(reference: str = WORKER_BASE_IMAGE) -> str:
    """The base the CDK builds on, as a reference podman can pull (registry named; a digest alone
    when both a tag and a digest are given, which podman does not accept together)."""
    name, _, digest = reference.partition("@")
    if digest:
        last = name.rsplit("/", 1)[-1]
        if ":" in last:
            name = name[: len(name) - len(last)] + last.split(":", 1)[0]
    first = name.split("/", 1)[0]
    if "/" not in name:
        name = f"docker.io/library/{name}"
    elif "." not in first and ":" not in first and first != "localhost":
        name = f"docker.io/{name}"
    return f"{name}@{digest}" if digest else name


def emulated_environment(arch: str) -> dict[str, str]:
    """What an emulated process of `arch` needs in its environment (see QEMU_CPU); nothing natively."""
    return {"QEMU_CPU": QEMU_CPU[arch]} if arch != host_arch() and arch in QEMU_CPU else {}


def stand_in_changes(arch: str) -> tuple[str, ...]:
    return BASE_CHANGES + tuple(f"ENV {name}={value}" for name, value in emulated_environment(arch).items())


def stand_in_tag(arch: str) -> str:
    """The stand-in's tag names what it is built from, so a change of packages builds a new one."""
    recipe = f"{SUITE} minbase {' '.join(BASE_PACKAGES)} {stand_in_changes(arch)}"
    digest = hashlib.sha256(recipe.encode()).hexdigest()
    return f"localhost/cloudia-base:{SUITE}-{arch}-{digest[:10]}"


def debian_mirror() -> str:
    """The Debian mirror apt uses here (deb822 `URIs:` or a one-line `deb URI SUITE`), else deb.debian.org."""
    sources = sorted(Path("/etc/apt/sources.list.d").glob("*.sources")) + [Path("/etc/apt/sources.list")]
    for path in sources:
        try:
            text = path.read_text()
        except OSError:
            continue
        for uri in re.findall(r"^URIs:\s*(\S+)", text, re.MULTILINE) + re.findall(
                r"^deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+\S+", text, re.MULTILINE):
            if "security" not in uri and uri.startswith(("http://", "https://")):
                return uri.rstrip("/")
    return DEFAULT_MIRROR


def enable_emulation(arch: str) -> None:
    """A foreign architecture runs through qemu-user-static's binfmt_misc handler."""
    if arch == host_arch():
        return
    handler = QEMU.get(arch)
    if handler is None:
        raise RuntimeError(f"no emulation known for {arch}")
    binfmt = Path("/proc/sys/fs/binfmt_misc")
    if (binfmt / handler).exists():
        return
    require(f"{handler}-static", "update-binfmts")
    if not (binfmt / "register").exists():
        subprocess.run(["mount", "-t", "binfmt_misc", "binfmt_misc", str(binfmt)], check=True)
    subprocess.run(["update-binfmts", "--enable", handler], check=True, capture_output=True)
    if not (binfmt / handler).exists():
        raise RuntimeError(f"binfmt_misc has no {handler} handler after update-binfmts --enable {handler}")


def _unmount_below(path: Path) -> None:
    """debootstrap mounts /proc and /sys in the tree; a failed run may leave them there."""
    mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
    for mount in sorted((m for m in mounts if m.startswith(f"{path}/")), reverse=True):
        subprocess.run(["umount", "-l", mount], check=False)


def build_stand_in(arch: str, tag: str, log: Log) -> None:
    require("debootstrap")
    enable_emulation(arch)
    mirror = debian_mirror()
    log(f"building the stand-in base {tag}: debootstrap {SUITE} ({arch}) from {mirror}")
    with tempfile.TemporaryDirectory(prefix="cloudia-base-", dir="/var/tmp") as work:
        rootfs = Path(work) / "rootfs"
        try:
            result = subprocess.run(
                ["debootstrap", "--variant=minbase", f"--arch={arch}", f"--include={','.join(BASE_PACKAGES)}",
                 SUITE, str(rootfs), mirror], capture_output=True, text=True, timeout=1200,
                env=dict(os.environ, **emulated_environment(arch)))
            if result.returncode != 0:
                raise RuntimeError(f"debootstrap exited {result.returncode}:\n{result.stdout[-3000:]}{result.stderr}")
            python3 = rootfs / "usr" / "bin" / "python3"
            if not (rootfs / "usr" / "bin" / f"python{PRODUCTION_PYTHON}").exists():
                found = os.readlink(python3) if python3.is_symlink() else "no python3"
                raise RuntimeError(f"Debian {SUITE}'s python3 is {found}, not the production Python "
                                   f"{PRODUCTION_PYTHON} (stacks/config.py): the stand-in would test another one")
            for leftover in [*rootfs.glob("var/cache/apt/archives/*.deb"), *rootfs.glob("var/lib/apt/lists/*")]:
                if leftover.is_file():
                    leftover.unlink()
            tar = subprocess.Popen(["tar", "-C", str(rootfs), "--numeric-owner", "-c", "."], stdout=subprocess.PIPE)
            changes = [arg for change in stand_in_changes(arch) for arg in ("--change", change)]
            podman("import", "--os", "linux", "--arch", arch, *changes, "-", tag, stdin=tar.stdout,
                   timeout_s=300)
            if tar.wait() != 0:
                raise RuntimeError("tar of the stand-in's tree failed")
        finally:
            _unmount_below(rootfs)


def base_image(arch: str, log: Log = print) -> str:
    """The base to build on: the default if it is here; else a stand-in already built; else the
    default pulled; else a stand-in built now (`podman rmi` it to try the registry again)."""
    default = default_base()
    if image_exists(default, arch):
        return default
    stand_in = stand_in_tag(arch)
    if image_exists(stand_in, arch):
        return stand_in
    pulled = podman("pull", "--quiet", "--platform", f"linux/{arch}", default, check=False, timeout_s=300)
    if pulled.returncode == 0 and image_exists(default, arch):
        return default
    reason = ((pulled.stderr or "").strip().splitlines() or ["no reason given"])[-1]
    log(f"cannot pull {default} ({reason}): using a stand-in")
    build_stand_in(arch, stand_in, log)
    return stand_in


# -- the worker image ------------------------------------------------------------------------------
def worker_tag(arch: str) -> str:
    """One tag per checkout and architecture: two checkouts testing at once do not swap images."""
    checkout = hashlib.sha256(str(ROOT).encode()).hexdigest()[:8]
    return f"localhost/cloudia-worker:test-{arch}-{checkout}"


def image_id(reference: str) -> str | None:
    result = podman("image", "inspect", "--format", "{{.Id}}", reference, check=False)
    return result.stdout.strip() if result.returncode == 0 else None


def build_worker_image(arch: str | None = None, log: Log = print) -> str:
    """Build worker_image/Dockerfile (docker format: the OCI one drops HEALTHCHECK); its tag."""
    require("podman", "buildah", "runc", "newuidmap")
    arch = arch or host_arch()
    enable_emulation(arch)
    base = base_image(arch, log)
    tag = worker_tag(arch)
    mounts = ["-v", f"{HOST_CA_BUNDLE}:{HOST_CA_BUNDLE}:ro"] if HOST_CA_BUNDLE.exists() else []
    previous = image_id(tag)
    podman("build", "--format", "docker", "--network", "host", "--platform", f"linux/{arch}",
           "--ignorefile", str(IGNOREFILE), "-f", str(DOCKERFILE), "--build-arg", f"BASE_IMAGE={base}",
           *mounts, "-t", tag, str(ROOT), timeout_s=1800)
    if previous and previous != image_id(tag):  # the last build, untagged now: not kept
        podman("rmi", previous, check=False)
    return tag


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default=host_arch(), choices=["amd64", "arm64"])
    args = parser.parse_args(argv)
    try:
        print(build_worker_image(args.arch, log=lambda line: print(line, file=sys.stderr)))
    except ToolMissing as missing:
        print(missing, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
