"""Constitutions (Bai et al. 2022, "Constitutional AI", arXiv 2212.08073): principles a policy critiques
and revises its answers against (the SL phase) and a feedback model compares two answers under (the RL
phase), loaded from YAML and checked field by field.

A constitution file has `name`, `version`, `principles` (each: id, critique, revision, comparison) and an
optional `few_shot` list (each: prompt, response, principle, critique, revision), shown before every
critique and revision request so that the model sees the format. `default` names the built-in one.
Principles are drawn per item from a seed and the item's id, so a rerun draws the same ones.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

from synthpref.config.loader import ConfigError
from synthpref.data.schema import content_id
from synthpref.errors import MissingInput

BUILTIN_DIR = Path(__file__).resolve().parent / "constitutions"
PRINCIPLE_FIELDS = ("id", "critique", "revision", "comparison")
FEW_SHOT_FIELDS = ("prompt", "response", "principle", "critique", "revision")


@dataclass(frozen=True)
class Principle:
    id: str
    critique: str              # the request that asks the policy to critique its last answer
    revision: str              # the request that asks it to rewrite the answer
    comparison: str            # the question a feedback model answers about two answers


@dataclass(frozen=True)
class FewShot:
    prompt: str
    response: str
    principle: str
    critique: str
    revision: str


@dataclass(frozen=True)
class Constitution:
    name: str
    version: int
    principles: tuple[Principle, ...]
    few_shot: tuple[FewShot, ...] = ()
    source: str = ""

    @property
    def hash(self) -> str:
        """Content hash: part of every run that uses the constitution, so an edited file is a new run."""
        blob = json.dumps({"name": self.name, "version": self.version,
                           "principles": [asdict(p) for p in self.principles],
                           "few_shot": [asdict(f) for f in self.few_shot]}, sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]

    def by_id(self, principle_id: str) -> Principle:
        for p in self.principles:
            if p.id == principle_id:
                return p
        raise KeyError(f"constitution {self.name!r} has no principle {principle_id!r}")

    def draw(self, seed: int, item: str, salt: str = "") -> Principle:
        """The principle for one item (a pair, a prompt's round): uniform over the principles, fixed by
        (seed, item, salt), so reruns and both orders of a pair see the same one."""
        return self.principles[int(content_id(seed, item, salt), 16) % len(self.principles)]


def builtin_names() -> list[str]:
    return sorted(p.stem for p in BUILTIN_DIR.glob("*.yaml"))


def constitution_path(name: str) -> Path:
    """A built-in constitution by name (`default`), or a YAML file by path."""
    if name in builtin_names():
        return BUILTIN_DIR / f"{name}.yaml"
    path = Path(name)
    if path.suffix not in (".yaml", ".yml"):
        raise ConfigError(f"constitution {name!r}: not a built-in ({', '.join(builtin_names())}) nor a .yaml file")
    if not path.exists():
        raise MissingInput(f"constitution file {path} does not exist")
    return path


def load_constitution(name: str) -> Constitution:
    path = constitution_path(name)
    try:
        tree = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"constitution {path}: not valid YAML: {exc}") from exc
    return parse_constitution(tree, str(path))


def _text_fields(item, fields: tuple[str, ...], where: str) -> dict:
    if not isinstance(item, dict):
        raise ConfigError(f"{where}: expected a mapping with {', '.join(fields)}")
    unknown = set(item) - set(fields)
    if unknown:
        raise ConfigError(f"{where}: unknown keys {sorted(unknown)} (known: {', '.join(fields)})")
    for name in fields:
        value = item.get(name)
        if not isinstance(value, str) or not value.strip():
            raise ConfigError(f"{where}.{name}: a non-empty text is required")
    return {name: item[name].strip() for name in fields}


def parse_constitution(tree, source: str) -> Constitution:
    """Check every field; an error names the file and the dotted place (e.g. `principles.3.revision`)."""
    if not isinstance(tree, dict):
        raise ConfigError(f"constitution {source}: the top level must be a mapping")
    unknown = set(tree) - {"name", "version", "principles", "few_shot"}
    if unknown:
        raise ConfigError(f"constitution {source}: unknown keys {sorted(unknown)}")
    name, version = tree.get("name"), tree.get("version", 1)
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"constitution {source}: name: a non-empty text is required")
    if not isinstance(version, int) or isinstance(version, bool):
        raise ConfigError(f"constitution {source}: version: expected an integer")
    raw = tree.get("principles")
    if not isinstance(raw, list) or not raw:
        raise ConfigError(f"constitution {source}: principles: a non-empty list is required")
    principles = [Principle(**_text_fields(p, PRINCIPLE_FIELDS, f"constitution {source}: principles.{i}"))
                  for i, p in enumerate(raw)]
    ids = [p.id for p in principles]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise ConfigError(f"constitution {source}: principles: duplicate ids {duplicates}")
    shots = tree.get("few_shot") or []
    if not isinstance(shots, list):
        raise ConfigError(f"constitution {source}: few_shot: expected a list")
    few_shot = [FewShot(**_text_fields(s, FEW_SHOT_FIELDS, f"constitution {source}: few_shot.{i}"))
                for i, s in enumerate(shots)]
    for i, shot in enumerate(few_shot):
        if shot.principle not in ids:
            raise ConfigError(f"constitution {source}: few_shot.{i}.principle: {shot.principle!r} is not a "
                              f"principle id of this constitution")
    return Constitution(name.strip(), version, tuple(principles), tuple(few_shot), source)
