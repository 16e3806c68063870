"""The configuration's JSON Schema (draft 2020-12), for editors and CI: `sentinel schema`.

Built by walking the loader's own field tables (`sentinel.config.tables`), so a key the
loader accepts is a key the schema allows, with the same value kinds, defaults and
descriptions. Sink kinds contribute their own options and per-service binding options
through the sink registry the caller hands in (config never imports the sinks).

What the schema cannot say stays the loader's: rules across fields (a timeout within
its interval, min_up within the backend count, quorum within probers), references (a
service's sink must be defined, a binding's options are its sink's kind's), anything
about the machine (a command that exists, a file that can be read, the otlp extra) and
the finer checks of a few values (a regex that compiles, a prime Maglev table size).
"""

from __future__ import annotations

from sentinel.config.load import BINDING, SINK, TOP, SinkKinds
from sentinel.config.tables import DEFS, JsonSchema, Section, Variants

DRAFT = "https://json-schema.org/draft/2020-12/schema"


def config_schema(sink_kinds: SinkKinds) -> JsonSchema:
    """The JSON Schema of a sentinel configuration file, with the options of the sink
    kinds the loader is handed (`sentinel.sinks.registry.SINK_KINDS` for the built-in)."""
    sink = Variants("type", {name: kind.options for name, kind in sink_kinds.items()},
                    common=SINK, default=None, doc=SINK.doc)
    return {
        "$schema": DRAFT,
        "title": "sentinel configuration",
        **TOP.schema(),
        "$defs": {**DEFS, "sink": sink.schema(), "binding": _binding(sink_kinds)},
    }


def _binding(sink_kinds: SinkKinds) -> JsonSchema:
    """A sink's name, or `{sink: NAME, ...}` with the options of some sink kind (which
    kind, the schema cannot tell: the name refers to a sink defined elsewhere)."""
    forms: list[JsonSchema] = [{**BINDING["sink"].schema(), "type": "string"}]
    for kind in sink_kinds.values():
        form = Section(*BINDING, *kind.binding, doc=BINDING.doc).schema()
        if form not in forms:
            forms.append(form)
    return {"anyOf": forms}
