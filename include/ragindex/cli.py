"""The ``ragindex`` command: build, search, ingest into a registry, and inspect versions."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn, Sequence

from ragindex.errors import RagindexError
from ragindex.names import DEFAULT_NAMES, PRODUCTION
from ragindex.settings import (
    DEFAULT_EMBEDDING_BACKEND,
    DEFAULT_MODEL,
    DOC_TYPES,
    EMBEDDING_BACKENDS,
    RETRIEVAL_MODES,
    BuildSettings,
    ChunkingSettings,
    CorpusLimits,
    DocumentLimits,
    GateSettings,
    IndexSettings,
)

REGISTRY_HELP = ("registry URI: wandb://ENTITY/PROJECT or a folder (default: $RAGINDEX_REGISTRY, "
                 "else $RAGINDEX_HOME/registry)")


def _print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=1, sort_keys=True, default=str))


def add_build_settings(parser: argparse.ArgumentParser) -> None:
    """The settings shared by ``build`` and ``ingest``."""
    chunking, index = ChunkingSettings(), IndexSettings()
    parser.add_argument("--chunk-size", type=int, default=chunking.chunk_size)
    parser.add_argument("--chunk-overlap", type=int, default=chunking.chunk_overlap)
    parser.add_argument("--splitter", default=chunking.splitter,
                        help="recursive (default) or markdown (split on headers first)")
    parser.add_argument("--model", default=DEFAULT_MODEL, help="embedding model: a local folder or a name (default: %(default)s)")
    parser.add_argument("--embedding-backend", default=DEFAULT_EMBEDDING_BACKEND, choices=EMBEDDING_BACKENDS,
                        help="how vectors are computed (default: %(default)s; a change re-embeds everything)")
    parser.add_argument("--index-kind", default=index.kind, help="flat (exact, default) or hnsw (large corpora)")
    documents, corpus = DocumentLimits(), CorpusLimits()
    parser.add_argument("--max-document-chars", type=int, default=documents.max_chars,
                        help="refuse a document with more text (default: %(default)s)")
    parser.add_argument("--max-document-chunks", type=int, default=documents.max_chunks,
                        help="refuse a document that makes more chunks (default: %(default)s)")
    parser.add_argument("--max-documents", type=int, default=corpus.max_documents,
                        help="stop when the corpus has more documents (default: %(default)s)")
    parser.add_argument("--max-corpus-chars", type=int, default=corpus.max_chars,
                        help="stop before embedding when the corpus has more text (default: %(default)s)")
    parser.add_argument("--as-of", default=None, help="keep only documents modified at or before this ISO date-time")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def settings_from_args(args: argparse.Namespace) -> BuildSettings:
    """Validated settings; a bad value raises SettingsError naming it."""
    from dataclasses import replace

    return BuildSettings(
        chunking=ChunkingSettings(args.chunk_size, args.chunk_overlap, args.splitter),
        index=IndexSettings(kind=args.index_kind),
        model=args.model,
        embedding_backend=args.embedding_backend,
        documents=replace(DocumentLimits(), max_chars=args.max_document_chars, max_chunks=args.max_document_chunks),
        corpus=replace(CorpusLimits(), max_documents=args.max_documents, max_chars=args.max_corpus_chars),
    )


def cmd_build(args: argparse.Namespace) -> int:
    """Build an index folder from a corpus, reusing embeddings of ``--previous``."""
    from ragindex.pipeline import build

    result = build(args.source, Path(args.out), settings_from_args(args),
                   previous=Path(args.previous) if args.previous else None, as_of=args.as_of)
    if args.json:
        _print_json(result.to_json())
    else:
        print(f"built {result.out}: {result.documents} documents ({result.parsed} parsed, {result.documents_reused} "
              f"unchanged), {result.chunks} chunks ({result.embedded} embedded, {result.reused} reused) "
              f"in {result.seconds:.1f} s")
        for f in result.failed + result.refused:
            print(f"  skipped {f['path']}: {f['reason']}")
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    """Top-k hits for a question, from an index folder or a registry ref."""
    from ragindex.chunking import section_label
    from ragindex.retrieval import Retriever

    retriever = Retriever.open(args.index, getattr(args, "registry", None))
    filters = {"source_prefix": args.source_prefix or (), "doc_type": args.doc_type or ()}
    hits = retriever.search(args.question, k=args.k, mode=args.mode, filters=filters, per_source=args.per_source)
    if args.json:
        _print_json([h.to_json() for h in hits])
        return 0
    if retriever.ref:
        print(f"# {retriever.ref} ({args.mode or retriever.mode})")
    for rank, h in enumerate(hits, 1):
        where = f"{h.source}" + (f" p.{h.page}" if h.page else "")
        where += f" § {section_label(h.section)}" if h.section else ""
        snippet = " ".join(h.text.split())[:160]
        print(f"{rank}. [{h.score:.3f}] {where}\n   {snippet}")
    return 0


def _registry(args: argparse.Namespace, *, create: bool = False):
    """The registry of ``--registry``; only writers of new versions (ingest) may create a local one."""
    from ragindex.registry import open_registry

    return open_registry(getattr(args, "registry", None), create=create)


def _actor(args: argparse.Namespace) -> str:
    """Who acts: ``--actor``, else the user at this host."""
    from ragindex.registry.rules import default_actor

    return args.actor or default_actor()


def cmd_ingest(args: argparse.Namespace) -> int:
    """snapshot → log raw → chunk → log chunks → embed (cache from the newest index) → index → log index."""
    from ragindex.context import CLI, IngestContext, new_pipeline_run_id
    from ragindex.ingest import ingest
    from ragindex.names import snapshot_alias

    registry = _registry(args, create=True)
    run_id = args.run_id or new_pipeline_run_id()
    aliases = tuple(a for a in [snapshot_alias(args.logical_date)] if a)
    ctx = IngestContext(registry, run_id, settings_from_args(args), source=args.source, as_of=args.as_of,
                        logical_date=args.logical_date, aliases=aliases, run_type=CLI)
    result = ingest(ctx) | {"registry": registry.uri, "pipeline_run_id": run_id}
    if args.json:
        _print_json(result)
    elif result["unchanged"]:
        print(result["message"])
    else:
        print(f"raw {result['raw']} -> chunks {result['chunks']} -> index {result['index']} "
              f"({result['embedded']} embedded, {result['reused']} reused) in {registry.uri}")
    return 0


def _version_json(v, standing=None) -> dict[str, Any]:
    review = standing.review if standing else None
    return {"ref": v.ref, "version": v.version, "digest": v.digest, "aliases": list(v.aliases),
            "created_at": v.created_at, "metadata": v.metadata, "consumed": list(v.consumed), "url": v.url,
            "review": review.to_json() if review else None,
            "standing": {"label": standing.label, "eligible": standing.eligible, "text": standing.words()}
            if standing else None}


def _standing_mark(standing) -> str:
    """Where a version stands (its latest review, a forced move, an override), as a listing shows it."""
    if standing is None or (standing.review is None and standing.forced_in is None):
        return ""
    flag = "FORCED IN " if standing.label == "forced in" else "REJECTED " if standing.rejected else ""
    return flag + standing.words()


def cmd_sync(args: argparse.Namespace) -> int:
    """Replay one registry into another: versions (files, digests, lineage), aliases, decisions, history."""
    from ragindex.registry import open_registry
    from ragindex.sync import sync

    report = sync(open_registry(args.source, create=False), open_registry(args.target, create=True),
                  names=args.names or None)
    if args.json:
        _print_json(report.to_json())
    else:
        print(f"{report.source} -> {report.target}: {len(report.copied)} versions copied, {len(report.present)} "
              f"already there; {report.decisions_copied} decisions and {report.moves_copied} alias moves copied "
              f"({report.decisions_present} and {report.moves_present} already there)")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    """Serve /search for the version behind an alias, following it when it moves."""
    from ragindex.serve import serve

    serve(args.registry, name=args.name, alias=args.alias, host=args.host, port=args.port, poll_s=args.poll_seconds,
          trace_log=args.trace_log, log_questions=args.log_questions, canary=args.canary)
    return 0


def cmd_init(args: argparse.Namespace) -> int:
    """Create a registry: a local folder's catalogue, or a W&B project (never created implicitly)."""
    registry = _registry(args, create=True)
    create = getattr(registry, "create_project", None)
    if callable(create):
        create()
    check = getattr(registry, "check_registry", None)  # a W&B Registry to link production into, if configured
    warnings = check() if callable(check) else []
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(f"registry ready: {registry.uri}")
    if getattr(registry, "registry_name", None):
        print(f"promotions also link production into {registry.registry_path('NAME')} (NAME: rag-release, "
              "vector-index)")
    return 0


def cmd_versions(args: argparse.Namespace) -> int:
    """List an artifact's versions, newest last, with the latest review decision of each."""
    from ragindex.standing import standings_from

    registry = _registry(args)
    versions = registry.versions(args.name)
    if not versions:
        raise RagindexError(f"artifact {args.name!r}: no versions in this registry")
    known = standings_from(versions, registry.decisions(args.name))
    if args.json:
        _print_json([_version_json(v, known.get(v.ref)) for v in versions])
        return 0
    for v in versions:
        mark = _standing_mark(known.get(v.ref))
        print(f"{v.ref:28} {v.digest[:12]}  {v.created_at[:19]}  {','.join(v.aliases):34}  {mark}".rstrip())
    return 0


def cmd_decisions(args: argparse.Namespace) -> int:
    """Every decision on record for an artifact's versions (reviews, staging, promotions, rollbacks)."""
    from ragindex.review import describe

    decisions = _registry(args).decisions(args.name)
    if args.json:
        _print_json([d.to_json() for d in decisions])
        return 0
    if not decisions:
        print(f"no decisions on record for {args.name}")
    for d in decisions:
        moves = ", ".join(f"{m.name}:{m.alias} {m.from_version or '—'} → {m.to_version or '—'}" for m in d.moves)
        run = f" [run {d.pipeline_run}]" if d.pipeline_run else ""
        print(f"{d.at[:19]}  {d.kind:8} {d.ref:22} {describe(d)}{run}" + (f"  ({moves})" if moves else ""))
    return 0


def cmd_lineage(args: argparse.Namespace) -> int:
    """Print the upstream graph of a version."""
    registry = _registry(args)
    graph = registry.lineage(args.ref)
    if args.json:
        _print_json(graph)
        return 0
    parents: dict[str, list[str]] = {}
    for src, dst in graph["edges"]:
        parents.setdefault(dst, []).append(src)

    from ragindex.standing import standings

    known = {ref: st for name in {n.get("name") for n in graph["nodes"].values()} if name
             for ref, st in standings(registry, name).items()}

    def show(ref: str, depth: int) -> None:
        node = graph["nodes"].get(ref, {})
        mark = _standing_mark(known.get(ref))
        print("  " * depth + f"{ref}  [{node.get('type', '?')}] {','.join(node.get('aliases', []))}"
              + (f"  {mark}" if mark else ""))
        for parent in sorted(parents.get(ref, [])):
            show(parent, depth + 1)

    show(graph["root"], 0)
    return 0


def cmd_alias(args: argparse.Namespace) -> int:
    """Move an alias onto a version (exclusive within the artifact name); not a governance alias."""
    version = _registry(args).set_alias(args.ref, args.alias, actor=_actor(args), reason=args.reason)
    print(f"{args.alias} -> {version.ref}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Score an index version on a question set (both versioned) against production, log eval-report."""
    from ragindex.context import CLI, IngestContext, new_pipeline_run_id
    from ragindex.gate import evaluate_index

    from ragindex.gate import evaluate_release
    from ragindex.promotion import is_release

    registry = _registry(args)
    ctx = IngestContext(registry, args.run_id or new_pipeline_run_id(), run_type=CLI)
    gate = GateSettings(k=args.k, min_recall=args.min_recall, max_regression=args.max_regression)
    if is_release(registry.get(args.ref)):  # its own eval set and k; the prompt rendered within budget
        outcome = evaluate_release(ctx, args.ref, gate)
    elif not args.questions:
        raise RagindexError(f"evaluate {args.ref}: --questions FILE is required for an index version")
    else:
        outcome = evaluate_index(ctx, args.ref, Path(args.questions), gate)
    if args.json:
        _print_json(outcome.to_json())
    else:
        print(f"{outcome.report}: recall@{args.k} {outcome.candidate['recall_at_k']:.3f}, MRR "
              f"{outcome.candidate['mrr']:.3f}; gate {'passed' if outcome.passed else 'FAILED'}: {outcome.reason}")
        for warning in outcome.warnings:
            print(f"  data gate: {warning}")
    return 0 if outcome.passed else 1


def cmd_approve(args: argparse.Namespace) -> int:
    """Approve an evaluated index version (the review decision on record) and promote it to production."""
    from ragindex.promotion import approve

    outcome = approve(_registry(args), args.ref, actor=_actor(args), reason=args.reason)
    print(f"production -> {outcome['promoted']}" + ("" if outcome["changed"] else " (already)"))
    return 0


def cmd_reject(args: argparse.Namespace) -> int:
    """Reject an index version: the decision on record (as the DAG's review records it), staging taken off."""
    from ragindex.review import REJECTED, describe, record_review

    if not args.reason.strip():
        raise RagindexError("reject: --reason is required (it is what the next reviewer reads)")
    decision = record_review(_registry(args), args.ref, REJECTED, actor=_actor(args), reason=args.reason)
    print(f"{decision.ref}: {describe(decision)}")
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    """Move production back to a version that held it before (or, forced with a reason, to another)."""
    from ragindex.rollback import rollback

    outcome = rollback(_registry(args), to_version=args.to_version, reason=args.reason, actor=_actor(args),
                       force=args.force, name=args.name)
    if args.json:
        _print_json(outcome)
    elif not outcome["changed"]:
        print(f"production: already {outcome['to']}")
    else:
        print(f"production: {outcome['from']} -> {outcome['to']} (digest {outcome['digest'][:12]})"
              + (" — forced" if outcome["forced"] else ""))
    return 0


@dataclass(frozen=True)
class _Shared:
    """Option groups several subcommands take (argparse ``parents``), written once."""

    registry: argparse.ArgumentParser
    as_json: argparse.ArgumentParser
    actor: argparse.ArgumentParser


def _shared_options() -> _Shared:
    """--registry, --json, and --actor/--reason for the audit trail."""
    registry = argparse.ArgumentParser(add_help=False)
    registry.add_argument("--registry", default=None, help=REGISTRY_HELP)
    as_json = argparse.ArgumentParser(add_help=False)
    as_json.add_argument("--json", action="store_true", help="print one JSON object")
    actor = argparse.ArgumentParser(add_help=False)
    actor.add_argument("--actor", default=None, help="who acts, for the audit trail (default: user@host)")
    actor.add_argument("--reason", default="", help="why, for the audit trail")
    return _Shared(registry, as_json, actor)


def build_parser() -> argparse.ArgumentParser:
    """All subcommands; each maps to one function."""
    parser = argparse.ArgumentParser(prog="ragindex", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")
    sub = parser.add_subparsers(dest="command", required=True)
    shared = _shared_options()
    _add_data_commands(sub, shared)
    _add_registry_commands(sub, shared)
    _add_governance_commands(sub, shared)
    from ragindex.cli_release import add_release_commands  # prompt log, release create|show|diff

    add_release_commands(sub, shared)
    return parser


def _add_data_commands(sub: Any, shared: _Shared) -> None:
    """Commands that build, ingest, query and serve indexes."""
    registry, as_json = shared.registry, shared.as_json
    gate = GateSettings()
    p = sub.add_parser("build", help="build an index folder from a corpus")
    p.add_argument("source", help="corpus folder or fsspec URL (file://, s3://, gs://, ...)")
    p.add_argument("--out", required=True, help="index folder to write (replaced atomically)")
    p.add_argument("--previous", help="an earlier index folder whose embeddings are reused")
    add_build_settings(p)
    p.set_defaults(func=cmd_build)

    p = sub.add_parser("search", parents=[registry, as_json],
                       help="query an index folder or a registry ref (e.g. vector-index:production)")
    p.add_argument("index")
    p.add_argument("question")
    p.add_argument("-k", type=int, default=gate.k)
    p.add_argument("--mode", choices=RETRIEVAL_MODES, default=None,
                   help="dense, sparse (BM25) or hybrid (both, fused); default: the mode the index was built with")
    p.add_argument("--source-prefix", action="append", metavar="PREFIX",
                   help="only chunks whose source path starts with PREFIX (e.g. policies/); repeat for several")
    p.add_argument("--doc-type", action="append", choices=DOC_TYPES,
                   help="only chunks of this document type; repeat for several")
    p.add_argument("--per-source", type=int, default=None, metavar="N",
                   help="at most N hits from one document (e.g. 1: k distinct documents, for citations)")
    p.set_defaults(func=cmd_search)

    p = sub.add_parser("ingest", parents=[registry], help="run the versioned pipeline into a registry (no Airflow needed)")
    p.add_argument("source")
    p.add_argument("--run-id", default=None, help="pipeline run id (default: generated)")
    p.add_argument("--logical-date", default=None, help="date the versions are tagged with (snapshot-YYYY-MM-DD)")
    add_build_settings(p)
    p.set_defaults(func=cmd_ingest)

    p = sub.add_parser("serve", parents=[registry],
                       help="HTTP /search for the version behind an alias (default production), following it")
    p.add_argument("--name", default=None,
                   help="what to follow: rag-release (index, prompt and settings as one; the default once a release "
                        "holds the alias) or vector-index")
    p.add_argument("--alias", default=PRODUCTION)
    p.add_argument("--trace-log", default=None,
                   help="JSON-lines log of every answer (default $RAGINDEX_HOME/traces/serve-PORT.jsonl; rotates)")
    p.add_argument("--canary", default=None, metavar="ALIAS:PERCENT",
                   help="answer PERCENT of requests (by a hash of their key, else trace id) from ALIAS, e.g. staging:10")
    p.add_argument("--log-questions", action="store_true",
                   help="keep each question's text (PII masked) in the trace log; default: its hash and length only")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--poll-seconds", type=float, default=None,
                   help="how often the alias is checked (default 0.5 on a local registry, 5 on W&B; /refresh: now)")
    p.set_defaults(func=cmd_serve)


def _add_registry_commands(sub: Any, shared: _Shared) -> None:
    """Commands that create, copy and read a registry."""
    registry, as_json = shared.registry, shared.as_json
    p = sub.add_parser("sync", parents=[as_json],
                       help="copy every version, alias and decision of one registry into another (e.g. local -> W&B)")
    p.add_argument("--from", dest="source", required=True, help="the registry to read (URI or folder)")
    p.add_argument("--to", dest="target", required=True, help="the registry to write (URI or folder)")
    p.add_argument("--names", nargs="*", default=None, help="artifact names (default: every name the source has)")
    p.set_defaults(func=cmd_sync)

    p = sub.add_parser("init", parents=[registry], help="create a registry (a local catalogue or a W&B project)")
    p.set_defaults(func=cmd_init)

    p = sub.add_parser("versions", parents=[registry, as_json], help="list an artifact's versions")
    p.add_argument("name")
    p.set_defaults(func=cmd_versions)

    p = sub.add_parser("lineage", parents=[registry, as_json], help="show the upstream graph of a version")
    p.add_argument("ref")
    p.set_defaults(func=cmd_lineage)

    p = sub.add_parser("decisions", parents=[registry, as_json],
                       help="every decision on record for an artifact (reviews, staging, promotions, rollbacks)")
    p.add_argument("name", nargs="?", default=DEFAULT_NAMES.index)
    p.set_defaults(func=cmd_decisions)


def _add_governance_commands(sub: Any, shared: _Shared) -> None:
    """Commands that evaluate, decide on and move versions (each on record)."""
    registry, as_json, actor = shared.registry, shared.as_json, shared.actor
    gate = GateSettings()
    p = sub.add_parser("alias", parents=[registry, actor], help="move an alias onto a version")
    p.add_argument("ref")
    p.add_argument("alias")
    p.set_defaults(func=cmd_alias)

    p = sub.add_parser("evaluate", parents=[registry, as_json],
                       help="score an index version on a question set; log eval-report (exit 1: gate failed)")
    p.add_argument("ref", help="e.g. vector-index:latest, or rag-release:latest (scored with its own settings)")
    p.add_argument("--questions", default=None,
                   help="JSON-lines file of {question, expected_source} (an index; a release names its own)")
    p.add_argument("-k", type=int, default=gate.k)
    p.add_argument("--min-recall", type=float, default=gate.min_recall)
    p.add_argument("--max-regression", type=float, default=gate.max_regression)
    p.add_argument("--run-id", default=None)
    p.set_defaults(func=cmd_evaluate)

    for command in ("approve", "promote"):
        p = sub.add_parser(command, parents=[registry, actor],
                           help="approve an evaluated index version (on record) and move production to it")
        p.add_argument("ref")
        p.set_defaults(func=cmd_approve)

    p = sub.add_parser("reject", parents=[registry, actor], help="reject an index version (on record, with --reason)")
    p.add_argument("ref")
    p.set_defaults(func=cmd_reject)

    p = sub.add_parser("rollback", parents=[registry, actor, as_json],
                       help="move production back (default: to the previous holder)")
    p.add_argument("--to-version", default=None, help="e.g. v3 or vector-index:v3 (an approved version)")
    p.add_argument("--name", default=None,
                   help="what to roll back: rag-release (with its index and prompt; the default once a release "
                        "serves) or vector-index")
    p.add_argument("--force", action="store_true",
                   help="allow a version that never held production or was rejected since (needs --reason; recorded as forced)")
    p.set_defaults(func=cmd_rollback)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; expected errors become one line on stderr and exit code 2."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except RagindexError as exc:
        print(f"ragindex {args.command}: error: {exc}", file=sys.stderr)
        return 2


def run() -> NoReturn:
    """The console script: ``main``, then an exit that skips freeing the process (``ragindex.quick_exit``);
    an unexpected exception (and argparse's own exit) still ends the process the normal way."""
    from ragindex.quick_exit import quick_exit

    quick_exit(main())


if __name__ == "__main__":  # `python -m ragindex.cli` exits normally, so a wrapping profiler still gets its turn
    sys.exit(main())
