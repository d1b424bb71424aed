"""Build the report of a runs directory: report.md, report.html, CSV files and figures."""

from __future__ import annotations

import csv
import json
import logging
import shutil
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from overparam.errors import ConfigError, DataError
from overparam.report import document as doc
from overparam.report.claims import (
    EQUIVALENCE_MARGIN,
    ClaimResult,
    check_claims,
    lr_regimes,
)
from overparam.report.figures import save_figures
from overparam.report.runs import RunRecord, load_runs
from overparam.report.stats import MIN_SEEDS
from overparam.report.tables import (
    StudyTable,
    build_table,
    format_lr,
    row_label,
    table_grid,
    table_header,
    write_csv,
)

log = logging.getLogger(__name__)

# Config fields that differ between the runs of one table by design.
SWEPT_FIELDS = frozenset(
    {
        "decomposition.parameterization",
        "decomposition.reproject_every_steps",
        "optim.lr",
        "train.seed",
    }
)
# Fields that may differ without changing what a run computes.
NEUTRAL_FIELDS = frozenset({"train.threads"})
RUN_INFO_KEY = "run"  # section of config.json with what the run resolved (harness's RUN_INFO_KEY)


@dataclass
class Report:
    """Paths, tables and claim results of one report."""

    out_dir: Path
    markdown_path: Path
    html_path: Path
    tables: dict[str, StudyTable]
    claims: list[ClaimResult]
    runs: list[RunRecord]


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(value, dict):
        return {prefix: value}
    flat: dict[str, Any] = {}
    for key, child in value.items():
        flat.update(_flatten(child, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def _compared_fields(config: dict[str, Any]) -> dict[str, Any]:
    """Return the fields that must agree within a table: all settings and the data fingerprint.

    The `run` section (what the run resolved: versions, parameter counts) differs between
    parameterizations by design, except for the data fingerprint.
    """
    flat = _flatten(config)
    return {
        key: value
        for key, value in flat.items()
        if key not in SWEPT_FIELDS | NEUTRAL_FIELDS
        and (not key.startswith(f"{RUN_INFO_KEY}.") or "fingerprint" in key)
    }


def config_differences(runs: list[RunRecord]) -> dict[str, list[str]]:
    """Return the fields, other than the swept ones, whose value differs between runs."""
    configs = [_compared_fields(run.config) for run in runs if run.config]
    keys = set().union(*configs) if configs else set()
    differences = {}
    for key in sorted(keys):
        found = {json.dumps(config.get(key), sort_keys=True) for config in configs}
        if len(found) > 1:
            differences[key] = sorted(found)
    return differences


def _fingerprint(config: dict[str, Any]) -> str:
    """Shorten the data fingerprint to the corpus hash and token counts (config.json has all)."""
    prefix = f"{RUN_INFO_KEY}.data_fingerprint"
    found = {
        key[len(prefix) + 1 :]: value for key, value in config.items() if key.startswith(prefix)
    }
    if not found:
        return "not recorded" if prefix not in config else str(config[prefix])
    parts = []
    if "corpus_sha256" in found:
        parts.append(f"corpus sha256 {str(found['corpus_sha256'])[:16]}")
    if "tokenizer_sha256" in found:
        parts.append(f"tokenizer sha256 {str(found['tokenizer_sha256'])[:16]}")
    for key in ("train_tokens", "val_tokens"):
        if key in found:
            parts.append(f"{found[key]} {key.replace('_', ' ')}")
    return ", ".join(parts) or json.dumps(found, sort_keys=True)


def _shown(path: str | Path, runs_dir: Path) -> str:
    """Return path relative to the runs directory when inside it, so a copied report stays valid."""
    path = Path(path)
    return path.relative_to(runs_dir).as_posix() if path.is_relative_to(runs_dir) else str(path)


def _export_text(init_from: str, runs_dir: Path) -> str:
    """Describe the run a pretrained checkpoint was exported from, if `reproduce` recorded it."""
    record = _read_json(Path(init_from) / "export.json")
    if record is None:
        return ""
    return (
        f", exported from the from-scratch run `{_shown(record.get('run_dir', '?'), runs_dir)}` "
        f"(final held-out loss "
        f"{record.get('final_eval_loss', float('nan')):.4f})"
    )


def _first_config(runs: list[RunRecord]) -> dict[str, Any]:
    return next((_flatten(run.config) for run in runs if run.config), {})


def _setup_items(name: str, runs: list[RunRecord], table: StudyTable, runs_dir: Path) -> list[str]:
    config = _first_config(runs)
    seeds = sorted({run.seed for run in runs})
    fingerprint = _fingerprint(config)
    preset, source = config.get("model.preset", "?"), config.get("data.source", "?")
    items = [
        f"{name}: model `{preset}`, corpus `{source}` "
        f"({fingerprint}), {config.get('train.max_steps', '?')} steps, "
        f"seeds {seeds}, learning rates {', '.join(format_lr(lr) for lr in table.lrs)}.",
    ]
    if config.get("model.init_from"):
        init_from = str(config["model.init_from"])
        items.append(
            f"{name}: starts from the pretrained checkpoint `{_shown(init_from, runs_dir)}`"
            f"{_export_text(init_from, runs_dir)}."
        )
    for key, found in config_differences(runs).items():
        items.append(f"WARNING: {name} runs differ in `{key}`: {', '.join(found)}.")
    return items


def _capitalize(text: str) -> str:
    return text[:1].upper() + text[1:]


def _status_counts(runs: list[RunRecord]) -> str:
    counts = Counter(run.status for run in runs)
    return ", ".join(f"{counts[s]} {s}" for s in sorted(counts))


def _best_text(table: StudyTable) -> str:
    best = table.best_overall()
    if best is None:
        return "no setting completed all its seeds"
    cell = table.cells[best]
    return (
        f"best setting {row_label(best.row)} at lr {format_lr(best.lr)} "
        f"({cell.mean:.3f}, n={cell.n})"
    )


def _table_section(
    document: doc.Document, key: str, table: StudyTable, runs: list[RunRecord], out_dir: Path
) -> None:
    document.add(
        doc.Heading(table.title),
        doc.Paragraph(
            "Final held-out loss, mean ± sample standard deviation over seeds (n = completed "
            "seeds). Bold: the lowest mean of its column among settings whose seeds all "
            f"completed. {_capitalize(_best_text(table))}."
        ),
        doc.Table(table_header(table), table_grid(table)),
    )
    write_csv(table, out_dir / f"{key}.csv")
    for path, caption in save_figures(table, out_dir / "figures", key):
        document.add(doc.Image(path, caption))


def _claims_section(
    document: doc.Document, claims: list[ClaimResult], scratch: StudyTable | None
) -> None:
    low, high = lr_regimes(scratch.lrs if scratch else [])
    lrs_text = ", ".join(format_lr(lr) for lr in low) or "none"
    high_text = ", ".join(format_lr(lr) for lr in high) or "none"
    document.add(
        doc.Heading("Claim check"),
        doc.Paragraph(
            "Loss gap: d = mean(A) − mean(B) over completed seeds, SE = sqrt(s_A²/n_A + "
            "s_B²/n_B) with sample variances. Divergence gap: difference of the divergence "
            "rates with one diverged and one stable run added to each group (Agresti–Caffo), "
            "and its SE. A gap within ±2 SE is within noise. A comparison needs "
            f"{MIN_SEEDS} or more finished seeds on each side."
        ),
        doc.Paragraph(
            "Loss claims vote over their comparisons: holds when more than half support it, "
            "does not hold when more than half contradict it, inconclusive otherwise. "
            'Divergence claims pool the runs of each group. The "no difference" claims use a '
            f"margin of {EQUIVALENCE_MARGIN:.0%} of the reference loss."
        ),
        doc.Paragraph(
            f"Low learning rates (lower half of the from-scratch grid): {lrs_text}. "
            f"High learning rates (upper half): {high_text}."
        ),
    )
    for claim in claims:
        document.add(
            doc.Heading(f"{claim.statement} — {claim.verdict}", level=3),
            doc.Paragraph(f"Test: {claim.test} Result: {claim.reason}."),
        )
        if claim.comparisons:
            rows = []
            for c in claim.comparisons:
                gap = "" if c.gap is None else f"{c.gap.difference:+.4f}"
                two_se = "" if c.gap is None else f"{2 * c.gap.standard_error:.4f}"
                rows.append(
                    [(t, False) for t in (c.label, c.a, c.b, gap, two_se, c.outcome, c.note)]
                )
            header = ["comparison (A vs B)", "A", "B", "d", "2 SE", "outcome", "note"]
            document.add(doc.Table(header, rows))


def write_runs_csv(runs: list[RunRecord], path: Path) -> None:
    fields = ["path", "finetune", "parameterization", "reproject_every_steps", "lr", "seed"]
    fields += ["status", "final_eval_loss", "diverged_step", "steps", "reason"]
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        for run in sorted(runs, key=lambda r: str(r.path)):
            writer.writerow(
                {
                    "path": str(run.path),
                    "finetune": run.finetune,
                    "parameterization": run.setting.parameterization,
                    "reproject_every_steps": run.setting.reproject_every_steps,
                    "lr": format_lr(run.setting.lr),
                    "seed": run.seed,
                    "status": run.status,
                    "final_eval_loss": "" if run.final_eval_loss is None else run.final_eval_loss,
                    "diverged_step": "" if run.diverged_step is None else run.diverged_step,
                    "steps": "" if run.steps is None else run.steps,
                    "reason": run.reason,
                }
            )


def _unfinished_section(document: doc.Document, runs: list[RunRecord], runs_dir: Path) -> None:
    unfinished = [run for run in runs if run.status not in ("completed", "diverged")]
    document.add(doc.Heading("Runs without a result"))
    if not unfinished:
        document.add(doc.Paragraph("Every run completed or diverged."))
        return
    rows = []
    for run in sorted(unfinished, key=lambda r: str(r.path)):
        rows.append([(_shown(run.path, runs_dir), False), (run.status, False), (run.reason, False)])
    document.add(doc.Table(["run", "status", "reason"], rows))


def _toy_section(document: doc.Document, toy_dir: Path, out_dir: Path, runs_dir: Path) -> None:
    """Embed the toy experiment's figures and its claim verdicts (its own results.json).

    The figures are copied into the report's folder, so the report can be moved as a whole.
    """
    results = _read_json(toy_dir / "results.json")
    images = sorted(toy_dir.glob("*.png"))
    if results is None and not images:
        return
    document.add(doc.Heading("Toy experiment (2x2 matrices)"))
    claims = (results or {}).get("claims", [])
    if claims:
        rows = [
            [
                (str(c.get("statement", c.get("claim_id", "?"))), False),
                (str(c.get("verdict")), True),
            ]
            for c in claims
        ]
        document.add(doc.Table(["claim", "verdict"], rows))
    for image in images:
        copy = out_dir / "figures" / f"toy2d_{image.name}"
        shutil.copyfile(image, copy)
        document.add(
            doc.Image(
                copy,
                "Toy experiment: predictions of one run step by step (top) and mean MSE per "
                "step (bottom), vector-S models left, matrix-S models right.",
            )
        )
    shown = _shown(toy_dir / "results.md", runs_dir)
    document.add(doc.Paragraph(f"Full results, relative to the runs folder: `{shown}`."))


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        value = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return value if isinstance(value, dict) else None


def _make_out_dir(out_dir: Path) -> None:
    try:
        (out_dir / "figures").mkdir(parents=True, exist_ok=True)
        probe = out_dir / ".write_test"
        probe.write_text("")
        probe.unlink()
    except OSError as error:
        raise ConfigError(
            f"cannot write the report to {out_dir}: {error.strerror}; pass a writable --out"
        ) from None


def build_report(
    runs_dir: Path, out_dir: Path | None = None, toy_dir: Path | None = None
) -> Report:
    """Read every run under runs_dir and write the report into out_dir (default runs_dir/report).

    The toy experiment's results are included from toy_dir (default runs_dir/toy2d) if present.
    """
    runs_dir = Path(runs_dir).resolve()
    toy_dir = runs_dir / "toy2d" if toy_dir is None else Path(toy_dir)
    out_dir = Path(out_dir).resolve() if out_dir is not None else runs_dir / "report"
    problems: list[str] = []
    runs = load_runs(runs_dir, problems)
    if not runs:
        raise DataError(f"no run directories (with a config.json) found under {runs_dir}")
    _make_out_dir(out_dir)

    groups = {
        "table1_scratch": ("Table 1: training from scratch", [r for r in runs if not r.finetune]),
        "table2_finetune": (
            "Table 2: fine-tuning from pretrained weights",
            [r for r in runs if r.finetune],
        ),
    }
    tables = {key: build_table(title, group) for key, (title, group) in groups.items() if group}
    claims = check_claims(tables.get("table1_scratch"), tables.get("table2_finetune"))

    document = doc.Document("overparam study report")
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    summary = [f"Runs directory `{runs_dir.name}`, built {now}."]
    for key, table in tables.items():
        summary.append(f"{table.title}: {_status_counts(groups[key][1])}; {_best_text(table)}.")
    document.add(doc.Heading("Summary"), doc.BulletList(summary))
    document.add(
        doc.Table(["claim", "verdict"], [[(c.statement, False), (c.verdict, True)] for c in claims])
    )

    setup = []
    for key, table in tables.items():
        name = _capitalize(table.title.split(": ")[-1])
        setup += _setup_items(name, groups[key][1], table, runs_dir)
    document.add(doc.Heading("Setup"), doc.BulletList(setup))

    for key, table in tables.items():
        _table_section(document, key, table, groups[key][1], out_dir)
    _claims_section(document, claims, tables.get("table1_scratch"))
    _unfinished_section(document, runs, runs_dir)
    if problems:
        document.add(
            doc.Heading("Run directories that could not be read"), doc.BulletList(problems)
        )
    if toy_dir.is_dir():
        _toy_section(document, toy_dir, out_dir, runs_dir)

    write_runs_csv(runs, out_dir / "runs.csv")
    _write_claims_csv(claims, out_dir / "claims.csv")
    markdown_path, html_path = out_dir / "report.md", out_dir / "report.html"
    markdown_path.write_text(doc.to_markdown(document, out_dir))
    html_path.write_text(doc.to_html(document))
    log.info("report written to %s", markdown_path)
    return Report(out_dir, markdown_path, html_path, tables, claims, runs)


def _write_claims_csv(claims: list[ClaimResult], path: Path) -> None:
    fields = ["claim", "verdict", "reason", "comparison", "a", "b", "d", "se", "outcome", "note"]
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        for claim in claims:
            base = {"claim": claim.key, "verdict": claim.verdict, "reason": claim.reason}
            writer.writerow(base)
            for c in claim.comparisons:
                writer.writerow(
                    base
                    | {
                        "comparison": c.label,
                        "a": c.a,
                        "b": c.b,
                        "d": "" if c.gap is None else c.gap.difference,
                        "se": "" if c.gap is None else c.gap.standard_error,
                        "outcome": c.outcome,
                        "note": c.note,
                    }
                )
