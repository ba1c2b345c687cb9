"""The images' pip steps, run for real: each Dockerfile's `RUN pip ...` steps, in order, in a
clean virtual environment laid out as the Dockerfile's COPY and WORKDIR steps lay out the
image, then `pip check`. No Docker daemon is needed (or used): the steps run themselves.

A clean venv stands in for both base images (python:3.11-slim and Beam's SDK image); the
packages Beam's image ships besides Beam are not there, so their pins are not checked."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from tests.deploy.conftest import ROOT
from tests.deploy.test_images import DOCKERFILES

# Instructions of the final stage the emulation understands; anything else fails the test,
# so a Dockerfile cannot grow a step that is silently not run.
IGNORED = {"ENTRYPOINT", "CMD", "LABEL", "EXPOSE"}
# The build context's allowlist (Dockerfile.dockerignore) leaves these out too.
NOT_SENT = shutil.ignore_patterns("__pycache__")


@dataclass(frozen=True)
class Copy:
    sources: tuple[str, ...]  # relative to the build context, the repository root
    dest: str  # absolute path in the image


@dataclass(frozen=True)
class Run:
    command: str  # shell form, as written
    workdir: str
    env: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Layer:
    """One RUN step with the COPY steps that come before it (since the previous RUN)."""

    copies: tuple[Copy, ...]
    run: Run


@dataclass
class Plan:
    layers: list[Layer] = field(default_factory=list)


def _instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of each logical line: continuations joined, comments out."""
    logical, pending = [], ""
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        logical.append(pending + stripped)
        pending = ""
    assert not pending, "a continuation line ends the Dockerfile"
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in logical]


def _plan(dockerfile: Path) -> Plan:
    """The final stage's COPY and RUN steps, as layers. Earlier stages only provide files for
    COPY --from, which no pip step reads."""
    instructions = _instructions(dockerfile.read_text())
    last_from = max(i for i, (name, _) in enumerate(instructions) if name == "FROM")
    plan, copies, workdir, env = Plan(), [], "/", {}
    for name, args in instructions[last_from + 1 :]:
        if name == "WORKDIR":
            workdir = str(PurePosixPath(workdir) / args)
        elif name == "COPY":
            words = shlex.split(args)
            if any(word.startswith("--from") for word in words):
                continue  # from another stage or image: not the build context
            assert not any(word.startswith("--") for word in words), f"COPY {args}"
            *sources, dest = words
            dest_path = str(PurePosixPath(workdir) / dest) + ("/" if dest.endswith("/") else "")
            copies.append(Copy(tuple(sources), dest_path))
        elif name == "ENV":
            words = shlex.split(args)
            assert all("=" in word for word in words), f"ENV {args}: use KEY=VALUE"
            env.update(word.split("=", 1) for word in words)
        elif name == "RUN":
            assert not args.startswith("["), f"RUN {args}: exec form is not emulated"
            for command in args.split("&&"):
                assert shlex.split(command)[0] == "pip", (
                    f"{dockerfile}: RUN {args}: only pip commands can run without Docker"
                )
            plan.layers.append(Layer(tuple(copies), Run(args, workdir, tuple(env.items()))))
            copies = []
        else:
            assert name in IGNORED, f"{dockerfile}: {name} is not emulated"
    assert plan.layers, f"{dockerfile}: no RUN step"
    return plan


def _copy(copy: Copy, image_root: Path) -> None:
    """Docker's COPY into image_root (the image's /): a file goes into a destination that
    ends with / (or to that path), a folder's contents go into the destination folder."""
    dest = image_root / copy.dest.lstrip("/")
    into_folder = copy.dest.endswith("/") or len(copy.sources) > 1
    for source in copy.sources:
        path = ROOT / source
        assert path.exists(), f"COPY {source}: not in the build context"
        if path.is_dir():
            shutil.copytree(path, dest, ignore=NOT_SENT, dirs_exist_ok=True)
        else:
            target = dest / path.name if into_folder else dest
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)


def _run(layer: Layer, image_root: Path, venv: Path) -> None:
    """The RUN step exactly as written, through /bin/sh as Docker runs it; `pip` is the
    venv's pip because the venv's bin/ comes first on PATH."""
    for copy in layer.copies:
        _copy(copy, image_root)
    cwd = image_root / layer.run.workdir.lstrip("/")
    cwd.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **dict(layer.run.env), "VIRTUAL_ENV": str(venv)}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    for variable in ("PYTHONHOME", "PYTHONPATH"):  # not set in the image either
        env.pop(variable, None)
    result = subprocess.run(
        ["/bin/sh", "-c", layer.run.command],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
    )
    output = "\n".join(
        line
        for line in (result.stdout + result.stderr).splitlines()
        if "is ignored: it is neither a file nor a directory" not in line
    )
    assert result.returncode == 0, f"RUN {layer.run.command}\n{output[-6000:]}"


def _python(venv: Path, *args: str) -> subprocess.CompletedProcess:
    """The venv's Python in isolated mode, run from the venv: neither the working directory
    (the repository, with its captioning.egg-info) nor PYTHONPATH shadows what is installed."""
    python = str(venv / "bin" / "python")
    return subprocess.run([python, "-I", *args], cwd=venv, capture_output=True, text=True)


def _installed(venv: Path) -> dict[str, str]:
    result = _python(
        venv,
        "-c",
        "import importlib.metadata as m, json; "
        "print(json.dumps({d.metadata['Name'].lower(): d.version for d in m.distributions()}))",
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_each_dockerfiles_pip_steps_install_and_pass_pip_check(tmp_path):
    plans = {name: _plan(path) for name, path in DOCKERFILES.items()}
    # Affordable in CI: Dockerfiles whose first layer (the COPY of requirements-gpu.txt and
    # its `pip install`, ~3 GB of CUDA wheels) is the same share it, as Docker's layer cache
    # would. Each Dockerfile's later layers then run on top of it, and are undone before
    # the next Dockerfile's, so every Dockerfile's steps run, each from the first layer's
    # state. The commands keep their --no-cache-dir: nothing is cached between installs.
    groups: dict[Layer, list[str]] = {}
    for name, plan in plans.items():
        groups.setdefault(plan.layers[0], []).append(name)
    for first_layer, names in groups.items():
        venv = tmp_path / "venv"
        try:
            # A clean venv: no system site packages, the interpreter that runs the tests.
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
            _run(first_layer, tmp_path / "shared-first-layer", venv)
            dependencies = _installed(venv)
            for name in names:
                image_root = tmp_path / name
                _copy_first_layer_files(first_layer, image_root)
                for layer in plans[name].layers[1:]:
                    _run(layer, image_root, venv)
                _check_image(name, venv, dependencies)
                # Undo the later layers: remove what they added, back to the first layer.
                added = sorted(set(_installed(venv)) - set(dependencies))
                if added:
                    uninstall = _python(venv, "-m", "pip", "uninstall", "-y", *added)
                    assert uninstall.returncode == 0, uninstall.stderr
                assert _installed(venv) == dependencies, name
        finally:
            shutil.rmtree(venv, ignore_errors=True)  # several GB


def _copy_first_layer_files(first_layer: Layer, image_root: Path) -> None:
    """The first layer's files in this Dockerfile's own image root (its later pip steps may
    read them, e.g. a -r requirements file)."""
    for copy in first_layer.copies:
        _copy(copy, image_root)


def _check_image(name: str, venv: Path, dependencies: dict[str, str]) -> None:
    check = _python(venv, "-m", "pip", "check")
    assert check.returncode == 0, f"{name}: pip check\n{check.stdout}{check.stderr}"
    installed = _installed(venv)
    # The dependency layer is complete: the package install adds the package and changes
    # nothing else (so a code change never reinstalls, or swaps, a dependency).
    added = {dist: version for dist, version in installed.items() if dist not in dependencies}
    changed = {
        dist: (version, installed.get(dist))
        for dist, version in dependencies.items()
        if installed.get(dist) != version
    }
    assert set(added) == {"captioning"} and not changed, (name, added, changed)
    # TensorFlow is the CUDA build, and nvImageCodec finds nvJPEG (its GPU JPEG decoder
    # loads the library without needing a GPU). The entry point of the training image runs.
    smoke = _python(
        venv,
        "-c",
        "import tensorflow as tf, keras, apache_beam, captioning, pipelines\n"
        "from nvidia import nvimgcodec\n"
        "assert tf.sysconfig.get_build_info()['is_cuda_build'], 'not the CUDA build'\n"
        "print(tf.__version__, keras.__version__, apache_beam.__version__, nvimgcodec.__version__)",
    )
    assert smoke.returncode == 0, f"{name}\n{smoke.stdout}{smoke.stderr[-4000:]}"
    assert "Failed to load nvjpeg library" not in smoke.stdout + smoke.stderr, name
    cli = subprocess.run(
        [str(venv / "bin" / "captioning"), "--help"], cwd=venv, capture_output=True, text=True
    )
    assert cli.returncode == 0, f"{name}: captioning --help\n{cli.stderr[-4000:]}"
