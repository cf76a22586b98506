"""Prompt templates as versions: a prompt folder is loaded, checked, rendered in a sandbox and logged as
``prompt-template:vN``, content-addressed like documents (unchanged content is the existing version).

A prompt folder holds ``prompt.json`` and the Jinja2 templates it names::

    {"templates": {"system": "system.j2", "user": "user.j2"},   # rendered in this order
     "input_variables": ["question", "chunks"],                 # what the templates may use
     "model": "gpt-4o-mini", "temperature": 0.1,                # the target model and its sampling
     "context_budget": 8000,                                    # characters of the whole rendered prompt
     "description": "optional words for people"}

Templates are data, not code: they are rendered by Jinja2's immutable sandbox with strict undefined
variables, and an attribute or item whose name starts with ``_`` is refused before anything is rendered.
Their inputs are what serving gives them (``serving_inputs``): ``question``, ``chunks`` (the hits, each
``{text, source, page, section, score}``; section: the headings' titles, outermost first) and ``context``
(the hits' texts joined by a blank line).

The budget is counted in **characters** of everything the templates render, together: the target model is
not the embedding model, so no tokenizer here counts its tokens; characters are exact, model-independent
and a conservative proxy (about four per token for English text). ``check_budget`` renders the prompt for
every question of a set with the hits a retrieval callable returns, so the gate can run it with a release's
own retrieval settings.
"""

from __future__ import annotations

import json
import re
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import jinja2
from jinja2 import StrictUndefined, meta, nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment

from ragindex.errors import RagindexError
from ragindex.names import ARTIFACT_TYPES, DEFAULT_NAMES
from ragindex.registry import ArtifactVersion, Registry, RunInfo

METADATA_FILE = "prompt.json"
SERVING_INPUTS = ("question", "chunks", "context")
CONTEXT_SEPARATOR = "\n\n"
MAX_TEMPERATURE = 2.0
_REQUIRED = ("templates", "input_variables", "model", "temperature", "context_budget")
_OPTIONAL = ("description",)
_TEMPLATE_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*$")
SAMPLE_QUESTIONS = Path(__file__).resolve().parents[1] / "sample_data" / "eval_questions.jsonl"


class PromptError(RagindexError):
    """A prompt folder that cannot become a version: the message names the file and the reason."""


# ---------------------------------------------------------------- the metadata

@dataclass(frozen=True)
class PromptSpec:
    """What ``prompt.json`` declares, checked."""

    templates: dict[str, str]
    input_variables: tuple[str, ...]
    model: str
    temperature: float
    context_budget: int
    description: str = ""

    def to_json(self) -> dict[str, Any]:
        """The canonical ``prompt.json`` body (what is logged, so formatting never makes a new version)."""
        body = asdict(self)
        body["input_variables"] = list(self.input_variables)
        if not self.description:
            body.pop("description")
        return body


def _number(value: Any) -> bool:
    """A JSON number that is not a boolean."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def parse_spec(body: Any, where: str) -> PromptSpec:
    """Check a ``prompt.json`` body field by field; ``where`` names the file in every error."""
    if not isinstance(body, dict):
        raise PromptError(f"{where}: expected a JSON object, got {type(body).__name__}")
    unknown = sorted(set(body) - set(_REQUIRED) - set(_OPTIONAL))
    if unknown:
        raise PromptError(f"{where}: unknown field(s) {', '.join(unknown)} (known: {', '.join(_REQUIRED + _OPTIONAL)})")
    missing = [k for k in _REQUIRED if k not in body]
    if missing:
        raise PromptError(f"{where}: missing field(s) {', '.join(missing)}")
    templates = body["templates"]
    if not isinstance(templates, dict) or not templates:
        raise PromptError(f"{where}: templates must be a non-empty object of name -> file "
                          '(e.g. {"user": "user.j2"})')
    for name, file in templates.items():
        if not _TEMPLATE_NAME.match(name):
            raise PromptError(f"{where}: template name {name!r} must start with a letter and hold only letters, "
                              "digits, '_' and '-'")
        if not isinstance(file, str) or not file or Path(file).is_absolute() or ".." in Path(file).parts \
                or file == METADATA_FILE:
            raise PromptError(f"{where}: template {name!r}: file {file!r} must be a relative path inside the folder")
    if len(set(templates.values())) != len(templates):
        raise PromptError(f"{where}: templates name the same file twice")
    variables = body["input_variables"]
    if not isinstance(variables, list) or not all(isinstance(v, str) for v in variables):
        raise PromptError(f"{where}: input_variables must be a list of names")
    if len(set(variables)) != len(variables):
        raise PromptError(f"{where}: input_variables lists a name twice")
    never_given = [v for v in variables if v not in SERVING_INPUTS]
    if never_given:
        raise PromptError(f"{where}: input variable(s) {', '.join(never_given)} declared but never given "
                          f"(serving gives only {', '.join(SERVING_INPUTS)})")
    if not isinstance(body["model"], str) or not body["model"].strip():
        raise PromptError(f"{where}: model must be a non-empty string (the target model's name)")
    temperature = body["temperature"]
    if not _number(temperature) or not 0 <= temperature <= MAX_TEMPERATURE:
        raise PromptError(f"{where}: temperature {temperature!r} must be a number from 0 to {MAX_TEMPERATURE:g}")
    budget = body["context_budget"]
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1:
        raise PromptError(f"{where}: context_budget {budget!r} must be a positive whole number of characters")
    description = body.get("description", "")
    if not isinstance(description, str):
        raise PromptError(f"{where}: description must be a string")
    return PromptSpec(dict(templates), tuple(variables), body["model"].strip(), float(temperature), budget,
                      description)


# ---------------------------------------------------------------- the sandbox

def sandbox(sources: Mapping[str, str]) -> jinja2.Environment:
    """Jinja2's immutable sandbox: no unsafe attributes, no mutation of inputs, undefined names are errors;
    templates may include each other by file name, and nothing else."""
    return ImmutableSandboxedEnvironment(loader=jinja2.DictLoader(dict(sources)), undefined=StrictUndefined,
                                         autoescape=False, keep_trailing_newline=True, auto_reload=False)


def _private_names(tree: nodes.Template) -> list[str]:
    """Attribute and constant item names starting with ``_`` (``x.__class__``, ``x['_y']``, ``x|attr('_z')``),
    refused even in a branch that no render would take."""
    found = [n.attr for n in tree.find_all(nodes.Getattr) if n.attr.startswith("_")]
    found += [n.arg.value for n in tree.find_all(nodes.Getitem)
              if isinstance(n.arg, nodes.Const) and isinstance(n.arg.value, str) and n.arg.value.startswith("_")]
    for f in tree.find_all(nodes.Filter):
        if f.name == "attr" and f.args and isinstance(f.args[0], nodes.Const) and str(f.args[0].value).startswith("_"):
            found.append(str(f.args[0].value))
    return found


def _check_template(env: jinja2.Environment, file: str, source: str, declared: Sequence[str], where: str) -> None:
    """Parse one template and check what it uses: it must parse, touch nothing private, use only declared names."""
    try:
        tree = env.parse(source, name=file, filename=file)
    except jinja2.TemplateSyntaxError as exc:
        raise PromptError(f"{where}: line {exc.lineno}: does not parse: {exc.message}") from None
    private = _private_names(tree)
    if private:
        raise PromptError(f"{where}: refused by the sandbox: access to {', '.join(sorted(set(private)))} "
                          "(templates are data; names starting with '_' are off limits)")
    undeclared = sorted(meta.find_undeclared_variables(tree) - set(declared) - set(env.globals))
    if undeclared:
        raise PromptError(f"{where}: uses variable(s) {', '.join(undeclared)} not declared in {METADATA_FILE}'s "
                          f"input_variables ({', '.join(declared) or 'none'})")


# ---------------------------------------------------------------- a loaded prompt

@dataclass(frozen=True)
class RenderedPrompt:
    """Each template's text, in the declared order (e.g. system, user), and their total size."""

    parts: dict[str, str]

    @property
    def chars(self) -> int:
        """What the budget counts: the characters of every rendered part together."""
        return sum(len(text) for text in self.parts.values())

    def messages(self) -> list[dict[str, str]]:
        """The parts as chat messages, one per template, its name as the role."""
        return [{"role": name, "content": text} for name, text in self.parts.items()]


@dataclass(frozen=True)
class Prompt:
    """A checked prompt folder: its metadata and its templates' sources, ready to render."""

    folder: Path
    spec: PromptSpec
    sources: dict[str, str]  # file -> template text

    def where(self, file: str = METADATA_FILE) -> str:
        """How errors name one of this prompt's files."""
        return f"prompt {self.folder / file}"

    def render(self, inputs: Mapping[str, Any]) -> RenderedPrompt:
        """Render every template in the sandbox; a declared variable missing from ``inputs`` is an error."""
        not_given = [v for v in self.spec.input_variables if v not in inputs]
        if not_given:
            raise PromptError(f"{self.where()}: input variable(s) {', '.join(not_given)} declared but not given "
                              f"(given: {', '.join(sorted(inputs)) or 'nothing'})")
        env = sandbox(self.sources)
        values = {k: inputs[k] for k in self.spec.input_variables}
        parts = {}
        for name, file in self.spec.templates.items():
            try:
                parts[name] = env.get_template(file).render(values)
            except jinja2.exceptions.SecurityError as exc:
                raise PromptError(f"{self.where(file)}: refused by the sandbox: {exc}") from None
            except jinja2.TemplateError as exc:
                raise PromptError(f"{self.where(file)}: does not render: {exc}") from None
        return RenderedPrompt(parts)

    def render_for(self, question: str, hits: Sequence[Any]) -> RenderedPrompt:
        """The prompt serving would send for ``question`` with these retrieved hits."""
        return self.render(serving_inputs(question, hits))


def serving_inputs(question: str, hits: Sequence[Any]) -> dict[str, Any]:
    """What a template is given: the question, the hits as plain dicts, and their texts joined."""
    chunks = [{"text": _field(h, "text"), "source": _field(h, "source"), "page": _field(h, "page"),
               "section": list(_field(h, "section") or ()), "score": _field(h, "score")} for h in hits]
    return {"question": question, "chunks": chunks, "context": CONTEXT_SEPARATOR.join(c["text"] for c in chunks)}


def _field(hit: Any, key: str) -> Any:
    """One field of a hit, whether it is a ``retrieval.Hit`` or a dict."""
    return hit.get(key) if isinstance(hit, Mapping) else getattr(hit, key, None)


def _read_text(path: Path, where: str) -> str:
    """A UTF-8 file's text, or an error naming it."""
    if not path.is_file():
        raise PromptError(f"{where}: no such file")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise PromptError(f"{where}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None


def load_prompt(folder: Path | str) -> Prompt:
    """Read and check a prompt folder: the metadata, every template's syntax and the variables it uses.
    A file the metadata does not name is refused (it would be logged, yet never rendered)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise PromptError(f"prompt folder {folder}: not a directory")
    meta_where = f"prompt {folder / METADATA_FILE}"
    try:
        body = json.loads(_read_text(folder / METADATA_FILE, meta_where))
    except json.JSONDecodeError as exc:
        raise PromptError(f"{meta_where}: line {exc.lineno}: not valid JSON ({exc.msg})") from None
    spec = parse_spec(body, meta_where)
    sources = {file: _read_text(folder / file, f"prompt {folder / file}") for file in spec.templates.values()}
    named = {METADATA_FILE, *spec.templates.values()}
    strays = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")
                    if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)
                    and p.relative_to(folder).as_posix() not in named)
    if strays:
        raise PromptError(f"prompt folder {folder}: {', '.join(strays)} not named in {METADATA_FILE}'s templates "
                          "(a prompt folder holds prompt.json and its templates only)")
    env = sandbox(sources)
    for file, source in sources.items():
        _check_template(env, file, source, spec.input_variables, f"prompt {folder / file}")
    return Prompt(folder, spec, sources)


# ---------------------------------------------------------------- the budget

Retrieve = Callable[[str, int], Sequence[Any]]


@dataclass(frozen=True)
class BudgetReport:
    """How big the rendered prompt is for each question, against the declared budget."""

    budget: int
    k: int
    retrieval: str  # what produced the hits: "placeholder" or the index ref
    sizes: list[tuple[str, int]]  # (question, characters)

    @property
    def over(self) -> list[tuple[str, int]]:
        """The questions whose prompt exceeds the budget."""
        return [(q, n) for q, n in self.sizes if n > self.budget]

    @property
    def max_chars(self) -> int:
        """The largest rendered prompt."""
        return max((n for _, n in self.sizes), default=0)

    @property
    def passed(self) -> bool:
        """Every question's prompt fits."""
        return not self.over

    def summary(self) -> dict[str, Any]:
        """The figures (no per-question rows), for version metadata and the gate's report."""
        return {"budget": self.budget, "k": self.k, "retrieval": self.retrieval, "questions": len(self.sizes),
                "max_chars": self.max_chars, "over": len(self.over), "passed": self.passed}

    def to_json(self) -> dict[str, Any]:
        """The figures and every question's size."""
        return {**self.summary(), "sizes": [{"question": q, "chars": n} for q, n in self.sizes]}


def check_budget(prompt: Prompt, questions: Iterable[Any], retrieve: Retrieve, k: int, *,
                 retrieval: str = "retrieval") -> BudgetReport:
    """Render the prompt for every question with the top-``k`` hits ``retrieve(question, k)`` returns, and
    measure it against ``context_budget`` (questions are strings or ``EvalQuestion``s)."""
    if k < 1:
        raise PromptError(f"k={k}: must be at least 1")
    sizes = []
    for q in questions:
        text = q if isinstance(q, str) else q.question
        sizes.append((text, prompt.render_for(text, retrieve(text, k)).chars))
    if not sizes:
        raise PromptError(f"{prompt.where()}: no questions to check the budget with")
    return BudgetReport(prompt.spec.context_budget, k, retrieval, sizes)


def require_within_budget(prompt: Prompt, report: BudgetReport) -> None:
    """Raise naming the prompt's metadata file when any question's prompt is over budget."""
    if report.passed:
        return
    question, chars = max(report.over, key=lambda row: row[1])
    raise PromptError(f"{prompt.where()}: rendered prompt over its context_budget of {report.budget} characters for "
                      f"{len(report.over)} of {len(report.sizes)} question(s) with k={report.k} hits from "
                      f"{report.retrieval} (largest {chars} characters, for {question!r})")


def placeholder_retriever(chunk_chars: int) -> Retrieve:
    """Hits of ``chunk_chars`` characters each (the chunk size, so the worst case of a chunking): the budget
    check when no index is named."""
    def retrieve(question: str, k: int) -> list[dict[str, Any]]:
        filler = ("placeholder chunk text " * (chunk_chars // 23 + 1))[:chunk_chars]
        return [{"text": filler, "source": f"placeholder-{i}.md", "page": None, "score": 0.0} for i in range(1, k + 1)]
    return retrieve


def index_retriever(index_dir: Path, ref: str | None = None) -> Retrieve:
    """Real dense retrieval from an index folder (the model is the index's own)."""
    from ragindex.retrieval import Retriever

    retriever = Retriever(index_dir, ref=ref)
    return lambda question, k: retriever.search(question, k=k)


# ---------------------------------------------------------------- the version

@dataclass
class PromptLogResult:
    """The version a prompt folder is (``created`` False: identical content was already that version)."""

    ref: str
    created: bool
    digest: str
    budget: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The ``--json`` output."""
        return asdict(self)


def write_canonical(prompt: Prompt, target: Path) -> Path:
    """The folder that is logged: ``prompt.json`` re-serialised (sorted keys), templates byte for byte."""
    target.mkdir(parents=True, exist_ok=True)
    (target / METADATA_FILE).write_text(json.dumps(prompt.spec.to_json(), indent=1, sort_keys=True) + "\n",
                                        encoding="utf-8")
    for file in prompt.spec.templates.values():
        (target / file).parent.mkdir(parents=True, exist_ok=True)
        (target / file).write_bytes((prompt.folder / file).read_bytes())
    return target


def existing_with_digest(registry: Registry, name: str, digest: str) -> ArtifactVersion | None:
    """The version of ``name`` whose content has ``digest``, if one was logged (nothing is staged or run then)."""
    return next((v for v in registry.versions(name) if v.digest == digest), None)


def log_prompt(registry: Registry, prompt: Prompt, budget: BudgetReport, *, run: RunInfo,
               name: str = DEFAULT_NAMES.prompt, origin: str | None = None) -> PromptLogResult:
    """Log a checked prompt whose budget held as ``prompt-template:vN``; identical content is the existing
    version (``created`` False), whatever the budget check used. ``origin`` is where it was read from, when
    that is not its folder (an object-storage URL read into a work folder)."""
    from ragindex.registry.digest import dir_digest
    from ragindex.settings import ragindex_home

    require_within_budget(prompt, budget)
    work = ragindex_home() / "work"
    work.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="prompt-", dir=work) as tmp:
        staged = write_canonical(prompt, Path(tmp) / "prompt")
        digest = dir_digest(staged)
        found = existing_with_digest(registry, name, digest)
        if found is not None:
            return PromptLogResult(found.ref, False, found.digest, budget.summary())
        spec = prompt.spec
        version = registry.log_artifact(
            name, ARTIFACT_TYPES["prompt"], staged, run=run,
            metadata={"pipeline_run_id": run.group, "origin": origin or str(prompt.folder), "model": spec.model,
                      "temperature": spec.temperature, "context_budget": spec.context_budget,
                      "input_variables": list(spec.input_variables), "templates": dict(spec.templates),
                      "budget_check": budget.summary()})
    return PromptLogResult(version.ref, version.metadata.get("pipeline_run_id") == run.group, version.digest,
                           budget.summary())


def read_prompt(registry: Registry, ref: str) -> tuple[ArtifactVersion, Prompt]:
    """A logged prompt version and its prompt, loaded (and so checked) from its files."""
    version = registry.get(ref)
    if version.type != ARTIFACT_TYPES["prompt"]:
        raise PromptError(f"{version.ref}: a {version.type!r} version, not a prompt ({ARTIFACT_TYPES['prompt']!r})")
    return version, load_prompt(registry.download(version.ref))
