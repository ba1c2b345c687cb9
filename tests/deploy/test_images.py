"""The images: Beam SDK base of the installed Beam, the dependencies of pyproject.toml
(with TensorFlow's CUDA build), and build inputs that exist."""

from __future__ import annotations

import re

import apache_beam
from packaging.requirements import Requirement

from tests.deploy.conftest import DEPLOY, ROOT, read_yaml

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

DOCKERFILES = {
    "dataflow": DEPLOY / "dataflow" / "Dockerfile",
    "training": DEPLOY / "training" / "Dockerfile",
}


def _requirements(lines: list[str]) -> dict[str, Requirement]:
    parsed = [Requirement(line) for line in lines]
    return {requirement.name: requirement for requirement in parsed}


def _image_requirements() -> dict[str, Requirement]:
    text = (DEPLOY / "requirements-gpu.txt").read_text()
    lines = [line.strip() for line in text.splitlines()]
    return _requirements([line for line in lines if line and not line.startswith("#")])


def _pyproject_requirements() -> dict[str, Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return _requirements(project["dependencies"])


def _from_images(dockerfile: str) -> list[str]:
    args = dict(re.findall(r"^ARG (\w+)=(\S+)$", dockerfile, re.M))
    images = re.findall(r"^FROM (\S+)", dockerfile, re.M)
    return [re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], image) for image in images]


def test_the_sdk_image_is_the_installed_beam_version():
    images = _from_images(DOCKERFILES["dataflow"].read_text())
    sdk = [image for image in images if image.startswith("apache/beam_python")]
    assert sdk, images
    python, version = re.fullmatch(r"apache/beam_python(\d+\.\d+)_sdk:(\S+)", sdk[-1]).groups()
    assert version == apache_beam.__version__
    # The launcher, the SDK and the training image share one Python.
    launcher = [image for image in images if "template-launcher-base" in image]
    assert launcher and f"python{python.replace('.', '')}-template" in launcher[0]
    training = _from_images(DOCKERFILES["training"].read_text())
    assert training == [f"python:{python}-slim"]


def test_the_images_install_pyprojects_dependencies_with_cuda_tensorflow():
    image = _image_requirements()
    project = _pyproject_requirements()
    cpu = project.pop("tensorflow-cpu")
    cuda = image.pop("tensorflow")
    assert cuda.extras == {"and-cuda"}
    assert str(cuda.specifier) == str(cpu.specifier), "TensorFlow versions differ"
    assert set(image) == set(project), "deploy/requirements-gpu.txt and pyproject.toml differ"
    for name, requirement in project.items():
        assert image[name].specifier == requirement.specifier, name
        assert image[name].extras == requirement.extras, name
    beam = image["apache-beam"]
    assert beam.specifier.contains(apache_beam.__version__)


def test_each_image_installs_the_requirements_and_the_package_without_deps():
    for name, path in DOCKERFILES.items():
        dockerfile = path.read_text()
        assert "pip install --no-cache-dir -r requirements-gpu.txt" in dockerfile, name
        # tensorflow-cpu from pyproject would overwrite the CUDA build.
        assert "pip install --no-cache-dir --no-deps ." in dockerfile, name
        for copy in re.findall(r"^COPY (?!--from)(.+)$", dockerfile, re.M):
            for source in copy.split()[:-1]:
                assert (ROOT / source).exists(), f"{name}: COPY {source} does not exist"
        ignore = path.with_name("Dockerfile.dockerignore").read_text()
        assert "\n*\n" in ignore, f"{name}: the build context should be an allowlist"


def test_cloud_build_config_builds_either_dockerfile():
    config = read_yaml(DEPLOY / "cloudbuild.yaml")
    (step,) = config["steps"]
    assert step["args"][:3] == ["build", "--file", "$_DOCKERFILE"]
    assert config["images"] == ["$_IMAGE"]
    for readme in (DEPLOY / "dataflow" / "README.md", DEPLOY / "training" / "README.md"):
        for dockerfile in re.findall(r"_DOCKERFILE=(\S+?),", readme.read_text()):
            assert (ROOT / dockerfile).is_file(), dockerfile
