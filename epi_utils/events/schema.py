"""Event schema: event types and their ordered role slots, read from a JSON file.

The file has the shape of ``chfinann_event_schema.derived.json`` (values from Doc2EDAG's
``dee/event_type.py``)::

    {"events": [{"event_type": "T", "roles": ["R1", "R2", ...], "key_roles": ["R1"]}, ...],
     "common_fields_entity_only": ["F1", ...],          # optional entity-only fields
     "name": "ChFinAnn (Doc2EDAG)",                     # optional: the data set's name in reports
     "patterns": {"date": "\\d{4}年...", ...}}        # optional: user rule patterns (see rules.py)

No event type or role name is written in code: another data set in the same layout runs with
nothing but its schema file. The role order is the slot order used by the Doc2EDAG metric.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence


@dataclass(frozen=True)
class EventSchema:
    """Event types (in file order) and, per type, its ordered role slots.

    ``roles[t]`` is a tuple of role names for ``event_types[t]``; ``entity_fields`` are the
    entity-only fields (e.g. stock codes) that are mentions but never record arguments.
    """

    event_types: tuple[str, ...]
    roles: tuple[tuple[str, ...], ...]
    key_roles: tuple[tuple[str, ...], ...] = ()
    entity_fields: tuple[str, ...] = ()
    source: str = ""
    name: str = ""                                       # the data set's name (reports); "" unknown
    patterns: tuple[tuple[str, str], ...] = ()           # user rule patterns (kind, regex) from the file
    _index: dict = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self):
        if not self.event_types:
            raise ValueError("schema: 'events' must list at least one event type")
        if len(self.roles) != len(self.event_types):
            raise ValueError("schema: one role list per event type is required")
        if len(set(self.event_types)) != len(self.event_types):
            raise ValueError(f"schema: duplicate event types in {list(self.event_types)}")
        for name, roles in zip(self.event_types, self.roles):
            if not roles:
                raise ValueError(f"schema: event type {name!r} has no roles")
            if len(set(roles)) != len(roles):
                raise ValueError(f"schema: event type {name!r} repeats a role: {list(roles)}")
        for kind, rx in self.patterns:
            try:
                re.compile(rx)
            except re.error as e:
                raise ValueError(f"schema: pattern {kind!r} is not a regular expression ({e}): {rx!r}") from None
        self._index.update({name: i for i, name in enumerate(self.event_types)})

    @property
    def num_types(self) -> int:
        return len(self.event_types)

    @property
    def max_roles(self) -> int:
        return max(len(r) for r in self.roles)

    def type_index(self, event_type: str) -> int:
        """Index of ``event_type``; ``KeyError`` naming the allowed types otherwise."""
        try:
            return self._index[event_type]
        except KeyError:
            raise KeyError(f"event type {event_type!r} is not in the schema; allowed: {list(self.event_types)}") from None

    def roles_of(self, event_type: str) -> tuple[str, ...]:
        return self.roles[self.type_index(event_type)]

    def role_pairs(self) -> list[tuple[int, int]]:
        """Every (type index, role index) pair, in schema order (global role ids)."""
        return [(t, r) for t, roles in enumerate(self.roles) for r in range(len(roles))]

    def all_fields(self) -> list[str]:
        """Sorted union of every role name and entity-only field (the default NER label set)."""
        names = {r for roles in self.roles for r in roles} | set(self.entity_fields)
        return sorted(names)

    def to_dict(self) -> dict[str, Any]:
        return {"events": [{"event_type": t, "roles": list(r),
                            "key_roles": list(self.key_roles[i]) if self.key_roles else []}
                           for i, (t, r) in enumerate(zip(self.event_types, self.roles))],
                "common_fields_entity_only": list(self.entity_fields), "source": self.source, "name": self.name,
                "patterns": dict(self.patterns)}

    def twin_types(self) -> list[tuple[str, ...]]:
        """Groups of event types with identical role lists (only a type cue tells their records apart)."""
        groups: dict[tuple, list[str]] = {}
        for t, roles in zip(self.event_types, self.roles):
            groups.setdefault(tuple(sorted(roles)), []).append(t)
        return [tuple(g) for g in groups.values() if len(g) > 1]


def schema_from_dict(obj: Mapping[str, Any], *, origin: str = "<dict>") -> EventSchema:
    """Build an :class:`EventSchema` from the parsed JSON shape described in the module docstring."""
    if not isinstance(obj, Mapping) or not isinstance(obj.get("events"), Sequence):
        raise ValueError(f"schema {origin}: expected an object with an 'events' list")
    types, roles, keys = [], [], []
    for i, ev in enumerate(obj["events"]):
        if not isinstance(ev, Mapping) or not isinstance(ev.get("event_type"), str):
            raise ValueError(f"schema {origin}: events[{i}] needs a string 'event_type'")
        rl = ev.get("roles")
        if not isinstance(rl, Sequence) or isinstance(rl, str) or not all(isinstance(r, str) for r in rl):
            raise ValueError(f"schema {origin}: events[{i}] ({ev['event_type']!r}) needs a list of string 'roles'")
        kr = list(ev.get("key_roles", []))
        unknown = [k for k in kr if k not in rl]
        if unknown:
            raise ValueError(f"schema {origin}: key_roles {unknown} of {ev['event_type']!r} are not among its roles")
        types.append(ev["event_type"]); roles.append(tuple(rl)); keys.append(tuple(kr))
    fields = tuple(obj.get("common_fields_entity_only", ()) or ())
    pats = obj.get("patterns", {}) or {}
    if not isinstance(pats, Mapping) or not all(isinstance(k, str) and isinstance(v, str) for k, v in pats.items()):
        raise ValueError(f"schema {origin}: 'patterns' must map kind names to regular expressions (strings)")
    name = obj.get("name", "")
    if not isinstance(name, str):
        raise ValueError(f"schema {origin}: 'name' must be a string")
    return EventSchema(tuple(types), tuple(roles), tuple(keys), fields, str(obj.get("source", origin)), name,
                       tuple(pats.items()))


def load_schema(path: os.PathLike | str) -> EventSchema:
    """Read a schema JSON file (see module docstring)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"schema file {path} does not exist")
    with open(path, encoding="utf-8") as fh:
        return schema_from_dict(json.load(fh), origin=str(path))
