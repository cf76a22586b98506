"""The release: ``rag-release:vN``, a small manifest naming the exact versions a RAG application serves (an
index, a prompt, the eval set it is judged on), each by ref and digest, plus its retrieval and generation
settings. Content-addressed: the same parts and settings are the same version. Its lineage uses the three
parts, so the W&B lineage graph shows what a release is made of.

The manifest is one file, ``release.json``, written canonically (sorted keys)::

    {"format": 1,
     "index": {"ref": "vector-index:v3", "digest": "…"},
     "prompt": {"ref": "prompt-template:v1", "digest": "…"},
     "questions": {"ref": "eval-questions:v0", "digest": "…"},
     "settings": {"retrieval": {"k": 5, "mode": "dense"},
                  "generation": {"model": "gpt-4o-mini", "temperature": 0.1}}}

Here: assemble (``assemble_release``), log (``log_release``), read (``read_release``), compare
(``diff_releases``), and what the gate and serving need of a release (``release_retriever``,
``release_questions``, ``check_release_budget``). Governance (staging, production, rollback of releases)
is not here.
"""

from __future__ import annotations

import difflib
import json
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from ragindex.errors import RagindexError, SettingsError
from ragindex.names import ARTIFACT_TYPES, DEFAULT_NAMES, ArtifactNames
from ragindex.registry import ArtifactVersion, Registry, RunInfo

RELEASE_FILE = "release.json"
FORMAT = 1
RETRIEVAL_MODES = ("dense", "sparse", "hybrid")
PARTS = ("index", "prompt", "questions")  # each a key of ArtifactNames and ARTIFACT_TYPES


class ReleaseError(RagindexError):
    """A release that cannot be assembled or read: the message names the ref, file or setting."""


# ---------------------------------------------------------------- settings

def _positive_int(value: Any) -> int:
    """A whole number of at least 1 (text or number)."""
    if isinstance(value, bool):
        raise ValueError("must be a whole number")
    number = int(value) if isinstance(value, int) else int(str(value).strip())
    if number < 1:
        raise ValueError("must be at least 1")
    return number


def _mode(value: Any) -> str:
    """One of the retrieval modes."""
    if value not in RETRIEVAL_MODES:
        raise ValueError(f"must be one of {', '.join(RETRIEVAL_MODES)}")
    return str(value)


def _temperature(value: Any) -> float:
    """A sampling temperature, 0 to 2."""
    if isinstance(value, bool):
        raise ValueError("must be a number")
    number = float(value)
    if not 0 <= number <= 2:
        raise ValueError("must be from 0 to 2")
    return number


def _name(value: Any) -> str:
    """A non-empty model name."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError("must be a non-empty name")
    return value.strip()


# Every setting a release has (dotted key -> parser that raises ValueError with the reason).
SETTINGS: dict[str, Callable[[Any], Any]] = {
    "retrieval.k": _positive_int,
    "retrieval.mode": _mode,
    "generation.model": _name,
    "generation.temperature": _temperature,
}


def setting_key(key: str) -> str:
    """The dotted key ``key`` names: itself, or the one setting whose last part it is (``k``, ``mode``)."""
    if key in SETTINGS:
        return key
    matches = [full for full in SETTINGS if full.rsplit(".", 1)[-1] == key]
    if len(matches) == 1:
        return matches[0]
    raise SettingsError(f"release setting {key!r}: unknown (known: {', '.join(SETTINGS)})")


def parse_overrides(pairs: Sequence[str]) -> dict[str, Any]:
    """``KEY=VALUE`` pairs (``--set``) checked against the schema; the error names the key and the reason."""
    overrides: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise SettingsError(f"--set {pair!r}: expected KEY=VALUE (keys: {', '.join(SETTINGS)})")
        full = setting_key(key.strip())
        if full in overrides:
            raise SettingsError(f"release setting {full!r}: given twice")
        overrides[full] = check_setting(full, value)
    return overrides


def check_setting(key: str, value: Any) -> Any:
    """One setting's value, parsed and checked, or an error naming the key."""
    try:
        return SETTINGS[key](value)
    except (TypeError, ValueError) as exc:
        raise SettingsError(f"release setting {key}={value!r}: {exc}") from None


def nest(flat: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """``{"retrieval.k": 5}`` -> ``{"retrieval": {"k": 5}}``."""
    nested: dict[str, dict[str, Any]] = {}
    for key, value in flat.items():
        group, leaf = key.split(".", 1)
        nested.setdefault(group, {})[leaf] = value
    return nested


def flatten(nested: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Inverse of ``nest``."""
    return {f"{group}.{leaf}": value for group, values in nested.items() for leaf, value in values.items()}


def release_settings(prompt_model: str, prompt_temperature: float, *, k: int | None = None,
                     overrides: Mapping[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    """The full settings: defaults (the gate's k, dense retrieval, the prompt's model and temperature), then
    ``k``, then the overrides; giving k both ways is an error rather than a silent choice."""
    from ragindex.settings import GateSettings

    overrides = dict(overrides or {})
    if k is not None and "retrieval.k" in overrides and overrides["retrieval.k"] != k:
        raise SettingsError(f"release setting retrieval.k: given twice (--k {k} and --set retrieval.k="
                            f"{overrides['retrieval.k']})")
    flat = {"retrieval.k": GateSettings().k, "retrieval.mode": "dense", "generation.model": prompt_model,
            "generation.temperature": prompt_temperature}
    if k is not None:
        flat["retrieval.k"] = k
    flat.update(overrides)
    return nest({key: check_setting(key, value) for key, value in flat.items()})


# ---------------------------------------------------------------- the manifest

@dataclass(frozen=True)
class Part:
    """One version a release names: its ref (``name:vN``) and its content digest."""

    ref: str
    digest: str


@dataclass(frozen=True)
class ReleaseManifest:
    """What ``release.json`` holds."""

    index: Part
    prompt: Part
    questions: Part
    settings: dict[str, dict[str, Any]]

    def setting(self, key: str) -> Any:
        """One setting by dotted key (``retrieval.k``)."""
        return flatten(self.settings)[setting_key(key)]

    def parts(self) -> dict[str, Part]:
        """The named versions, by part."""
        return {part: getattr(self, part) for part in PARTS}

    def to_json(self) -> dict[str, Any]:
        """The manifest body."""
        return {"format": FORMAT, **{part: asdict(p) for part, p in self.parts().items()}, "settings": self.settings}

    def to_bytes(self) -> bytes:
        """The canonical file: equal manifests are equal bytes, hence one digest, hence one version."""
        return (json.dumps(self.to_json(), indent=1, sort_keys=True) + "\n").encode("utf-8")

    @classmethod
    def from_json(cls, body: Any, where: str) -> "ReleaseManifest":
        """Parse a manifest body; ``where`` names the file in errors."""
        if not isinstance(body, dict) or body.get("format") != FORMAT:
            raise ReleaseError(f"{where}: not a release manifest of format {FORMAT}")
        try:
            parts = {part: Part(str(body[part]["ref"]), str(body[part]["digest"])) for part in PARTS}
            settings = body["settings"]
            flat = flatten(settings)
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            raise ReleaseError(f"{where}: malformed ({type(exc).__name__}: {exc})") from None
        unknown = sorted(set(flat) - set(SETTINGS))
        missing = sorted(set(SETTINGS) - set(flat))
        if unknown:
            raise ReleaseError(f"{where}: unknown setting(s) {', '.join(unknown)}")
        if missing:
            raise ReleaseError(f"{where}: missing setting(s) {', '.join(missing)}")
        try:
            checked = {key: check_setting(key, value) for key, value in flat.items()}
        except SettingsError as exc:
            raise ReleaseError(f"{where}: {exc}") from None
        return cls(**parts, settings=nest(checked))


@dataclass(frozen=True)
class Release:
    """A logged release: its version and its manifest."""

    ref: str
    digest: str
    manifest: ReleaseManifest


# ---------------------------------------------------------------- assemble and log

def _part(registry: Registry, ref: str, kind: str, flag: str) -> ArtifactVersion:
    """The version ``ref`` names, checked to be of the expected kind (an index for --index, ...)."""
    version = registry.get(ref)
    wanted = ARTIFACT_TYPES[kind]
    if version.type != wanted:
        raise ReleaseError(f"{flag} {ref}: {version.ref} is a {version.type!r} version, not {wanted!r}")
    return version


def evaluated_questions(registry: Registry, index: ArtifactVersion) -> str | None:
    """The question set the index's latest evaluation used (its eval report says), if it was evaluated."""
    report = (index.metadata.get("eval") or {}).get("report")
    found = registry.find(report) if report else None
    return found.metadata.get("questions") if found else None


def resolve_questions(registry: Registry, index: ArtifactVersion, questions: str | None,
                      names: ArtifactNames = DEFAULT_NAMES) -> str:
    """The eval set's ref: as given, else the set the index was evaluated on, else the newest set."""
    if questions:
        return questions
    ref = evaluated_questions(registry, index)
    if ref:
        return ref
    latest = registry.find(f"{names.questions}:latest")
    if latest is None:
        raise ReleaseError(f"no eval set: {index.ref} was never evaluated and the registry has no "
                           f"{names.questions} version; give --questions REF or FILE")
    return latest.ref


def assemble_release(registry: Registry, index_ref: str, prompt_ref: str, *, questions_ref: str | None = None,
                     k: int | None = None, overrides: Mapping[str, Any] | None = None,
                     names: ArtifactNames = DEFAULT_NAMES) -> ReleaseManifest:
    """The manifest of a release: each part resolved to its exact version (``:latest`` and aliases become
    ``vN``) and checked to be of its kind; model and temperature default to the prompt's own."""
    from ragindex.prompts import read_prompt

    index = _part(registry, index_ref, "index", "--index")
    prompt_version, prompt = read_prompt(registry, prompt_ref)
    questions = _part(registry, resolve_questions(registry, index, questions_ref, names), "questions", "--questions")
    settings = release_settings(prompt.spec.model, prompt.spec.temperature, k=k, overrides=overrides)
    return ReleaseManifest(Part(index.ref, index.digest), Part(prompt_version.ref, prompt_version.digest),
                           Part(questions.ref, questions.digest), settings)


@dataclass
class ReleaseLogResult:
    """The version a manifest is (``created`` False: the same parts and settings were already that version)."""

    ref: str
    created: bool
    digest: str
    manifest: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The ``--json`` output."""
        return asdict(self)


def log_release(registry: Registry, manifest: ReleaseManifest, *, run: RunInfo,
                name: str = DEFAULT_NAMES.release) -> ReleaseLogResult:
    """Log the manifest as ``rag-release:vN`` (lineage: its three parts); identical manifests are one version."""
    from ragindex.prompts import existing_with_digest
    from ragindex.registry.digest import dir_digest
    from ragindex.settings import ragindex_home

    work = ragindex_home() / "work"
    work.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="release-", dir=work) as tmp:
        staged = Path(tmp) / "release"
        staged.mkdir()
        (staged / RELEASE_FILE).write_bytes(manifest.to_bytes())
        digest = dir_digest(staged)
        found = existing_with_digest(registry, name, digest)
        if found is not None:
            return ReleaseLogResult(found.ref, False, found.digest, manifest.to_json())
        flat = flatten(manifest.settings)
        version = registry.log_artifact(
            name, ARTIFACT_TYPES["release"], staged, run=run, uses=[p.ref for p in manifest.parts().values()],
            metadata={"pipeline_run_id": run.group, **{part: p.ref for part, p in manifest.parts().items()},
                      **{key.split(".", 1)[1]: value for key, value in flat.items()}})
    return ReleaseLogResult(version.ref, version.metadata.get("pipeline_run_id") == run.group, version.digest,
                            manifest.to_json())


def read_release(registry: Registry, ref: str) -> Release:
    """A logged release and its manifest, read from its files (the manifest, not the metadata, is the truth)."""
    version = _part(registry, ref, "release", "release")
    path = registry.download(version.ref) / RELEASE_FILE
    if not path.is_file():
        raise ReleaseError(f"{version.ref}: has no {RELEASE_FILE}")
    where = f"{version.ref}/{RELEASE_FILE}"
    try:
        body = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ReleaseError(f"{where}: not valid JSON ({exc})") from None
    return Release(version.ref, version.digest, ReleaseManifest.from_json(body, where))


# ---------------------------------------------------------------- what the gate and serving use

def release_questions(registry: Registry, manifest: ReleaseManifest) -> list[Any]:
    """The release's eval questions (``EvalQuestion``s), from its exact eval-set version."""
    from ragindex.evaluation import load_questions

    return load_questions(registry.download(manifest.questions.ref))


def release_retriever(registry: Registry, manifest: ReleaseManifest):
    """A ``Retriever`` over the release's exact index, for the release's retrieval mode."""
    from ragindex.retrieval import Retriever

    mode = manifest.setting("retrieval.mode")
    if mode != "dense":
        raise SettingsError(f"release setting retrieval.mode={mode!r}: this version of ragindex retrieves dense only")
    return Retriever(registry.download(manifest.index.ref), ref=manifest.index.ref, mode=mode)


def check_release_budget(registry: Registry, manifest: ReleaseManifest):
    """Every eval question of the release rendered through its prompt with its own retrieval (k, mode): the
    ``prompts.BudgetReport`` the gate judges (``passed``) and reports."""
    from ragindex.prompts import check_budget, read_prompt

    _version, prompt = read_prompt(registry, manifest.prompt.ref)
    retriever = release_retriever(registry, manifest)
    return check_budget(prompt, release_questions(registry, manifest),
                        lambda question, k: retriever.search(question, k=k), manifest.setting("retrieval.k"),
                        retrieval=manifest.index.ref)


# ---------------------------------------------------------------- diff

def _documents(registry: Registry, index_ref: str) -> dict[str, str]:
    """An index version's documents (path -> sha256), from its ``documents.jsonl``."""
    from ragindex.pipeline import read_documents

    return {d["path"]: d.get("sha256", "") for d in read_documents(registry.download(index_ref))}


def index_changes(registry: Registry, a_ref: str, b_ref: str) -> dict[str, list[str]]:
    """Documents added, removed and changed (same path, other content) from index ``a`` to index ``b``."""
    old, new = _documents(registry, a_ref), _documents(registry, b_ref)
    return {"added": sorted(set(new) - set(old)), "removed": sorted(set(old) - set(new)),
            "changed": sorted(p for p in set(old) & set(new) if old[p] != new[p])}


def _prompt_files(registry: Registry, ref: str) -> dict[str, list[str]]:
    """Each file of a prompt version, as lines."""
    root = registry.download(ref)
    return {p.relative_to(root).as_posix(): p.read_text(encoding="utf-8").splitlines(keepends=True)
            for p in sorted(root.rglob("*")) if p.is_file()}


def prompt_diff(registry: Registry, a_ref: str, b_ref: str) -> str:
    """A unified diff of two prompt versions, file by file (``prompt.json`` and every template)."""
    old, new = _prompt_files(registry, a_ref), _prompt_files(registry, b_ref)
    lines: list[str] = []
    for file in sorted(set(old) | set(new)):
        for line in difflib.unified_diff(old.get(file, []), new.get(file, []), fromfile=f"{a_ref}/{file}",
                                         tofile=f"{b_ref}/{file}"):
            lines.append(line if line.endswith("\n") else line + "\n\\ No newline at end of file\n")
    return "".join(lines)


@dataclass
class ReleaseDiff:
    """What changed from release ``a`` to release ``b``."""

    a: str
    b: str
    parts: dict[str, dict[str, Any]]  # part -> {"a": ref, "b": ref, "same": bool}
    documents: dict[str, list[str]] | None  # None when the index is the same version
    prompt: str  # unified diff, empty when the prompt is the same version
    settings: dict[str, list[Any]]  # dotted key -> [old, new], only the keys that changed

    @property
    def same(self) -> bool:
        """Nothing changed."""
        return all(p["same"] for p in self.parts.values()) and not self.settings

    def to_json(self) -> dict[str, Any]:
        """The ``--json`` output."""
        return {**asdict(self), "same": self.same}

    def to_text(self) -> str:
        """What ``ragindex release diff`` prints."""
        lines = [f"{self.a} -> {self.b}" + (": no changes" if self.same else "")]
        for part, p in self.parts.items():
            lines.append(f"{part}: {p['a']}" + (" (same)" if p["same"] else f" -> {p['b']}"))
            if part == "index" and self.documents is not None:
                d = self.documents
                lines.append(f"  documents: {len(d['added'])} added, {len(d['removed'])} removed, "
                             f"{len(d['changed'])} changed")
                lines += [f"  {mark} {path}" for mark, key in (("+", "added"), ("-", "removed"), ("~", "changed"))
                          for path in d[key]]
            if part == "prompt" and self.prompt:
                lines += ["  " + line for line in self.prompt.rstrip("\n").split("\n")]
        if self.settings:
            lines.append("settings:")
            lines += [f"  {key}: {old!r} -> {new!r}" for key, (old, new) in self.settings.items()]
        else:
            lines.append("settings: (same)")
        return "\n".join(lines)


def diff_releases(registry: Registry, a_ref: str, b_ref: str) -> ReleaseDiff:
    """Compare two releases: the index by its documents, the prompt by a unified diff, the settings key by key."""
    a, b = read_release(registry, a_ref), read_release(registry, b_ref)
    parts = {part: {"a": pa.ref, "b": pb.ref, "same": pa.digest == pb.digest}
             for (part, pa), pb in zip(a.manifest.parts().items(), b.manifest.parts().values())}
    documents = None if parts["index"]["same"] else index_changes(registry, a.manifest.index.ref, b.manifest.index.ref)
    prompt = "" if parts["prompt"]["same"] else prompt_diff(registry, a.manifest.prompt.ref, b.manifest.prompt.ref)
    old, new = flatten(a.manifest.settings), flatten(b.manifest.settings)
    settings = {key: [old.get(key), new.get(key)] for key in sorted(set(old) | set(new))
                if old.get(key) != new.get(key)}
    return ReleaseDiff(a.ref, b.ref, parts, documents, prompt, settings)
