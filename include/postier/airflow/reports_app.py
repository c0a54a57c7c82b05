"""The clerk's workspace inside the Airflow UI (FastAPI app of the `postier` plugin).

Pages under `/postier/`: the invoice list to tick and launch a treatment on (`factures`), one
invoice's history (`factures/{numero}`), the run reports with their files (`executions`), the
business settings (`parametres`). Every page and file needs a user signed in through Airflow's
auth manager; launching needs the right to trigger the DAG, changing a setting the right to
change Airflow's configuration (Admin and Op roles of the simple auth manager); every POST
carries a CSRF token.
"""

from __future__ import annotations

import hashlib
import mimetypes
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any
from urllib.parse import quote

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.params import Depends as DependsParam
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse

from postier.airflow import csrf, pages
from postier.domain.selection import PARAM_LABELS, Selection
from postier.domain.states import SendState
from postier.domain.treatments import TreatmentId, treatment
from postier.errors import ConfigurationError, PostierError, SelectionError
from postier.pipeline.context import Environment
from postier.pipeline.run_files import list_run_files, run_file
from postier.storage import RunFolder
from postier.store import listings
from postier.store.invoice_history import ArchivedDocument, archived_document, invoice_history
from postier.store.settings import change_setting, list_settings, setting_changes


@dataclass(frozen=True)
class Clerk:
    """The signed-in user, as the pages need it."""

    login: str
    may_change_settings: bool
    #: The auth manager's own user object (permission checks when launching a run).
    user: Any = None


#: Starts a DAG run for the clerk: (clerk, dag_id, conf, run_id) → URL of the run's page.
Launcher = Callable[[Clerk, str, dict[str, Any], str], str]

SWITCHES = ("sans_date_edition", "sans_dematerialisation")


def _criteria(form: Sequence[tuple[str, str]], submitted: bool) -> dict[str, Any]:
    """The clerk's criteria from a query string or a form, in the trigger form's vocabulary."""
    values: dict[str, Any] = {}
    states: list[str] = []
    for key, value in form:
        if key == "etats":
            states.append(value)
        elif key in PARAM_LABELS and key not in SWITCHES and key != "factures" and value.strip():
            values[key] = value.strip()
    if states:
        values["etats"] = states
    if submitted:  # an unticked switch is absent from the form: it means « non »
        keys = {k for k, _ in form}
        for key in SWITCHES:
            values[key] = key in keys
    return values


def _conf(t_id: TreatmentId, criteria: dict[str, Any]) -> dict[str, Any]:
    """The DAG run's conf: the form's values with the types the DAG's Params expect."""
    conf = dict(criteria)
    for key in ("lot_debut", "lot_fin"):
        if key in conf:
            conf[key] = int(conf[key])
    if not treatment(t_id).print_switches:
        for key in SWITCHES:
            conf.pop(key, None)
    return conf


def _treatment_of(value: str | None) -> TreatmentId:
    try:
        t = treatment(value or TreatmentId.IMPRIMER.value)
    except (PostierError, ValueError):
        raise HTTPException(status_code=404, detail="traitement inconnu") from None
    if t.scheduled:
        raise HTTPException(status_code=404, detail="traitement planifié : pas de liste")
    return t.id


def create_app(
    clerk: Callable[..., Any] | None = None,
    launcher: Launcher | None = None,
    environment: Callable[[], Environment] | None = None,
    csrf_key: bytes | None = None,
    dependencies: Sequence[DependsParam] | None = None,
    login_url: Callable[[str], str] | None = None,
) -> FastAPI:
    """The app; by default everything goes through Airflow's auth manager and connections."""
    if clerk is None:
        clerk, launcher, environment, csrf_key, dependencies, login_url = _airflow_wiring()
    assert launcher is not None and environment is not None and csrf_key is not None
    env_of: Callable[[], Environment] = environment
    launch: Launcher = launcher
    key: bytes = csrf_key
    app = FastAPI(title="Postier", dependencies=list(dependencies or []))
    Signed = Depends(clerk)

    if login_url is not None:
        to_login = login_url

        @app.exception_handler(HTTPException)
        async def anonymous_to_login(request: Request, error: HTTPException) -> Response:
            """A page opened without being signed in leads to Airflow's login, then back."""
            if error.status_code == 401 and request.method == "GET":
                return RedirectResponse(to_login(str(request.url)), status_code=303)
            return await http_exception_handler(request, error)

    def check_csrf(who: Clerk, token: str | None) -> None:
        if not csrf.valid(key, who.login, token):
            raise HTTPException(
                status_code=403, detail="jeton de formulaire invalide ou expiré : rechargez la page"
            )

    @app.get("/")
    def home() -> RedirectResponse:
        return RedirectResponse("/postier/factures", status_code=303)

    # -- the invoice list ------------------------------------------------------------------

    @app.get("/factures", response_class=HTMLResponse)
    def invoices(request: Request, who: Clerk = Signed) -> str:
        form = list(request.query_params.multi_items())
        t_id = _treatment_of(request.query_params.get("traitement"))
        criteria = _criteria(form, submitted="traitement" in request.query_params)
        errors: list[str] = []
        page = None
        refusals: dict[int, list[str]] = {}
        try:
            selection = Selection.from_params(t_id, criteria)
        except SelectionError as error:
            errors = error.problems
        else:
            with env_of().connect() as conn:
                page = listings.invoice_page(
                    conn,
                    selection,
                    after=request.query_params.get("apres"),
                    before=request.query_params.get("avant"),
                )
                refusals = _preparation_refusals(conn, page.rows)
        query = {"traitement": t_id.value} | {
            k: ("oui" if v is True else v) for k, v in criteria.items() if v is not False
        }
        if "traitement" in request.query_params:
            query |= {k: "non" for k in SWITCHES if criteria.get(k) is False}
        return pages.invoices_page(
            treatment(t_id),
            criteria,
            errors,
            page,
            refusals,
            query,
            csrf.issue(key, who.login),
            who.login,
        )

    @app.post("/factures/lancer", response_model=None)
    async def launch_treatment(request: Request, who: Clerk = Signed) -> Response:
        form = list((await request.form()).multi_items())
        fields = {k: str(v) for k, v in form}
        check_csrf(who, fields.get("csrf"))
        t_id = _treatment_of(fields.get("traitement"))
        pairs = [(k, str(v)) for k, v in form if k not in SWITCHES]
        pairs += [(k, "") for k in SWITCHES if fields.get(k, "oui") != "non"]
        criteria = _criteria(pairs, submitted=True)
        if fields.get("toutes") != "oui":
            criteria["factures"] = [
                int(str(v)) for k, v in form if k == "facture" and str(v).isdigit()
            ]
            if not criteria["factures"]:
                return HTMLResponse(
                    pages.layout(
                        "Factures",
                        "<p class='err' role='alert'>Aucune facture cochée : cochez des factures "
                        "ou « Toutes les factures selon les critères ».</p>",
                        who.login,
                    ),
                    status_code=400,
                )
        try:
            Selection.from_params(t_id, criteria)
        except SelectionError as error:
            body = "".join(f"<li>{pages.e(p)}</li>" for p in error.problems)
            return HTMLResponse(
                pages.layout("Factures", f"<ul class='err'>{body}</ul>", who.login),
                status_code=400,
            )
        conf = _conf(t_id, criteria)
        if t_id is TreatmentId.IMPRIMER:
            conf["mode"] = "apercu" if fields.get("mode") == "apercu" else "imprimer"
        run_id = f"manual__{datetime.now(UTC).isoformat()}"
        # No note of ours: the run's outcome note (with its link back here) is set when it ends,
        # and a note already there would be kept instead.
        return RedirectResponse(launch(who, t_id.value, conf, run_id), status_code=303)

    # -- one invoice -----------------------------------------------------------------------

    @app.get("/factures/{number}", response_class=HTMLResponse)
    def invoice(number: str, who: Clerk = Signed) -> str:
        env = env_of()
        with env.connect() as conn:
            history = invoice_history(conn, number)
        if history is None:
            raise HTTPException(status_code=404, detail="facture introuvable")
        return pages.invoice_page(history, _check_documents(env, history.documents), who.login)

    @app.get("/factures/{number}/documents/{document_id}")
    def invoice_document(number: str, document_id: int, who: Clerk = Signed) -> Response:
        env = env_of()
        with env.connect() as conn:
            document = archived_document(conn, number, document_id)
        if document is None:
            raise HTTPException(status_code=404, detail="document introuvable")
        try:
            data = env.archive().read(document.location)
        except (PostierError, OSError):
            raise HTTPException(status_code=404, detail="document absent de la GED") from None
        name = f"{number}-{document.kind}.pdf"
        return Response(
            data,
            media_type="application/pdf",
            headers={"Content-Disposition": f"attachment; filename*=UTF-8''{quote(name)}"},
        )

    # -- runs ------------------------------------------------------------------------------

    @app.get("/executions", response_class=HTMLResponse)
    def runs(request: Request, who: Clerk = Signed) -> str:
        q = request.query_params
        flt = listings.RunFilter(
            treatment=q.get("traitement") or None,
            status=q.get("statut") or None,
            triggered_by=(q.get("lance_par") or "").strip() or None,
            date_from=_day(q.get("du")),
            date_to=_day(q.get("au")),
        )
        with env_of().connect() as conn:
            page = listings.run_page(
                conn, flt, before=_int(q.get("avant")), after=_int(q.get("apres"))
            )
        return pages.runs_page(flt, page, dict(q), who.login)

    @app.get("/executions/{run_id}", response_class=HTMLResponse)
    def run(run_id: int, who: Clerk = Signed) -> str:
        env = env_of()
        with env.connect() as conn:
            found = listings.run_row(conn, run_id)
        if found is None:
            raise HTTPException(status_code=404, detail="exécution introuvable")
        row, location = found
        folder = _folder(env, location)
        files = list_run_files(folder) if folder else []
        report_html = None
        # From the listing just made: no second round trip to the storage.
        if folder and any(f.name == "rapport.md" for f in files):
            from markdown_it import MarkdownIt

            md = MarkdownIt("commonmark", {"html": False}).enable("table")
            report_html = md.render(folder.read("rapport.md").decode("utf-8"))
        return pages.run_page(row, report_html, files, who.login)

    @app.get("/executions/{run_id}/fichiers/{name:path}")
    def run_download(run_id: int, name: str, who: Clerk = Signed) -> StreamingResponse:
        env = env_of()
        with env.connect() as conn:
            folder = _folder(env, listings.run_output_dir(conn, run_id))
        if folder is None or run_file(folder, name) is None:
            raise HTTPException(status_code=404, detail="fichier introuvable")
        base = name.rsplit("/", 1)[-1]
        return StreamingResponse(
            _blocks(folder, name),
            media_type=mimetypes.guess_type(base)[0] or "application/octet-stream",
            headers={"Content-Disposition": f"attachment; filename*=UTF-8''{quote(base)}"},
        )

    # -- settings --------------------------------------------------------------------------

    def settings_html(who: Clerk, message: str | None = None, error: str | None = None) -> str:
        with env_of().connect() as conn:
            rows, changes = list_settings(conn), setting_changes(conn)
        return pages.settings_page(
            rows,
            changes,
            who.may_change_settings,
            csrf.issue(key, who.login),
            who.login,
            message,
            error,
        )

    @app.get("/parametres", response_class=HTMLResponse)
    def settings(request: Request, who: Clerk = Signed) -> str:
        saved = request.query_params.get("enregistre")
        return settings_html(who, f"Paramètre {saved} enregistré." if saved else None)

    @app.post("/parametres", response_model=None)
    async def change(request: Request, who: Clerk = Signed) -> Response:
        form = {k: str(v) for k, v in (await request.form()).items()}
        check_csrf(who, form.get("csrf"))
        if not who.may_change_settings:
            raise HTTPException(
                status_code=403, detail="seuls les administrateurs modifient les paramètres"
            )
        setting = form.get("cle", "")
        try:
            with env_of().connect() as conn:
                change_setting(conn, setting, form.get("valeur", ""), who.login)
        except ConfigurationError as error:
            return HTMLResponse(settings_html(who, error=str(error)), status_code=400)
        return RedirectResponse(f"/postier/parametres?enregistre={quote(setting)}", status_code=303)

    return app


def _folder(env: Environment, location: str | None) -> RunFolder | None:
    """The run's folder in the storage; None when it has none or it lies outside the storage
    (a run of another configuration: its files are not served)."""
    if not location:
        return None
    try:
        return env.storage.folder(location)
    except PostierError:
        return None


def _blocks(folder: RunFolder, name: str) -> Iterator[bytes]:
    """The file in blocks of 1 MiB, read from the storage as the response is sent."""
    with folder.open(name) as handle:
        while block := handle.read(1 << 20):
            yield block


def _int(value: str | None) -> int | None:
    return int(value) if value and value.isdigit() else None


def _day(value: str | None) -> date | None:
    try:
        return date.fromisoformat(value) if value else None
    except ValueError:
        return None


def _preparation_refusals(conn: Any, rows: Sequence[listings.InvoiceRow]) -> dict[int, list[str]]:
    """What « Préparer l'envoi » would refuse, for the page's invoices still to prepare."""
    from postier.domain.validation import sending_problems
    from postier.store.invoices import load_invoices

    waiting = [r.id for r in rows if r.send_state == SendState.EN_ATTENTE.value]
    if not waiting:
        return {}
    return {
        inv.id: problems
        for inv in load_invoices(conn, waiting)
        if (problems := sending_problems(inv))
    }


def _check_documents(env: Environment, documents: Sequence[ArchivedDocument]) -> dict[int, str]:
    """Each archived document read back: its fingerprint, then its signature."""
    from postier.pipeline.archive_check import document_problem

    # The demo signing identity's CA when it is the one in use; pyHanko's defaults otherwise.
    demo_ca = env.home / "signing" / "demo-ca.der"
    roots = [demo_ca.read_bytes()] if demo_ca.exists() else None
    checks: dict[int, str] = {}
    archive = None  # opened once for all the documents (one SFTP session)
    for d in documents:
        try:
            if archive is None:
                archive = env.archive()  # inside: a GED out of reach is "absent"
            problem = document_problem(archive, d.location, d.sha256, d.signed, roots)
        except (PostierError, OSError):
            problem = "absent de la GED"
        checks[d.id] = problem or (
            "signature valide, empreinte vérifiée"
            if d.signed
            else "empreinte vérifiée (document non signé)"
        )
    return checks


def _airflow_wiring() -> tuple[
    Any, Launcher, Callable[[], Environment], bytes, list[DependsParam], Callable[[str], str]
]:
    """Airflow's auth manager for who is signed in and what they may do; its trigger for runs."""
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.core_api.security import get_user, requires_authenticated
    from airflow.configuration import conf

    # A default, not `Annotated`: the annotations of this module are strings (PEP 563) and
    # FastAPI could not resolve a name imported inside this function.
    async def signed_in(user: Any = Depends(get_user)) -> Clerk:  # noqa: B008
        may = get_auth_manager().is_authorized_configuration(method="PUT", user=user)
        return Clerk(user.get_name(), bool(may), user)

    def launch(who: Clerk, dag_id: str, run_conf: dict[str, Any], run_id: str) -> str:
        from airflow.api.common.trigger_dag import trigger_dag
        from airflow.api_fastapi.auth.managers.models.resource_details import (
            DagAccessEntity,
            DagDetails,
        )
        from airflow.utils.types import DagRunTriggeredByType

        from postier.airflow.scheduler_notify import wake_scheduler

        allowed = get_auth_manager().is_authorized_dag(
            method="POST",
            access_entity=DagAccessEntity.RUN,
            details=DagDetails(id=dag_id),
            user=who.user,
        )
        if not allowed:
            raise HTTPException(status_code=403, detail="vous ne pouvez pas lancer ce traitement")
        try:
            trigger_dag(
                dag_id,
                triggered_by=DagRunTriggeredByType.UI,
                triggering_user_name=who.login,
                run_id=run_id,
                conf=run_conf,
            )
        except ValueError as error:  # the DAG's Params refused the conf
            raise HTTPException(status_code=400, detail=f"critères refusés : {error}") from None
        # Committed by `trigger_dag`: the scheduler may start it now, not at its sleep's end.
        wake_scheduler()
        return f"/dags/{quote(dag_id, safe='')}/runs/{quote(run_id, safe='')}"

    def environment() -> Environment:
        from postier.airflow.runtime import workspace_environment

        return workspace_environment()

    key = hashlib.sha256(("postier-csrf\n" + conf.get("api", "secret_key")).encode()).digest()

    def login(next_url: str) -> str:
        return str(get_auth_manager().get_url_login(next_url=next_url))

    return signed_in, launch, environment, key, [Depends(requires_authenticated())], login
