# mypy: disable-error-code="attr-defined,unused-ignore"
"""The common subset of Go's text/template that Docker's --format flags take.

    {{.Field.Sub}}  {{.}}  {{$}}  {{$var.Field}}      field chains (maps by key)
    {{json .X}}  {{index .X "k" 0}}  {{join .X ","}}  {{len .X}}  {{upper .X}}
    {{lower .X}}  {{title .X}}  {{split .X ","}}  {{printf "%s:%d" .A .B}}
    {{println .X}}  {{eq .A "b"}}  {{ne ..}}  {{not ..}}  {{and ..}}  {{or ..}}
    {{.X | json}}                                      pipelines, (sub expressions)
    {{range .X}}..{{else}}..{{end}}  {{range $k, $v := .X}}..{{end}}
    {{if .X}}..{{else if .Y}}..{{else}}..{{end}}  {{with .X}}..{{end}}
    {{- trims -}}, {{/* comments */}}
    table PREFIX                                        a header row, tab-aligned

Pure and stdlib only. Errors are TemplateError with Go's and Docker's words
("template parsing error: template: :1: ..." for parsing, "template: :1:N: executing
..." for evaluation).
"""

from __future__ import annotations

import json
import re
from typing import Any

__all__ = ["Context", "Template", "TemplateError", "parse", "render_table"]


class TemplateError(ValueError):
    pass


class Context(dict):  # type: ignore[type-arg]
    """A struct-like value (a ps row): a missing field is an error naming the type,
    as for a Go struct; `headers` name its columns for `table`."""

    type_name = "*formatter.Context"
    headers: dict[str, str] = {}


class _Missing:
    def __str__(self) -> str:
        return "<no value>"


NO_VALUE = _Missing()

_TOKEN = re.compile(
    r"""\s*(?:
    (?P<str>"(?:[^"\\]|\\.)*"|`[^`]*`)
    |(?P<num>-?\d+(?:\.\d+)?)
    |(?P<decl>:=)
    |(?P<var>\$[A-Za-z0-9_]*(?:\.[A-Za-z0-9_]+)*)
    |(?P<field>(?:\.[A-Za-z0-9_]+)+|\.)
    |(?P<ident>[A-Za-z_][A-Za-z0-9_]*)
    |(?P<punct>[|(),])
    )""",
    re.X,
)


class _Node:
    def __init__(self, kind: str, **kw: Any) -> None:
        self.kind = kind
        self.__dict__.update(kw)


def _lex_action(text: str, line: int) -> list[tuple[str, str]]:
    out = []
    pos = 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            bad = text[pos:].strip()[:1] or text[pos:]
            raise TemplateError(
                f"template parsing error: template: :{line}: unexpected {json.dumps(bad)} in command"
            )
        kind = m.lastgroup or ""
        out.append((kind, m.group(kind)))
        pos = m.end()
    return out


def _split(src: str) -> list[tuple[str, str, int, int]]:
    """[(text|action, content, line, column)], trim markers applied."""
    parts: list[tuple[str, str, int, int]] = []
    pos = 0
    while True:
        start = src.find("{{", pos)
        if start < 0:
            parts.append(("text", src[pos:], 0, 0))
            break
        text = src[pos:start]
        inner_start = start + 2
        if src.startswith("- ", inner_start) or src.startswith("-\t", inner_start):
            text = text.rstrip()
            inner_start += 1
        end = src.find("}}", inner_start)
        line = src.count("\n", 0, start) + 1
        if end < 0:
            raise TemplateError(f"template parsing error: template: :{line}: unclosed action")
        inner = src[inner_start:end]
        trim_right = inner.endswith(" -") or inner.endswith("\t-")
        if trim_right:
            inner = inner[:-1]
        parts.append(("text", text, 0, 0))
        col = start - (src.rfind("\n", 0, start) + 1)
        parts.append(("action", inner.strip(), line, col + 2))
        pos = end + 2
        if trim_right:
            while pos < len(src) and src[pos] in " \t\r\n":
                pos += 1
    return parts


class Template:
    def __init__(self, src: str) -> None:
        self.src = src
        self.root = self._parse(_split(src))

    # -- parsing --------------------------------------------------------------------

    def _parse(self, parts: list[tuple[str, str, int, int]]) -> list[_Node]:
        stack: list[tuple[_Node, list[_Node]]] = []
        body: list[_Node] = []
        for kind, content, line, col in parts:
            if kind == "text":
                if content:
                    body.append(_Node("text", text=content))
                continue
            if content.startswith("/*"):
                continue
            if not content:
                raise TemplateError(
                    f"template parsing error: template: :{line}: missing value for command"
                )
            toks = _lex_action(content, line)
            head = toks[0][1] if toks[0][0] == "ident" else ""
            if head in ("range", "if", "with"):
                node = _Node(head, line=line, col=col, branches=[], orelse=[], vars=[])
                rest = toks[1:]
                if head == "range" and any(k == "decl" for k, _ in rest):
                    i = next(i for i, (k, _) in enumerate(rest) if k == "decl")
                    node.vars = [v for k, v in rest[:i] if k == "var"]
                    rest = rest[i + 1 :]
                node.branches.append([self._pipeline(rest, line), []])
                stack.append((node, body))
                body = node.branches[-1][1]
            elif head == "else":
                if not stack:
                    raise TemplateError(
                        f"template parsing error: template: :{line}: unexpected {{{{else}}}}"
                    )
                node = stack[-1][0]
                if len(toks) > 1 and toks[1] == ("ident", "if"):
                    node.branches.append([self._pipeline(toks[2:], line), []])
                    body = node.branches[-1][1]
                else:
                    body = node.orelse
            elif head == "end":
                if not stack:
                    raise TemplateError(
                        f"template parsing error: template: :{line}: unexpected {{{{end}}}}"
                    )
                node, body = stack.pop()
                body.append(node)
            else:
                body.append(
                    _Node(
                        "action", pipe=self._pipeline(toks, line), line=line, col=col, src=content
                    )
                )
        if stack:
            node = stack[-1][0]
            raise TemplateError(f"template parsing error: template: :{node.line}: unexpected EOF")
        return body

    def _pipeline(self, toks: list[tuple[str, str]], line: int) -> list[list[Any]]:
        """[[command], ...] where a command is a list of operands; an operand is a
        token or ("sub", pipeline) for a parenthesised one."""
        cmds: list[list[Any]] = [[]]
        i = 0
        while i < len(toks):
            kind, val = toks[i]
            if kind == "punct" and val == "|":
                if not cmds[-1]:
                    raise TemplateError(
                        f"template parsing error: template: :{line}: missing command"
                    )
                cmds.append([])
            elif kind == "punct" and val == "(":
                depth, j = 1, i + 1
                while j < len(toks) and depth:
                    depth += {"(": 1, ")": -1}.get(toks[j][1], 0) if toks[j][0] == "punct" else 0
                    j += 1
                if depth:
                    raise TemplateError(
                        f"template parsing error: template: :{line}: unclosed left paren"
                    )
                sub: Any = ("sub", self._pipeline(toks[i + 1 : j - 1], line))
                if j < len(toks) and toks[j][0] == "field" and toks[j][1] != ".":
                    sub = ("subfield", (sub, toks[j][1]))  # (pipeline).Field
                    j += 1
                cmds[-1].append(sub)
                i = j
                continue
            elif kind == "punct":
                raise TemplateError(
                    f"template parsing error: template: :{line}: unexpected {json.dumps(val)} in operand"
                )
            elif kind == "ident" and val not in FUNCS and val not in ("true", "false", "nil"):
                raise TemplateError(
                    f'template parsing error: template: :{line}: function "{val}" not defined'
                )
            else:
                cmds[-1].append((kind, val))
            i += 1
        if not cmds[-1]:
            raise TemplateError(
                f"template parsing error: template: :{line}: missing value for command"
            )
        return cmds

    # -- execution ------------------------------------------------------------------

    def execute(self, data: Any) -> str:
        out: list[str] = []
        self._run(self.root, data, {"$": data}, out)
        return "".join(out)

    def _run(self, nodes: list[_Node], dot: Any, vars: dict[str, Any], out: list[str]) -> None:
        for node in nodes:
            if node.kind == "text":
                out.append(node.text)
            elif node.kind == "action":
                value = self._pipe(node.pipe, dot, vars, node)
                out.append(_text(value))
            elif node.kind in ("if", "with"):
                for cond, body in node.branches:
                    value = self._pipe(cond, dot, vars, node)
                    if _truth(value):
                        self._run(body, value if node.kind == "with" else dot, vars, out)
                        break
                else:
                    self._run(node.orelse, dot, vars, out)
            elif node.kind == "range":
                value = self._pipe(node.branches[0][0], dot, vars, node)
                items: list[tuple[Any, Any]]
                if isinstance(value, dict):
                    items = [(k, value[k]) for k in sorted(value)]
                elif isinstance(value, (list, tuple)):
                    items = list(enumerate(value))
                elif value is None or value is NO_VALUE:
                    items = []
                elif isinstance(value, int):
                    items = [(i, i) for i in range(value)]
                else:
                    raise self._exec_error(node, f"range can't iterate over {_text(value)}")
                if not items:
                    self._run(node.orelse, dot, vars, out)
                for key, item in items:
                    scope = dict(vars)
                    if len(node.vars) == 1:
                        scope[node.vars[0]] = item
                    elif len(node.vars) == 2:
                        scope[node.vars[0]], scope[node.vars[1]] = key, item
                    self._run(node.branches[0][1], item, scope, out)

    def _exec_error(self, node: _Node, why: str) -> TemplateError:
        at = getattr(node, "src", "")
        return TemplateError(f'template: :{node.line}:{node.col}: executing "" at <{at}>: {why}')

    def _pipe(self, cmds: list[list[Any]], dot: Any, vars: dict[str, Any], node: _Node) -> Any:
        value: Any = None
        for n, cmd in enumerate(cmds):
            extra = [value] if n else []
            first = cmd[0]
            if first[0] == "ident" and first[1] in FUNCS:
                args = [self._operand(o, dot, vars, node) for o in cmd[1:]] + extra
                try:
                    value = FUNCS[first[1]](*args)
                except TemplateError:
                    raise
                except Exception as exc:
                    raise self._exec_error(node, f"error calling {first[1]}: {exc}") from None
            else:
                if len(cmd) > 1 or extra:
                    raise self._exec_error(node, f"can't give argument to non-function {first[1]}")
                value = self._operand(first, dot, vars, node)
        return value

    def _operand(self, op: Any, dot: Any, vars: dict[str, Any], node: _Node) -> Any:
        kind, val = op
        if kind == "sub":
            return self._pipe(val, dot, vars, node)
        if kind == "subfield":
            inner, path = val
            value = self._operand(inner, dot, vars, node)
            return self._fields(value, [p for p in path.split(".") if p], node)
        if kind == "str":
            return json.loads(val) if val.startswith('"') else val[1:-1]
        if kind == "num":
            return float(val) if "." in val else int(val)
        if kind == "ident":
            return {"true": True, "false": False, "nil": None}[val]
        if kind == "var":
            name, *path = val.split(".")
            if name not in vars:
                raise TemplateError(
                    f'template parsing error: template: :{node.line}: undefined variable "{name}"'
                )
            return self._fields(vars[name], path, node)
        if kind == "field":
            return self._fields(dot, [p for p in val.split(".") if p], node)
        raise self._exec_error(node, f"unexpected {val}")

    def _fields(self, value: Any, path: list[str], node: _Node) -> Any:
        for name in path:
            if isinstance(value, Context):
                if name not in value:
                    raise self._exec_error(
                        node, f"can't evaluate field {name} in type {value.type_name}"
                    )
                value = value[name]
            elif isinstance(value, dict):
                if name not in value:
                    raise self._exec_error(node, f'map has no entry for key "{name}"')
                value = value[name]
            elif value is None or value is NO_VALUE:
                return NO_VALUE
            else:
                raise self._exec_error(
                    node, f"can't evaluate field {name} in type {_go_type(value)}"
                )
        return value


def parse(src: str) -> Template:
    return Template(src)


# -- values as Go prints them ----------------------------------------------------------


def _go_type(value: Any) -> str:
    return {bool: "bool", int: "int", float: "float64", str: "string"}.get(
        type(value), "[]interface {}" if isinstance(value, list) else "interface {}"
    )


def _text(value: Any) -> str:
    if value is None:
        return "<no value>"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, dict):
        return "map[" + " ".join(f"{k}:{_text(value[k])}" for k in sorted(value)) + "]"
    if isinstance(value, (list, tuple)):
        return "[" + " ".join(_text(v) for v in value) + "]"
    return str(value)


def _truth(value: Any) -> bool:
    return not (
        value is None or value is NO_VALUE or value is False or value == 0 or value in ("", [], {})
    )


def _json(value: Any) -> str:
    text = json.dumps(
        None if value is NO_VALUE else value,
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _index(value: Any, *keys: Any) -> Any:
    for key in keys:
        if isinstance(value, dict):
            value = value.get(key, NO_VALUE) if not isinstance(value, Context) else value[key]
        elif isinstance(value, (list, tuple, str)):
            if not isinstance(key, int) or not 0 <= key < len(value):
                raise TemplateError(f"error calling index: index out of range: {key}")
            value = value[key]
        else:
            raise TemplateError(f"error calling index: can't index item of type {_go_type(value)}")
    return value


def _printf(fmt: str, *args: Any) -> str:
    out, i = [], 0
    pieces = re.split(r"(%[-+ #0-9.]*[a-zA-Z%])", fmt)
    for piece in pieces:
        if piece.startswith("%") and len(piece) > 1:
            if piece == "%%":
                out.append("%")
                continue
            arg = args[i] if i < len(args) else None
            i += 1
            verb = piece[-1]
            if verb == "q":
                out.append(json.dumps(_text(arg)))
            elif verb in "dxXo" and isinstance(arg, (int, float)):
                out.append((piece[:-1] + verb) % int(arg))
            else:
                out.append((piece[:-1] + "s") % _text(arg))
        else:
            out.append(piece)
    return "".join(out)


def _title(s: Any) -> str:
    text = _text(s)
    return text[:1].upper() + text[1:]


FUNCS: dict[str, Any] = {
    "json": _json,
    "index": _index,
    "join": lambda xs, sep: sep.join(_text(x) for x in (xs or [])),
    "split": lambda s, sep: _text(s).split(sep),
    "len": lambda x: 0 if x is None or x is NO_VALUE else len(x),
    "upper": lambda s: _text(s).upper(),
    "lower": lambda s: _text(s).lower(),
    "title": _title,
    "printf": _printf,
    "print": lambda *a: "".join(_text(x) for x in a),
    "println": lambda *a: " ".join(_text(x) for x in a) + "\n",
    "eq": lambda a, *bs: any(a == b for b in bs),
    "ne": lambda a, b: a != b,
    "not": lambda a: not _truth(a),
    "and": lambda *a: next((x for x in a if not _truth(x)), a[-1]),
    "or": lambda *a: next((x for x in a if _truth(x)), a[-1]),
}


# -- Docker's --format: "table", "json", or a template ----------------------------------


def _header_of(template: Template, headers: dict[str, str]) -> str:
    """The template rendered with each field chain replaced by its column's name."""

    class Head(dict):  # type: ignore[type-arg]
        pass

    out = []
    for node in template.root:
        if node.kind == "text":
            out.append(node.text)
        elif node.kind == "action":
            field = next((o[1] for cmd in node.pipe for o in cmd if o[0] == "field"), "").lstrip(
                "."
            )
            top = field.split(".")[0] if field else ""
            out.append(headers.get(top, re.sub(r"(?<=[a-z])(?=[A-Z])", " ", top).upper()))
    return "".join(out)


def render_table(fmt: str, rows: list[Any], headers: dict[str, str]) -> str:
    """Docker's --format FMT over `rows`: a Go template a row (one line each), or
    `table TEMPLATE`: a header row, then the rows, tab-separated cells aligned as
    Docker's tabwriter aligns them (3 spaces of padding, 10 columns at least)."""
    table = fmt.startswith("table")
    src = fmt[5:].lstrip() if table else fmt
    src = src.replace("\\t", "\t").replace("\\n", "\n")
    template = parse(src)
    lines = [template.execute(row) for row in rows]
    if not table:
        return "".join(line + "\n" for line in lines)
    lines.insert(0, _header_of(template, headers))
    return _tabwrite(lines)


def _tabwrite(lines: list[str]) -> str:
    cells = [line.split("\t") for line in lines]
    width: dict[int, int] = {}
    for row in cells:
        for i, cell in enumerate(row[:-1]):
            width[i] = max(width.get(i, 0), len(cell))
    out = []
    for row in cells:
        text = (
            "".join(cell.ljust(max(width[i] + 3, 10)) for i, cell in enumerate(row[:-1])) + row[-1]
        )
        out.append(text.rstrip() + "\n" if len(row) > 1 else text + "\n")
    return "".join(out)


def render_each(fmt: str, docs: list[Any]) -> str:
    """`inspect -f FMT`: the template once per object, each on its own line."""
    template = parse(fmt)
    return "".join(template.execute(doc) + "\n" for doc in docs)
