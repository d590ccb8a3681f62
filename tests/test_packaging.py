"""Packaging: ``pip install .`` and ``pip install -e .`` both give ``twistd mailaccess``.

Each test installs a copy of the project into a fresh virtualenv.  To stay
fast the new venv sees this venv's packages (Twisted and the rest) through a
``.pth`` line and installs with ``--no-deps``; a ``.pth`` *line* adds the
directory without running that directory's own ``.pth`` files, so this
venv's editable mailaccess stays invisible and the test really measures the
new install.  A negative control checks exactly that before installing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow

TWISTD_HELP = (
    "import sys; from twisted.scripts.twistd import run; sys.argv = ['twistd', '--help']; run()"
)


def copy_project(destination: Path) -> Path:
    """The files a build reads, without caches or anything else in the checkout."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "dropin.cache")
    destination.mkdir()
    for name in ("setup.cfg", "pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, destination / name)
    for name in ("mailaccess", "twisted"):
        shutil.copytree(ROOT / name, destination / name, ignore=ignore)
    return destination


def make_venv(path: Path) -> Path:
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True)
    python = path / "bin" / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    Path(purelib, "outer-venv.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return python


def run(argv: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, env=env, timeout=240)


def twistd_lists_mailaccess(python: Path, cwd: Path) -> bool:
    result = run([str(python), "-c", TWISTD_HELP], cwd)
    assert result.returncode == 0, result.stderr
    return any(line.split()[:1] == ["mailaccess"] for line in result.stdout.splitlines())


@pytest.mark.parametrize("editable", [False, True], ids=["pip-install", "pip-install-e"])
def test_install_registers_twistd_plugin_and_console_script(
    tmp_path: Path, editable: bool
) -> None:
    source = copy_project(tmp_path / "src")
    python = make_venv(tmp_path / "venv")
    elsewhere = tmp_path / "elsewhere"  # not the project dir: no accidental sys.path[0]
    elsewhere.mkdir()

    assert not twistd_lists_mailaccess(python, elsewhere), "plugin visible before install"

    argv = [str(python), "-m", "pip", "install", "--quiet", "--no-deps"]
    argv += ["-e", str(source)] if editable else [str(source)]
    result = run(argv, elsewhere)
    assert result.returncode == 0, result.stdout + result.stderr

    assert twistd_lists_mailaccess(python, elsewhere)
    script = tmp_path / "venv" / "bin" / "mailaccess"
    result = run([str(script), "--help"], elsewhere)
    assert result.returncode == 0, result.stderr
    assert "check-config" in result.stdout

    site = Path(
        run(
            [str(python), "-c", "import mailaccess; print(mailaccess.__file__)"], elsewhere
        ).stdout.strip()
    )
    if editable:
        assert site == source / "mailaccess" / "__init__.py"
    else:
        assert tmp_path / "venv" in site.parents
        # No __init__.py of ours next to Twisted's plugins: it would shadow them.
        plugins = site.parent.parent / "twisted" / "plugins"
        assert (plugins / "mailaccess_plugin.py").is_file()
        assert not (plugins / "__init__.py").exists()


def port_in_use(port: int) -> bool:
    import socket

    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_make_run_first_run_sets_up_and_serves(tmp_path: Path) -> None:
    # README's run command in a copy of the project.  This venv stands in for
    # the one `make run` would create (BIN=...), with an up-to-date install
    # stamp so no network is needed; everything else is the real recipe.
    import signal
    import time

    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    if any(port_in_use(p) for p in (1143, 1993, 1110, 1995, 2424)):
        pytest.skip("a mailaccess (or something else) already uses the documented ports")
    project = copy_project(tmp_path / "project")
    shutil.copy(ROOT / "Makefile", project / "Makefile")
    venv = tmp_path / "venv"
    venv.mkdir()
    stamp = venv / ".installed-run"
    stamp.touch()
    process = subprocess.Popen(
        # -o: never remake the install stamp.  A `pip install -e` of this copy
        # into the test venv would point it at a temp dir for everyone.
        ["make", "-o", str(stamp), "run", f"VENV={venv}", f"BIN={Path(sys.executable).parent}"],
        cwd=project,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    output = []
    try:
        assert process.stdout is not None
        deadline = time.monotonic() + 60
        for line in process.stdout:
            output.append(line)
            if "mailaccess ready" in line or time.monotonic() > deadline:
                break
        text = "".join(output)
        assert "mailaccess ready" in text, text
        password = (project / "var/demo-password").read_text().strip()
        assert f"demo user: demo   password: {password}" in text
        assert "IMAP 1143, IMAPS 1993, POP3 1110, POP3S 1995, LMTP 2424" in text
        assert len(list((project / "var/mail/demo/new").iterdir())) == 3
        assert "Traceback" not in text
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(30)
        if process.stdout is not None:
            process.stdout.close()
