"""Reading a YAML file a person wrote, bounded and strict.

- at most 1 MiB, UTF-8 (a config is a page of text, not data);
- at most 100,000 values once aliases (``*name``) are expanded: an alias bomb of a few hundred bytes
  expands to gigabytes when walked, and a recursive one never ends;
- a key given twice in one mapping is an error (the second would silently win);
- dates and times stay text, so the model parses them and an impossible one (Feb 30) is named by field;
- integers beyond 2**53 are refused (no setting is that large, and they stop being exact as floats);
- every error names the file and, where YAML knows it, the line and column, and is at most a few lines.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from yaml.constructor import ConstructorError

MAX_BYTES = 1 << 20
MAX_NODES = 100_000
MAX_INT = 2**53
_TIMESTAMP = "tag:yaml.org,2002:timestamp"
_CLIP = 400


class YamlError(ValueError):
    """A YAML file that cannot be read as a person's settings."""


def clip(text: str, limit: int = _CLIP) -> str:
    """``text`` cut to ``limit`` characters, saying so."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text) - limit:,} more characters)"


class _Loader(yaml.SafeLoader):
    def compose_document(self) -> Any:
        node = super().compose_document()
        if node is not None and _expanded(node, {}, set()) > MAX_NODES:
            raise ConstructorError(None, None, f"more than {MAX_NODES:,} values once its aliases (*name) are "
                                   "expanded", node.start_mark)
        return node

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict[Any, Any] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.get(key)
            except TypeError:  # an unhashable key: the base class says so
                break
            if first is not None:
                raise ConstructorError(None, None,
                                       f"key {clip(repr(key), 80)} is given twice (first on line {first.line + 1})",
                                       key_node.start_mark)
            seen[key] = key_node.start_mark
        return super().construct_mapping(node, deep)

    def construct_yaml_int(self, node: yaml.ScalarNode) -> int:
        value = super().construct_yaml_int(node)
        if abs(value) > MAX_INT:
            raise ConstructorError(None, None, f"integer {clip(str(value), 40)} is out of range (at most 2**53)",
                                   node.start_mark)
        return value


def _expanded(node: yaml.Node, sizes: dict[int, int], open_: set[int]) -> int:
    """How many values ``node`` stands for with every alias expanded (a node reached twice counts twice)."""
    key = id(node)
    if key in sizes:
        return sizes[key]
    if key in open_:
        raise ConstructorError(None, None, "an alias refers to itself (a recursive value)", node.start_mark)
    open_.add(key)
    total = 1
    if isinstance(node, yaml.SequenceNode):
        for child in node.value:
            total += _expanded(child, sizes, open_)
            if total > MAX_NODES:
                break
    elif isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            total += _expanded(k, sizes, open_) + _expanded(v, sizes, open_)
            if total > MAX_NODES:
                break
    open_.discard(key)
    sizes[key] = total
    return total


_Loader.add_constructor("tag:yaml.org,2002:int", _Loader.construct_yaml_int)
# Dates stay strings: the models parse them, and name the field of an impossible one.
_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != _TIMESTAMP]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def loads(text: str, source: Path | str) -> Any:
    """Parse YAML text under the rules above; a YamlError names ``source``."""
    loader = None
    try:
        loader = _Loader(text)  # its reader refuses control characters here already
        loader.name = str(source)  # the marks of error messages name the file
        return loader.get_single_data()
    except yaml.YAMLError as exc:
        raise YamlError(f"{source}: not valid YAML: {clip(str(exc))}") from None
    except (ValueError, RecursionError) as exc:  # a constructor's own error on a value it cannot build
        raise YamlError(f"{source}: not valid YAML: {clip(str(exc))}") from None
    finally:
        if loader is not None:
            loader.dispose()


def dumps(data: Any) -> str:
    """Data as block YAML in the order given (how tradebus writes configs it builds)."""
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False)


def read(path: Path | str) -> Any:
    """Read and parse a YAML file under the rules above."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_BYTES:
            raise YamlError(f"{path}: {size:,} bytes; a settings file is at most {MAX_BYTES:,}")
        raw = path.read_bytes()
    except OSError as exc:
        raise YamlError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise YamlError(f"{path}: not UTF-8 text (byte {exc.start}: {raw[exc.start:exc.start + 1]!r})") from None
    return loads(text, path)
