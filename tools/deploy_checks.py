"""Reads deploy/ the way Docker, Compose and the services would, with none of them running.

Pure functions over the files, for tests/unit/test_deploy_manifests.py and tests/unit/test_deploy_images.py:
the Dockerfile's stages, .dockerignore matching, the image locks against pyproject.toml's extras, and the
settings a container's environment and command line give an lmrec service (its own flag parser, its own
pydantic model: a name or a value it would refuse at start is refused here).
"""

from __future__ import annotations

import importlib
import json
import os
import re
import shlex
import tomllib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent

# --- Dockerfile -----------------------------------------------------------------------------------------


@dataclass
class Stage:
    name: str
    base: str  # an image, or an earlier stage's name
    env: dict[str, str] = field(default_factory=dict)
    user: str | None = None
    entrypoint: list[str] = field(default_factory=list)
    cmd: list[str] = field(default_factory=list)
    # Paths read from the build context (COPY sources, RUN --mount=type=bind without from=).
    context_sources: list[str] = field(default_factory=list)
    # Stages read from (COPY --from=, RUN --mount=...,from=), each with the path read there.
    stage_sources: list[tuple[str, str]] = field(default_factory=list)
    # RUN commands as shell words, the base stage's first.
    runs: list[list[str]] = field(default_factory=list)


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs: continuation lines joined, comments and parser directives dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue  # inside a continuation too, as Docker does
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        keyword, _, rest = line.partition(" ")
        instructions.append((keyword.upper(), rest.strip()))
    return instructions


def _flags(words: list[str]) -> tuple[dict[str, str], list[str]]:
    """Leading --name=value flags of an instruction (repeated --mount flags are joined with ';')."""
    flags: dict[str, str] = {}
    while words and words[0].startswith("--"):
        name, _, value = words.pop(0)[2:].partition("=")
        flags[name] = f"{flags[name]};{value}" if name in flags else value
    return flags, words


def _substitute(value: str, variables: Mapping[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: variables.get(m.group(1) or m.group(2), m.group(0)), value)


def _exec_form(arguments: str) -> list[str]:
    if arguments.startswith("["):
        return json.loads(arguments)
    return ["/bin/sh", "-c", arguments]


def parse_dockerfile(text: str) -> tuple[dict[str, str], dict[str, Stage]]:
    """The global ARG defaults and the stages by name (in order), each with what it inherits from its base."""
    global_args: dict[str, str] = {}
    stages: dict[str, Stage] = {}
    stage: Stage | None = None
    for keyword, arguments in dockerfile_instructions(text):
        if keyword == "ARG" and stage is None:
            name, _, default = arguments.partition("=")
            global_args[name.strip()] = default.strip()
        elif keyword == "FROM":
            _, words = _flags(arguments.split())
            base = _substitute(words[0], global_args)
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else f"stage-{len(stages)}"
            stage = Stage(name, base)
            if base in stages:
                parent = stages[base]
                stage.env, stage.user = dict(parent.env), parent.user
                stage.entrypoint, stage.cmd = list(parent.entrypoint), list(parent.cmd)
                stage.runs = list(parent.runs)
            stages[name] = stage
        elif stage is None:
            raise ValueError(f"{keyword} before the first FROM")
        elif keyword == "ENV":
            words = shlex.split(arguments)
            if words and "=" not in words[0]:  # legacy `ENV NAME value`
                stage.env[words[0]] = " ".join(words[1:])
            else:
                for word in words:
                    name, _, value = word.partition("=")
                    stage.env[name] = _substitute(value, stage.env)
        elif keyword == "USER":
            stage.user = arguments
        elif keyword == "ENTRYPOINT":
            stage.entrypoint, stage.cmd = _exec_form(arguments), []  # a new entrypoint resets CMD
        elif keyword == "CMD":
            stage.cmd = _exec_form(arguments)
        elif keyword in ("COPY", "ADD"):
            flags, words = _flags(shlex.split(arguments))
            sources = words[:-1]
            if "from" in flags:
                stage.stage_sources += [(flags["from"], source) for source in sources]
            else:
                stage.context_sources += sources
        elif keyword == "RUN":
            flags, words = _flags(shlex.split(arguments))
            stage.runs.append(words)
            for mount in filter(None, flags.get("mount", "").split(";")):
                options = dict(part.partition("=")[::2] for part in mount.split(","))
                if options.get("type") != "bind":
                    continue
                if "from" in options:
                    stage.stage_sources.append((options["from"], options.get("source", "/")))
                else:
                    stage.context_sources.append(options.get("source", "."))
    return global_args, stages


def owned_directories(stage: Stage, user: str) -> set[str]:
    """Folders the stage creates with `install -d -o USER` (its own RUNs and its base stages')."""
    owned: set[str] = set()
    for run in stage.runs:
        command: list[str] = []
        for word in [*run, "&&"]:
            if word not in ("&&", ";", "||"):
                command.append(word)
                continue
            if command[:2] == ["install", "-d"] and "-o" in command and command[command.index("-o") + 1] == user:
                owned |= {w for w in command if w.startswith("/")}
            command = []
    return owned


def dockerignore_patterns(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    out = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out)


def dockerignored(path: str, patterns: list[str]) -> bool:
    """Whether the build context leaves `path` out: the last matching pattern decides, `!` re-includes, and a
    pattern matching a folder matches everything under it (Docker's .dockerignore rules)."""
    path = path.strip("/")
    prefixes = [path] + [path.rsplit("/", n)[0] for n in range(1, path.count("/") + 1)]
    ignored = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        regex = _pattern_regex(pattern.lstrip("!").strip("/"))
        if any(regex.fullmatch(prefix) for prefix in prefixes):
            ignored = not negated
    return ignored


# --- locks ----------------------------------------------------------------------------------------------


def read_lock(path: Path) -> dict[str, str]:
    """Canonical package name -> pinned version."""
    pins: dict[str, str] = {}
    for line in path.read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==([^\s\\;]+)", line)
        if match:
            pins[canonicalize_name(match.group(1))] = match.group(2)
    return pins


def lock_command(path: Path) -> str:
    """The command a lock's header says wrote it."""
    lines = path.read_text().splitlines()
    return lines[1].lstrip("#").strip() if len(lines) > 1 else ""


def project_requirements(pyproject: Path, extras: tuple[str, ...]) -> list[Requirement]:
    """The base dependencies plus those of `extras`, with the project's own `name[...]` extras expanded."""
    project = tomllib.loads(pyproject.read_text())["project"]
    name = canonicalize_name(project["name"])
    optional = project.get("optional-dependencies", {})
    requirements = [Requirement(r) for r in project.get("dependencies", [])]
    todo, seen = list(extras), set()
    while todo:
        extra = todo.pop()
        if extra in seen:
            continue
        seen.add(extra)
        for requirement in map(Requirement, optional[extra]):
            if canonicalize_name(requirement.name) == name:
                todo += sorted(requirement.extras)
            else:
                requirements.append(requirement)
    return requirements


def unlocked(requirements: list[Requirement], pins: Mapping[str, str], python: str) -> list[str]:
    """Requirements (applying on Linux x86_64 with this Python) that the pins miss or contradict."""
    environment = default_environment() | {"python_version": python, "python_full_version": f"{python}.0",
                                           "sys_platform": "linux", "platform_system": "Linux",
                                           "platform_machine": "x86_64"}
    problems = []
    for requirement in requirements:
        if requirement.marker is not None and not requirement.marker.evaluate(environment):
            continue
        pinned = pins.get(canonicalize_name(requirement.name))
        if pinned is None:
            problems.append(f"{requirement} is not in the lock")
        elif not requirement.specifier.contains(pinned, prereleases=True):
            problems.append(f"{requirement} but the lock pins {pinned}")
    return problems


# --- services: environment and command lines ------------------------------------------------------------

# Where each lmrec service parses its settings (flags over environment over defaults).
SERVICE_PARSERS = {
    "gateway": "gateway.server:parse_settings",
    "ranking": "ranking_service.server:parse_settings",
    "retrieval": "retrieval_service.server:parse_settings",
    "ranking-ray": "ranking_service.ray_serve.frontend:parse_settings",
}
# `python -m MODULE` and `lmrec serve --only NAME` name a service.
MODULE_SERVICES = {"gateway": "gateway", "ranking_service": "ranking", "retrieval_service": "retrieval",
                   "ranking_service.ray_serve": "ranking-ray"}


def settings_classes() -> dict[str, type]:
    """Settings model by service; each model's env_prefix says which variables are its."""
    from gateway.settings import GatewaySettings
    from ranking_service.ray_serve.settings import RayRankingSettings
    from ranking_service.settings import RankingSettings
    from retrieval_service.settings import RetrievalSettings

    return {"gateway": GatewaySettings, "ranking": RankingSettings, "retrieval": RetrievalSettings,
            "ranking-ray": RayRankingSettings}


def unknown_env(names: list[str], service: str | None = None) -> list[str]:
    """The LMREC_<SERVICE>_* names that are no field of that service's settings (which would ignore them).

    `service` picks the model where two share a prefix (the Ray front-end reads LMREC_RANKING_* too).
    """
    classes = settings_classes()
    by_prefix: dict[str, type] = {}
    for name, cls in classes.items():
        prefix = cls.model_config["env_prefix"].upper()
        if name == service or prefix not in by_prefix:
            by_prefix[prefix] = cls
    unknown = []
    for name in names:
        for prefix, cls in by_prefix.items():
            if name.upper().startswith(prefix):
                if name.upper().removeprefix(prefix).lower() not in cls.model_fields:
                    unknown.append(name)
                break
    return unknown


def service_invocation(argv: list[str], env: Mapping[str, str]) -> tuple[str, list[str]] | None:
    """(service, its own arguments) for a container's full command line, or None if it runs no lmrec service.

    Understands `lmrec serve --only NAME ...`, `python -m MODULE ...` and `sh -c "exec ..."`, expanding
    $VARIABLES from `env` as the shell would.
    """
    if len(argv) >= 3 and argv[0] in ("sh", "/bin/sh", "bash", "/bin/bash") and argv[1] == "-c":
        words = shlex.split(_substitute(argv[2], env))
        return service_invocation(words[1:] if words[:1] == ["exec"] else words, env)
    if argv[:3] == ["lmrec", "serve", "--only"] and len(argv) > 3:
        return (argv[3], argv[4:]) if argv[3] in SERVICE_PARSERS else None
    if len(argv) >= 3 and Path(argv[0]).name.startswith("python") and argv[1] == "-m":
        service = MODULE_SERVICES.get(argv[2])
        return (service, argv[3:]) if service else None
    return None


@contextmanager
def environment(env: Mapping[str, str]) -> Iterator[None]:
    """os.environ with every LMREC_* variable replaced by `env`'s, restored afterwards."""
    saved = dict(os.environ)
    try:
        for name in [n for n in os.environ if n.upper().startswith("LMREC_")]:
            del os.environ[name]
        os.environ.update(env)
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def parse_service_settings(service: str, argv: list[str], env: Mapping[str, str]):
    """What the service's main() would build from these arguments and this environment; SystemExit where it
    would stop at start (unknown flag, invalid value)."""
    module, _, attr = SERVICE_PARSERS[service].partition(":")
    parse = getattr(importlib.import_module(module), attr)
    with environment(env):
        return parse(list(argv))
