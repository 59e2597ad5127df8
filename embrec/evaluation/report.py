"""Results as a text table, JSON and a PNG bar chart (matplotlib, Agg backend)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from embrec.evaluation.runner import MethodResult
from embrec.evaluation.search import describe


def format_table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    """A plain-text (Markdown-compatible) table of ``rows`` restricted to ``columns``."""
    cells = [[_fmt(row.get(col, "")) for col in columns] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    lines = [
        "| " + " | ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)) + " |",
        "|" + "|".join("-" * (w + 2) for w in widths) + "|",
    ]
    for r in cells:
        lines.append("| " + " | ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) + " |")
    return "\n".join(lines)


def results_table(results: Sequence[MethodResult]) -> str:
    """The recommendation results as a table: one row per method, one column per metric."""
    if not results:
        return "(no results)"
    metrics = list(results[0].metrics)
    rows = [
        {"method": r.name, **r.metrics, "fit s": r.fit_seconds, "description": r.description}
        for r in results
    ]
    return format_table(rows, ["method", *metrics, "fit s", "description"])


def write_json(path: str | Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` as indented JSON (parent folders are created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=_json_default) + "\n")


def bar_chart(
    path: str | Path,
    labels: Sequence[str],
    series: Mapping[str, Sequence[float]],
    *,
    title: str = "",
    ylabel: str = "",
) -> None:
    """Grouped bar chart: one group per label, one bar per series entry; saved as PNG."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n_series = max(len(series), 1)
    width = 0.8 / n_series
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(labels) + 2), 4.5))
    for s, (name, values) in enumerate(series.items()):
        xs = [i + (s - (n_series - 1) / 2) * width for i in range(len(labels))]
        ax.bar(xs, list(values), width=width, label=name)
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels(labels, rotation=30, ha="right")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def results_chart(
    path: str | Path,
    results: Mapping[str, Sequence[Any]],
    *,
    metric: str,
    title: str = "",
) -> None:
    """PNG chart of test ``metric`` per method, one bar per protocol (``results`` maps a
    protocol name to its :class:`~embrec.evaluation.runner.TunedResult` list)."""
    names = list(dict.fromkeys(r.name for rs in results.values() for r in rs))
    series = {
        protocol: [
            next((r.test.metrics[metric] for r in rs if r.name == name), 0.0) for name in names
        ]
        for protocol, rs in results.items()
    }
    bar_chart(path, names, series, title=f"{title}: test {metric}", ylabel=metric)


def protocol_table(data: dict[str, Any], k: int) -> str:
    """One protocol's results: validation and test NDCG@K, test Recall/HitRate/Coverage, the
    paired interval against the best baseline and the chosen configuration."""

    metric = f"ndcg@{k}"
    intervals = data.get("intervals") or {}
    reference = intervals.get("reference")
    rows = []
    for r in data["results"]:
        m = r["metrics"]
        row = {
            "method": r["name"],
            f"val {metric}": r.get("validation_" + metric, float("nan")),
            metric: m[metric],
            f"recall@{k}": m[f"recall@{k}"],
            f"hit@{k}": m[f"hit_rate@{k}"],
            f"cov@{k}": m[f"coverage@{k}"],
        }
        ci = intervals.get("methods", {}).get(r["name"])
        if ci:
            row[f"vs {reference}"] = (
                f"{ci['ratio']:.3f}x [{ci['ratio_low']:.3f}, {ci['ratio_high']:.3f}]"
            )
        elif r["name"] == reference:
            row[f"vs {reference}"] = "reference"
        if "whole_catalog" in r:
            row[f"whole-catalog recall@{k}"] = r["whole_catalog"][f"recall@{k}"]
        row["chosen"] = describe(r.get("chosen") or {})
        rows.append(row)
    columns = list(dict.fromkeys(c for row in rows for c in row))
    return format_table(rows, columns)


def similar_table(similar: dict[str, dict], k: int) -> str:
    """Similar-items measures per method."""
    rows = []
    for name, rep in similar.items():
        row = {"similar items": name}
        for key, value in rep.items():
            if key not in ("famous", "sources", "next_item_pairs"):
                row[key] = value
        rows.append(row)
    columns = list(dict.fromkeys(c for row in rows for c in row))
    return format_table(rows, columns)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 100 else f"{value:.1f}"
    return str(value)


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


def markdown_report(payload: dict[str, Any]) -> str:
    """Markdown tables of an ``embrec_evaluate`` JSON payload: per protocol, validation and test
    NDCG@K, test Recall/HitRate/Coverage, the ratio to the best baseline with its 95 % interval
    and the chosen configuration; then the similar-items measures (for docs and reviews)."""

    k = payload["k"]
    metric = f"ndcg@{k}"
    out: list[str] = []
    for name, data in payload["protocols"].items():
        stats = data["stats"]["test"]
        intervals = data.get("intervals") or {}
        reference = intervals.get("reference", "")
        out.append(f"### {name}: {data['description']}\n")
        extra = (
            f"; {stats['users_without_history']} users with no training history not evaluated"
            if stats.get("users_without_history")
            else ""
        )
        out.append(
            f"Test: {stats['evaluated_users']} users, {stats['test_pairs']} held-out pairs; "
            f"validation: {data['stats']['validation']['evaluated_users']} users{extra}.\n"
        )
        whole = any("whole_catalog" in r for r in data["results"])
        header = (
            f"| method | val NDCG@{k} | NDCG@{k} | Recall@{k} | HitRate@{k} | Coverage@{k} "
            f"| vs {reference} (95 % CI) |"
            + (f" whole-catalog Recall@{k} |" if whole else "")
            + " chosen on validation |"
        )
        out.append(header)
        out.append("|---|" + "---:|" * (6 + whole) + "---|")
        for r in data["results"]:
            m = r["metrics"]
            ci = intervals.get("methods", {}).get(r["name"])
            versus = (
                f"{ci['ratio']:.3f}× [{ci['ratio_low']:.3f}, {ci['ratio_high']:.3f}]"
                if ci
                else ("reference" if r["name"] == reference else "")
            )
            cells = [
                r["name"],
                f"{r.get('validation_' + metric, float('nan')):.4f}",
                f"{m[metric]:.4f}",
                f"{m[f'recall@{k}']:.4f}",
                f"{m[f'hit_rate@{k}']:.4f}",
                f"{m[f'coverage@{k}']:.4f}",
                versus,
            ]
            if whole:
                cells.append(f"{r.get('whole_catalog', {}).get(f'recall@{k}', 0.0):.4f}")
            cells.append(describe(r.get("chosen") or {}))
            out.append("| " + " | ".join(cells) + " |")
        out.append("")
        similar = data.get("similar")
        if similar:
            columns = [
                c
                for c in next(iter(similar.values()))
                if c not in ("famous", "sources", "next_item_pairs")
            ]
            out.append("| similar items | " + " | ".join(columns) + " |")
            out.append("|---|" + "---:|" * len(columns))
            for method, rep in similar.items():
                out.append(f"| {method} | " + " | ".join(f"{rep[c]:.4f}" for c in columns) + " |")
            out.append("")
    return "\n".join(out)
