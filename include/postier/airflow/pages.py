"""HTML of the Postier pages (French), from plain values: no database, no Airflow here.

Every value is escaped; links carry only ids, invoice numbers and file names the server listed.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping, Sequence
from datetime import date, datetime
from decimal import Decimal
from typing import Any
from urllib.parse import quote, urlencode

from postier.domain.money import format_amount
from postier.domain.selection import PARAM_LABELS, PARIS
from postier.domain.states import SEND_STATE_LABELS, SendState
from postier.domain.treatments import CATALOGUE, Treatment
from postier.pipeline.run_files import RunFile
from postier.store.invoice_history import InvoiceHistory
from postier.store.listings import Page, RunFilter, RunRow
from postier.store.settings import SettingChange, SettingRow

PREFIX = "/postier"

STYLE = """body{font-family:sans-serif;margin:1rem 1.5rem;max-width:90rem;color:#222}
nav a{margin-right:1.2rem;font-weight:bold}table{border-collapse:collapse;margin:.5rem 0}
td,th{border:1px solid #ccc;padding:.2rem .45rem;text-align:left;vertical-align:top}
th{background:#f3f3f3}td.n{text-align:right;white-space:nowrap}.ko{color:#b00020}
.ok{color:#1b5e20}form.criteres{display:grid;grid-template-columns:repeat(4,auto);gap:.3rem .8rem;
align-items:center;max-width:70rem}.msg{padding:.4rem .8rem;background:#fff3cd}
.err{padding:.4rem .8rem;background:#fde2e1}fieldset{margin:.5rem 0}"""

#: Run statuses of the `runs` table, for the clerk.
RUN_STATUS = {
    "en_cours": "en cours",
    "terminee": "terminée",
    "refusee": "envoi refusé à la confirmation",
    "en_erreur": "incomplète",
    "criteres_invalides": "refusé : critères invalides",
}

#: Counters of a run report, in the clerk's words.
COUNTERS = {
    "selectionnees": "sélectionnées",
    "traitees": "traitées",
    "ignorees": "ignorées",
    "refusees": "refusées",
    "non_traitees": "non traitées",
}

CHANNELS = {
    "portail": "portail (courriel)",
    "chorus": "Chorus Pro",
    "papier": "papier",
    "plateforme": "plateforme agréée",
}

EXCHANGE_KINDS = {
    "changement_etat": "changement d'état",
    "mise_a_disposition": "mise à disposition (courriel au client)",
    "dematerialisation_chorus": "dématérialisation Chorus Pro",
    "export_chorus": "dépôt Chorus Pro",
    "retour_chorus": "retour Chorus Pro",
    "depot_plateforme": "dépôt sur la plateforme agréée",
    "cycle_de_vie": "cycle de vie (plateforme agréée)",
}


def e(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def when(value: datetime | date | None) -> str:
    """French date (and time, Paris) of a stamp; empty when there is none."""
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.astimezone(PARIS).strftime("%d/%m/%Y %H:%M")
    return value.strftime("%d/%m/%Y")


def amount(value: Decimal | None) -> str:
    return "" if value is None else format_amount(value)


def state_label(code: str) -> str:
    try:
        return SEND_STATE_LABELS[SendState(code)]
    except ValueError:
        return code


def treatment_label(treatment_id: str) -> str:
    for t in CATALOGUE.values():
        if t.id.value == treatment_id:
            return t.label
    return treatment_id


def airflow_run_url(external_id: str | None) -> str | None:
    """The Airflow UI page of the run (`dag_id/run_id` is how Postier records it)."""
    if not external_id or "/" not in external_id:
        return None
    dag_id, run_id = external_id.split("/", 1)
    return f"/dags/{quote(dag_id, safe='')}/runs/{quote(run_id, safe='')}"


def layout(title: str, body: str, login: str | None = None) -> str:
    who = f" — connecté : {e(login)}" if login else ""
    return (
        f"<!doctype html><html lang='fr'><head><meta charset='utf-8'><title>{e(title)}</title>"
        f"<style>{STYLE}</style></head><body><nav><a href='{PREFIX}/factures'>Factures</a>"
        f"<a href='{PREFIX}/executions'>Exécutions</a>"
        f"<a href='{PREFIX}/parametres'>Paramètres</a><a href='/'>Airflow</a>{who}</nav>"
        f"<h1>{e(title)}</h1>{body}</body></html>"
    )


def _table(headers: Sequence[str], rows: Iterable[Sequence[str]], empty: str) -> str:
    body = "".join("<tr>" + "".join(cells) + "</tr>" for cells in rows)
    if not body:
        return f"<p>{e(empty)}</p>"
    head = "".join(f"<th>{e(h)}</th>" for h in headers)
    return f"<table><tr>{head}</tr>{body}</table>"


def _td(value: Any, numeric: bool = False, raw: bool = False) -> str:
    return f"<td{' class=n' if numeric else ''}>{value if raw else e(value)}</td>"


def _pager(base: str, params: Mapping[str, Any], page: Page, after: str, before: str) -> str:
    links = []
    kept = {k: v for k, v in params.items() if v not in (None, "") and k not in (after, before)}
    if page.previous_key is not None:
        q = urlencode({**kept, before: page.previous_key}, doseq=True)
        links.append(f"<a href='{base}?{e(q)}' rel='prev'>← page précédente</a>")
    if page.next_key is not None:
        q = urlencode({**kept, after: page.next_key}, doseq=True)
        links.append(f"<a href='{base}?{e(q)}' rel='next'>page suivante →</a>")
    return "<p>" + " · ".join(links) + "</p>" if links else ""


# -- /postier/factures -----------------------------------------------------------------------


def _criteria_fields(t: Treatment, values: Mapping[str, Any]) -> str:
    def field(key: str, kind: str) -> str:
        return (
            f"<label for='{key}'>{e(PARAM_LABELS[key])}</label>"
            f"<input id='{key}' name='{key}' type='{kind}' value='{e(values.get(key) or '')}'>"
        )

    parts = [
        field("lot_debut", "number"),
        field("lot_fin", "number"),
        field("date_facture_debut", "date"),
        field("date_facture_fin", "date"),
        field("date_edition_debut", "date"),
        field("date_edition_fin", "date"),
        field("operateur_creation", "text"),
        field("operateur_edition", "text"),
    ]
    chosen = set(values.get("etats") or [s.value for s in t.default_states])
    boxes = "".join(
        f"<label><input type='checkbox' name='etats' value='{s.value}'"
        f"{' checked' if s.value in chosen else ''}> {e(s.label)}</label> "
        for s in t.allowed_states
    )
    parts.append(f"<span>{e(PARAM_LABELS['etats'])}</span><span>{boxes}</span>")
    if t.print_switches:
        for key in ("sans_date_edition", "sans_dematerialisation"):
            on = values.get(key, True) not in (False, "non")
            parts.append(
                f"<span></span><label><input type='checkbox' name='{key}' value='oui'"
                f"{' checked' if on else ''}> {e(PARAM_LABELS[key])}</label>"
            )
    return "".join(parts)


def manual_treatments() -> list[Treatment]:
    return [t for t in CATALOGUE.values() if not t.scheduled]


def invoices_page(
    t: Treatment,
    values: Mapping[str, Any],
    errors: Sequence[str],
    page: Page | None,
    refusals: Mapping[int, list[str]],
    query: Mapping[str, Any],
    csrf: str,
    login: str,
) -> str:
    options = "".join(
        f"<option value='{x.id.value}'{' selected' if x.id is t.id else ''}>{e(x.label)}</option>"
        for x in manual_treatments()
    )
    body = [
        "<p>Choisissez le traitement et les critères, affichez les factures, décochez celles à "
        "laisser de côté, puis lancez le traitement sur les factures cochées.</p>",
        f"<form method='get' action='{PREFIX}/factures' class='criteres' id='criteres'>"
        f"<label for='traitement'>Traitement</label><select id='traitement' name='traitement' "
        f"onchange='this.form.submit()'>{options}</select><span></span><span></span>"
        + _criteria_fields(t, values)
        + "<span></span><button type='submit'>Afficher les factures</button></form>",
    ]
    if errors:
        body.append(
            "<div class='err' role='alert'><b>Critères invalides :</b><ul>"
            + "".join(f"<li>{e(x)}</li>" for x in errors)
            + "</ul></div>"
        )
    if page is not None:
        rows = []
        for r in page.rows:
            refusal = refusals.get(r.id)
            rows.append(
                [
                    f"<td><input type='checkbox' name='facture' value='{r.id}' checked "
                    f"aria-label='cocher {e(r.number)}'></td>",
                    _td(
                        f"<a href='{PREFIX}/factures/{quote(r.number, safe='')}'>{e(r.number)}</a>",
                        raw=True,
                    ),
                    _td(when(r.invoice_date)),
                    _td(f"{r.customer_code} — {r.customer_name}"),
                    _td(amount(r.total_gross), numeric=True),
                    _td(state_label(r.send_state)),
                    _td(CHANNELS.get(r.channel, r.channel)),
                    _td(f"{when(r.edited_at)} {r.edited_by or ''}".strip()),
                    _td(f"{when(r.sent_at)} {r.sent_by or ''}".strip()),
                    f"<td class='ko'>{e(' ; '.join(refusal))}</td>" if refusal else "<td></td>",
                ]
            )
        hidden = "".join(
            f"<input type='hidden' name='{e(k)}' value='{e(v)}'>"
            for k, vs in query.items()
            for v in (vs if isinstance(vs, list) else [vs])
            if v not in (None, "") and k not in ("apres", "avant")
        )
        mode = (
            "<label>Mode <select name='mode'><option value='imprimer'>Imprimer (met à jour la date "
            "et le login d'édition)</option><option value='apercu'>Aperçu (ne met rien à jour)"
            "</option></select></label> "
            if t.id.value == "factures_imprimer"
            else ""
        )
        table = _table(
            [
                "✓",  # replaced below by a box that ticks or unticks the whole page
                "Numéro",
                "Date",
                "Client",
                "Total TTC",
                "État d'envoi",
                "Canal",
                "Édition",
                "Envoi",
                "Refus à la préparation",
            ],
            rows,
            "Aucune facture ne correspond à ces critères.",
        )
        table = table.replace(
            "<th>✓</th>",
            "<th><input type='checkbox' checked aria-label='cocher toute la page' onclick="
            "\"for (const b of this.form.querySelectorAll('input[name=facture]'))"
            ' b.checked = this.checked"></th>',
            1,
        )
        body.append(
            f"<form method='post' action='{PREFIX}/factures/lancer' id='lancer'>{hidden}"
            f"<input type='hidden' name='csrf' value='{e(csrf)}'>{table}"
            + _pager(f"{PREFIX}/factures", query, page, "apres", "avant")
            + "<fieldset><label><input type='checkbox' name='toutes' value='oui'> Toutes les "
            "factures selon les critères (toutes les pages, sans tenir compte des cases)</label>"
            f"<p>{mode}<button type='submit'>Lancer « {e(t.label)} »</button></p></fieldset>"
            "</form>"
        )
    return layout("Factures", "".join(body), login)


# -- /postier/executions ---------------------------------------------------------------------


def _counts(counts: Mapping[str, Any]) -> str:
    """The counters in the report's order (a jsonb object keeps no order of its own)."""
    known = [(label, counts[key]) for key, label in COUNTERS.items() if key in counts]
    other = [(key, value) for key, value in counts.items() if key not in COUNTERS]
    return ", ".join(f"{label} : {value}" for label, value in known + other)


def _status_label(run: RunRow) -> str:
    label = RUN_STATUS.get(run.status, run.status)
    if run.progress is not None:
        done, total = run.progress
        label += f" ({done}/{total} factures traitées)"
    if run.reason:
        label += f" — {run.reason}"
    return label


def _status(run: RunRow) -> str:
    cls = "ko" if run.status in ("en_erreur", "criteres_invalides") else ""
    return f"<td class='{cls}'>{e(_status_label(run))}</td>"


def runs_page(flt: RunFilter, page: Page, query: Mapping[str, Any], login: str) -> str:
    def option(value: str, label: str, chosen: str | None) -> str:
        selected = " selected" if value == chosen else ""
        return f"<option value='{e(value)}'{selected}>{e(label)}</option>"

    treatments = option("", "tous", flt.treatment) + "".join(
        option(t.id.value, t.label, flt.treatment) for t in CATALOGUE.values()
    )
    statuses = option("", "tous", flt.status) + "".join(
        option(k, v, flt.status) for k, v in RUN_STATUS.items()
    )
    form = (
        f"<form method='get' action='{PREFIX}/executions' class='criteres'>"
        f"<label for='traitement'>Traitement</label><select id='traitement' name='traitement'>"
        f"{treatments}</select><label for='statut'>Statut</label>"
        f"<select id='statut' name='statut'>{statuses}</select>"
        f"<label for='lance_par'>Lancé par</label><input id='lance_par' name='lance_par' "
        f"value='{e(flt.triggered_by or '')}'><span></span><span></span>"
        f"<label for='du'>Du</label><input id='du' name='du' type='date' "
        f"value='{e(flt.date_from.isoformat() if flt.date_from else '')}'>"
        f"<label for='au'>Au</label><input id='au' name='au' type='date' "
        f"value='{e(flt.date_to.isoformat() if flt.date_to else '')}'>"
        "<span></span><button type='submit'>Filtrer</button></form>"
    )
    rows = []
    for r in page.rows:
        airflow = airflow_run_url(r.external_id)
        rows.append(
            [
                _td(f"<a href='{PREFIX}/executions/{r.id}'>{r.id}</a>", raw=True),
                _td(treatment_label(r.treatment)),
                _td(r.triggered_by),
                _td(when(r.started_at)),
                _td(when(r.finished_at)),
                _status(r),
                _td(_counts(r.counts)),
                _td(f"<a href='{e(airflow)}'>exécution Airflow</a>" if airflow else "", raw=True),
            ]
        )
    table = _table(
        ["N°", "Traitement", "Lancé par", "Début", "Fin", "Statut", "Factures", "Airflow"],
        rows,
        "Aucune exécution ne correspond à ces critères.",
    )
    pager = _pager(f"{PREFIX}/executions", query, page, "avant", "apres")
    return layout("Exécutions", form + table + pager, login)


def run_page(run: RunRow, report_html: str | None, files: Sequence[RunFile], login: str) -> str:
    airflow = airflow_run_url(run.external_id)
    facts = [
        ("Traitement", e(treatment_label(run.treatment))),
        ("Statut", e(_status_label(run))),
        ("Lancé par", e(run.triggered_by)),
        ("Début", e(when(run.started_at))),
        ("Fin", e(when(run.finished_at))),
        ("Factures", e(_counts(run.counts))),
    ]
    if airflow:
        facts.append(("Airflow", f"<a href='{e(airflow)}'>voir l'exécution dans Airflow</a>"))
    head = "<table>" + "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in facts) + "</table>"
    file_rows = [
        [
            _td(
                f"<a href='{PREFIX}/executions/{run.id}/fichiers/{quote(f.name)}' download>"
                f"{e(f.name)}</a>",
                raw=True,
            ),
            _td(f.kind),
            _td(f"{f.size:,} octets".replace(",", "\u202f"), numeric=True),
        ]
        for f in files
    ]
    body = (
        f"<p><a href='{PREFIX}/executions'>← toutes les exécutions</a></p>{head}"
        "<h2>Fichiers produits</h2>"
        + _table(["Fichier", "Contenu", "Taille"], file_rows, "Aucun fichier pour l'instant.")
        + (f"<h2>Rapport</h2>{report_html}" if report_html else "<p>Rapport pas encore écrit.</p>")
    )
    return layout(f"Exécution {run.id}", body, login)


# -- /postier/factures/{numero} --------------------------------------------------------------

STAMPS = {
    "send_state": "État d'envoi",
    "created_at": "Créée le",
    "created_by": "Opérateur de création",
    "state_changed_at": "Dernier changement d'état",
    "state_changed_by": "par",
    "edited_at": "Date d'édition",
    "edited_by": "Opérateur d'édition",
    "sent_at": "Envoyée le",
    "sent_by": "Envoyée par",
    "dematerialized": "Dématérialisée",
    "dematerialized_channel": "Canal de dématérialisation",
    "chorus_flow_name": "Flux Chorus Pro",
    "chorus_deposited_at": "Déposée sur Chorus Pro le",
    "chorus_status": "Statut Chorus Pro",
    "chorus_status_at": "Statut Chorus Pro reçu le",
}


def _stamp(key: str, value: Any) -> str:
    if key == "send_state":
        return state_label(value)
    if key == "chorus_status":
        from postier.domain.chorus_returns import INVOICE_STATUSES

        status = INVOICE_STATUSES.get(value)
        return f"{value} — {status.label}" if status else str(value)
    if isinstance(value, bool):
        return "oui" if value else "non"
    if isinstance(value, datetime | date):
        return when(value)
    return "" if value is None else str(value)


def invoice_page(h: InvoiceHistory, checks: Mapping[int, str], login: str) -> str:
    facts = [
        ("Client", h.customer),
        ("Date", when(h.invoice_date)),
        ("Total TTC", amount(h.total_gross)),
        ("Canal", CHANNELS.get(h.channel, h.channel)),
    ] + [(STAMPS[k], _stamp(k, v)) for k, v in h.stamps.items() if v not in (None, "")]
    head = "<table>" + "".join(f"<tr><th>{e(k)}</th><td>{e(v)}</td></tr>" for k, v in facts)
    runs = _table(
        ["Exécution", "Traitement", "Résultat", "Motif", "Le", "Document"],
        [
            [
                _td(f"<a href='{PREFIX}/executions/{rid}'>{rid}</a>", raw=True),
                _td(treatment_label(tr)),
                _td(
                    {
                        "a_traiter": "à traiter",
                        "traitee": "traitée",
                        "ignoree": "ignorée",
                        "en_erreur": "refusée",
                    }.get(st, st)
                ),
                _td(reason or ""),
                _td(when(at)),
                _td(
                    f"<a href='{PREFIX}/executions/{rid}/fichiers/{quote(out)}' download>"
                    f"{e(out)}</a>"
                    if out
                    else "",
                    raw=True,
                ),
            ]
            for rid, tr, st, reason, at, out in h.runs
        ],
        "Aucune exécution n'a encore pris cette facture.",
    )
    exchanges = _table(
        ["Le", "Échange", "Partenaire", "Statut", "Par", "Détail"],
        [
            [
                _td(when(at)),
                _td(EXCHANGE_KINDS.get(kind, kind)),
                _td(partner),
                _td(status),
                _td(by),
                _td("; ".join(f"{k} : {v}" for k, v in (report or {}).items())),
            ]
            for at, kind, partner, status, by, report in h.exchanges
        ],
        "Aucun échange enregistré.",
    )
    number = quote(h.number, safe="")
    documents = _table(
        ["Document", "Archivé le", "SHA-256", "Signature"],
        [
            [
                _td(
                    f"<a href='{PREFIX}/factures/{number}/documents/{d.id}' download>"
                    f"{e(d.kind)} (PDF{' signé' if d.signed else ''})</a>",
                    raw=True,
                ),
                _td(when(d.at)),
                _td(f"<code>{e(d.sha256)}</code>", raw=True),
                _td(checks.get(d.id, "")),
            ]
            for d in h.documents
        ],
        "Aucun document archivé dans la GED.",
    )
    body = (
        head
        + "</table><h2>Exécutions</h2>"
        + runs
        + "<h2>Suivi des échanges</h2>"
        + exchanges
        + "<h2>Documents archivés (GED)</h2>"
        + documents
    )
    return layout(f"Facture {h.number}", body, login)


# -- /postier/parametres ---------------------------------------------------------------------


def settings_page(
    settings: Sequence[SettingRow],
    changes: Sequence[SettingChange],
    may_change: bool,
    csrf: str,
    login: str,
    message: str | None = None,
    error: str | None = None,
) -> str:
    rows = []
    for s in settings:
        if may_change:
            value = (
                f"<form method='post' action='{PREFIX}/parametres' style='margin:0'>"
                f"<input type='hidden' name='csrf' value='{e(csrf)}'>"
                f"<input type='hidden' name='cle' value='{e(s.key)}'>"
                f"<input name='valeur' value='{e(s.value)}' aria-label='{e(s.key)}' size='40'> "
                "<button type='submit'>Enregistrer</button></form>"
            )
        else:
            value = e(s.value)
        kind = {"bool": "oui / non", "int": "nombre", "text": "texte"}.get(s.value_type, "")
        rows.append([_td(s.key), _td(s.description), _td(kind), _td(value, raw=True)])
    intro = (
        "<p>Vous pouvez modifier les paramètres : chaque modification est enregistrée.</p>"
        if may_change
        else "<p>Lecture seule : seuls les administrateurs modifient les paramètres.</p>"
    )
    notes = (f"<p class='msg' role='status'>{e(message)}</p>" if message else "") + (
        f"<p class='err' role='alert'>{e(error)}</p>" if error else ""
    )
    history = _table(
        ["Le", "Par", "Paramètre", "Ancienne valeur", "Nouvelle valeur"],
        [
            [
                _td(when(c.changed_at)),
                _td(c.changed_by),
                _td(c.key),
                _td(c.old_value),
                _td(c.new_value),
            ]
            for c in changes
        ],
        "Aucune modification enregistrée.",
    )
    body = (
        notes
        + intro
        + _table(["Paramètre", "Signification", "Type", "Valeur"], rows, "")
        + "<h2>Historique des modifications</h2>"
        + history
    )
    return layout("Paramètres", body, login)
