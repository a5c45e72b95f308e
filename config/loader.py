"""Load YAML files into pydantic models, with errors that name the file, the key and what was expected."""

from __future__ import annotations

import os
import re
import types
from pathlib import Path
from typing import Annotated, Any, TypeVar, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, SecretStr, ValidationError

M = TypeVar("M", bound=BaseModel)

_PLACEHOLDER = re.compile(r"\$\{([A-Z][A-Z0-9_]*)(?::-([^}]*))?\}")


class ConfigError(ValueError):
    """A configuration file is unreadable or invalid; the message says where and why."""

    def __init__(self, path: Path | str, problems: list[str]) -> None:
        self.path = Path(path)
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"invalid configuration in {self.path}:\n{lines}")


def key_path(loc: tuple[int | str, ...]) -> str:
    """Render a pydantic error location as a YAML key path, e.g. ``cameras[2].zones``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def describe_validation_error(err: ValidationError) -> list[str]:
    """One line per problem: the key path, what was wrong, and what was given."""
    problems = []
    for e in err.errors(include_url=False):
        given = e.get("input")
        shown = repr(given) if not isinstance(given, dict | list) else type(given).__name__
        if len(shown) > 80:
            shown = shown[:77] + "..."
        problems.append(f"{key_path(tuple(e['loc']))}: {e['msg']} (got {shown})")
    return problems


def expand_env(value: Any, path: Path, where: str = "") -> Any:
    """Replace ``${NAME}`` / ``${NAME:-default}`` with environment variables; a missing one is an error."""
    if isinstance(value, str):

        def sub(m: re.Match[str]) -> str:
            name, default = m.group(1), m.group(2)
            if name not in os.environ:
                if default is not None:
                    return default
                raise ConfigError(
                    path, [f"{where or '(top level)'}: environment variable {name} is not set"]
                )
            return os.environ[name]

        return _PLACEHOLDER.sub(sub, value)
    if isinstance(value, dict):
        return {
            k: expand_env(v, path, f"{where}.{k}" if where else str(k)) for k, v in value.items()
        }
    if isinstance(value, list):
        return [expand_env(v, path, f"{where}[{i}]") for i, v in enumerate(value)]
    return value


def is_secret(annotation: Any) -> bool:
    """Whether a field of this type holds a secret: ``SecretStr``, alone or optional."""
    if annotation is SecretStr:
        return True
    return get_origin(annotation) in (Union, types.UnionType) and SecretStr in get_args(annotation)


def is_placeholder(value: object) -> bool:
    """Whether a YAML value is exactly one ``${NAME}`` placeholder, with no default."""
    m = _PLACEHOLDER.fullmatch(value) if isinstance(value, str) else None
    return m is not None and m.group(2) is None


LITERAL_SECRET = (
    "expected a ${NAME} placeholder (without a default) naming the environment variable "
    "that holds the secret, not the secret itself"
)


def literal_secrets(model: type[BaseModel], data: Any, where: str = "") -> list[str]:
    """The key paths of the secret fields (``is_secret``) of ``model`` whose value in
    ``data``, the YAML as read (before placeholders are filled), is anything but one
    ``${NAME}`` placeholder: a secret written into the file. Missing or null secrets are
    not reported, nor parts of ``data`` without the model's shape (validation names those)."""
    if not isinstance(data, dict):
        return []
    found: list[str] = []
    for name, field in model.model_fields.items():
        key = field.alias or name
        if key not in data:
            continue
        path = f"{where}.{key}" if where else key
        if is_secret(field.annotation):
            if data[key] is not None and not is_placeholder(data[key]):
                found.append(path)
        else:
            found += _literal_secrets_in(field.annotation, data[key], path)
    return found


def _literal_secrets_in(annotation: Any, value: Any, where: str) -> list[str]:
    """``literal_secrets`` for a value of any field type: a model, or models inside optional,
    tuple, list and dict types."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return literal_secrets(annotation, value, where)
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Annotated:
        return _literal_secrets_in(args[0], value, where)
    if origin in (Union, types.UnionType):
        return list(dict.fromkeys(p for a in args for p in _literal_secrets_in(a, value, where)))
    if origin in (tuple, list) and isinstance(value, list) and args:
        repeated = origin is list or (len(args) == 2 and args[1] is Ellipsis)
        items = [args[0]] * len(value) if repeated else list(args)
        return [
            p
            for i, (item, v) in enumerate(zip(items, value, strict=False))
            for p in _literal_secrets_in(item, v, f"{where}[{i}]")
        ]
    if origin is dict and isinstance(value, dict) and len(args) == 2:
        return [
            p for k, v in value.items() for p in _literal_secrets_in(args[1], v, f"{where}.{k}")
        ]
    return []


def refuse_literal_secrets(model: type[BaseModel], data: Any, path: Path) -> None:
    """Raise a ConfigError naming every secret of ``model`` that ``data`` (the YAML as read
    from ``path``) writes out instead of taking it from the environment."""
    found = literal_secrets(model, data)
    if found:
        raise ConfigError(path, [f"{key}: {LITERAL_SECRET}" for key in found])


def read_yaml(path: Path) -> Any:
    """Parse a YAML file; syntax errors become a ConfigError with the line."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(path, [f"cannot read file: {exc.strerror or exc}"]) from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(path, [f"not UTF-8 text: {exc.reason} at byte {exc.start}"]) from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise ConfigError(
            path, [f"{where}YAML syntax error: {getattr(exc, 'problem', exc)}"]
        ) from exc
    except RecursionError as exc:
        raise ConfigError(path, ["YAML nested too deeply"]) from exc
    problem = _alias_problem(data)
    if problem:
        raise ConfigError(path, [problem])
    return data


MAX_YAML_VALUES = 1_000_000


def _alias_problem(data: Any) -> str | None:
    """YAML aliases can make a cycle or a tree of exponential size ("billion laughs"); say which.

    Counts the values the document expands to, each shared node once (memo by identity).
    """
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()

    def size(node: Any) -> int:
        if not isinstance(node, dict | list):
            return 1
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in open_nodes:
            raise ValueError("YAML aliases form a cycle")
        open_nodes.add(key)
        items = [*node.keys(), *node.values()] if isinstance(node, dict) else node
        total = 1 + sum(size(x) for x in items)
        open_nodes.discard(key)
        sizes[key] = min(total, MAX_YAML_VALUES + 1)
        return sizes[key]

    try:
        if size(data) > MAX_YAML_VALUES:
            return f"YAML aliases expand to more than {MAX_YAML_VALUES} values"
    except ValueError as exc:
        return str(exc)
    return None


def validate(model: type[M], data: Any, path: Path, context: dict[str, Any] | None = None) -> M:
    """Validate parsed data against a model, turning pydantic errors into a ConfigError."""
    try:
        return model.model_validate(data, context=context)
    except ValidationError as exc:
        raise ConfigError(path, describe_validation_error(exc)) from exc


def load_yaml_model(model: type[M], path: Path | str, *, env: bool = True) -> M:
    """Read a YAML file, fill ``${ENV}`` placeholders and validate it as ``model``."""
    p = Path(path)
    data = read_yaml(p)
    if data is None:
        raise ConfigError(p, ["the file is empty"])
    if env:
        data = expand_env(data, p)
    return validate(model, data, p, context={"base_dir": p.parent})


def placeholders(path: Path | str) -> set[str]:
    """The environment variables a YAML file asks for (without a default)."""
    text = Path(path).read_text(encoding="utf-8")
    return {m.group(1) for m in _PLACEHOLDER.finditer(text) if m.group(2) is None}
