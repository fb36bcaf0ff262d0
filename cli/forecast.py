"""Forecasting commands: datasets, training against baselines, the model registry, live scoring."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from typing import Optional

import typer
from rich.table import Table
from tradebus import settings
from tradebus.cli.common import HELP, MarketOpt, StoreOpt, app, fail, open_market, open_reader, out
from tradebus.components.timeframes import day

dataset_app = typer.Typer(help="Forecasting datasets (Parquet, keyed by content hash).", no_args_is_help=True,
                          context_settings=HELP)
forecast_app = typer.Typer(help="Forecast models: train against baselines, the registry, live scores.",
                           no_args_is_help=True, context_settings=HELP)
app.add_typer(dataset_app, name="dataset")
app.add_typer(forecast_app, name="forecast")

ModelArg = typer.Argument(..., metavar="MODEL.yaml", help="Forecast model file (see configs/forecasts/).")
ReportOpt = typer.Option(None, "--out", help="Report folder (default runs/forecast-MODEL).")
PromoteOpt = typer.Option(False, "--promote", help="Promote the version trained.")


def _spec(path: Path):
    from tradebus.configs.forecast import load_model_spec
    from tradebus.configs.schema import ConfigError

    try:
        return load_model_spec(path)
    except ConfigError as exc:
        fail(str(exc))


def _dataset(spec, db: Optional[Path]):
    from tradebus.factory.datasets import DatasetError, build_market

    with open_market(db) as md:
        try:
            return build_market(spec, md, settings.data_home())
        except DatasetError as exc:
            fail(str(exc))


@dataset_app.command("market")
def dataset_market(model_path: Path = ModelArg, db: Optional[Path] = MarketOpt) -> None:
    """Per symbol and bar: the model's inputs at t and the targets over (t, t+H]."""
    spec = _spec(model_path)
    ds = _dataset(spec, db)
    m = ds.manifest
    out.print(f"dataset {ds.id}: {m['rows']:,} rows, {len(m['columns'])} columns, {m['first']} .. {m['last']}")
    out.print("  " + ", ".join(f"{s} {n:,}" for s, n in m["rows_by_symbol"].items()))
    out.print(f"  {ds.path}")


@dataset_app.command("strategies")
def dataset_strategies(
    config_path: Path = typer.Argument(..., metavar="COMPOSITE.yaml", help="A composite system config (its pool)."),
    db: Optional[Path] = MarketOpt,
) -> None:
    """Per bar and pool member: the inputs at t, the member's descriptors and its forward performance over
    (t, t+H] (compiled loop), on the symbols, timeframe, horizon and window of the composite's forecaster."""
    from tradebus.configs.forecast import ModelSpec
    from tradebus.configs.schema import ConfigError, load_config
    from tradebus.engine import models
    from tradebus.engine.market import MissingDataError
    from tradebus.engine.wiring import ModelRefused, forecast_model
    from tradebus.factory.datasets import DatasetError, build_strategies

    try:
        config = load_config(config_path)
    except ConfigError as exc:
        fail(str(exc))
    if config.pool is None:
        fail(f"{config_path}: not a composite system (no pool): the strategy dataset is per pool member")
    try:
        model = forecast_model(config)
    except ModelRefused as exc:
        fail(str(exc))
    spec = ModelSpec.model_validate(models.get(settings.data_home(), model.model_id, model.version).manifest["spec"])
    with open_market(db) as md:
        try:
            ds = build_strategies(config, spec, md, settings.data_home())
        except (DatasetError, MissingDataError) as exc:
            fail(str(exc))
    out.print(f"dataset {ds.id}: {ds.manifest['rows']:,} rows ({len(config.pool)} members x "
              f"{len(spec.symbols)} symbols), {len(ds.manifest['columns'])} columns")
    out.print(f"  {ds.path}")


@forecast_app.command("train")
def forecast_train(
    model_path: Path = ModelArg,
    db: Optional[Path] = MarketOpt,
    out_dir: Optional[Path] = ReportOpt,
    promote: bool = PromoteOpt,
) -> None:
    """Walk-forward the model against its baselines, write the report, store the final model as a version."""
    spec = _spec(model_path)
    ds = _dataset(spec, db)
    _train(model_path, spec, ds, out_dir, promote, None)


@forecast_app.command("retrain")
def forecast_retrain(
    model_path: Path = ModelArg,
    db: Optional[Path] = MarketOpt,
    out_dir: Optional[Path] = ReportOpt,
    promote: bool = PromoteOpt,
) -> None:
    """Retrain on the data stored since the promoted (frozen) version: walk-forward over the new bars only,
    the frozen model scored on the same bars, the IC change; then the new version on everything."""
    from tradebus.engine import models

    spec = _spec(model_path)
    home = settings.data_home()
    frozen = _registry_call(models.load, home, spec.model, None)
    ds = _dataset(spec, db)
    _train(model_path, spec, ds, out_dir, promote, frozen)


def _train(model_path: Path, spec, ds, out_dir: Optional[Path], promote: bool, frozen) -> None:
    """Walk-forward (over the new bars only when a frozen model is given), report, store, promote."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from tradebus import duck
    from tradebus.cli.common import err
    from tradebus.engine import artifacts, models, report
    from tradebus.factory import forecasting as F

    rows = F.Rows.of(ds.table, spec.inputs)
    test_from = None if frozen is None else frozen.trained_until
    if frozen is not None and not (rows.time > frozen.trained_until).any():
        fail(f"{model_path}: no bars stored after {day(frozen.trained_until)}, the data of the promoted version "
             f"{frozen.version}: fetch or import newer candles first")
    with Progress(TextColumn(f"walk-forward {spec.model}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=err) as bar:
        task = bar.add_task("folds", total=spec.walk_forward.folds)
        try:
            ev = F.walk_forward(spec, rows, lambda done, total: bar.update(task, completed=done), test_from)
        except ValueError as exc:
            fail(f"{model_path}: {exc}")
    model = F.final_model(spec, rows, ds.id)
    lines = F.verdict(ev.pooled, ev.per_symbol)
    retrain = None
    if frozen is not None:
        retrain = {"frozen_version": frozen.version, **F.against_frozen(ev, rows, frozen)}
        fr, rt = retrain["frozen"], retrain["retrained"]
        lines.append(f"retraining on the {retrain['rows']:,} rows since {day(frozen.trained_until)}: IC "
                     f"{fr['ic']:+.4f} frozen ({frozen.version}) -> {rt['ic']:+.4f} retrained "
                     f"({retrain['ic_change']:+.4f}); rank IC {fr['rank_ic']:+.4f} -> {rt['rank_ic']:+.4f}; "
                     f"QLIKE {fr['qlike']:.4f} -> {rt['qlike']:.4f}; Brier {fr['brier']:.4f} -> {rt['brier']:.4f}")
    manifest = F.version_manifest(
        spec, model, ds.id, training_window={"first": ds.manifest["first"], "last": ds.manifest["last"]},
        walk_forward={"pooled": ev.pooled, "folds": ev.folds, "per_symbol": ev.per_symbol, "verdict": lines,
                      "seconds": round(ev.seconds, 2)},
        **({"retrain": retrain} if retrain else {}))
    version = models.save(settings.data_home(), model, manifest)
    folder = out_dir or Path("runs") / f"forecast-{spec.model}"
    folder.mkdir(parents=True, exist_ok=True)
    artifacts.write_json(folder / "evaluation.json", manifest)
    duck.write_parquet([ev.predictions], folder / "predictions.parquet", "time, symbol")
    monthly, calibration = F.report_series(ev)
    report.render_forecast(folder / "report.html", f"forecast {spec.model} · version {model.version}",
                           f"{', '.join(spec.symbols)} · {spec.timeframe} · H = {spec.horizon} bars · dataset "
                           f"{ds.id} · walk-forward {len(ev.folds)} folds, embargo {spec.embargo} bars",
                           ev.pooled, ev.folds, ev.per_symbol, monthly, calibration, notes=lines)
    out.print(f"model {spec.model} version {model.version} (dataset {ds.id}, walk-forward {ev.seconds:.1f} s); "
              f"forecasts bars closing {day(model.trained_until)} .. {day(model.valid_until)}")
    for line in lines:
        out.print(f"  {line}")
    out.print(f"  report: {folder / 'report.html'}")
    if promote and models.promoted(settings.data_home(), spec.model) != model.version:
        models.promote(settings.data_home(), spec.model, model.version, reason=f"forecast {'retrain' if frozen else 'train'} --promote")
        out.print(f"  promoted {spec.model} {model.version}")
    elif not promote:
        out.print(f"  promote it with: tradebus forecast promote {spec.model} {version.version}")


@forecast_app.command("compare")
def forecast_compare(
    config_path: Path = typer.Argument(..., metavar="COMPOSITE.yaml", help="A composite system config."),
    symbols: Optional[str] = typer.Option(None, "--symbols", help="Comma-separated (default: the forecaster's)."),
    db: Optional[Path] = MarketOpt,
    out_dir: Optional[Path] = typer.Option(None, "--out", help="Report folder (default runs/compare-SYSTEM)."),
    folds: Optional[int] = typer.Option(None, "--folds", min=2, max=20, help="Walk-forward: retrain the forecaster "
                                        "before each of N test blocks (each version stored: each is a trial)."),
) -> None:
    """The composite against the best single pool member (chosen on the hygiene window) and the equal-weight
    blend, on the bars after the forecaster's data, per symbol; deflated Sharpe and PBO. With --folds, the
    same on each block of a walk-forward, each block's forecaster trained only on the bars before it."""
    from tradebus.configs.schema import ConfigError, load_config
    from tradebus.engine import artifacts, models, report
    from tradebus.engine.market import MissingDataError
    from tradebus.engine.wiring import ModelRefused, forecast_model
    from tradebus.replay.compare import TooLittleHistory, compare_symbol, count_trials, fold_configs

    try:
        config = load_config(config_path)
    except ConfigError as exc:
        fail(str(exc))
    if config.pool is None:
        fail(f"{config_path}: not a composite system (it has no pool); compare needs forecaster, policy and pool")
    home = settings.data_home()
    try:
        model = forecast_model(config)
        spec_symbols = models.get(home, model.model_id, model.version).manifest.get("spec", {}).get("symbols")
    except ModelRefused as exc:
        fail(str(exc))
    chosen = [s.strip() for s in symbols.split(",")] if symbols else (spec_symbols or [config.symbol])
    results = []
    with open_market(db) as md:
        try:
            runs = [(None, None, config)] if folds is None else fold_configs(config, md, home, folds)
        except (ModelRefused, MissingDataError, ValueError) as exc:
            fail(f"{config_path}: {exc}")
        n_trials = count_trials(home, config)
        skipped = []
        for train_until, test_from, cfg in runs:
            for sym in chosen:
                try:
                    results.append(compare_symbol(cfg, sym, md, n_trials, train_until, test_from))
                except TooLittleHistory as exc:
                    skipped.append(str(exc))
                except (ModelRefused, MissingDataError, ValueError) as exc:
                    fail(f"{config_path}: {exc}")
    if not results:
        fail(f"{config_path}: nothing to compare: " + "; ".join(skipped))
    table = Table(title=f"{config.system}: composite vs baselines, out of sample ({n_trials} trials built it)")
    for col in ("symbol", "test window", "composite", "best single (by train Sharpe)", "equal weight", "DSR", "PBO"):
        table.add_column(col)
    fmt = lambda m: f"{m.get('return_pct', 0) * 100:+.1f}% · Sharpe {m.get('sharpe') or 0:+.2f}"  # noqa: E731
    rows, data = [], []
    for r in results:
        best = max(r.chosen_by, key=lambda k: r.chosen_by[k])
        table.add_row(r.symbol, r.window, fmt(r.composite.metrics), f"{best}: {fmt(r.best_single.metrics)}",
                      fmt(r.equal_weight.metrics), f"{r.dsr:.3f}", "—" if r.pbo is None else f"{r.pbo:.2f}")
        for leg, kind in ((r.composite, "composite"), (r.best_single, "best single"), (r.equal_weight, "blend")):
            rows.append(report.Compared(f"{r.symbol} {leg.name}", kind, f"{r.symbol} · {r.window}", None, leg.metrics,
                                        (leg.times, leg.equity)))
        data.append({"symbol": r.symbol, "window": r.window, "composite": r.composite.metrics,
                     "best_single": {"member": r.best_single.name, "train_sharpe": r.chosen_by,
                                     "metrics": r.best_single.metrics},
                     "equal_weight": r.equal_weight.metrics, "dsr": r.dsr, "pbo": r.pbo})
    out.print(table)
    sharpe = lambda leg: leg.metrics.get("sharpe") or 0.0  # noqa: E731
    beats_best = sum(sharpe(r.composite) > sharpe(r.best_single) for r in results)
    beats_blend = sum(sharpe(r.composite) > sharpe(r.equal_weight) for r in results)
    summary = (f"composite Sharpe above the best single member on {beats_best} of {len(results)} "
               f"{'symbols' if folds is None else f'(fold, symbol) pairs over {folds} walk-forward folds'}, above "
               f"the equal-weight blend on {beats_blend}; mean Sharpe composite "
               f"{np.mean([sharpe(r.composite) for r in results]):+.2f}, best single "
               f"{np.mean([sharpe(r.best_single) for r in results]):+.2f}, blend "
               f"{np.mean([sharpe(r.equal_weight) for r in results]):+.2f}")
    out.print(summary)
    for line in skipped:
        out.print(f"skipped {line}")
    folder = out_dir or Path("runs") / f"compare-{config.system}"
    folder.mkdir(parents=True, exist_ok=True)
    artifacts.write_json(folder / "compare.json", {"system": config.system, "forecaster": {"id": model.model_id,
                         "version": model.version}, "policy": {"id": config.policy.id, "version": config.policy.version},
                         "trials": n_trials, "folds": folds, "summary": summary, "skipped": skipped,
                         "symbols": data})
    report.render_comparison(folder / "report.html", f"{config.system}: composite vs baselines",
                             f"forecaster {model.model_id} {model.version} · policy {config.policy.id} "
                             f"{config.policy.version} · {n_trials} trials", rows, [],
                             warnings=[summary, *(f"skipped {line}" for line in skipped)],
                             what="system", test_name="out-of-sample")
    out.print(f"report: {folder / 'report.html'}")


def _registry_call(fn, *args):
    from tradebus.engine.models import RegistryError

    try:
        return fn(*args)
    except RegistryError as exc:
        fail(str(exc))


@forecast_app.command("list")
def forecast_list(as_json: bool = typer.Option(False, "--json", help="One JSON list instead of the table.")) -> None:
    """Every stored model version, its validity and pooled out-of-sample scores; * marks the promoted one."""
    from tradebus.engine import models

    home = settings.data_home()
    rows = []
    for mid in models.model_ids(home):
        current = models.promoted(home, mid)
        for v in models.versions(home, mid):
            wf = v.manifest.get("walk_forward")
            p = wf["pooled"] if wf else None
            rows.append({"model": mid, "version": v.version, "promoted": v.version == current,
                         "created": v.manifest["created"], "valid_until": v.manifest["valid_until"],
                         "fold": v.manifest.get("fold"),
                         "rank_ic": p["return"]["model"]["rank_ic"] if p else None,
                         "qlike": p["vol"]["model"]["qlike"] if p else None,
                         "qlike_ewma": p["vol"]["ewma"]["qlike"] if p else None,
                         "brier_skill": p["regime"]["model"]["skill_vs_base_rate"] if p else None})
    if as_json:
        out.print(json.dumps(rows, indent=2))
        return
    if not rows:
        out.print(f"no models in {models.models_dir(home)}; train one: tradebus forecast train MODEL.yaml")
        return
    table = Table(title="forecast models")
    for col in ("model", "version", "created", "valid until", "rank IC", "QLIKE (EWMA)", "Brier skill"):
        table.add_column(col, no_wrap=col in ("version", "valid until"))
    for r in rows:
        mark = ("* " if r["promoted"] else "  ") + r["version"]
        created, valid = r["created"][:10], r["valid_until"][:16].replace("T", " ")
        if r["fold"]:  # a walk-forward comparison's fold model: no evaluation of its own
            f = r["fold"]
            table.add_row(r["model"], f"{mark} fold {f['index']}/{f['folds']}", created, valid, "—", "—", "—")
            continue
        table.add_row(r["model"], mark, created, valid, f"{r['rank_ic']:+.4f}",
                      f"{r['qlike']:.4f} ({r['qlike_ewma']:.4f})", f"{r['brier_skill']:+.4f}")
    out.print(table)


@forecast_app.command("show")
def forecast_show(model_id: str = typer.Argument(..., metavar="MODEL", help="The model's id."),
                  version: Optional[str] = typer.Argument(None, help="Default: the promoted one.")) -> None:
    """One version's manifest: data, settings, validity, walk-forward verdict and history of promotions."""
    from tradebus.engine import models

    home = settings.data_home()
    if version is None:
        version = models.promoted(home, model_id)
        if version is None:
            stored = [v.version for v in models.versions(home, model_id)]
            fail(f"model {model_id!r} has no promoted version; name one ({', '.join(stored) or 'none stored'})")
    v = _registry_call(models.get, home, model_id, version)
    m = v.manifest
    out.print(f"{model_id} {v.version}  dataset {m['dataset']}  {m['timeframe']} H={m['horizon']}  created {m['created']}")
    out.print(f"  forecasts bars closing {m['trained_until']} .. {m['valid_until']}")
    out.print(f"  inputs: {', '.join(m['inputs'])}")
    if m.get("fold"):
        f = m["fold"]
        out.print(f"  fold {f['index']} of {f['folds']} of a walk-forward comparison on {f['of']}: tests "
                  f"{f['test_start']} .. {f['test_end']}")
    for line in (m.get("walk_forward") or {}).get("verdict", []):
        out.print(f"  {line}")
    for h in models.history(home, model_id):
        out.print(f"  {h['time']} {h['action']} {h['version']} (from {h['from'] or 'none'}) {h.get('reason', '')}")


@forecast_app.command("promote")
def forecast_promote(model_id: str = typer.Argument(..., metavar="MODEL", help="The model's id."),
                     version: str = typer.Argument(..., help="A stored version (tradebus forecast list)."),
                     reason: str = typer.Option("", "--reason", help="Why, kept in the history.")) -> None:
    """Make a version the one forecasters load."""
    from tradebus.engine import models

    e = _registry_call(models.promote, settings.data_home(), model_id, version, reason)
    out.print(f"{model_id}: promoted {e['version']} (was {e['from'] or 'none'})")


@forecast_app.command("rollback")
def forecast_rollback(model_id: str = typer.Argument(..., metavar="MODEL", help="The model's id."),
                      reason: str = typer.Option("", "--reason", help="Why, kept in the history.")) -> None:
    """Return to the version promoted before the current one."""
    from tradebus.engine import models

    e = _registry_call(models.rollback, settings.data_home(), model_id, reason)
    out.print(f"{model_id}: rolled back from {e['from']} to {e['version']}")


@forecast_app.command("score")
def forecast_score(store: Optional[Path] = StoreOpt,
                   as_json: bool = typer.Option(False, "--json", help="One JSON list instead of the table.")) -> None:
    """Live forecast quality from a store's scored forecasts, next to the version's walk-forward scores."""
    from tradebus.engine import models
    from tradebus.factory.forecasting import live_scores

    reader = open_reader(store)
    try:
        summary = live_scores(r.event for r in reader.read(types=["forecast.scored"]))
    finally:
        reader.close()
    home = settings.data_home()
    for row in summary:
        try:
            wf = models.get(home, row["model"], row["version"]).manifest.get("walk_forward")
        except models.RegistryError:
            wf = None
        pooled = wf["pooled"] if wf else None
        row["backtest"] = None if pooled is None else {
            "rank_ic": pooled["return"]["model"]["rank_ic"], "qlike": pooled["vol"]["model"]["qlike"],
            "brier": pooled["regime"]["model"]["brier"]}
    if as_json:
        out.print(json.dumps(summary, indent=2))
        return
    if not summary:
        out.print("no scored forecasts in the store (a forecast is scored H bars after it is made)")
        return
    table = Table(title="forecast quality: live (this store) vs walk-forward (the version's manifest)")
    for col in ("model", "version", "system", "symbol", "scored", "rank IC", "QLIKE", "Brier"):
        table.add_column(col)
    for r in summary:
        b = r["backtest"] or {}
        fmt = lambda live, key: f"{live:.4f}" + (f" ({b[key]:.4f})" if key in b else "")  # noqa: E731
        table.add_row(r["model"], r["version"], r["system"], r["symbol"], f"{r['scored']:,}",
                      fmt(r["rank_ic"], "rank_ic"), fmt(r["qlike"], "qlike"), fmt(r["brier"], "brier"))
    out.print(table)
