"""Reading the PromQL inside Tandem's dashboards and alerts.

Grafana dashboards are JSON with template variables; this module finds every query in them,
substitutes the variables the way Grafana would for one selection, and lists which metric names
and label names a PromQL expression uses, so tests can hold them to the metrics contract.
The lexer understands the PromQL the dashboards and alerts are written in (selectors, functions,
aggregations with by/without, vector matching with on/ignoring/group_*), not every corner of it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Iterator

# Values the local end-to-end test selects: the static labels of its scrape config, every trunk,
# and Grafana's built-in intervals.
LOCAL_SELECTION = {
    "datasource": "prometheus",
    "namespace": "default",
    "gateway": "local",
    "trunk": ".*",
    "__rate_interval": "1m",
    "__interval": "15s",
    "__range": "5m",
}

_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\[\[(\w+)\]\]|\$(\w+)")


class UnknownVariable(KeyError):
    """A query uses a template variable the selection does not define."""


def substitute(expr: str, selection: dict[str, str]) -> str:
    """Replaces `$var`, `${var}`, `${var:fmt}` and `[[var]]` with the selected values."""

    def replace(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2) or match.group(3)
        if name not in selection:
            raise UnknownVariable(f"template variable ${name} in {expr!r} has no value")
        return selection[name]

    return _VARIABLE.sub(replace, expr)


@dataclass(frozen=True)
class PanelQuery:
    """One query of one dashboard panel."""

    dashboard: str
    panel: str
    ref_id: str
    expr: str
    instant: bool

    def where(self) -> str:
        return f"{self.dashboard} / {self.panel!r} / {self.ref_id}"


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, including those nested in collapsed rows."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def panel_queries(dashboard: dict[str, Any]) -> list[PanelQuery]:
    """Every Prometheus query of every panel."""
    found = []
    for panel in panels(dashboard):
        for target in panel.get("targets", []):
            if "expr" in target:
                found.append(
                    PanelQuery(
                        dashboard=dashboard.get("title", "?"),
                        panel=panel.get("title", "?"),
                        ref_id=target.get("refId", "?"),
                        expr=target["expr"],
                        instant=bool(target.get("instant")),
                    )
                )
    return found


@dataclass(frozen=True)
class LabelValuesQuery:
    """A Grafana `label_values(selector, label)` variable query."""

    variable: str
    selector: str
    label: str


_LABEL_VALUES = re.compile(r"^\s*label_values\(\s*(?:(?P<selector>.+?)\s*,\s*)?(?P<label>\w+)\s*\)\s*$")


def variable_queries(dashboard: dict[str, Any]) -> list[LabelValuesQuery]:
    """The `label_values` queries behind the dashboard's query variables."""
    found = []
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") != "query":
            continue
        query = variable.get("query")
        text = query.get("query") if isinstance(query, dict) else query
        match = _LABEL_VALUES.match(text or "")
        if not match:
            raise ValueError(f"variable {variable.get('name')}: not a label_values query: {text!r}")
        found.append(LabelValuesQuery(variable["name"], match.group("selector") or "", match.group("label")))
    return found


# ---------------------------------------------------------------- PromQL lexing

_TOKEN = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)
  | (?P<number>(?:0x[0-9a-fA-F]+|\d+\.?\d*(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?)(?:ms|[smhdwy])?(?:\d+(?:ms|[smhdwy]))*)
  | (?P<ident>[a-zA-Z_:][a-zA-Z0-9_:]*)
  | (?P<op>=~|!~|!=|==|<=|>=|[-+*/%^<>=,(){}\[\]:@])
    """,
    re.VERBOSE,
)

_AGGREGATIONS = {
    "sum", "min", "max", "avg", "count", "stddev", "stdvar", "topk", "bottomk", "quantile",
    "count_values", "group", "limitk", "limit_ratio",
}
_KEYWORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool",
    "offset", "atan2", "inf", "nan", "start", "end",
}
_LABEL_LISTS = {"by", "without", "on", "ignoring", "group_left", "group_right"}


class PromQLSyntaxError(ValueError):
    """The expression could not be lexed."""


def _tokens(expr: str) -> list[tuple[str, str]]:
    out = []
    pos = 0
    while pos < len(expr):
        match = _TOKEN.match(expr, pos)
        if not match:
            raise PromQLSyntaxError(f"unexpected {expr[pos:pos + 20]!r} at {pos} in {expr!r}")
        kind = match.lastgroup or ""
        if kind != "ws":
            out.append((kind, match.group()))
        pos = match.end()
    return out


@dataclass(frozen=True)
class Usage:
    """What an expression reads: selectors (metric name and matcher labels) and grouping labels."""

    selectors: tuple[tuple[str | None, frozenset[str]], ...]
    grouping_labels: frozenset[str]

    @property
    def metrics(self) -> set[str]:
        return {name for name, _ in self.selectors if name}


def usage(expr: str) -> Usage:
    """Lists the metric names, matcher labels and grouping labels of a PromQL expression."""
    tokens = _tokens(expr)
    selectors: list[tuple[str | None, frozenset[str]]] = []
    grouping: set[str] = set()
    i = 0
    depth_brackets = 0

    def matcher_labels(start: int) -> tuple[frozenset[str], int]:
        """Reads `{a="x", b=~"y"}` from the `{` at start; returns its labels and the next index."""
        labels = set()
        j = start + 1
        while j < len(tokens) and tokens[j][1] != "}":
            kind, text = tokens[j]
            if kind in ("ident", "string") and j + 1 < len(tokens) and tokens[j + 1][1] in ("=", "!=", "=~", "!~"):
                labels.add(text.strip("\"'`"))
            j += 1
        if j >= len(tokens):
            raise PromQLSyntaxError(f"unclosed {{ in {expr!r}")
        return frozenset(labels), j + 1

    while i < len(tokens):
        kind, text = tokens[i]
        nxt = tokens[i + 1][1] if i + 1 < len(tokens) else ""
        if text == "[":
            depth_brackets += 1
        elif text == "]":
            depth_brackets -= 1
        elif depth_brackets:
            pass
        elif kind == "ident" and text in _LABEL_LISTS and nxt == "(":
            j = i + 2
            while j < len(tokens) and tokens[j][1] != ")":
                if tokens[j][0] == "ident":
                    grouping.add(tokens[j][1])
                j += 1
            i = j
        elif text == "{":
            labels, i = matcher_labels(i)
            selectors.append((None, labels))
            continue
        elif kind == "ident" and nxt == "(":
            pass  # a function or aggregation call
        elif kind == "ident" and (text in _AGGREGATIONS or text.lower() in _KEYWORDS):
            pass
        elif kind == "ident":
            if nxt == "{":
                labels, i = matcher_labels(i + 1)
                selectors.append((text, labels))
                continue
            selectors.append((text, frozenset()))
        i += 1
    return Usage(tuple(selectors), frozenset(grouping))
