"""The ``osteonode`` command line: a thin shell over the library.

Each command parses its arguments, calls one library function and prints the outcome. Commands are
grouped as sub-applications (``config``, ``phantoms``, ``models``, ``deliveries``) the way an
administrator thinks of them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import structlog
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Column, Table

from osteonode.config import ConfigError, NodeConfig, check_config, load_config

if TYPE_CHECKING:
    from osteonode.analysis import Analysis
    from osteonode.store.db import Database
    from osteonode.store.history import EventRecord, InstanceHistory
    from osteonode.store.workers import WorkerHealth

app = typer.Typer(
    name="osteonode",
    help="DICOM node for opportunistic osteoporosis screening on plain radiographs.",
    no_args_is_help=True,
    add_completion=False,
)
config_app = typer.Typer(help="Check and show the node configuration.", no_args_is_help=True)
phantoms_app = typer.Typer(help="Synthetic radiographs with known ground truth.", no_args_is_help=True)
app.add_typer(config_app, name="config")
app.add_typer(phantoms_app, name="phantoms")
models_app = typer.Typer(help="Models installed under the models folder.", no_args_is_help=True)
app.add_typer(models_app, name="models")
deliveries_app = typer.Typer(
    help="Reports waiting to be sent, sent, or dead-lettered; send dead ones again.", no_args_is_help=True
)
app.add_typer(deliveries_app, name="deliveries")

console = Console()
ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        help="Node configuration file (default: $OSTEONODE_CONFIG, else node_config/node.toml,"
        " else the embedded defaults).",
        dir_okay=False,
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]


def _load(config_path: Path | None) -> NodeConfig:
    """Load the configuration or exit with every problem listed."""
    try:
        return load_config(config_path)
    except ConfigError as error:
        Console(stderr=True).print(str(error), style="red", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(code=2) from None


@config_app.command("check")
def config_check(
    config: ConfigOption = None,
    reference: Annotated[
        Path | None,
        typer.Option(
            help="T-score reference and calibration file (default: node_config/reference.toml,"
            " else the shipped one).",
            dir_okay=False,
        ),
    ] = None,
) -> None:
    """Validate the node configuration and the reference data, then check what the node would run
    into on this machine (TLS files, allow-list hosts, database, models, destinations); report every
    problem with its key. Exits 2 on any error; warnings alone exit 0."""
    from osteonode.preflight import Severity, preflight
    from osteonode.reference import check_reference

    sections = {"node": check_config(config), "reference": check_reference(reference)}
    for name, problems in sections.items():
        for problem in problems:
            console.print(
                f"[red]{name}: {escape(problem.key)}[/red]: {escape(problem.reason)}",
                highlight=False,
                soft_wrap=True,
            )
    if sections["node"]:
        raise typer.Exit(code=2)
    findings = preflight(load_config(config))
    for finding in findings:
        colour = "red" if finding.severity is Severity.ERROR else "yellow"
        console.print(
            f"[{colour}]{finding.severity}: {escape(finding.key)}[/{colour}]: {escape(finding.reason)}",
            highlight=False,
            soft_wrap=True,
        )
    if any(sections.values()) or any(finding.severity is Severity.ERROR for finding in findings):
        raise typer.Exit(code=2)
    warnings = len(findings)
    console.print("configuration OK" + (f" ({warnings} warnings)" if warnings else ""))


@config_app.command("show")
def config_show(config: ConfigOption = None) -> None:
    """Print the configuration in force (the file over the embedded defaults) as JSON."""
    print(json.dumps(_load(config).model_dump(mode="json"), indent=2))


@phantoms_app.command("make")
def phantoms_make(
    part: Annotated[str, typer.Option("--part", help="Body part: lumbar, lumbar_lateral, chest or hip.")],
    n: Annotated[int, typer.Option("--n", help="Number of images.")],
    out: Annotated[Path, typer.Option("--out", help="Output folder (created if missing).")],
    seed: Annotated[int, typer.Option("--seed", help="Cohort seed; the same seed gives the same bytes.")] = 0,
    size: Annotated[int, typer.Option("--size", help="Long side in pixels (spacing scales inversely).")] = 2500,
    hard_fraction: Annotated[
        float, typer.Option("--hard-fraction", help="Fraction of not-evaluable hard cases.")
    ] = 0.0,
    workers: Annotated[int, typer.Option("--workers", help="Parallel processes (same output).")] = 1,
) -> None:
    """Write N synthetic radiographs of one part and their ground truth DIR/cohort.csv."""
    from osteonode.phantoms import PhantomError, make_cohort

    try:
        table = make_cohort(
            part, n, out, seed=seed, size=size, hard_fraction=hard_fraction, progress=True, workers=workers
        )
    except PhantomError as error:
        Console(stderr=True).print(f"phantoms make: {error}", style="red", markup=False, highlight=False)
        raise typer.Exit(code=2) from None
    console.print(f"wrote {n} {part} phantoms and {escape(str(table))}", highlight=False)


@models_app.command("list")
def models_list(
    config: ConfigOption = None,
    directory: Annotated[
        Path | None, typer.Option("--dir", help="Models folder (default: [models].dir).", file_okay=False)
    ] = None,
) -> None:
    """List model folders with their cards; a folder that would not load shows why."""
    from osteonode.zoo import ModelCard, list_models

    root = directory if directory is not None else _load(config).models.dir
    table = Table("folder", "name", "version", "pipeline", "use", "status")
    for folder, card in list_models(root):
        if isinstance(card, ModelCard):
            use = "synthetic demo" if card.synthetic else ("diagnostic" if card.diagnostic_use else "research")
            table.add_row(folder.name, card.name, card.version, card.pipeline.value, use, "ok")
        else:
            table.add_row(folder.name, "", "", "", "", f"[red]{escape(str(card))}[/red]")
    console.print(table)


@models_app.command("verify-precision")
def models_verify_precision(
    folder: Annotated[Path, typer.Argument(help="The model folder.", exists=True, file_okay=False)],
    films: Annotated[int, typer.Option("--films", min=1, help="Phantom films compared.")] = 8,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the phantoms.")] = 2024,
    device: Annotated[str, typer.Option("--device", help="cpu, cuda or cuda:N.")] = "cpu",
    record: Annotated[
        bool, typer.Option("--record/--no-record", help="Write the figures to the card's [metrics].")
    ] = True,
) -> None:
    """Compare the model's results in bfloat16 with float32 on phantoms; record it in the card.

    Under [inference] bfloat16_autocast = "auto" a model runs in bfloat16 only when its card
    records a difference within bfloat16_tolerance (and the hardware has native bfloat16).
    """
    from osteonode.precision import verify_model_precision
    from osteonode.zoo import ModelError

    try:
        agreement, card = verify_model_precision(folder, films=films, seed=seed, device=device, record=record)
    except ModelError as error:
        console.print(f"[red]{escape(str(error))}[/red]")
        raise typer.Exit(code=1) from None
    console.print(
        f"{card.name}: largest difference from float32 {agreement.max_abs_difference:.2g}"
        f" ({escape(agreement.largest_at or 'no output')}) over {agreement.films} films;"
        f" answers {'agree' if agreement.decisions_agree else '[yellow]differ[/yellow]'}"
    )
    if record:
        console.print(f"recorded in {folder / 'model.toml'} [metrics]")


@app.command("analyze")
def analyze(
    file: Annotated[Path, typer.Argument(help="DICOM file to analyse.", exists=True, dir_okay=False)],
    config: ConfigOption = None,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Write the routing decision and result as JSON.", dir_okay=False)
    ] = None,
    explain: Annotated[
        Path | None,
        typer.Option("--explain", help="Write the heat-map picture (as sent to PACS) as PNG.", dir_okay=False),
    ] = None,
    pipeline: Annotated[
        str | None,
        typer.Option(help="Which pipeline runs when the file is routed to several (default: the first)."),
    ] = None,
) -> None:
    """Route one file and run its pipeline here, without the network; print the findings.

    Exits 1 when the file could not be read or analysed (unreadable, undecodable, pipeline
    unavailable); a film that routing skips is an answer and exits 0."""
    from osteonode.analysis import analyse_file
    from osteonode.reports import render_result

    analysis = analyse_file(file, _load(config), pipeline_name=pipeline)
    _print_analysis(analysis)
    if json_out is not None:
        json_out.write_text(json.dumps(_analysis_dict(analysis), indent=2), "utf-8")
    if explain is not None:
        if analysis.result is None or analysis.radiograph is None:
            Console(stderr=True).print("no result, so no heat-map picture was written", style="yellow")
        else:
            from PIL import Image

            Image.fromarray(render_result(analysis.result, analysis.radiograph)).save(explain)
    if _unusable(analysis.decision) or analysis.refusal is not None:
        raise typer.Exit(code=1)


def _unusable(decision: object) -> bool:
    """Whether routing found the file unreadable (as opposed to routing or skipping it)."""
    from osteonode.config import SkipReason
    from osteonode.routing import Skip

    return isinstance(decision, Skip) and decision.reason is SkipReason.UNREADABLE


def _analysis_dict(analysis: Analysis) -> dict[str, object]:
    from osteonode.routing import Route

    decision = analysis.decision
    return {
        "route": (
            {"pipelines": list(decision.pipelines), "rule": decision.rule}
            if isinstance(decision, Route)
            else {"skip": decision.reason.value, "detail": decision.detail, "rule": decision.rule}
        ),
        "refusal": (
            {"kind": analysis.refusal.kind.value, "detail": analysis.refusal.detail}
            if analysis.refusal is not None
            else None
        ),
        "result": analysis.result.to_dict() if analysis.result is not None else None,
    }


def _number(value: float | None, digits: int, suffix: str = "") -> str:
    return "" if value is None else f"{value:.{digits}f}{suffix}"


def _print_analysis(analysis: Analysis) -> None:
    from osteonode.pipelines.base import Category
    from osteonode.routing import Route

    decision = analysis.decision
    if not isinstance(decision, Route):
        console.print(f"skipped: {decision.reason.value} — {escape(decision.detail)}", highlight=False)
        return
    console.print(
        f"routed to [bold]{escape(', '.join(decision.pipelines))}[/bold] by rule {escape(decision.rule)}"
    )
    if analysis.result is not None and len(decision.pipelines) > 1:
        console.print(f"result of {escape(analysis.result.pipeline)} (--pipeline NAME shows another)")
    if analysis.refusal is not None:
        console.print(
            f"[yellow]not analysed: {analysis.refusal.kind.value}[/yellow] — {escape(analysis.refusal.detail)}",
            highlight=False,
        )
        return
    result = analysis.result
    assert result is not None
    console.print(f"model {escape(result.model.name)} {escape(result.model.version)}", highlight=False)
    if result.disclaimer:
        console.print(f"[bold red]{escape(result.disclaimer)}[/bold red]")
    if result.evaluable:
        answer = result.category.value if result.category is not None else ""
        console.print(f"result: [bold]{answer}[/bold]" + (
            f", T-score {result.t_score:.1f}" if result.t_score is not None else ""))
    else:
        console.print(f"[yellow]not evaluable[/yellow]: {escape(result.reason or '')}", highlight=False)
    # The answer column never truncates ("not_osteoporosis" is the longest); the reason wraps instead.
    category_column = Column("category", no_wrap=True, min_width=max(len(c.value) for c in Category))
    table = Table(
        "finding", "counts", "BMD g/cm2", "T-score", "probability", category_column, "reason"
    )
    for finding in result.findings:
        table.add_row(
            escape(finding.name),
            "yes" if finding.included else "no",
            _number(finding.bmd_g_cm2, 3),
            _number(finding.t_score, 1),
            _number(None if finding.probability is None else 100 * finding.probability, 1, " %"),
            finding.category.value if finding.category is not None else "",
            escape(finding.reason or ""),
        )
    console.print(table)
    for note in result.notes:
        console.print(f"note: {escape(note)}", highlight=False)


@app.command("train")
def train(
    part: Annotated[str, typer.Argument(help="The pipeline whose networks to train (lumbar, chest, hip, ...).")],
    cohort: Annotated[
        Path | None, typer.Option(help="Cohort CSV (phantom format: files + ground truth).", dir_okay=False)
    ] = None,
    out: Annotated[Path | None, typer.Option(help="Model folder to write (model.toml + weights).")] = None,
    demo: Annotated[
        bool, typer.Option("--demo", help="Make the shipped demo weights from phantoms (models/<part>-demo).")
    ] = False,
    epochs: Annotated[int | None, typer.Option(min=1)] = None,
    batch_size: Annotated[int | None, typer.Option(min=1)] = None,
    learning_rate: Annotated[float | None, typer.Option("--lr", min=0.0)] = None,
    patience: Annotated[int | None, typer.Option(min=0, help="Epochs without improvement before stopping.")] = None,
    seed: Annotated[int | None, typer.Option()] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    resume: Annotated[bool, typer.Option(help="Continue from the checkpoints in the output folder.")] = True,
    init: Annotated[
        Path | None, typer.Option(help="Start from a pretrained checkpoint (.safetensors or .pth).", dir_okay=False)
    ] = None,
    name: Annotated[str | None, typer.Option(help="Model name for the card (default: folder name).")] = None,
    version: Annotated[str, typer.Option(help="Model version for the card.")] = "0.1.0",
    teacher: Annotated[
        Path | None, typer.Option(help="Chest: a model folder to distil from (knowledge distillation).", file_okay=False)
    ] = None,
    temperature: Annotated[float, typer.Option(help="Chest: distillation temperature (> 0).")] = 4.0,
    distillation_weight: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Chest: share of the distillation term in the loss.")
    ] = 0.5,
    unlabeled: Annotated[
        Path | None, typer.Option(help="Chest: folder of films without truth to draw proxy labels from.", file_okay=False)
    ] = None,
    strong_augmentation: Annotated[
        bool, typer.Option("--strong-augmentation", help="Chest: the paper's strong augmentation, not the weak one.")
    ] = False,
) -> None:
    """Train (or fine-tune) a pipeline's networks on a cohort and write a model folder."""
    import dataclasses

    from osteonode.train import train_demo, trainer
    from osteonode.zoo import pick_device

    regime: dict[str, object] = {}
    if teacher is not None or unlabeled is not None or strong_augmentation:
        if part != "chest" or demo:
            Console(stderr=True).print(
                "--teacher, --unlabeled and --strong-augmentation train a chest model from --cohort",
                style="red", markup=False,
            )
            raise typer.Exit(code=2)
        from osteonode.train.augment import CHEST_STRONG, CHEST_WEAK
        from osteonode.train.distillation import DistillationSettings

        try:
            distillation = DistillationSettings(temperature, distillation_weight)
        except ValueError as error:
            Console(stderr=True).print(f"train: {error}", style="red", markup=False)
            raise typer.Exit(code=2) from None
        regime = {
            "teacher": teacher, "unlabeled": unlabeled, "distillation": distillation,
            "augmentation": CHEST_STRONG if strong_augmentation else CHEST_WEAK,
        }

    try:
        module = trainer(part)
        target = pick_device(device)
    except ValueError as error:
        Console(stderr=True).print(str(error), style="red", markup=False)
        raise typer.Exit(code=2) from None
    overrides = {
        key: value
        for key, value in {
            "epochs": epochs, "batch_size": batch_size, "learning_rate": learning_rate,
            "patience": patience, "seed": seed,
        }.items()
        if value is not None
    }
    if demo:
        if overrides:
            # The demo weights are what the recipe makes; a changed setting would make others.
            Console(stderr=True).print(
                f"--demo trains the {part} recipe as written; {', '.join(overrides)} apply to"
                " --cohort runs", style="red", markup=False,
            )
            raise typer.Exit(code=2)
        card = train_demo(part, workdir=Path("var/demo-training"), models_dir=Path("models"), device=target)
    else:
        if cohort is None or out is None:
            Console(stderr=True).print("give --cohort and --out (or --demo)", style="red")
            raise typer.Exit(code=2)
        try:
            settings = dataclasses.replace(module.DEMO_RECIPE.settings, **overrides)
            card = module.train(
                cohort, out, settings, device=target, resume=resume, name=name or out.name,
                version=version, init=init, **regime,
            )
        except (ValueError, NotADirectoryError) as error:  # bad settings, cohort, teacher or folder
            Console(stderr=True).print(f"train: {error}", style="red", markup=False)
            raise typer.Exit(code=2) from None
    console.print(f"wrote model {escape(card.name)} {escape(card.version)}; validation: "
                  + ", ".join(f"{k} {v:.3f}" for k, v in card.metrics.items()), highlight=False)


@app.command("demo")
def demo(
    workdir: Annotated[Path, typer.Option(help="Where the demo keeps its images and node state.")] = Path("demo-out"),
    wait: Annotated[
        bool | None,
        typer.Option(
            "--wait/--no-wait",
            help="Keep Orthanc and the node running until Enter or Ctrl-C (default: when run on a terminal).",
        ),
    ] = None,
) -> None:
    """Run the whole loop: Orthanc as the PACS forwards sample radiographs to a node, whose reports
    come back into each study; show what happened and where to open the studies."""
    import sys

    from osteonode.demo import DemoError, run_demo

    keep_running = sys.stdin.isatty() and sys.stdout.isatty() if wait is None else wait
    try:
        run_demo(
            workdir,
            show=lambda line: console.print(line, highlight=False, markup=False, soft_wrap=True),
            wait=keep_running,
        )
    except DemoError as error:
        Console(stderr=True).print(f"demo failed: {error}", style="red", markup=False)
        raise typer.Exit(code=1) from None


@app.command("echo")
def echo(
    destination: Annotated[str, typer.Argument(help="A destination name from [destinations].")],
    config: ConfigOption = None,
) -> None:
    """Check a destination: C-ECHO it with the AE titles, address, timeout and TLS reports are sent with."""
    from osteonode.dicom.scu import echo as send_echo
    from osteonode.dicom.tls import TlsError, client_context

    settings = _load(config)
    target = settings.destinations.get(destination)
    if target is None:
        known = ", ".join(sorted(settings.destinations)) or "none are configured"
        Console(stderr=True).print(
            f"no destination {destination!r} under [destinations] ({known})", style="red", markup=False
        )
        raise typer.Exit(code=2)
    calling = target.calling_ae_title or settings.node.ae_title
    try:
        tls = (
            client_context(target.tls, key=f"destinations.{destination}.tls")
            if target.tls.enabled
            else None
        )
    except TlsError as error:
        Console(stderr=True).print(str(error), style="red", markup=False, soft_wrap=True)
        raise typer.Exit(code=2) from None
    outcome = send_echo(
        host=target.host, port=target.port, called_ae_title=target.ae_title,
        calling_ae_title=calling, timeout_s=target.timeout_s, tls=tls,
    )
    where = f"{destination} ({target.ae_title} at {target.host}:{target.port}, calling AE {calling}"
    where += ", TLS)" if tls is not None else ")"
    if not outcome.is_sent:
        Console(stderr=True).print(
            f"{where}: C-ECHO failed ({outcome.result.value}): {outcome.detail}", markup=False, soft_wrap=True
        )
        raise typer.Exit(code=1)
    console.print(f"{escape(where)}: C-ECHO succeeded", highlight=False, soft_wrap=True)


@app.command("route")
def route(
    files: Annotated[list[Path], typer.Argument(help="DICOM files to route.", exists=False)],
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Show, for each file, the pipeline it goes to or why it is skipped, and the deciding rule.

    Exits 1 when any file could not be read (after listing every file)."""
    from osteonode.routing import Route, route_file, to_enabled_pipelines

    node_config = _load(config)
    rows = []
    unreadable = False
    for file in files:
        decision = to_enabled_pipelines(route_file(file, node_config.routing), node_config.pipelines)
        unreadable = unreadable or _unusable(decision)
        if isinstance(decision, Route):
            rows.append({"file": str(file), "pipelines": list(decision.pipelines), "skip": None,
                         "detail": None, "rule": decision.rule})
        else:
            rows.append({"file": str(file), "pipelines": [], "skip": decision.reason.value,
                         "detail": decision.detail, "rule": decision.rule})
    if as_json:
        print(json.dumps(rows, indent=2))
    else:
        _print_routes(rows)
    if unreadable:
        raise typer.Exit(code=1)


def _print_routes(rows: list[dict[str, Any]]) -> None:
    table = Table("file", "decision", "rule", "detail")
    for row in rows:
        decision_text = ", ".join(row["pipelines"]) or f"[yellow]skip: {row['skip']}[/yellow]"
        table.add_row(escape(row["file"]), decision_text, escape(row["rule"] or "(node check)"), escape(row["detail"] or ""))
    console.print(table)


NoWorkersOption = Annotated[
    bool, typer.Option("--no-workers", help="Only receive images; workers run elsewhere.")
]


def _run_node(config_path: Path | None, *, scp: bool, workers: bool) -> None:
    """Run the node parts in this process until SIGTERM/SIGINT; a failed start exits with 1."""
    import threading

    from osteonode.signals import stop_on_signals

    with stop_on_signals(threading.Event()) as stop_requested:
        from osteonode.logs import configure_logging

        settings = _load(config_path)
        configure_logging(settings.logging)
        # Imported after logging is set up, so warnings raised while the libraries load are log events.
        from osteonode.service import run_node

        try:
            run_node(settings, scp=scp, workers=workers, stop_requested=stop_requested)
        except (OSError, RuntimeError, ValueError) as error:
            structlog.get_logger("osteonode.cli").error("node_start_failed", error=str(error))
            raise typer.Exit(code=1) from None


@app.command("serve")
def serve(config: ConfigOption = None, no_workers: NoWorkersOption = False) -> None:
    """Run the node: receive images (C-STORE), route and analyse them, until SIGTERM/SIGINT."""
    _run_node(config, scp=True, workers=not no_workers)


@app.command("worker")
def worker(config: ConfigOption = None) -> None:
    """Run workers only (scale-out against a shared PostgreSQL database and spool)."""
    _run_node(config, scp=False, workers=True)


@app.command("status")
def status(
    config: ConfigOption = None,
    instance: Annotated[
        str | None, typer.Option("--instance", help="Show one image's whole history (SOP Instance UID).")
    ] = None,
    events: Annotated[int, typer.Option("--events", min=1, help="How many latest events to show.")] = 20,
    as_json: JsonOption = False,
) -> None:
    """Show job counts by state, the workers and the latest events, or what happened to one image."""
    from sqlalchemy.exc import SQLAlchemyError

    from osteonode.store.db import Database, DatabaseError, DatabaseNotCreated
    from osteonode.store.history import (
        counts_by_state,
        delivery_counts_by_state,
        instance_history,
        latest_events,
    )
    from osteonode.store.workers import silent_after, worker_health

    history: InstanceHistory | None = None
    jobs: dict[str, int] = {}
    deliveries: dict[str, int] = {}
    workers: list[WorkerHealth] = []
    latest: list[EventRecord] = []
    settings = _load(config)
    try:
        database = Database.open_existing(settings.database.url)
    except DatabaseNotCreated as error:
        # A fresh install: nothing has happened yet, which is an answer, not an error.
        database = None
        Console(stderr=True).print(str(error), markup=False, soft_wrap=True)
    except DatabaseError as error:
        raise _database_failure(str(error), as_json) from None
    if database is not None:
        try:
            with database.session() as session:
                if instance is not None:
                    history = instance_history(session, instance)
                else:
                    jobs = counts_by_state(session)
                    deliveries = delivery_counts_by_state(session)
                    workers = worker_health(
                        session, silent_after=silent_after(settings.workers.heartbeat_interval_s)
                    )
                    latest = latest_events(session, events)
        except SQLAlchemyError as error:
            raise _database_failure(f"cannot read the node database: {error}", as_json) from None
        finally:
            database.dispose()
    if instance is not None:
        if history is None:
            Console(stderr=True).print(f"no image with SOP Instance UID {instance}", markup=False)
            raise typer.Exit(code=1)
        if as_json:
            print(json.dumps(history.to_dict(), indent=2))
        else:
            _print_history(history)
        return
    if as_json:
        print(json.dumps({"jobs": jobs, "deliveries": deliveries,
                          "workers": [worker.to_dict() for worker in workers],
                          "events": [event.to_dict() for event in latest]}, indent=2))
        return
    counts = Table("jobs", "count", title="Jobs by state")
    for state, count in jobs.items():
        counts.add_row(state, str(count))
    console.print(counts)
    sent = Table("deliveries", "count", title="Deliveries by state")
    for state, count in deliveries.items():
        sent.add_row(state, str(count))
    console.print(sent)
    console.print(_workers_table(workers))
    console.print(_events_table(latest, title=f"Latest {len(latest)} events"))


def _database_failure(message: str, as_json: bool) -> typer.Exit:
    """Say why the database cannot be read (as JSON on standard output for scripts); exit 2."""
    if as_json:
        print(json.dumps({"error": message}, indent=2))
    else:
        Console(stderr=True).print(message, style="red", markup=False, soft_wrap=True)
    return typer.Exit(code=2)


def _workers_table(workers: list[WorkerHealth]) -> Table:
    table = Table("worker", "state", "since (UTC)", "job", "restarts", "last error", title="Workers seen today")
    for worker in workers:
        state = worker.state.value if worker.healthy else f"[bold red]{worker.state.value}[/]"
        table.add_row(
            escape(worker.worker_id), state, worker.state_since.strftime("%Y-%m-%d %H:%M:%S"),
            "" if worker.job_id is None else str(worker.job_id), str(worker.restarts),
            escape(worker.last_error or ""),
        )
    return table


def _events_table(records: list[EventRecord], title: str) -> Table:
    table = Table("at (UTC)", "event", "SOP Instance UID", "message", title=title)
    for record in records:
        table.add_row(
            record.at.strftime("%Y-%m-%d %H:%M:%S"),
            record.kind,
            escape(record.sop_instance_uid or ""),
            escape(record.message),
        )
    return table


def _print_history(history: InstanceHistory) -> None:
    """Print an ``InstanceHistory``: the instance, its jobs, results, deliveries and events."""
    record = history.instance
    if record is not None:
        # Plain lines, not a table: a table narrower than a UID would wrap it mid-number.
        console.print(f"[bold]Image {history.sop_instance_uid}[/bold]", highlight=False)
        for key, value in record.to_dict().items():
            console.print(f"  {key}: {escape('' if value is None else str(value))}", highlight=False,
                          soft_wrap=True)
    jobs = Table("job", "state", "pipeline", "rule", "skip reason", "attempts", "error", title="Jobs")
    for job in history.jobs:
        jobs.add_row(
            str(job.id), job.state, job.pipeline or "", escape(job.route_rule or ""),
            escape(" ".join(filter(None, [job.skip_reason, job.skip_detail]))),
            f"{job.attempts}/{job.max_attempts}", escape(job.error or ""),
        )
    console.print(jobs)
    if history.results:
        answers = Table("result", "pipeline", "model", "answer", "T-score", title="Results")
        for result in history.results:
            answer = result.category if result.evaluable else f"not evaluable: {result.reason}"
            answers.add_row(
                str(result.id), result.pipeline,
                escape(f"{result.model_name or ''} {result.model_version or ''}".strip()),
                escape(answer or ""), _number(result.t_score, 1),
            )
        console.print(answers)
    if history.deliveries:
        sent = Table("delivery", "destination", "state", "attempts", "last error", title="Deliveries")
        for delivery in history.deliveries:
            sent.add_row(str(delivery.id), escape(delivery.destination), delivery.state,
                         str(delivery.attempts), escape(delivery.last_error or ""))
        console.print(sent)
    console.print(_events_table(history.events, title="History"))


def _open_database(config: NodeConfig) -> Database:
    """The node's existing database, or exit 2 with the reason (nothing is created)."""
    from osteonode.store.db import Database, DatabaseError

    try:
        return Database.open_existing(config.database.url)
    except DatabaseError as error:
        raise _database_failure(str(error), as_json=False) from None


@deliveries_app.command("list")
def deliveries_list(
    config: ConfigOption = None,
    state: Annotated[
        list[str] | None,
        typer.Option("--state", help="Only this state (pending, sending, failed, unconfirmed, sent, dead, maybe_sent); repeatable."),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """List deliveries: destination, state, attempts, next attempt and the destination's last answer."""
    from osteonode.store.deliveries import list_deliveries
    from osteonode.store.tables import DeliveryState

    known = {member.value for member in DeliveryState}
    unknown = sorted(set(state or ()) - known)
    if unknown:
        Console(stderr=True).print(
            f"unknown state {', '.join(unknown)}; use {', '.join(sorted(known))}", style="red", markup=False
        )
        raise typer.Exit(code=2)
    database = _open_database(_load(config))
    try:
        with database.session() as session:
            rows = list_deliveries(session, states=state or None)
    finally:
        database.dispose()
    if as_json:
        print(json.dumps([row.to_dict() for row in rows], indent=2))
        return
    table = Table("id", "destination", "state", "tries", "object", "source image", "next attempt (UTC)",
                  "last answer", title=f"{len(rows)} deliveries")
    for row in rows:
        table.add_row(
            str(row.id), escape(row.destination), row.state, str(row.attempts),
            _object_kind(row.object_class_uid), escape(row.source_uid),
            row.next_attempt_at.strftime("%Y-%m-%d %H:%M:%S") if row.next_attempt_at else "",
            escape(row.last_error or ""),
        )
    console.print(table)


def _object_kind(sop_class_uid: str) -> str:
    from pydicom.uid import UID

    return UID(sop_class_uid).name


@deliveries_app.command("retry")
def deliveries_retry(
    delivery_id: Annotated[int | None, typer.Argument(help="The delivery to send again.", min=1)] = None,
    all_dead: Annotated[bool, typer.Option("--all-dead", help="Send every dead (and maybe_sent) delivery again.")] = False,
    config: ConfigOption = None,
) -> None:
    """Send a given-up (dead, maybe_sent) or waiting delivery again now, with a fresh budget of attempts."""
    from osteonode.store.deliveries import (
        DeliveryStateError,
        requeue_dead_deliveries,
        requeue_delivery,
    )

    if (delivery_id is None) == (not all_dead):
        Console(stderr=True).print("give a delivery ID or --all-dead", style="red")
        raise typer.Exit(code=2)
    database = _open_database(_load(config))
    try:
        with database.session() as session:
            if all_dead:
                ids = [delivery.id for delivery in requeue_dead_deliveries(session)]
            else:
                ids = [requeue_delivery(session, delivery_id).id]
    except (LookupError, DeliveryStateError) as error:
        Console(stderr=True).print(str(error), style="red", markup=False)
        raise typer.Exit(code=1) from None
    finally:
        database.dispose()
    console.print(f"{len(ids)} deliveries queued again" + (f": {', '.join(map(str, ids))}" if ids else ""))


@deliveries_app.command("purge")
def deliveries_purge(
    sent_older_than: Annotated[
        float | None,
        typer.Option("--sent-older-than", min=0.0, metavar="DAYS",
                     help="Remove deliveries sent more than DAYS ago (default: [storage] retention_days)."),
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Remove old sent deliveries and their report files (their events stay in each image's history)."""
    from datetime import timedelta

    from osteonode.store.deliveries import purge_sent_deliveries
    from osteonode.store.spool import Spool

    settings = _load(config)
    days = settings.storage.retention_days if sent_older_than is None else sent_older_than
    database = _open_database(settings)
    try:
        with database.session() as session:
            report = purge_sent_deliveries(session, Spool(settings.storage.spool_dir), timedelta(days=days))
    finally:
        database.dispose()
    console.print(
        f"removed {report.deliveries} sent deliveries and {report.deleted_files} files"
        f" ({report.freed_bytes / 1e6:.1f} MB)"
    )


def _validate_error(message: str) -> typer.Exit:
    """Print a validate failure on stderr and return the exit to raise."""
    Console(stderr=True).print(f"validate: {message}", style="red", markup=False, highlight=False, soft_wrap=True)
    return typer.Exit(code=2)


@app.command("validate")
def validate(
    out: Annotated[
        Path, typer.Option("--out", help="Folder for metrics.json and report.html (created if missing).", file_okay=False)
    ],
    predictions: Annotated[
        Path | None, typer.Option("--predictions", help="Predictions CSV to compute the report from.", dir_okay=False)
    ] = None,
    cohort: Annotated[
        Path | None, typer.Option("--cohort", help="Cohort CSV (files + DXA truth) to run a pipeline over.", dir_okay=False)
    ] = None,
    pipeline: Annotated[
        str | None, typer.Option("--pipeline", help="Pipeline to run over --cohort: lumbar, chest or hip.")
    ] = None,
    positive: Annotated[
        str | None,
        typer.Option(
            "--positive",
            help="Analyse this class against the rest: normal, low_bone_mass or osteoporosis (default: the three"
            " WHO classes; osteoporosis vs not when the file uses not_osteoporosis).",
        ),
    ] = None,
    bootstrap: Annotated[
        int, typer.Option("--bootstrap", min=1, help="Bootstrap resamples for AUC intervals and the regression band.")
    ] = 1000,
    seed: Annotated[int, typer.Option("--seed", min=0, help="Bootstrap seed; the same seed gives the same report.")] = 0,
    workers: Annotated[int, typer.Option("--workers", min=1, help="Parallel processes for --cohort.")] = 2,
    config: ConfigOption = None,
) -> None:
    """Run a pipeline over a cohort (or read a predictions file) and write metrics.json and report.html."""
    from osteonode.bone import WHO_CATEGORIES, Category
    from osteonode.evaluate.predictions import PredictionsError
    from osteonode.evaluate.report import ValidationSettings, validate_predictions_file

    if (predictions is None) == (cohort is None):
        raise _validate_error("give either --predictions FILE or --cohort FILE --pipeline NAME")
    if cohort is not None:
        node_config = _load(config)
        if pipeline not in node_config.pipelines:
            known = ", ".join(node_config.pipelines)
            raise _validate_error(f"--cohort needs --pipeline NAME, one of the configured pipelines: {known}")
        from osteonode.evaluate.cohort import CohortError, run_cohort

        try:
            predictions = run_cohort(cohort, pipeline, out, node_config, workers=workers)
        except (CohortError, ConfigError) as error:  # ConfigError: an unusable reference file
            raise _validate_error(str(error)) from None
    elif pipeline is not None:
        raise _validate_error("--pipeline goes with --cohort; a predictions file is already the pipeline's output")
    if positive is not None and positive not in {category.value for category in WHO_CATEGORIES}:
        raise _validate_error(f"--positive {positive!r} is not one of normal, low_bone_mass, osteoporosis")
    settings = ValidationSettings(
        positive=None if positive is None else Category(positive), n_resamples=bootstrap, seed=seed
    )
    try:
        files = validate_predictions_file(predictions, out, settings)
    except (PredictionsError, ValueError, OSError) as error:
        raise _validate_error(str(error)) from None
    for line in files.summary:
        console.print(line, highlight=False, markup=False, soft_wrap=True)
    console.print(f"wrote {escape(str(files.metrics))} and {escape(str(files.html))}", highlight=False)


if __name__ == "__main__":
    app()
