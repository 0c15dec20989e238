"""What Filebeat's docker autodiscover provider evaluates template conditions against.

A transcription of upstream behaviour, so that a condition in our filebeat.yml can be
checked without a Docker engine:

- ``generateMetaDocker`` (libbeat/autodiscover/providers/docker/docker.go) builds the
  selectors with ``safemapstr.Put(labelMap, k, v)`` for every container label: the label
  ``taskq.logs`` becomes ``{"taskq": {"logs": ...}}``. Only the metadata used to enrich
  events is dedotted (``labels.dedot``, default true): "Don't dedot selectors, dedot only
  metadata used for events enrichment". elastic/beats#49814 reports the same.
- ``emitContainer`` publishes ``{"docker": {"container": {..., "labels"}}, "container":
  {..., "labels"}, "meta": {...}}``; ``template.Mapper.GetConfig`` runs each template's
  condition on that event.
- ``safemapstr.mapFind`` (libbeat/common/safemapstr): a label that is both a value and a
  prefix (``com.docker.compose.project`` and ``...project.config_files``) keeps its value
  under ``value``.
- ``mapstr.M.GetValue`` (elastic-agent-libs mapstr.mapFind): the whole key is tried first,
  then the map is walked one dotted segment at a time.
- ``conditions.Equals`` (libbeat/conditions/equals.go): an int, string or bool per field;
  the event value must be of the same kind (a label is always a string), else no match.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

ALTERNATIVE_KEY = "value"

#: Labels Docker Compose v2 puts on every container it creates (docker compose ps --format
#: json / docker inspect), in addition to the service's own ``labels``.
COMPOSE_LABELS = (
    "com.docker.compose.config-hash",
    "com.docker.compose.container-number",
    "com.docker.compose.depends_on",
    "com.docker.compose.image",
    "com.docker.compose.oneoff",
    "com.docker.compose.project",
    "com.docker.compose.project.config_files",
    "com.docker.compose.project.working_dir",
    "com.docker.compose.service",
    "com.docker.compose.version",
)


class NotFound(KeyError):
    """mapstr.ErrKeyNotFound."""


def safemapstr_put(data: dict[str, Any], key: str, value: Any) -> None:
    """``safemapstr.Put``: nest a dotted key without overwriting what is there."""
    while True:
        if key in data:
            old = data[key]
            if isinstance(old, dict):
                data = old
                key = ALTERNATIVE_KEY
            break
        head, dot, rest = key.partition(".")
        if not dot:
            break
        sub = data.setdefault(head, {})
        if not isinstance(sub, dict):
            sub = {ALTERNATIVE_KEY: sub}
            data[head] = sub
        data, key = sub, rest
    data[key] = value


def get_value(data: Mapping[str, Any], key: str) -> Any:
    """``mapstr.M.GetValue``: the whole key first, then one dotted segment at a time."""
    while True:
        if key in data:
            return data[key]
        head, dot, rest = key.partition(".")
        if not dot or head not in data:
            raise NotFound(key)
        sub = data[head]
        if not isinstance(sub, Mapping):
            raise NotFound(key)  # upstream: ErrNotMapType, also "no match" for a condition
        data, key = sub, rest


def _equals(expected: Any, actual: Any) -> bool:
    # NewEqualsCondition tries int, then string, then bool; Check needs the same kind.
    if isinstance(expected, bool):
        return isinstance(actual, bool) and actual == expected
    if isinstance(expected, int):
        return isinstance(actual, int) and not isinstance(actual, bool) and actual == expected
    if isinstance(expected, str):
        return isinstance(actual, str) and actual == expected
    raise ValueError(f"equals takes strings, ints and booleans, not {expected!r}")


def check(condition: Mapping[str, Any], event: Mapping[str, Any]) -> bool:
    """Evaluate a condition (``equals``, ``and``, ``or``, ``not``) on an event."""
    ((kind, spec),) = condition.items()
    if kind == "equals":
        for field, expected in spec.items():
            try:
                actual = get_value(event, field)
            except NotFound:
                return False
            if not _equals(expected, actual):
                return False
        return True
    if kind == "and":
        return all(check(sub, event) for sub in spec)
    if kind == "or":
        return any(check(sub, event) for sub in spec)
    if kind == "not":
        return not check(spec, event)
    raise ValueError(f"condition {kind!r} is not modelled here")


def _dedot(key: str) -> str:
    return key.replace(".", "_")


def autodiscover_event(
    container_id: str, name: str, image: str, labels: Mapping[str, str], dedot: bool = True
) -> dict[str, Any]:
    """The bus event ``emitContainer`` publishes for a container without exposed ports."""
    selectors: dict[str, Any] = {}
    metadata_labels: dict[str, Any] = {}
    for key, value in labels.items():
        safemapstr_put(selectors, key, value)
        if dedot:
            metadata_labels[_dedot(key)] = value
        else:
            safemapstr_put(metadata_labels, key, value)
    return {
        "id": container_id,
        "start": True,
        "docker": {
            "container": {"id": container_id, "name": name, "image": image, "labels": selectors}
        },
        "container": {
            "id": container_id,
            "name": name,
            "image": {"name": image},
            "labels": selectors,
        },
        "meta": {
            "container": {"id": container_id, "name": name, "image": {"name": image}},
            "docker": {"container": {"labels": metadata_labels}},
        },
    }
