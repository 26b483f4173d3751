"""YAML as a user's file is read: bounded in size, and a key written twice in one mapping is an error.

PyYAML's safe_load keeps the last of two equal keys without a word (`name` twice, `space.seed` twice),
so a study could run something other than what its author reads at the top of the file. Anchors and
aliases stay shared objects, as safe_load makes them: the duplicate check visits each node once, so a
"billion laughs" file (aliases of aliases) costs its size, not its expansion."""

from __future__ import annotations

import os
from typing import Any

import yaml

MAX_BYTES = 1_048_576  # a study or --config file (1 MiB): the shipped ones are under 2 KiB; a 50 MB
#                        file took 9 minutes and 6 GB to parse and validate (issue 18)
_MERGE = "tag:yaml.org,2002:merge"  # `<<: *base`: merged keys may be overridden, as YAML intends
# libyaml's parser where PyYAML was built with it (the wheels are): the same SafeConstructor and resolver,
# a 1 MB file parsed in ~1 s instead of ~10 s (measured under load 12).
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class TooLarge(Exception):
    def __init__(self, size: int) -> None:
        super().__init__(f"{size:,} bytes; a study or config file may be at most {MAX_BYTES:,} bytes (1 MiB)")


class DuplicateKey(yaml.YAMLError):
    """A key written twice in one mapping: `.key` is its dotted path, `.lines` the two places (1-based)."""

    def __init__(self, key: str, first: yaml.Mark, second: yaml.Mark) -> None:
        self.key = key
        if first.line == second.line:
            self.lines = f"line {first.line + 1}, columns {first.column + 1} and {second.column + 1}"
        else:
            self.lines = f"lines {first.line + 1} and {second.line + 1}"
        super().__init__(f"{key}: duplicate key ({self.lines}); a key may appear once in a mapping")


def read_bytes(path: str | os.PathLike) -> bytes:
    """The file's bytes, refused (TooLarge) before any parsing when over MAX_BYTES. The size is checked
    by stat and again by reading at most one byte more: a file under /proc says 0 bytes and is not."""
    size = os.stat(path).st_size
    if size > MAX_BYTES:
        raise TooLarge(size)
    with open(path, "rb") as f:
        data = f.read(MAX_BYTES + 1)
    if len(data) > MAX_BYTES:
        raise TooLarge(max(size, len(data)))
    return data


def load(text: str) -> Any:
    """safe_load, but DuplicateKey for a key written twice in any mapping (top level or nested)."""
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _refuse_duplicates(loader, node)
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _refuse_duplicates(loader, root: yaml.Node) -> None:
    """Walk the composed node graph once per node (aliases share nodes) and raise on the first key that
    a mapping holds twice. Keys are compared as constructed (`1` and `0x1` are the same int key)."""
    seen: set[int] = set()
    stack: list[tuple[yaml.Node, str]] = [(root, "")]
    while stack:
        node, path = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, yaml.SequenceNode):
            stack += [(n, f"{path}[{i}]") for i, n in enumerate(node.value)]
        elif isinstance(node, yaml.MappingNode):
            first: dict[Any, yaml.Mark] = {}
            for k, v in node.value:
                if k.tag == _MERGE:
                    continue  # the merged mapping is checked where it is written
                key = loader.construct_object(k) if isinstance(k, yaml.ScalarNode) else None
                where = f"{path}.{key}" if path else str(key)
                if isinstance(k, yaml.ScalarNode):
                    if key in first:
                        raise DuplicateKey(where, first[key], k.start_mark)
                    first[key] = k.start_mark
                stack.append((v, where))
