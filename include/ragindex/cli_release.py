"""The ``ragindex prompt`` and ``ragindex release`` commands: log a prompt folder, assemble, show and compare
releases. Registered by ``cli.build_parser`` (``add_release_commands``); same conventions as the rest of
the CLI (``--registry``, ``--json``, an expected error is one line)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ragindex.errors import RagindexError
from ragindex.names import DEFAULT_NAMES

RUN_PREFIX = "cli"


def _run(job_type: str, **config: Any):
    """A run of its own for one CLI step (a W&B run of ``job_type``), grouped under a fresh pipeline run id."""
    from ragindex.context import new_pipeline_run_id
    from ragindex.registry import RunInfo

    group = new_pipeline_run_id(RUN_PREFIX)
    return RunInfo(job_type=job_type, group=group, run_id=f"{job_type}-{group}", name=f"{group}/{job_type}",
                   config={"run_type": "cli", **config})


def _questions(registry, given: str | None) -> tuple[list[Any], str]:
    """The questions a budget check renders: a file, a registry ref (``eval-questions:v0``), else the sample set."""
    from ragindex.evaluation import load_questions
    from ragindex.prompts import SAMPLE_QUESTIONS

    if given is None:
        if not SAMPLE_QUESTIONS.is_file():
            raise RagindexError(f"no eval questions: give --questions FILE or REF ({SAMPLE_QUESTIONS} is absent)")
        return load_questions(SAMPLE_QUESTIONS), str(SAMPLE_QUESTIONS)
    if Path(given).exists() or ":" not in given:
        return load_questions(Path(given)), given
    version = registry.get(given)
    return load_questions(registry.download(version.ref)), version.ref


def cmd_prompt_log(args: argparse.Namespace) -> int:
    """Check a prompt folder (parse, variables, budget) and log it as ``prompt-template:vN``."""
    from ragindex.cli import _print_json, _registry
    from ragindex.prompts import check_budget, index_retriever, load_prompt, log_prompt, placeholder_retriever

    if args.chunk_chars < 1:
        raise RagindexError(f"--chunk-chars {args.chunk_chars}: must be at least 1")
    prompt = load_prompt(Path(args.folder))  # a bad folder fails before any registry is opened
    registry = _registry(args, create=True)
    questions, origin = _questions(registry, args.questions)
    if args.index:
        index = registry.get(args.index)
        retrieve, retrieval = index_retriever(registry.download(index.ref), index.ref), index.ref
    else:
        retrieve, retrieval = placeholder_retriever(args.chunk_chars), f"placeholder ({args.chunk_chars} characters)"
    budget = check_budget(prompt, questions, retrieve, args.k, retrieval=retrieval)
    result = log_prompt(registry, prompt, budget,
                        run=_run("log_prompt", folder=str(prompt.folder), questions=origin, k=args.k))
    if args.json:
        _print_json({"ref": result.ref, "created": result.created, "digest": result.digest, "budget": result.budget})
    else:
        print(f"{result.ref}" + ("" if result.created else " (unchanged: that version already)")
              + f"; largest prompt {budget.max_chars} of {budget.budget} characters over {len(budget.sizes)} "
              f"question(s), k={budget.k}, hits from {retrieval}")
    return 0


def cmd_release_create(args: argparse.Namespace) -> int:
    """Assemble a release from an index, a prompt and an eval set, with its settings, and log it."""
    from ragindex.cli import _print_json, _registry
    from ragindex.release import assemble_release, log_release, parse_overrides

    overrides = parse_overrides(args.set or [])  # a bad --set fails before any registry is read
    registry = _registry(args)
    questions = args.questions
    if questions and (Path(questions).exists() or ":" not in questions):
        questions = _log_questions_file(registry, Path(questions))
    manifest = assemble_release(registry, args.index, args.prompt, questions_ref=questions, k=args.k,
                                overrides=overrides)
    result = log_release(registry, manifest, run=_run("create_release", index=manifest.index.ref,
                                                      prompt=manifest.prompt.ref, questions=manifest.questions.ref))
    if args.json:
        _print_json({"ref": result.ref, "created": result.created, "digest": result.digest,
                     "manifest": result.manifest})
    else:
        print(f"{result.ref}" + ("" if result.created else " (unchanged: that version already)")
              + f": {manifest.index.ref} + {manifest.prompt.ref} on {manifest.questions.ref}; "
              + ", ".join(f"{g}.{k}={v}" for g, values in manifest.settings.items() for k, v in values.items()))
    return 0


def _log_questions_file(registry, path: Path) -> str:
    """A question file given to ``release create`` becomes (or is found as) an ``eval-questions`` version."""
    from ragindex.context import CLI, IngestContext, new_pipeline_run_id
    from ragindex.gate import log_eval_questions

    ctx = IngestContext(registry, new_pipeline_run_id(RUN_PREFIX), run_type=CLI)
    try:
        version, _questions = log_eval_questions(ctx, path)
    finally:
        ctx.work.remove()
    return version.ref


def cmd_release_show(args: argparse.Namespace) -> int:
    """Print a release's manifest."""
    from ragindex.cli import _print_json, _registry
    from ragindex.release import read_release

    release = read_release(_registry(args), args.ref)
    if args.json:
        _print_json({"ref": release.ref, "digest": release.digest, "manifest": release.manifest.to_json()})
        return 0
    print(f"{release.ref}  {release.digest[:12]}")
    for part, p in release.manifest.parts().items():
        print(f"  {part:10} {p.ref:28} {p.digest[:12]}")
    for group, values in release.manifest.settings.items():
        for key, value in values.items():
            print(f"  {group}.{key} = {value!r}")
    return 0


def cmd_release_diff(args: argparse.Namespace) -> int:
    """Print what changed between two releases (index documents, prompt diff, settings)."""
    from ragindex.cli import _print_json, _registry
    from ragindex.release import diff_releases

    diff = diff_releases(_registry(args), args.a, args.b)
    if args.json:
        _print_json(diff.to_json())
    else:
        print(diff.to_text())
    return 0


def cmd_at(args: argparse.Namespace) -> int:
    """What was production at a moment (a release with its index and prompt), and the decision behind it."""
    from ragindex.cli import _print_json, _registry
    from ragindex.history import parse_time, production_at
    from ragindex.review import describe

    served = production_at(_registry(args), args.name, parse_time(args.time))
    if args.json:
        _print_json(served.to_json())
        return 0
    if served.ref is None:
        print(f"{args.name}: nothing held production at {served.at}")
        return 0
    parts = "".join(f"\n  {part:9} {ref}" for part, ref in served.parts.items())
    since = f" since {served.move.at[:19]}" if served.move else ""
    decided = (f"\n  decided by {served.decision.kind} ({describe(served.decision)})"
               + (f" [run {served.decision.pipeline_run}]" if served.decision.pipeline_run else "")
               if served.decision else "")
    print(f"{served.ref} held production at {served.at}{since}{parts}{decided}")
    return 0


def cmd_trace(args: argparse.Namespace) -> int:
    """One served answer from the trace log: its release, index and prompt, and the decisions behind them."""
    from ragindex.cli import _print_json, _registry
    from ragindex.history import parse_time, production_at
    from ragindex.review import describe
    from ragindex.settings import ragindex_home
    from ragindex.tracelog import find_trace

    logs = [Path(args.log)] if args.log else sorted((ragindex_home() / "traces").glob("*.jsonl"))
    entry = next((e for e in (find_trace(path, args.trace_id) for path in logs) if e), None)
    if entry is None:
        raise RagindexError(f"trace {args.trace_id!r}: not in {', '.join(map(str, logs)) or 'any trace log'} "
                            "(give --log PATH)")
    registry = _registry(args)
    name = args.ref_name(entry)
    served = production_at(registry, name, parse_time(entry["at"])) if entry.get("arm") == "production" else None
    decision = served.decision if served and served.ref == entry["ref"] else None
    if args.json:
        _print_json({"trace": entry, "decision": decision.to_json() if decision else None})
        return 0
    print(f"trace {entry['trace_id']} at {entry['at']} ({entry.get('endpoint')}, {entry.get('arm')} arm, "
          f"{entry.get('latency_ms')} ms)")
    for part in ("release", "index", "prompt"):
        if isinstance(entry.get(part), dict):
            print(f"  {part:8} {entry[part]['ref']:28} {entry[part]['digest'][:12]}")
    if "release" not in entry:
        print(f"  index    {entry['ref']:28} {entry['digest'][:12]}")
    print("  hits     " + ", ".join(f"{h['chunk_id']} ({h['score']:.3f})" for h in entry.get("hits", [])))
    if decision is not None:
        print(f"  serving since {decision.kind} ({describe(decision)})"
              + (f" [run {decision.pipeline_run}]" if decision.pipeline_run else ""))
    return 0


def cmd_canary_report(args: argparse.Namespace) -> int:
    """Compare the arms of a canary from a trace log: requests, latency, top score, empty results, feedback."""
    from ragindex.canary import report
    from ragindex.cli import _print_json
    from ragindex.tracelog import read_entries

    if not Path(args.log).exists():
        raise RagindexError(f"canary report {args.log}: no such trace log")
    arms = report(read_entries(Path(args.log)))
    run_url = _log_canary_report(args, arms) if args.log_to_wandb else None
    if args.json:
        _print_json({**arms, "wandb_run": run_url} if run_url else arms)
        return 0
    fmt = lambda v, spec: "—" if v is None else format(v, spec)  # noqa: E731
    print(f"{'arm':11} {'requests':>8} {'p50 ms':>8} {'p99 ms':>8} {'top score':>9} {'empty':>6} {'rated':>6} "
          f"{'rating':>7}  releases")
    for arm, f in arms.items():
        print(f"{arm:11} {f['requests']:8d} {fmt(f['p50_ms'], '8.1f')} {fmt(f['p99_ms'], '8.1f')} "
              f"{fmt(f['mean_top_score'], '9.3f')} {f['empty_share']:6.1%} {f['feedback_rate']:6.1%} "
              f"{fmt(f['mean_rating'], '7.2f')}  {', '.join(r for r in f['releases'] if r)}")
    if run_url:
        print(f"logged to W&B: {run_url}")
    return 0


def _log_canary_report(args: argparse.Namespace, arms: dict[str, Any]) -> str:
    """Log the report to the W&B registry of ``--registry`` (one run per content of the log)."""
    import hashlib

    from ragindex.canary import log_report
    from ragindex.cli import _registry

    digest = hashlib.sha256(Path(args.log).read_bytes()).hexdigest()
    return log_report(_registry(args), arms, log_digest=digest, log_name=Path(args.log).name)


def _traced_name(entry: dict[str, Any]) -> str:
    """The artifact name an answer was served from."""
    return str(entry["ref"]).partition(":")[0]


def add_release_commands(sub: Any, shared: Any) -> None:
    """``prompt log`` and ``release create|show|diff``, with the shared --registry and --json options."""
    from ragindex.settings import ChunkingSettings, GateSettings

    registry, as_json = shared.registry, shared.as_json
    prompt = sub.add_parser("prompt", help="prompt templates as versions (prompt-template:vN)")
    prompt_sub = prompt.add_subparsers(dest="prompt_command", required=True)
    p = prompt_sub.add_parser("log", parents=[registry, as_json],
                              help="check a prompt folder and log it (unchanged content: the existing version)")
    p.add_argument("folder", help="a folder with prompt.json and the templates it names")
    p.add_argument("--index", default=None,
                   help="check the budget with real hits from this index version (default: placeholder hits)")
    p.add_argument("--questions", default=None,
                   help="questions to render (a JSON-lines file or an eval-questions ref; default: the sample set)")
    p.add_argument("-k", "--k", type=int, default=GateSettings().k, help="hits per question (default: %(default)s)")
    p.add_argument("--chunk-chars", type=int, default=ChunkingSettings().chunk_size,
                   help="characters of each placeholder hit without --index (default: the chunk size, %(default)s)")
    p.set_defaults(func=cmd_prompt_log)

    release = sub.add_parser("release", help="RAG releases: an index, a prompt and an eval set, with settings")
    release_sub = release.add_subparsers(dest="release_command", required=True)
    p = release_sub.add_parser("create", parents=[registry, as_json],
                               help="assemble and log a release (the same parts and settings: the existing version)")
    p.add_argument("--index", required=True, help="e.g. vector-index:production or vector-index:v3")
    p.add_argument("--prompt", required=True, help="e.g. prompt-template:latest")
    p.add_argument("--questions", default=None,
                   help="the eval set: a ref or a JSON-lines file (default: the set the index was evaluated on, "
                        "else eval-questions:latest)")
    p.add_argument("-k", "--k", type=int, default=None, help=f"hits per question (default: {GateSettings().k})")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="a setting: retrieval.k, retrieval.mode (dense|sparse|hybrid), generation.model, "
                        "generation.temperature (the last part alone will do: mode=dense)")
    p.set_defaults(func=cmd_release_create)

    p = release_sub.add_parser("show", parents=[registry, as_json], help="print a release's manifest")
    p.add_argument("ref")
    p.set_defaults(func=cmd_release_show)

    p = sub.add_parser("trace", parents=[registry, as_json],
                       help="one served answer (by trace id): its release, index, prompt and the decisions behind them")
    p.add_argument("trace_id")
    p.add_argument("--log", default=None, help="the trace log (default: every log under $RAGINDEX_HOME/traces)")
    p.set_defaults(func=cmd_trace, ref_name=_traced_name)

    canary = sub.add_parser("canary", help="compare the arms of `ragindex serve --canary` from its trace log")
    canary_sub = canary.add_subparsers(dest="canary_command", required=True)
    p = canary_sub.add_parser("report", parents=[registry, as_json],
                              help="requests, p50/p99, top score, empty share, feedback")
    p.add_argument("log", help="the trace log of the server (--trace-log)")
    p.add_argument("--log-to-wandb", action="store_true",
                   help="also log the report as a W&B run with a table (the --registry must be wandb://…)")
    p.set_defaults(func=cmd_canary_report)

    p = sub.add_parser("at", parents=[registry, as_json],
                       help="what was production at a moment (release, index, prompt) and the decision behind it")
    p.add_argument("time", help="ISO-8601, UTC unless a zone is given (e.g. 2026-03-02T14:05)")
    p.add_argument("--name", default=DEFAULT_NAMES.release)
    p.set_defaults(func=cmd_at)

    p = release_sub.add_parser("diff", parents=[registry, as_json],
                               help="what changed between two releases: documents, prompt, settings")
    p.add_argument("a")
    p.add_argument("b")
    p.set_defaults(func=cmd_release_diff)
