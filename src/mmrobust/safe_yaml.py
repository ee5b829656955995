"""Reading YAML a user (or someone else) wrote: no code, no alias bombs, no duplicate keys.

`yaml.safe_load` runs no code, but two things it accepts still hurt: aliases that expand
exponentially ("billion laughs": ten nested aliases of ten make 10^10 nodes, and printing or
hashing the config then never ends) and duplicate keys, of which the last silently wins (a
config that says `epochs: 10` and later `epochs: 100` trains for 100). Both are refused here
with one line naming the problem: the document's expanded size is bounded before anything is
constructed, and every mapping's keys must be distinct (merge keys `<<` may still be overridden).
"""

from __future__ import annotations

import re
from typing import Any

import yaml

from .errors import MMRobustError

MAX_NODES = 100_000  # expanded nodes (aliases counted as copies); real configs have hundreds
_MERGE = "tag:yaml.org,2002:merge"


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping."""

    def construct_mapping(self, node: yaml.Node, deep: bool = False) -> dict[Any, Any]:
        if isinstance(node, yaml.MappingNode):
            seen: set[Any] = set()
            for key_node, _ in node.value:
                if key_node.tag == _MERGE:
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    repeated = key in seen
                except TypeError:  # an unhashable key: the base constructor says so
                    break
                if repeated:
                    raise MMRobustError(
                        f"duplicate key '{key}' (line {key_node.start_mark.line + 1}): "
                        "each key may appear once in a mapping; keep the value you mean and delete the other"
                    )
                seen.add(key)
        return super().construct_mapping(node, deep=deep)


# YAML 1.1 (PyYAML) reads `1e-4` as a string, since its floats need a dot (`1.0e-4`); YAML 1.2 and
# every reader of a config read it as the number it is meant to be.
_StrictLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+$"), list("-+0123456789")
)


def load_yaml(text: str, where: str) -> Any:
    """The YAML document in `text`; `where` (a file, an option) names it in one-line errors."""
    loader = _StrictLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_size(node)
        return loader.construct_document(node)
    except yaml.YAMLError as e:
        raise MMRobustError(f"{where}: not valid YAML ({getattr(e, 'problem', None) or e})") from None
    except MMRobustError as e:
        raise MMRobustError(f"{where}: {e}") from None
    except RecursionError:
        raise MMRobustError(f"{where}: nested too deeply to read") from None
    finally:
        loader.dispose()


def _check_size(root: yaml.Node) -> None:
    """Refuse a document that expands to more than MAX_NODES nodes, or refers to itself."""
    sizes: dict[int, int] = {}
    active: set[int] = set()

    def size(node: yaml.Node) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in active:
            raise MMRobustError("an alias refers to a node that contains it (a recursive alias); write the value out")
        active.add(key)
        children: list[yaml.Node] = []
        if isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        elif isinstance(node, yaml.MappingNode):
            children = [n for pair in node.value for n in pair]
        total = 1
        for child in children:
            total += size(child)
            if total > MAX_NODES:
                raise MMRobustError(
                    f"the document expands to more than {MAX_NODES:,} values (aliases nested in aliases: "
                    "a 'billion laughs' alias bomb?); write the values out or use fewer nested aliases"
                )
        active.discard(key)
        sizes[key] = total
        return total

    size(root)
