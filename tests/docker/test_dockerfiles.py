"""Each Dockerfile parses, pins its base image by tag, and references only files that exist
and that its build context (Dockerfile.dockerignore) lets through. No Docker engine needed."""

from __future__ import annotations

import fnmatch
import re
import shlex
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILES = sorted((ROOT / "docker").glob("*/Dockerfile"))
INSTRUCTIONS = {"FROM", "RUN", "CMD", "LABEL", "EXPOSE", "ENV", "ADD", "COPY", "ENTRYPOINT",
                "VOLUME", "USER", "WORKDIR", "ARG", "ONBUILD", "STOPSIGNAL", "HEALTHCHECK",
                "SHELL"}
PROJECT_IN_IMAGE = "/opt/edgekd/"


def parse(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs; comments dropped, continuation lines joined."""
    steps, pending = [], ""
    for line in path.read_text().splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        text, pending = pending + line, ""
        word, _, args = text.strip().partition(" ")
        if word.upper() not in INSTRUCTIONS:
            raise ValueError(f"{path}: unknown instruction {word!r}")
        steps.append((word.upper(), args.strip()))
    assert not pending, f"{path}: ends inside a continued line"
    return steps


def ignored(relative: str, patterns: list[str]) -> bool:
    """Docker's rule: the last matching pattern wins; `!` re-includes."""
    result = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        body = pattern[1:] if negate else pattern
        if fnmatch.fnmatch(relative, body) or fnmatch.fnmatch(relative, body.rstrip("/*")):
            result = not negate
    return result


def ignore_patterns(dockerfile: Path) -> list[str]:
    path = dockerfile.with_name("Dockerfile.dockerignore")
    if not path.exists():
        return []
    return [line.strip() for line in path.read_text().splitlines()
            if line.strip() and not line.startswith("#")]


def copies(steps: list[tuple[str, str]]) -> list[tuple[list[str], str]]:
    """(sources, destination) of each COPY without --from (sources relative to the context)."""
    found = []
    for word, args in steps:
        if word != "COPY":
            continue
        parts = [p for p in shlex.split(args) if not p.startswith("--chown")]
        assert not any(p.startswith("--from") for p in parts), "no multi-stage copies expected"
        found.append((parts[:-1], parts[-1]))
    return found


def test_there_are_three_images():
    assert {p.parent.name for p in DOCKERFILES} == {"workstation", "device-arm64", "jetson"}


def base_image(steps: list[tuple[str, str]]) -> str:
    """The image the one FROM names: `ARG BASE=<image>` before `FROM ${BASE}`, so that a build
    can swap in a local stand-in (docker/local/build.sh) while users get the pinned default."""
    bases = [args for word, args in steps if word == "FROM"]
    assert len(bases) == 1, "one stage per image"
    assert bases[0] == "${BASE}", f"FROM {bases[0]}: expected FROM ${{BASE}}"
    before = steps[:[word for word, _ in steps].index("FROM")]
    defaults = [args.partition("=")[2] for word, args in before
                if word == "ARG" and args.startswith("BASE=")]
    assert len(defaults) == 1, "ARG BASE=<pinned image> before FROM"
    return defaults[0]


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.parent.name)
def test_dockerfile_parses_and_pins_its_base_by_tag(dockerfile):
    image = base_image(parse(dockerfile))
    name, _, tag = image.rpartition(":")
    assert name and "/" not in tag, f"{image}: no tag"
    assert tag != "latest" and re.search(r"\d+\.\d+", tag), f"{image}: tag is not a version"
    assert "$" not in image and "@" not in image, f"{image}: not a plain pinned tag"
    registry = name.split("/")[0]
    assert "." in registry, f"{image}: name the registry (docker.io/library/...), as podman " \
                            "and buildah do not guess it"


def test_base_argument_is_required_to_be_before_from(tmp_path):
    """The check above fails a Dockerfile whose base is not the ARG's pinned default."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:3.11.13-slim-bookworm\nRUN true\n")
    with pytest.raises(AssertionError):
        base_image(parse(bad))
    bad.write_text("FROM ${BASE}\nARG BASE=python:3.11.13-slim-bookworm\n")
    with pytest.raises(AssertionError):
        base_image(parse(bad))


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.parent.name)
def test_copy_sources_exist_and_pass_the_dockerignore(dockerfile):
    patterns = ignore_patterns(dockerfile)
    assert patterns, f"{dockerfile}: no Dockerfile.dockerignore (the context has a 5 GB .venv)"
    for sources, _ in copies(parse(dockerfile)):
        for source in sources:
            path = ROOT / source
            assert path.exists(), f"{dockerfile.name}: COPY {source}: no such file"
            files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
            kept = [f for f in files if not ignored(str(f.relative_to(ROOT)), patterns)]
            assert kept, f"{dockerfile}: COPY {source}: excluded by Dockerfile.dockerignore"
            if path.is_file():
                assert kept == [path], f"{dockerfile}: COPY {source}: excluded by dockerignore"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.parent.name)
def test_run_steps_call_scripts_that_were_copied(dockerfile):
    """Every project path a RUN step uses was copied in before it and exists here."""
    steps = parse(dockerfile)
    copied: list[str] = []
    called = 0
    for word, args in steps:
        if word == "COPY":
            sources, dest = copies([(word, args)])[0]
            for source in sources:
                name = Path(source).name if dest.endswith("/") else ""
                copied.append(dest + name if name else dest)
        if word != "RUN":
            continue
        for used in re.findall(re.escape(PROJECT_IN_IMAGE) + r"[\w./-]+", args):
            relative = used[len(PROJECT_IN_IMAGE):]
            if relative.endswith((".sh", ".txt", ".py")):
                called += 1
                assert (ROOT / relative).is_file(), f"{dockerfile.name}: {relative} missing"
                assert any(used == c or used.startswith(c.rstrip("/") + "/") for c in copied), \
                    f"{dockerfile.name}: RUN uses {used} before any COPY brings it in"
    assert called, f"{dockerfile}: thin Dockerfiles call a script in docker/"


def test_workstation_runs_as_a_non_root_user_with_the_device_tools():
    steps = parse(ROOT / "docker" / "workstation" / "Dockerfile")
    users = [args for word, args in steps if word == "USER"]
    assert users and users[-1] not in ("root", "0")
    packages = (ROOT / "docker" / "workstation" / "packages.txt").read_text().split()
    for needed in ("adb", "openssh-client", "qemu-user-static", "debootstrap", "make"):
        assert needed in packages
    install = (ROOT / "docker" / "workstation" / "install.sh").read_text()
    assert "make" in install and "install" in install  # the Makefile's -c constraints.txt path


@pytest.mark.parametrize("script", sorted((ROOT / "docker").rglob("*.sh")),
                         ids=lambda p: str(p.relative_to(ROOT / "docker")))
def test_scripts_are_executable_posix_shell(script):
    assert script.stat().st_mode & 0o111, f"{script} is not executable"
    assert script.read_text().startswith("#!/bin/sh\n")
    done = subprocess.run(["sh", "-n", str(script)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_ignore_matcher_follows_docker_rules():
    patterns = ["**", "!edgekd/**", "**/__pycache__", "!docker/x/run.sh"]
    assert ignored(".venv/bin/python", patterns)
    assert not ignored("edgekd/arch/sysroot.py", patterns)
    assert ignored("edgekd/__pycache__", patterns)
    assert not ignored("docker/x/run.sh", patterns)
    assert ignored("docker/y/run.sh", patterns)
