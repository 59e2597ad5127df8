"""The latest evaluation report, for the admin's "Evaluation report" page.

``manage.py embrec_tune`` writes the tuned configuration to ``EMBREC["TUNED_CONFIG"]`` and its
evaluation report beside it (the configuration's ``"report"`` names it; by default
``<name>.report.json``); ``EMBREC["EVALUATION_REPORT"]``, when set, names another report (e.g.
``manage.py embrec_evaluate --json PATH``'s). :func:`load_report` reads them and turns each protocol into table rows
and an inline SVG bar chart of test NDCG@K per method (drawn here, no JavaScript). Problems are
returned as a message, never raised: a missing report is normal before the first tuning run.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe

from embrec import tuning
from embrec.conf import embrec_settings

HOW_TO = (
    "Set EMBREC['TUNED_CONFIG'] to the path of a JSON file (e.g. BASE_DIR / '.embrec' / "
    "'tuned.json') and run: manage.py embrec_tune [app_label.Model]. It writes the tuned "
    "configuration there and its evaluation report beside it. Or set EMBREC['EVALUATION_REPORT'] "
    "to the file of manage.py embrec_evaluate --json PATH."
)


class ReportError(Exception):
    """The report cannot be shown; ``missing`` tells a report not written yet from a bad one."""

    def __init__(self, message: str, *, missing: bool = False):
        super().__init__(message)
        self.missing = missing


def report_path(config_path: Path, config: dict[str, Any]) -> Path:
    """Where the report of the tuned configuration at ``config_path`` is."""
    name = config.get("report")
    if isinstance(name, str) and name and Path(name).name == name:
        return config_path.with_name(name)
    return config_path.with_name(config_path.stem + ".report.json")


def load_report() -> dict[str, Any]:
    """The page's context: report path, date, tuned settings and per-protocol rows and chart.

    Raises :class:`ReportError` with a message for the page.
    """
    configured = embrec_settings.TUNED_CONFIG
    explicit = embrec_settings.EVALUATION_REPORT
    if not configured and not explicit:
        raise ReportError(
            "Neither EMBREC['TUNED_CONFIG'] nor EMBREC['EVALUATION_REPORT'] is set.", missing=True
        )
    config, config_error = {}, ""
    config_path = Path(configured) if configured else None
    if config_path is not None:
        try:
            config = tuning.load(config_path)
        except ImproperlyConfigured as exc:
            config_error = str(exc)
    if explicit:
        path = Path(explicit)
    else:
        assert config_path is not None  # one of the two is set (checked above)
        path = report_path(config_path, config)
    try:
        text = path.read_text()
    except FileNotFoundError as exc:
        raise ReportError(f"No evaluation report at {path}.", missing=True) from exc
    except OSError as exc:
        raise ReportError(f"The evaluation report {path} cannot be read: {exc}") from exc
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ReportError(
            f"The evaluation report {path} is not valid JSON ({exc}); "
            "rerun manage.py embrec_tune to rewrite it."
        ) from exc
    try:
        protocols = parse_protocols(data)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ReportError(
            f"The evaluation report {path} is malformed ({type(exc).__name__}: {exc}); "
            "rerun manage.py embrec_tune to rewrite it."
        ) from exc
    return {
        "path": str(path),
        "modified": datetime.fromtimestamp(path.stat().st_mtime, UTC),
        "model": data.get("model", ""),
        "k": data["k"],
        "selection": data.get("selection", ""),
        "protocols": protocols,
        "config_path": str(config_path or ""),
        "config_error": config_error,
        "tuned": config.get("settings") or {},
        "chosen": config.get("chosen") or {},
        "encoder": config.get("encoder", ""),
        "created": config.get("created", ""),
    }


def _number(value: Any, name: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a number, not {value!r}")
    return float(value)


def parse_protocols(data: Any) -> list[dict[str, Any]]:
    """Per protocol: name, description, reference, rows and an SVG chart."""
    if not isinstance(data, dict) or not isinstance(data.get("protocols"), dict):
        raise ValueError('expected a JSON object with a "protocols" object')
    k = data.get("k")
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f'"k" must be a positive integer, not {k!r}')
    metric = f"ndcg@{k}"
    out = []
    for name, proto in data["protocols"].items():
        if not isinstance(proto.get("results"), list):
            raise ValueError(f'protocol {name!r} has no "results" list')
        intervals = proto.get("intervals") or {}
        reference = intervals.get("reference") or ""
        methods = intervals.get("methods") or {}
        rows = []
        for r in proto["results"]:
            metrics = r["metrics"]
            method = str(r["name"])
            ci = methods.get(method)
            if ci:
                versus = (
                    f"{_number(ci['ratio'], 'ratio'):.3f}× "
                    f"[{_number(ci['ratio_low'], 'ratio_low'):.3f}, "
                    f"{_number(ci['ratio_high'], 'ratio_high'):.3f}]"
                )
            elif method == reference:
                versus = "reference"
            else:
                versus = ""
            rows.append(
                {
                    "method": method,
                    "description": str(r.get("description", "")),
                    "baseline": bool(r.get("baseline")),
                    "validation": _number(r.get(f"validation_{metric}"), f"validation_{metric}"),
                    "test": _number(metrics[metric], metric),
                    "recall": _number(metrics.get(f"recall@{k}"), f"recall@{k}"),
                    "versus": versus,
                    "chosen": r.get("chosen") or {},
                }
            )
        out.append(
            {
                "name": str(name),
                "description": str(proto.get("description", "")),
                "reference": reference,
                "rows": rows,
                "chart": bar_chart(rows, f"test NDCG@{k}"),
            }
        )
    return out


BAR_HEIGHT = 22
LABEL_WIDTH = 170
BAR_WIDTH = 360


def bar_chart(rows: list[dict[str, Any]], title: str) -> SafeString:
    """A horizontal bar chart of each row's ``test`` value as inline SVG (escaped labels)."""
    values = [r["test"] for r in rows if r["test"] is not None and math.isfinite(r["test"])]
    top = max(values, default=0.0) or 1.0
    height = BAR_HEIGHT * len(rows) + 30
    width = LABEL_WIDTH + BAR_WIDTH + 70
    bars = []
    for i, r in enumerate(rows):
        y = 24 + i * BAR_HEIGHT
        value = r["test"] if r["test"] is not None and math.isfinite(r["test"]) else 0.0
        length = max(0.0, BAR_WIDTH * value / top)
        bars.append(
            (
                r["method"],
                y,
                LABEL_WIDTH - 6,
                y + 15,
                LABEL_WIDTH,
                y + 3,
                f"{length:.1f}",
                "#79aec8" if r["baseline"] else "#417690",
                LABEL_WIDTH + length + 4,
                y + 15,
                f"{value:.4f}",
            )
        )
    body = format_html_join(
        "",
        '<g class="bar" data-method="{0}"><title>{0}: {10}</title>'
        '<text x="{2}" y="{3}" text-anchor="end">{0}</text>'
        '<rect x="{4}" y="{5}" width="{6}" height="16" fill="{7}"></rect>'
        '<text x="{8}" y="{9}">{10}</text></g>',
        bars,
    )
    return format_html(
        '<svg class="embrec-report-chart" xmlns="http://www.w3.org/2000/svg" width="{}" '
        'height="{}" viewBox="0 0 {} {}" role="img" aria-label="{}" font-size="12" '
        'font-family="sans-serif" fill="currentColor"><text x="{}" y="14" font-weight="bold">{}</text>{}</svg>',
        width,
        height,
        width,
        height,
        title,
        LABEL_WIDTH,
        title,
        mark_safe(body),  # built by format_html_join: every value escaped
    )
