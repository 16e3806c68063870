"""`sentinel check`: validate a config file and print each service's detection budget."""

from __future__ import annotations

import json
import sys

from sentinel.cli import EXIT_OK, EXIT_USAGE
from sentinel.engine.budget import compute_budget, probing
from sentinel.errors import ConfigError, ConfigErrors
from sentinel.sinks.registry import load_config
from sentinel.timefmt import duration


def errors_of(exc: ConfigError) -> list[ConfigError]:
    """The errors one load raised (a ConfigErrors carries every one of a pass)."""
    return list(exc.errors) if isinstance(exc, ConfigErrors) else [exc]


def check(path: str, fmt: str) -> int:
    """`sentinel check`: validate the config, print each service's detection budget and
    the warnings (text, or one JSON document); exit 2 on errors."""
    try:
        config = load_config(path)
    except ConfigError as exc:
        if fmt == "json":
            errors = [_error_json(e, path) for e in errors_of(exc)]
            print(json.dumps({"file": path, "ok": False, "errors": errors, "services": [],
                              "warnings": []}, indent=2))
        else:
            for error in errors_of(exc):
                print(error, file=sys.stderr)
        return EXIT_USAGE
    from sentinel.sinks.ipvs.options import warnings as ipvs_warnings

    budgets = [(svc, compute_budget(svc)) for svc in config.services]
    warnings = (*config.warnings, *ipvs_warnings(config))  # risky, not invalid: exit 0
    if fmt == "json":
        services = [{"name": svc.name, "backends": len(svc.backends), "probe": svc.probe.type,
                     "checks": [c.name for c in svc.checks] or None,
                     "to_down_seconds": _seconds(budget.to_down),
                     "to_up_seconds": _seconds(budget.to_up),
                     "agent_seconds": _seconds(budget.agent)} for svc, budget in budgets]
        doc: dict[str, object] = {"file": path, "ok": True, "errors": [],
                                  "services": services,
                                  "warnings": [{"message": w} for w in warnings]}
        if config.cluster is not None:
            doc["cluster"] = config.cluster.budget()
        print(json.dumps(doc, indent=2))
        return EXIT_OK
    print(f"{path}: ok")
    for svc, budget in budgets:
        backends = f"{len(svc.backends)} backend{'' if len(svc.backends) == 1 else 's'}"
        agent = (f"; agent down/up -> out/in {duration(budget.agent, rounded=True)}"
                 if budget.agent is not None else "")
        print(f"  {svc.name}: {backends}, {probing(svc)}; "
              f"worst case death -> removal {duration(budget.to_down, rounded=True)}, "
              f"recovery -> return {duration(budget.to_up, rounded=True)}{agent}")
    if config.cluster is not None:
        print(f"  {config.cluster.describe_budget()}")
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    return EXIT_OK


def _error_json(error: ConfigError, path: str) -> dict[str, object]:
    """One config error for `check --format json`; position and key path are null when
    the error has none (an unreadable file)."""
    mark = error.mark
    if mark is None:
        return {"file": path, "line": None, "column": None, "path": None,
                "message": error.message}
    return {"file": mark.file, "line": mark.line, "column": mark.column,
            "path": mark.path or None, "message": error.message}


def _seconds(budget: float | None) -> float | None:
    """A budget in seconds to the millisecond (the simulation's sums carry float noise);
    None (JSON null) for never."""
    return None if budget is None else round(budget, 3)
