"""Hostile config files and the one error each must produce, and a valid config to
splice junk into: shared by the loader's tests (test_hostile) and the comparison of
libyaml's parser with PyYAML's (test_libyaml)."""

from __future__ import annotations

import textwrap
from dataclasses import dataclass

DURATION = "expected a duration such as 250ms, 2s, 1m, 1h or a number of seconds"
SERVICE = b"services:\n  web:\n    backends: [127.0.0.1:80]\n"
GOOD = textwrap.dedent("""\
    x-probe: &p {type: http, path: /h, interval: 1s}
    sinks:
      out: {type: file, path: ./view.json}
    services:
      web:
        backends: [127.0.0.1:80, {name: b, address: '[::1]:81', weight: 2}]
        probe: {<<: *p, expect_status: [2xx]}
        breaker: {kind: circuit, failure_rate: 50%, window: 10s}
        sinks: [out]
    """)  # a valid config the fuzz tests splice junk into


@dataclass(frozen=True)
class Case:
    """A file's bytes and the one error line they must produce (`{file}`: its name)."""

    id: str
    data: bytes
    expected: str


def _bomb(levels: int) -> bytes:
    lines = ['a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]']
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, levels)]
    return ("\n".join(lines) + f"\nservices: *a{levels - 1}\n").encode()


CASES = [
    Case("not-utf8", SERVICE + b'    slow_start: "\xff"\n',
         "{file}:4:18: not UTF-8: byte 0xff; save the file as UTF-8"),
    Case("utf16", "services: {}\n".encode("utf-16"),
         "{file}:1:1: not UTF-8: byte 0xff; save the file as UTF-8"),
    Case("control-character", SERVICE + b'    slow_start: "1\x07s"\n',
         "{file}:4:19: control character U+0007 is not allowed in YAML; write it as an escape "
         "in a double-quoted string"),
    Case("nul-byte", SERVICE + b"    slow_start: 1s\x00\n",
         "{file}:4:19: control character U+0000 is not allowed in YAML; write it as an escape "
         "in a double-quoted string"),
    Case("bad-int-tag", SERVICE + b"    min_up: !!int one\n",
         "{file}:4:13: services.web.min_up: 'one' cannot be read as an integer"),
    Case("empty-int-tag", SERVICE + b"    min_up: !!int\n",
         "{file}:4:13: services.web.min_up: '' cannot be read as an integer"),
    Case("bad-bool-tag", SERVICE + b"    sticky: !!bool maybe\n",
         "{file}:4:13: services.web.sticky: 'maybe' cannot be read as true or false"),
    Case("bad-float-tag", SERVICE + b"    slow_start: !!float abc\n",
         "{file}:4:17: services.web.slow_start: 'abc' cannot be read as a number"),
    Case("invalid-date", SERVICE + b"    slow_start: 2024-13-45\n",
         f"{{file}}:4:17: services.web.slow_start: {DURATION}, got '2024-13-45'"),
    Case("python-tag", b"services: !!python/object:os.system {}\n",
         "{file}:1:11: services: unsupported YAML tag !!python/object:os.system"),
    Case("binary-tag", SERVICE + b"    slow_start: !!binary aGk=\n",
         "{file}:4:17: services.web.slow_start: unsupported YAML tag !!binary"),
    Case("set-tag", b"services: !!set {a, b}\n",
         "{file}:1:11: services: unsupported YAML tag !!set"),
    Case("integer-of-5000-digits", SERVICE + b"    min_up: 1" + b"0" * 5000 + b"\n",
         "{file}:4:13: services.web.min_up: '1000000000000000000000000000000000000000...' "
         "cannot be read as an integer"),
    Case("duration-of-400-digits", SERVICE + b"    slow_start: 1" + b"0" * 400 + b"\n",
         "{file}:4:17: services.web.slow_start: must be at most 10 years, got "
         "100000000000000000000000000000000000000000000000000000000000..."),
    Case("recursive-alias", b"services: &a\n  web: *a\n",
         "{file}:2:8: recursive alias: *a is inside its own anchor"),
    Case("recursive-alias-in-list", b"x-a: &a [1, *a]\nservices: {}\n",
         "{file}:1:13: recursive alias: *a is inside its own anchor"),
    Case("deep-nesting", b"services: " + b"[" * 5000 + b"]" * 5000 + b"\n",
         "{file}:1:74: nested more than 64 levels deep"),
    Case("alias-chain-nesting-deep", ("x0: &x0 [1]\n" + "".join(
        f"x{i}: &x{i} [*x{i - 1}]\n" for i in range(1, 100))).encode(),
         "{file}:63:12: *x61 nests values more than 64 levels deep"),
    Case("alias-bomb", _bomb(10),
         "{file}:6:10: aliases expand to more than 100000 values (this *a4 to 66430)"),
    Case("mapping-as-key", b"services:\n  {a: 1}: x\n",
         "{file}:2:3: services: a key must be a plain value, not a mapping or a list"),
    Case("merge-of-a-scalar", SERVICE + b"    probe: {<<: 5}\n",
         "{file}:4:17: services.web.probe: a merge key `<<` takes a mapping or a list of "
         "mappings (such as *defaults), got 5"),
    Case("undefined-alias", b"services: *nope\n",
         "{file}:1:11: YAML syntax error: found undefined alias 'nope'"),
]
