"""Docker's --format: the common subset of Go's text/template (runtime/gotemplate.py)."""

from __future__ import annotations

import pytest

from pycni.runtime import gotemplate as gt

DOC = {
    "Name": "/web",
    "NetworkSettings": {
        "IPAddress": "172.17.0.2",
        "Networks": {"bridge": {"IPAddress": "172.17.0.2"}, "back": {"IPAddress": "10.1.0.3"}},
        "Ports": {"80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8080"}]},
    },
    "Args": ["-c", "sleep 1"],
    "State": {"Running": True, "ExitCode": 0},
}


@pytest.mark.parametrize(
    ("src", "want"),
    [
        ("{{.NetworkSettings.IPAddress}}", "172.17.0.2"),
        ("{{.Name}} {{.State.Running}} {{.State.ExitCode}}", "/web true 0"),
        ("{{json .State}}", '{"ExitCode":0,"Running":true}'),
        ("{{.State | json}}", '{"ExitCode":0,"Running":true}'),
        ("{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}", "10.1.0.3 172.17.0.2 "),
        (
            "{{range $k, $v := .NetworkSettings.Networks}}{{$k}}={{$v.IPAddress}};{{end}}",
            "back=10.1.0.3;bridge=172.17.0.2;",
        ),
        ('{{index .NetworkSettings.Networks "back" | json}}', '{"IPAddress":"10.1.0.3"}'),
        ('{{(index (index .NetworkSettings.Ports "80/tcp") 0).HostPort}}', "8080"),
        ('{{join .Args ","}}', "-c,sleep 1"),
        ("{{len .Args}} {{upper .Name}}", "2 /WEB"),
        ("{{if .State.Running}}up{{else}}down{{end}}", "up"),
        ("{{if eq .State.ExitCode 1}}one{{else if .State.Running}}run{{end}}", "run"),
        ("{{range .Missing}}x{{else}}none{{end}}", "none"),
        ("a {{- /* c */ -}} b", "ab"),
        ("{{.Args}}", "[-c sleep 1]"),
        ('{{printf "%s:%d" .Name .State.ExitCode}}', "/web:0"),
        ("{{json .}}"[:0] + "{{with .State}}{{.ExitCode}}{{end}}", "0"),
        ('{{json "<a&b>"}}', '"\\u003ca\\u0026b\\u003e"'),
    ],
)
def test_render(src: str, want: str) -> None:
    doc = dict(DOC, Missing=None) if "Missing" in src else DOC
    assert gt.parse(src).execute(doc) == want


@pytest.mark.parametrize(
    ("src", "message"),
    [
        ("{{.Name", "template parsing error: template: :1: unclosed action"),
        ("{{range .Args}}x", "template parsing error: template: :1: unexpected EOF"),
        ("{{end}}", "template parsing error: template: :1: unexpected {{end}}"),
        ("{{nosuch .Name}}", 'template parsing error: template: :1: function "nosuch" not defined'),
        ("{{$x}}", 'undefined variable "$x"'),
        ("{{.Nope}}", 'map has no entry for key "Nope"'),
        ("{{.Name.Sub}}", "can't evaluate field Sub in type string"),
    ],
)
def test_errors(src: str, message: str) -> None:
    with pytest.raises(gt.TemplateError) as info:
        gt.parse(src).execute(DOC)
    assert message in str(info.value)


def test_struct_like_rows_and_table() -> None:
    rows = []
    for name, port in (("web", "0.0.0.0:8080->80/tcp"), ("a-much-longer-name", "")):
        row = gt.Context({"ID": "abc123", "Names": name, "Ports": port})
        row.type_name = "*formatter.ContainerContext"
        rows.append(row)
    out = gt.render_table("table {{.ID}}\t{{.Names}}\t{{.Ports}}", rows, {"ID": "CONTAINER ID"})
    assert out.splitlines() == [
        "CONTAINER ID   NAMES                PORTS",
        "abc123         web                  0.0.0.0:8080->80/tcp",
        "abc123         a-much-longer-name",
    ]
    assert gt.render_table("{{.Names}}", rows, {}) == "web\na-much-longer-name\n"
    with pytest.raises(
        gt.TemplateError, match=r"can't evaluate field Bogus in type \*formatter\.ContainerContext"
    ):
        gt.render_table("{{.Bogus}}", rows, {})
