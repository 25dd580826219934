"""The YAML a user writes (config files, ``--set`` values), read strictly and the same way everywhere.

PyYAML's safe loader lets a repeated key silently replace the first (a second ``pretrain:`` section
wipes the first) and reads ``1e-3`` as a string (YAML 1.1 wants a dot in a float), in a file and in
a flow list alike. This loader refuses the first and reads the second as the number a user means
(YAML 1.2's float), so a scalar and a list item parse alike.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

from cmgh.errors import ConfigError

# YAML 1.2 core schema floats (exponent without a dot, e.g. 1e-3) beside 1.1's, and its special values
FLOAT = re.compile(r"""^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?
                     |[-+]?\.(?:inf|Inf|INF)
                     |\.(?:nan|NaN|NAN))$""", re.X)


# libyaml's parser and composer (C) where PyYAML was built with it: every job reads the schema and its
# config, 0.37 s of pure-Python parsing per job before (a third of an evaluation job's own work)
_BASE: type = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class StrictLoader(_BASE):  # type: ignore[misc,valid-type]
    """Safe loading, a repeated mapping key refused with both lines, YAML 1.2 floats."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)  # type: ignore[no-untyped-call]
            line = key_node.start_mark.line + 1
            if key in seen:
                raise ConfigError(f"line {line}: key {key!r} repeats the one on line {seen[key]} "
                                  "(expected each key once per mapping: a repeated one would replace the first silently)")
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


StrictLoader.yaml_implicit_resolvers = {k: [r for r in v if r[0] != "tag:yaml.org,2002:float"] for k, v in _BASE.yaml_implicit_resolvers.items()}
StrictLoader.add_implicit_resolver("tag:yaml.org,2002:float", FLOAT, list("-+0123456789."))


def load(text: str) -> Any:
    """Parse ``text``; a repeated key is a :class:`ConfigError` naming its lines (the caller adds the file)."""
    return yaml.load(text, Loader=StrictLoader)  # noqa: S506 (StrictLoader is a SafeLoader)
