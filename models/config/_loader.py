"""Reads the organisation config directory (directory, policies, templates, checklists, maintenance,
canary) into the domain's shapes, turning every YAML or validation problem into a ConfigError that names the
file and the field."""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from pathlib import Path
from typing import Callable, TypeVar

import yaml
from pydantic import TypeAdapter, ValidationError

from ..domain import (
    CanaryConfig,
    ChangeTemplate,
    Checklist,
    ConfigError,
    Directory,
    InputError,
    MaintenancePlan,
    Org,
    PolicySet,
    Runbook,
)

T = TypeVar("T")
DEFAULTS_DIR = Path(__file__).parent / "defaults"
_CHECKLISTS = TypeAdapter(dict[str, Checklist])


def _format_validation(source: str, exc: ValidationError) -> ConfigError:
    problems = [(".".join(str(p) for p in err["loc"]) or "(top level)", err["msg"]) for err in exc.errors()]
    lines = "; ".join(f"{loc}: {msg}" for loc, msg in problems)
    return ConfigError(f"{source}: {lines}", problems)


# Bounds on what a YAML document may build: deeper nesting overflows the parser's recursion, and aliases can
# make a small file expand into billions of values ("billion laughs").
MAX_YAML_DEPTH = 32
# libyaml's safe loader: the same documents, ten times faster (every CLI call loads the whole config), and it
# refuses pathological nesting itself.
_SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
MAX_YAML_VALUES = 100_000


def parse_yaml(raw: bytes | str, source: str, error: type[InputError] = ConfigError) -> object:
    """Parse YAML; a syntax error becomes `error` naming the source, line and column."""
    try:
        data = yaml.load(raw, Loader=_SAFE_LOADER)  # noqa: S506 - a safe loader (libyaml's when installed)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}:" if mark else ""
        raise error(f"{source}:{where} not valid YAML ({getattr(exc, 'problem', None) or exc})") from None
    except RecursionError:
        raise error(f"{source}: nested deeper than {MAX_YAML_DEPTH} levels") from None
    _check_shape(data, source, error)
    return data


def _check_shape(data: object, source: str, error: type[InputError]) -> None:
    """Walk the loaded document without recursion (aliases are walked again, as a consumer would)."""
    stack: list[tuple[object, int]] = [(data, 0)]
    seen = 0
    while stack:
        node, depth = stack.pop()
        seen += 1
        if depth > MAX_YAML_DEPTH:
            raise error(f"{source}: nested deeper than {MAX_YAML_DEPTH} levels")
        if seen > MAX_YAML_VALUES:
            raise error(f"{source}: more than {MAX_YAML_VALUES} values (aliases included)")
        if isinstance(node, dict):
            stack.extend((child, depth + 1) for pair in node.items() for child in pair)
        elif isinstance(node, list):
            stack.extend((child, depth + 1) for child in node)


def read_yaml(path: Path) -> tuple[object, bytes]:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found (run `changeflow init` to install the example config)") from None
    return parse_yaml(raw, str(path)), raw


def load_policies(path: Path) -> PolicySet:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found (run `changeflow init` to install the example config)") from None
    return parse_policies(raw, str(path))


def parse_policies(raw: bytes, source: str) -> PolicySet:
    """A policies.yaml's bytes (from the file, or a version the audit trail kept) as the policy set, its version
    the SHA-256 of exactly these bytes."""
    data = parse_yaml(raw, source)
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level")
    try:
        policies = PolicySet.model_validate(data)
    except ValidationError as exc:
        raise _format_validation(source, exc) from None
    return policies.model_copy(update={"version": hashlib.sha256(raw).hexdigest(),
                                       "source": raw.decode("utf-8", errors="replace")})


def load_directory(path: Path) -> Directory:
    data, _ = read_yaml(path)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    try:
        return Directory.model_validate(data)
    except ValidationError as exc:
        raise _format_validation(str(path), exc) from None


def load_optional_mapping(path: Path, validate: Callable[[dict], T], what: str) -> T | None:
    """An optional YAML file holding a mapping (templates, checklists, maintenance): None when absent or empty."""
    if not path.exists():
        return None
    data, _ = read_yaml(path)
    if data is None:
        return None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of {what}")
    try:
        return validate(data)
    except ValidationError as exc:
        raise _format_validation(str(path), exc) from None


def load_templates(path: Path) -> dict[str, ChangeTemplate]:
    """Templates are optional: no file means no templates."""
    return load_optional_mapping(
        path, lambda data: {str(name): ChangeTemplate.model_validate(body) for name, body in data.items()},
        "template names") or {}


def load_checklists(path: Path) -> dict[str, Checklist]:
    return load_optional_mapping(path, _CHECKLISTS.validate_python, "checklist names to phases") or {}


def load_maintenance(path: Path) -> MaintenancePlan | None:
    return load_optional_mapping(path, MaintenancePlan.model_validate, "windows and activities")


def load_canary(path: Path) -> CanaryConfig | None:
    return load_optional_mapping(path, CanaryConfig.model_validate, "canary settings")


def load_runbooks(folder: Path) -> dict[str, Runbook]:
    """`runbooks/<name>.md`, each a runbook named for its file (none when the folder is absent)."""
    runbooks: dict[str, Runbook] = {}
    for path in sorted(folder.glob("*.md")) if folder.is_dir() else []:
        try:
            runbooks[path.stem] = Runbook(name=path.stem, text=path.read_text(encoding="utf-8"))
        except ValidationError as exc:
            raise _format_validation(str(path), exc) from None
        except UnicodeDecodeError:
            raise ConfigError(f"{path}: not UTF-8 text") from None
    return runbooks


def install_runbooks(config_dir: Path, *, force: bool = False) -> list[str]:
    """Copy the shipped runbooks into `config_dir/runbooks` (those missing, or all with `force`); returns what was
    written, as `runbooks/<name>.md`."""
    folder = config_dir / "runbooks"
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for source in sorted((DEFAULTS_DIR / "runbooks").glob("*.md")):
        target = folder / source.name
        if force or not target.exists():
            target.write_bytes(source.read_bytes())
            written.append(f"runbooks/{source.name}")
    return written


def load_proposal(config_dir: Path, proposed: Path | None = None, policies_text: str = "") -> Org:
    """A proposed config (issue 34's what-if): the files of the directory `proposed`, or a policies.yaml given as
    text, over a copy of `config_dir` (a proposal names only what it changes), loaded as the config would be: a file
    that does not load is refused naming it and the field. Nothing in `config_dir` is touched."""
    if proposed is not None and not proposed.is_dir():
        raise ConfigError(f"proposed: {proposed} is not a directory")
    with tempfile.TemporaryDirectory(prefix="changeflow-proposal-") as folder:
        merged = Path(folder) / "config"
        shutil.copytree(config_dir, merged)
        for item in proposed.iterdir() if proposed is not None else ():
            (shutil.copytree(item, merged / item.name, dirs_exist_ok=True) if item.is_dir()
             else shutil.copyfile(item, merged / item.name))
        if policies_text.strip():
            (merged / "policies.yaml").write_text(policies_text)
        try:
            return load_org(merged)
        except ConfigError as exc:  # named as the proposal, not the copy it was loaded from
            where = f"{proposed} (proposed)" if proposed is not None else "proposed"
            raise ConfigError(str(exc).replace(str(merged), where), [(p.field, p.message) for p in exc.problems]) \
                from None


def load_org(config_dir: Path) -> Org:
    directory = load_directory(config_dir / "directory.yaml")
    policies = load_policies(config_dir / "policies.yaml")
    templates = load_templates(config_dir / "templates.yaml")
    checklists = load_checklists(config_dir / "checklists.yaml")
    maintenance = load_maintenance(config_dir / "maintenance.yaml")
    canary = load_canary(config_dir / "canary.yaml")
    runbooks = load_runbooks(config_dir / "runbooks")
    try:
        return Org(directory=directory, policies=policies, templates=templates, checklists=checklists,
                   maintenance=maintenance, canary=canary, runbooks=runbooks)
    except ValidationError as exc:
        raise _format_validation(str(config_dir), exc) from None
