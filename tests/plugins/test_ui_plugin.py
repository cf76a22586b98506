"""The "Index versions" UI plugin: its pages over a registry filled by a real pipeline run, its extra link,
its registration with Airflow 3.3, and (``-m browser``) the real Airflow UI in headless Chromium.

The registry comes from ``conftest.filled_registry``: ``ragindex ingest`` of the sample corpus, the real
evaluation step, and ``ragindex alias vector-index:v0 production``.
"""

from __future__ import annotations

import dataclasses
import html
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import quote

import markupsafe
import pytest

from tests.conftest import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, need
from fastapi.testclient import TestClient

from .conftest import PLUGINS, REPO, VENV_BIN

# from Airflow's plugin loader (pathspec), not from this code
pytestmark = pytest.mark.filterwarnings("ignore:GitWildMatchPattern:DeprecationWarning")

NAMES = ("raw-documents", "processed-chunks", "vector-index", "eval-questions", "eval-report")


@pytest.fixture(scope="module")
def client() -> TestClient:
    from ragindex_ui.app import create_app

    return TestClient(create_app(require_auth=False))


@pytest.fixture(scope="module")
def registry(filled_registry: dict[str, Any]) -> Any:
    from ragindex.registry import open_registry

    return open_registry(filled_registry["uri"])


def get_page(client: TestClient, path: str, registry_uri: str) -> str:
    response = client.get(path, params={"registry": registry_uri})
    assert response.status_code == 200, response.text[:2000]
    assert response.headers["content-type"].startswith("text/html")
    return response.text


def row_of(page: str, ref: str) -> str:
    """The <tr> of a version in the listing."""
    match = re.search(rf'<tr class="version[^"]*" data-ref="{re.escape(ref)}">.*?</tr>', page, re.S)
    assert match, f"no row for {ref}"
    return match.group(0)


# ---------------------------------------------------------------- the pages (FastAPI app, real registry)


def test_listing_shows_every_version_with_short_digest_and_aliases(client, filled_registry, registry):
    page = get_page(client, "/", filled_registry["uri"])
    assert html.escape(f"file://{Path(filled_registry['uri']).resolve()}") in page
    for name in NAMES:
        versions = registry.versions(name)
        assert versions, f"the pipeline run logged no {name}"
        assert f'id="artifact-{name}"' in page
        for v in versions:
            row = row_of(page, v.ref)
            assert f'title="{v.digest}">{v.digest[:12]}</code>' in row
            for alias in v.aliases:
                assert re.search(rf'<span class="badge alias-[a-z]+"[^>]*>(★ )?{re.escape(alias)}</span>', row), alias


def test_production_is_highlighted(client, filled_registry, registry):
    page = get_page(client, "/", filled_registry["uri"])
    index_row = row_of(page, "vector-index:v0")
    assert 'class="version is-production"' in index_row
    assert 'class="badge alias-production"' in index_row and "★ production" in index_row
    card = re.search(r'<div class="card production" id="production">.*?</div>', page, re.S).group(0)
    assert "vector-index:v0" in card
    # promotion moves production onto the versions the index came from too; exactly those rows are highlighted
    assert "is-production" in row_of(page, "raw-documents:v0")
    assert "is-production" not in row_of(page, "eval-questions:v0")
    holders = [v for name in NAMES for v in registry.versions(name) if "production" in v.aliases]
    assert len(holders) == 4 and page.count('class="version is-production"') == len(holders)


def test_a_rejected_version_is_marked_and_the_decisions_are_listed(client, filled_registry):
    page = get_page(client, "/", filled_registry["uri"])
    rejected = row_of(page, filled_registry["rejected"])
    assert "is-rejected" in rejected and "badge review review-rejected" in rejected
    assert "refunds take 14 days, not 90" in rejected
    assert "is-rejected" not in row_of(page, "vector-index:v0")
    table = re.search(r'<table class="decisions" id="decisions">.*?</table>', page, re.S).group(0)
    rows = re.findall(r'<tr class="decision kind-(\w+) verdict-(\w+)"', table)
    assert rows == [("review", "rejected"), ("promote", "promoted"), ("review", "approved")], "newest first"
    detail = get_page(client, f"/lineage/{quote(filled_registry['rejected'], safe='')}", filled_registry["uri"])
    assert 'badge review-rejected">rejected</span></h1>' in detail and 'id="version-decisions"' in detail


def test_listing_shows_key_metadata_and_eval_figures(client, filled_registry, registry):
    page = get_page(client, "/", filled_registry["uri"])
    index = registry.get("vector-index:v0")
    row = row_of(page, "vector-index:v0")
    meta = index.metadata
    assert f"<dt>documents</dt><dd>{meta['documents']}</dd>" in row
    assert f"<dt>chunks</dt><dd>{meta['chunks']}</dd>" in row
    assert f"<dt>chunk size / overlap</dt><dd>{meta['chunk_size']} / {meta['chunk_overlap']}</dd>" in row
    assert f"<dt>model</dt><dd>{html.escape(meta['model'])}</dd>" in row
    assert f"<dt>embedded / reused</dt><dd>{meta['embedded']} / {meta['reused']}</dd>" in row
    figures = meta["eval"]
    assert figures["report"] == filled_registry["eval"]["report"]
    assert f"<dt>recall@{figures['k']}</dt><dd>{figures['recall_at_k']:.3f}</dd>" in row
    assert f"<dt>MRR</dt><dd>{figures['mrr']:.3f}</dd>" in row
    assert ("passed</span>" if figures["passed"] else "failed</span>") in row
    report_row = row_of(page, figures["report"])
    report = registry.get(figures["report"]).metadata
    assert f"<dd>{report['recall_at_k']:.3f}</dd>" in report_row and f"<dd>{report['mrr']:.3f}</dd>" in report_row
    assert f'href="/lineage/{quote("vector-index:v0", safe="")}?registry=' in report_row


def test_lineage_page_shows_raw_chunks_index_report(client, filled_registry):
    ingest, report = filled_registry["ingest"], filled_registry["eval"]["report"]
    chain = [ingest["raw"], ingest["chunks"], ingest["index"]]
    page = get_page(client, f"/lineage/{quote(ingest['index'], safe='')}", filled_registry["uri"])
    assert "<h1>vector-index:v0" in page
    # the SVG graph: raw → chunks → index → report, each node a link to its own page
    edges = set(re.findall(r'data-src="([^"]+)" data-dst="([^"]+)"', page))
    assert {(chain[0], chain[1]), (chain[1], chain[2]), (chain[2], report)} <= edges
    for ref in [*chain, report]:
        assert f'data-ref="{ref}"' in page
        assert f'href="/lineage/{quote(ref, safe="")}?registry=' in page
    assert re.search(r'<g class="node root prod" data-ref="vector-index:v0"', page)
    # the nested list: index ↳ chunks ↳ raw (made from), and the report that used it
    upstream = re.search(r'<ul class="tree top" id="upstream">(.*?)</ul>\s*<h2>', page, re.S).group(1)
    positions = [upstream.index(f'data-ref="{ref}"') for ref in reversed(chain)]
    assert positions == sorted(positions)
    assert upstream.count('<ul class="tree">') == 2
    downstream = re.search(r'id="downstream">(.*?)</ul>', page, re.S).group(1)
    assert f'data-ref="{report}"' in downstream
    # the chain line in pipeline order
    line = re.search(r'<h2>Lineage</h2>\s*<p class="sub">(.*?)</p>', page, re.S).group(1)
    assert [line.index(f">{ref}<") for ref in [*chain, report]] == sorted(line.index(f">{ref}<") for ref in [*chain, report])


def test_lineage_of_a_report_walks_back_to_the_raw_documents(client, filled_registry):
    report = filled_registry["eval"]["report"]
    page = get_page(client, f"/lineage/{quote(report, safe='')}", filled_registry["uri"])
    edges = set(re.findall(r'data-src="([^"]+)" data-dst="([^"]+)"', page))
    ingest = filled_registry["ingest"]
    assert (ingest["index"], report) in edges and (filled_registry["eval"]["questions"], report) in edges
    assert (ingest["raw"], ingest["chunks"]) in edges
    assert 'No version was made from' in page


def test_json_api(client, filled_registry):
    listing = client.get("/api/versions", params={"registry": filled_registry["uri"]}).json()
    assert listing["production"]["ref"] == "vector-index:v0"
    assert [s["name"] for s in listing["sections"]] == list(NAMES)
    graph = client.get("/api/lineage/vector-index:v0", params={"registry": filled_registry["uri"]}).json()
    assert graph["root"] == "vector-index:v0" and [filled_registry["ingest"]["chunks"], "vector-index:v0"] in graph["edges"]


def test_default_registry_comes_from_the_environment(client, filled_registry, monkeypatch):
    monkeypatch.setenv("RAGINDEX_REGISTRY", filled_registry["uri"])
    response = client.get("/")
    assert response.status_code == 200 and 'data-ref="vector-index:v0"' in response.text


def test_unknown_ref_and_missing_registry(client, filled_registry, tmp_path):
    missing = client.get("/lineage/vector-index:v99", params={"registry": filled_registry["uri"]})
    assert missing.status_code == 404 and "vector-index:v99" in missing.text
    nowhere = tmp_path / "no-registry-here"
    response = client.get("/", params={"registry": str(nowhere)})
    assert response.status_code == 503 and "no registry at" in response.text
    assert not nowhere.exists(), "a page view must never create a registry"
    assert client.get("/", params={"registry": "s3://bucket/reg"}).status_code == 503
    assert client.get("/api/versions", params={"registry": str(nowhere)}).json()["detail"].startswith("no registry")


def test_metadata_is_escaped(client, tmp_path):
    from ragindex.registry import AliasChange, Decision, RunInfo, open_registry

    files = tmp_path / "files"
    files.mkdir()
    (files / "a.txt").write_text("x")
    reg = open_registry(str(tmp_path / "reg"))
    evil = '<script>alert("x")</script>'
    reg.log_artifact("vector-index", "index", files, run=RunInfo("test"), metadata={"model": evil, "chunks": 1})
    reg.record_decision(Decision(kind="promote", verdict="promoted", ref="vector-index:v0", actor="test",
                                 changes=(AliasChange("vector-index:v0", "production"),)))
    for path in ("/", "/lineage/vector-index:v0"):
        page = get_page(client, path, str(tmp_path / "reg"))
        assert evil not in page and str(markupsafe.escape(evil)) in page


def test_wandb_registry_links_each_version_to_its_web_page_with_a_local_backed_fake(client, filled_registry,
                                                                                   monkeypatch):
    """With W&B as the registry (no names() listing) each ref links to ``registry.web_url(ref)``. No W&B server
    is reachable here: a fake, named as such, serves the local registry's versions with W&B URLs."""
    from ragindex.registry import open_registry

    import ragindex_ui.views as views

    local = open_registry(filled_registry["uri"])

    class LocalBackedFakeWandbRegistry:  # the local versions, served the way the W&B backend serves them
        uri = "wandb://acme/rag"

        def _url(self, v):
            return f"https://wandb.ai/acme/rag/artifacts/{v.type}/{v.name}/{v.version}"

        def get(self, ref):
            v = local.get(ref)
            return dataclasses.replace(v, url=self._url(v))

        def versions(self, name):
            return [dataclasses.replace(v, url=self._url(v)) for v in local.versions(name)]

        def lineage(self, ref):
            return local.lineage(ref)

        def web_url(self, ref):
            return self._url(local.get(ref))

        def decisions(self, name):
            return local.decisions(name)

    monkeypatch.setattr(views, "open_checked", lambda uri: LocalBackedFakeWandbRegistry())
    page = client.get("/").text
    for name in NAMES:
        for v in local.versions(name):
            assert f'<a href="https://wandb.ai/acme/rag/artifacts/{v.type}/{v.name}/{v.version}" target="_blank"' in page
    detail = client.get("/lineage/vector-index:v0").text
    assert 'href="https://wandb.ai/acme/rag/artifacts/index/vector-index/v0"' in detail
    # W&B has no cheap listing: the report is found through the index's eval metadata
    assert f'data-ref="{filled_registry["eval"]["report"]}"' in re.search(r'id="downstream">(.*?)</ul>', detail, re.S).group(1)


def test_pages_require_an_airflow_user():
    """Without the UI's JWT cookie or a bearer token the app answers 401 (Airflow's own check)."""
    from ragindex_ui.app import create_app

    response = TestClient(create_app()).get("/")
    assert response.status_code == 401


# ---------------------------------------------------------------- the extra link


def test_ref_from_each_task_return_value():
    from ragindex_ui.links import ref_from_value

    assert ref_from_value({"raw": "raw-documents:v3", "unchanged": False, "documents": 16}) == "raw-documents:v3"
    orders = [{"chunks": "processed-chunks:v2", "shard": 0, "chunk_count": 73}, {"chunks": "processed-chunks:v2", "shard": 1}]
    assert ref_from_value(orders) == "processed-chunks:v2"
    assert ref_from_value({"index": "vector-index:v4", "chunks": 73, "embedded": 5, "reused": 68}) == "vector-index:v4"
    assert ref_from_value({"report": "eval-report:v4", "index": "vector-index:v4", "passed": True}) == "eval-report:v4"
    assert ref_from_value({"promoted": "vector-index:v4", "changed": True}) == "vector-index:v4"
    assert ref_from_value('{"raw": "raw-documents:v0"}') == "raw-documents:v0"
    for nothing in (None, 7, "", "not a ref", {"raw": None, "unchanged": True}, [], {"index": "vector-index:latest"}):
        assert ref_from_value(nothing) is None


def test_extra_link_points_at_the_version_page(monkeypatch):
    import ragindex_ui.links as links

    key = object()
    values = {"pull": {"raw": "raw-documents:v0"}, "embed": 12}
    monkeypatch.setattr(links, "_return_value", lambda ti_key: values[ti_key])
    monkeypatch.setattr(links, "_run_registry", lambda ti_key: None)
    monkeypatch.setattr(links, "base_path", lambda: "")
    monkeypatch.delenv("RAGINDEX_REGISTRY", raising=False)
    link = links.IndexVersionLink()
    assert link.name == "Index version"
    assert link.get_link(None, ti_key="pull") == "/plugin/ragindex/ragindex/lineage/raw-documents%3Av0"
    assert links.page_url("raw-documents:v0", embedded=False) == "/ragindex/lineage/raw-documents%3Av0"
    assert link.get_link(None, ti_key="embed") == ""
    monkeypatch.setattr(links, "_return_value", lambda ti_key: (_ for _ in ()).throw(RuntimeError("db down")))
    assert link.get_link(None, ti_key=key) == ""
    # a run triggered with another registry keeps it in the link; an Airflow base_url sub-path is kept
    monkeypatch.setattr(links, "_return_value", lambda ti_key: {"index": "vector-index:v1"})
    monkeypatch.setattr(links, "_run_registry", lambda ti_key: "/data/reg")
    monkeypatch.setattr(links, "base_path", lambda: "/airflow")
    assert link.get_link(None, ti_key=key) == ("/airflow/plugin/ragindex/airflow/ragindex/lineage/vector-index%3Av1"
                                               "?registry=%2Fdata%2Freg")


def test_extra_link_goes_to_wandb_for_a_wandb_registry_with_a_fake_url_only_registry(monkeypatch):
    import ragindex.registry
    import ragindex_ui.links as links

    class FakeWandbRegistryOfUrlsOnly:
        def web_url(self, ref):
            return f"https://wandb.ai/acme/rag/artifacts/index/{ref.replace(':', '/')}"

    monkeypatch.setattr(ragindex.registry, "open_registry", lambda uri: FakeWandbRegistryOfUrlsOnly())
    monkeypatch.setattr(links, "_return_value", lambda ti_key: {"index": "vector-index:v1"})
    monkeypatch.setattr(links, "_run_registry", lambda ti_key: None)
    monkeypatch.setenv("RAGINDEX_REGISTRY", "wandb://acme/rag")
    assert links.IndexVersionLink().get_link(None, ti_key="k") == "https://wandb.ai/acme/rag/artifacts/index/vector-index/v1"


def test_a_wandb_registry_named_through_an_airflow_connection_opens_as_the_tasks_open_it(monkeypatch):
    """``?registry=wandb://wandb_default@`` (and a bare ``wandb://``) read the connection's extra for entity,
    project and W&B Registry, as the DAGs' tasks do; a connection that is not defined is a clear page error."""
    import json as _json

    import ragindex_ui.views as views

    for exported in ("WANDB_API_KEY", "WANDB_BASE_URL"):  # the connection exports these: restored afterwards
        monkeypatch.setenv(exported, "")
    monkeypatch.setenv("AIRFLOW_CONN_WANDB_DEFAULT", _json.dumps({
        "conn_type": "generic", "password": "test-key-not-real", "host": "https://api.wandb.ai",
        "extra": {"entity": "acme", "project": "rag", "registry": "models"}}))
    for uri in ("wandb://wandb_default@", "wandb://"):
        opened = views.open_checked(uri)
        assert (opened.entity, opened.project, opened.registry_name) == ("acme", "rag", "models"), uri
        assert "test-key-not-real" not in opened.uri
    with pytest.raises(views.RegistryUnavailable, match="no_such_conn"):
        views.open_checked("wandb://no_such_conn@acme/rag")


# ---------------------------------------------------------------- registration with Airflow


def test_airflow_loads_exactly_this_plugin_from_the_plugins_folder():
    from airflow._shared.plugins_manager import _load_plugins_from_plugin_directory

    plugins, errors = _load_plugins_from_plugin_directory(plugins_folder=str(PLUGINS))
    assert errors == {}
    assert [p.name for p in plugins] == ["ragindex"]
    plugin = plugins[0]
    (app,) = plugin.fastapi_apps
    assert app["url_prefix"] == "/ragindex" and app["name"] == "ragindex"
    (view,) = plugin.external_views
    assert view == {"name": "Index versions", "href": "ragindex/", "destination": "nav", "category": "browse",
                    "url_route": "ragindex"}
    assert [type(link).__name__ for link in plugin.global_operator_extra_links] == ["IndexVersionLink"]
    # .airflowignore keeps the loader from importing the package's files as top-level modules
    assert "views" not in sys.modules or not str(getattr(sys.modules["views"], "__file__", "")).startswith(str(PLUGINS))


# ---------------------------------------------------------------- the real Airflow UI in Chromium

PORT = 38080  # other suites use 18080 and 28080; never 8080
BASE = f"http://127.0.0.1:{PORT}"



def _port_busy(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _stop(proc: subprocess.Popen) -> None:
    """Stop a process we started and its children (own session, so its process group id is its pid)."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


@pytest.fixture(scope="module")
def airflow_ui(filled_registry: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``airflow api-server`` + ``airflow dag-processor`` on loopback, AIRFLOW_HOME in a temporary folder."""
    need(Path(CHROMIUM).exists(), f"Chromium is not installed at {CHROMIUM} (scripts/system-deps.sh installs it)")
    if _port_busy(PORT):
        pytest.fail(f"port {PORT} is already in use on 127.0.0.1 (another run of these tests?)")
    home = tmp_path_factory.mktemp("airflow-home")
    env = dict(os.environ)
    env.update(
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__DAGS_FOLDER=str(REPO / "dags"),
        AIRFLOW__CORE__PLUGINS_FOLDER=str(PLUGINS),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__CORE__AUTH_MANAGER="airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager",
        AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS="True",
        AIRFLOW__API__BASE_URL=BASE,
        AIRFLOW__API__PORT=str(PORT),
        AIRFLOW__API_AUTH__JWT_SECRET="ragindex-ui-test-secret",
        AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL="5",
        RAGINDEX_REGISTRY=filled_registry["uri"],
        RAGINDEX_HOME=str(filled_registry["home"]),
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        PATH=f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}",
    )
    airflow = str(VENV_BIN / "airflow")
    migrate = subprocess.run([airflow, "db", "migrate"], env=env, cwd=home, capture_output=True, text=True, timeout=300)
    assert migrate.returncode == 0, migrate.stderr[-3000:]
    logs = {name: open(home / f"{name}.log", "w") for name in ("api-server", "dag-processor")}
    procs = [
        subprocess.Popen([airflow, "api-server", "--host", "127.0.0.1", "--port", str(PORT), "--workers", "1"],
                         env=env, cwd=home, stdout=logs["api-server"], stderr=subprocess.STDOUT, start_new_session=True),
        subprocess.Popen([airflow, "dag-processor"], env=env, cwd=home, stdout=logs["dag-processor"],
                         stderr=subprocess.STDOUT, start_new_session=True),
    ]
    try:
        import httpx

        deadline = time.monotonic() + 240
        ready = serialized = False
        while time.monotonic() < deadline and not (ready and serialized):
            for proc, name in zip(procs, logs):
                if proc.poll() is not None:
                    pytest.fail(f"{name} exited {proc.returncode}:\n{(home / f'{name}.log').read_text()[-4000:]}")
            try:
                ready = ready or httpx.get(f"{BASE}/api/v2/monitor/health", timeout=5).status_code == 200
            except httpx.HTTPError:
                pass
            try:
                with sqlite3.connect(home / "airflow.db", timeout=5) as db:
                    found = {r[0] for r in db.execute("SELECT dag_id FROM serialized_dag")}
                serialized = "rag_ingest" in found
            except sqlite3.Error:
                pass
            time.sleep(1)
        assert ready, f"the API server did not answer:\n{(home / 'api-server.log').read_text()[-4000:]}"
        assert serialized, f"rag_ingest was not serialized:\n{(home / 'dag-processor.log').read_text()[-4000:]}"
        yield BASE
    finally:
        for proc in reversed(procs):
            _stop(proc)
        for fh in logs.values():
            fh.close()


@pytest.fixture(scope="module")
def browser(airflow_ui: str) -> Iterator[Any]:
    from playwright import sync_api  # pinned in requirements.txt: a missing install is an error, not a skip

    with sync_api.sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.mark.browser
def test_index_versions_page_in_the_airflow_ui(browser, airflow_ui, filled_registry):
    ARTIFACTS.mkdir(exist_ok=True)
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        # through the UI's navigation: Browse → Index versions (an iframe of /ragindex/)
        page.goto(f"{airflow_ui}/", wait_until="domcontentloaded")
        page.get_by_role("button", name="Browse").click(timeout=60_000)
        page.get_by_role("menuitem", name="Index versions").click(timeout=30_000)
        frame_element = page.locator('iframe[title="Index versions"]')
        frame_element.wait_for(timeout=30_000)
        assert frame_element.evaluate("e => e.src") == f"{airflow_ui}/ragindex/"
        frame = page.frame_locator('iframe[title="Index versions"]')
        frame.locator('tr.is-production[data-ref="vector-index:v0"]').wait_for(timeout=30_000)
        assert "★ production" in frame.locator('tr.is-production[data-ref="vector-index:v0"]').inner_text()
        for ref in ("raw-documents:v0", "processed-chunks:v0", "vector-index:v0", filled_registry["eval"]["report"]):
            assert frame.locator(f'tr[data-ref="{ref}"]').count() == 1, ref
        assert "production" in frame.locator("#production").inner_text()
        page.screenshot(path=str(ARTIFACTS / "ui-index-versions.png"))

        # the page itself (full length) and a lineage page, opened directly
        page.goto(f"{airflow_ui}/ragindex/", wait_until="load")
        page.screenshot(path=str(ARTIFACTS / "ui-index-versions-page.png"), full_page=True)
        page.locator('tr[data-ref="vector-index:v0"] a', has_text="lineage").click()
        page.wait_for_url(re.compile(r".*/ragindex/lineage/vector-index(%3A|:)v0$"))
        page.locator('svg.lineage g.node[data-ref="raw-documents:v0"]').wait_for()
        for ref in ("raw-documents:v0", "processed-chunks:v0", "vector-index:v0", filled_registry["eval"]["report"]):
            assert page.locator(f'svg.lineage g.node[data-ref="{ref}"]').count() == 1, ref
        page.screenshot(path=str(ARTIFACTS / "ui-index-lineage.png"), full_page=True)

        # where the "Index version" extra link points: the version's page framed in the Airflow UI
        from ragindex_ui.links import page_url

        page.goto(f"{airflow_ui}{page_url('vector-index:v0')}", wait_until="domcontentloaded")
        framed = page.frame_locator('iframe[title="Index versions"]')
        framed.locator("h1", has_text="vector-index:v0").wait_for(timeout=30_000)
        assert framed.locator('svg.lineage g.node.root[data-ref="vector-index:v0"]').count() == 1
        assert page.get_by_role("button", name="Browse").is_visible()  # the UI's navigation is around it
    finally:
        page.close()
    assert not errors, errors


@pytest.mark.browser
def test_api_server_registers_the_plugin(airflow_ui):
    """What the running API server reports about the plugin (``GET /api/v2/plugins``)."""
    import httpx

    plugins = httpx.get(f"{airflow_ui}/api/v2/plugins", timeout=30).json()["plugins"]
    (ours,) = [p for p in plugins if p["name"] == "ragindex"]
    assert [(a["name"], a["url_prefix"]) for a in ours["fastapi_apps"]] == [("ragindex", "/ragindex")]
    assert [(v["name"], v["url_route"], v["category"]) for v in ours["external_views"]] == [
        ("Index versions", "ragindex", "browse")]
    assert any("IndexVersionLink" in link for link in ours["global_operator_extra_links"])
    errors = httpx.get(f"{airflow_ui}/api/v2/plugins/importErrors", timeout=30).json()
    assert errors["total_entries"] == 0, errors


@pytest.mark.browser
def test_trigger_form_shows_every_param_title(browser, airflow_ui):
    from ragindex_airflow.params import ingest_params

    titles = [p.schema["title"] for p in ingest_params().values()]
    assert all(titles)
    ARTIFACTS.mkdir(exist_ok=True)
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    try:
        page.goto(f"{airflow_ui}/dags/rag_ingest", wait_until="domcontentloaded")
        page.get_by_role("button", name="Trigger Dag").first.click(timeout=60_000)
        dialog = page.get_by_role("dialog")
        # the Params form is in sections (one per concern), each a collapsed accordion: open every one
        sections = list(dict.fromkeys(p.schema["section"] for p in ingest_params().values()))
        assert len(sections) > 1
        for section in sections:
            dialog.get_by_role("button", name=section).click(timeout=30_000)
        dialog.locator("label", has_text=titles[-1]).first.wait_for(state="attached", timeout=30_000)
        # each Param is a field whose label is its title (a required field's label ends with "*")
        labels = {re.sub(r"\s*\*\s*$", "", t).strip() for t in dialog.locator("label").all_inner_texts()}
        missing = [t for t in titles if t not in labels]
        assert not missing, f"titles missing from the trigger form's labels: {missing} (labels: {sorted(labels)})"
        # a viewport as tall as the dialog's content, so the screenshot shows the whole form
        height = page.evaluate("() => Math.max(...[...document.querySelectorAll('[role=dialog], [role=dialog] *')]"
                               ".map(e => e.scrollHeight))")
        page.set_viewport_size({"width": 1400, "height": min(max(1000, int(height) + 200), 6000)})
        page.wait_for_timeout(500)
        page.screenshot(path=str(ARTIFACTS / "ui-trigger-form.png"))
    finally:
        page.close()


def test_forced_in_and_overriding_approvals_are_shown_as_such(client, tmp_path):
    """A version forced in by a rollback never reads as approved; an approval over a rejection names it."""
    from ragindex.promotion import approve
    from ragindex.review import REJECTED, record_review
    from ragindex.rollback import rollback
    from tests.decisions.conftest import Versions

    versions = Versions(tmp_path)
    good, forced, overridden = versions.index(), versions.index(), versions.index()
    approve(versions.registry, good, actor="alice", reason="checked")
    rollback(versions.registry, to_version="v1", force=True, reason="incident 12", actor="ops")
    rollback(versions.registry, to_version="v0", reason="incident over", actor="ops")
    record_review(versions.registry, overridden, REJECTED, actor="bob", reason="prices wrong")
    record_review(versions.registry, overridden, "approved", actor="carol", reason="prices fixed upstream")
    uri = str(tmp_path / "registry")
    page = get_page(client, "/", uri)
    forced_row = row_of(page, forced)
    assert "badge review review-forced_in standing-bad" in forced_row and ">forced in</span>" in forced_row
    assert "forced in by ops" in html.unescape(forced_row) and "incident 12" in html.unescape(forced_row)
    assert "review-rolled_back" not in forced_row and "standing-good" not in forced_row
    over_row = html.unescape(row_of(page, overridden))
    assert "approved (overriding a rejection)" in over_row and "overriding the rejection on" in over_row
    assert "by bob: “prices wrong”" in over_row
    assert "standing-good" in row_of(page, good)
    detail = get_page(client, f"/lineage/{quote(forced, safe='')}", uri)
    assert 'badge review-forced_in"' in detail and ">forced in</span></h1>" in detail
