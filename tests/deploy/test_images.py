"""The images: Beam SDK base of the installed Beam, the dependencies of pyproject.toml
(with its gpu extra: TensorFlow's CUDA build, nvImageCodec), and build inputs that exist.
test_image_installs.py runs the images' pip steps for real."""

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


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _pyproject_requirements(extra: str | None = None) -> dict[str, Requirement]:
    project = _pyproject()
    if extra is None:
        return _requirements(project["dependencies"])
    return _requirements(project["optional-dependencies"][extra])


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


def test_pyproject_asks_for_tensorflow_everywhere_and_its_cuda_build_with_gpu():
    project = _pyproject_requirements()
    gpu = _pyproject_requirements("gpu")
    # The full wheel on every platform, no marker: tensorflow-cpu would exist only on
    # x86_64 and, in the images, replace the CUDA build.
    assert "tensorflow-cpu" not in project
    tensorflow = project["tensorflow"]
    assert tensorflow.marker is None and not tensorflow.extras
    cuda = gpu["tensorflow"]
    assert cuda.extras == {"and-cuda"}
    assert cuda.specifier == tensorflow.specifier, "TensorFlow versions differ"
    # The GPU JPEG decoder, with the nvJPEG library its JPEG backend loads.
    assert "nvjpeg" in gpu["nvidia-nvimgcodec-cu12"].extras


def test_requirements_gpu_txt_is_pyprojects_dependencies_with_the_gpu_extra():
    image = _image_requirements()
    expected = {**_pyproject_requirements(), **_pyproject_requirements("gpu")}
    assert set(image) == set(expected), "deploy/requirements-gpu.txt and pyproject.toml differ"
    for name, requirement in expected.items():
        assert image[name].specifier == requirement.specifier, name
        assert image[name].extras == requirement.extras, name
        assert image[name].marker == requirement.marker, name
    beam = image["apache-beam"]
    assert beam.specifier.contains(apache_beam.__version__)


def test_each_image_installs_the_requirements_then_the_package_with_the_gpu_extra():
    for name, path in DOCKERFILES.items():
        dockerfile = path.read_text()
        runs = re.findall(r"^RUN (.+)$", dockerfile, re.M)
        # The dependency layer first (cached while only the code changes), then the package
        # with its dependencies, which that layer already satisfies.
        assert "-r requirements-gpu.txt" in runs[0], name
        assert '".[gpu]"' in runs[-1] and "pip check" in runs[-1], name
        assert "--no-deps" not in dockerfile, name
        ignore = path.with_name("Dockerfile.dockerignore").read_text()
        assert "\n*\n" in ignore, f"{name}: the build context should be an allowlist"
        allowed = re.findall(r"^!(\S+?)/?$", ignore, re.M)
        for copy in re.findall(r"^COPY (?!--from)(.+)$", dockerfile, re.M):
            for source in copy.split()[:-1]:
                assert (ROOT / source).exists(), f"{name}: COPY {source} does not exist"
                top = source.split("/")[0]
                assert top in allowed, f"{name}: COPY {source} is not in {ignore}"


def test_cloud_build_config_builds_either_dockerfile():
    config = read_yaml(DEPLOY / "cloudbuild.yaml")
    (step,) = config["steps"]
    assert step["args"][:3] == ["build", "--file", "$_DOCKERFILE"]
    assert config["images"] == ["$_IMAGE"]
    for readme in (DEPLOY / "dataflow" / "README.md", DEPLOY / "training" / "README.md"):
        for dockerfile in re.findall(r"_DOCKERFILE=(\S+?),", readme.read_text()):
            assert (ROOT / dockerfile).is_file(), dockerfile
