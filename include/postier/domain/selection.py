"""Selection criteria of the ERP screen, validated before anything is read.

`Selection.from_params` turns the clerk's input (Airflow trigger form, command line) into a typed,
checked value; every problem found is reported at once, in French.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from postier.domain.states import SEND_STATE_LABELS, SendState
from postier.domain.treatments import Treatment, TreatmentId, treatment
from postier.errors import SelectionError

#: Business dates (edit date, "created in the last N days") are French calendar days.
PARIS = ZoneInfo("Europe/Paris")

OPERATOR_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")

#: Batch numbers are PostgreSQL `integer`s (`invoices.batch_number`).
BATCH_MAX = 2**31 - 1

#: Dates the clerk may give: beyond them a range is surely a typo, and Python's `date` arithmetic
#: (the day after 9999-12-31) and PostgreSQL's timestamps would fail in English.
DATE_MIN, DATE_MAX = date(1900, 1, 1), date(2199, 12, 31)

#: Names of the criteria as they appear in the trigger form and on the command line.
PARAM_LABELS: dict[str, str] = {
    "lot_debut": "Numéro de lot (début)",
    "lot_fin": "Numéro de lot (fin)",
    "date_facture_debut": "Date de facture (début)",
    "date_facture_fin": "Date de facture (fin)",
    "date_edition_debut": "Date d'édition (début)",
    "date_edition_fin": "Date d'édition (fin)",
    "operateur_creation": "Opérateur de création",
    "operateur_edition": "Opérateur d'édition",
    "etats": "États d'envoi",
    "sans_date_edition": "Uniquement les factures sans date d'édition",
    "sans_dematerialisation": "Uniquement les factures sans dématérialisation",
    "factures": "Factures cochées",
}

#: At most this many ticked invoices per run (the clerk ticks a page; « toutes selon les
#: critères » sends no list at all).
MAX_TICKED = 10_000


@dataclass(frozen=True)
class Selection:
    """What a treatment run works on. Implicit filters come from the treatment itself."""

    treatment_id: TreatmentId
    states: frozenset[SendState]
    batch_from: int | None = None
    batch_to: int | None = None
    invoice_date_from: date | None = None
    invoice_date_to: date | None = None
    edited_from: date | None = None
    edited_to: date | None = None
    created_by: str | None = None
    edited_by: str | None = None
    only_unedited: bool = False
    only_not_dematerialized: bool = False
    #: Nightly send: only invoices created on or after this day (Paris time).
    created_since: date | None = None
    #: The invoices the clerk ticked in the list (ids); None = every invoice the criteria match.
    #: Still filtered by the criteria, and re-checked under the row lock by each transition.
    invoice_ids: frozenset[int] | None = None

    @property
    def treatment(self) -> Treatment:
        return treatment(self.treatment_id)

    @classmethod
    def defaults(cls, treatment_id: str | TreatmentId) -> Selection:
        return cls.from_params(treatment_id, {})

    @classmethod
    def from_params(cls, treatment_id: str | TreatmentId, params: Mapping[str, Any]) -> Selection:
        """Validate the clerk's criteria; raise `SelectionError` listing every problem."""
        t = treatment(treatment_id)
        problems: list[str] = []
        unknown = sorted(set(params) - set(PARAM_LABELS))
        if unknown:
            problems.append("critère(s) inconnu(s) : " + ", ".join(unknown))

        batch_from = _integer(params, "lot_debut", problems)
        batch_to = _integer(params, "lot_fin", problems)
        _check_order(batch_from, batch_to, "numéros de lot", problems)
        inv_from = _date(params, "date_facture_debut", problems)
        inv_to = _date(params, "date_facture_fin", problems)
        _check_order(inv_from, inv_to, "dates de facture", problems)
        ed_from = _date(params, "date_edition_debut", problems)
        ed_to = _date(params, "date_edition_fin", problems)
        _check_order(ed_from, ed_to, "dates d'édition", problems)
        created_by = _operator(params, "operateur_creation", problems)
        edited_by = _operator(params, "operateur_edition", problems)
        states = _states(params, t, problems)
        invoice_ids = _invoice_ids(params, problems)

        only_unedited = _switch(params, "sans_date_edition", t, problems)
        only_not_demat = _switch(params, "sans_dematerialisation", t, problems)
        if only_unedited and (ed_from or ed_to or edited_by):
            problems.append(
                "« Uniquement les factures sans date d'édition » est incompatible avec une date "
                "ou un opérateur d'édition : décochez-le pour filtrer sur l'édition"
            )
        if problems:
            raise SelectionError(problems)
        return cls(
            treatment_id=t.id,
            states=states,
            batch_from=batch_from,
            batch_to=batch_to,
            invoice_date_from=inv_from,
            invoice_date_to=inv_to,
            edited_from=ed_from,
            edited_to=ed_to,
            created_by=created_by,
            edited_by=edited_by,
            only_unedited=only_unedited,
            only_not_dematerialized=only_not_demat,
            invoice_ids=invoice_ids,
        )

    def created_in_last_days(self, days: int, today: date) -> Selection:
        """The nightly send's filter: created in the last `days` days, today included."""
        if days < 1:
            raise SelectionError([f"NB_JOURS_AVANT_ENVOI_FACTURES doit être ≥ 1 (reçu {days})"])
        return replace(self, created_since=today - timedelta(days=days - 1))

    def edited_bounds(self) -> tuple[datetime | None, datetime | None]:
        """Edit date range as aware instants: [from 00:00, to+1 00:00) in Paris time."""
        start = datetime.combine(self.edited_from, time(), PARIS) if self.edited_from else None
        end = (
            datetime.combine(self.edited_to + timedelta(days=1), time(), PARIS)
            if self.edited_to
            else None
        )
        return start, end

    def created_since_instant(self) -> datetime | None:
        return datetime.combine(self.created_since, time(), PARIS) if self.created_since else None

    def as_params(self) -> dict[str, Any]:
        """The criteria back in the trigger-form vocabulary (for run reports)."""
        out: dict[str, Any] = {
            "etats": sorted(s.value for s in self.states),
            "sans_date_edition": self.only_unedited,
            "sans_dematerialisation": self.only_not_dematerialized,
        }
        for key, value in (
            ("lot_debut", self.batch_from),
            ("lot_fin", self.batch_to),
            ("date_facture_debut", self.invoice_date_from),
            ("date_facture_fin", self.invoice_date_to),
            ("date_edition_debut", self.edited_from),
            ("date_edition_fin", self.edited_to),
            ("operateur_creation", self.created_by),
            ("operateur_edition", self.edited_by),
        ):
            if value is not None:
                out[key] = value.isoformat() if isinstance(value, date) else value
        if self.created_since:
            out["cree_depuis"] = self.created_since.isoformat()
        if self.invoice_ids is not None:
            out["factures"] = sorted(self.invoice_ids)
        return out


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and value.strip() == "")


def _integer(params: Mapping[str, Any], key: str, problems: list[str]) -> int | None:
    value = params.get(key)
    if _blank(value):
        return None
    if isinstance(value, bool) or not isinstance(value, int | str):
        problems.append(f"{PARAM_LABELS[key]} : un nombre entier est attendu (reçu {shown(value)})")
        return None
    text = value.strip() if isinstance(value, str) else None
    if text is not None and not re.fullmatch(r"[+-]?[0-9]+", text):
        problems.append(f"{PARAM_LABELS[key]} : un nombre entier est attendu (reçu {shown(value)})")
        return None
    # A string of thousands of digits never reaches `int()` (Python refuses it, in English).
    number = (int(text) if len(text) <= 12 else -1) if text is not None else int(value)
    if not 0 <= number <= BATCH_MAX:
        problems.append(
            f"{PARAM_LABELS[key]} : le numéro doit être compris entre 0 et {BATCH_MAX} "
            f"(reçu {shown(value)})"
        )
        return None
    return number


def shown(value: Any, limit: int = 40) -> str:
    """A value as the clerk typed it, short enough for a message or a report (a number of
    thousands of digits cannot even be turned into a string by Python: its size is given)."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 128:
        return f"un nombre d'environ {int(value.bit_length() * 0.30103) + 1} chiffres"
    text = value if isinstance(value, str) else repr(value)
    if len(text) > limit:
        return f"« {text[:limit]}… » ({len(text)} caractères)"
    return f"« {text} »"


def _date(params: Mapping[str, Any], key: str, problems: list[str]) -> date | None:
    value = params.get(key)
    if _blank(value):
        return None
    if isinstance(value, datetime):
        return _within_window(value.date(), key, problems)
    if isinstance(value, date):
        return _within_window(value, key, problems)
    text = str(value).strip() if isinstance(value, str) else ""
    day = None
    for parse in (date.fromisoformat, lambda s: datetime.strptime(s, "%d/%m/%Y").date()):
        try:
            day = parse(text)
            break
        except ValueError:
            continue
    if day is None:
        problems.append(
            f"{PARAM_LABELS[key]} : date invalide {shown(value)} "
            "(format attendu AAAA-MM-JJ ou JJ/MM/AAAA)"
        )
        return None
    return _within_window(day, key, problems)


def _within_window(day: date, key: str, problems: list[str]) -> date | None:
    if DATE_MIN <= day <= DATE_MAX:
        return day
    problems.append(
        f"{PARAM_LABELS[key]} : date hors des limites ({day:%d/%m/%Y} ; possibles du "
        f"{DATE_MIN:%d/%m/%Y} au {DATE_MAX:%d/%m/%Y})"
    )
    return None


def _check_order(low: Any, high: Any, what: str, problems: list[str]) -> None:
    if low is not None and high is not None and low > high:
        problems.append(f"plage de {what} inversée : le début ({low}) est après la fin ({high})")


def _operator(params: Mapping[str, Any], key: str, problems: list[str]) -> str | None:
    value = params.get(key)
    if _blank(value):
        return None
    text = value.strip() if isinstance(value, str) else ""
    if not OPERATOR_PATTERN.match(text):
        problems.append(
            f"{PARAM_LABELS[key]} : login invalide {shown(value)} (lettres, chiffres, . _ @ -, "
            "64 caractères au plus)"
        )
        return None
    return text


def _states(params: Mapping[str, Any], t: Treatment, problems: list[str]) -> frozenset[SendState]:
    value = params.get("etats")
    if value is None or value == [] or value == "":
        return frozenset(t.default_states)
    raw: Iterable[Any] = value.split(",") if isinstance(value, str) else value
    if not isinstance(raw, list | tuple | set | frozenset) and not isinstance(value, str):
        problems.append(f"États d'envoi : une liste est attendue (reçu {shown(value)})")
        return frozenset(t.default_states)
    chosen: set[SendState] = set()
    allowed = ", ".join(SEND_STATE_LABELS[s] for s in t.allowed_states)
    for item in raw:
        code = str(item).strip().upper()
        try:
            state = SendState(code)
        except ValueError:
            problems.append(f"état d'envoi inconnu {shown(item)} (possibles : {allowed})")
            continue
        if state not in t.allowed_states:
            problems.append(
                f"l'état « {state.label} » n'est pas possible pour « {t.label} » "
                f"(possibles : {allowed})"
            )
            continue
        chosen.add(state)
    return frozenset(chosen) or frozenset(t.default_states)


def _invoice_ids(params: Mapping[str, Any], problems: list[str]) -> frozenset[int] | None:
    value = params.get("factures")
    if value is None or value == "":
        return None
    raw: Iterable[Any] = value.split(",") if isinstance(value, str) else value
    if not isinstance(raw, list | tuple | set | frozenset | str):
        problems.append(f"Factures cochées : une liste est attendue (reçu {shown(value)})")
        return None
    ids: set[int] = set()
    for item in raw:
        # `str()` of an int of thousands of digits fails (in English): ints are checked as such.
        text = item.strip() if isinstance(item, str) else None
        number = int(text) if text is not None and text.isdigit() and len(text) <= 18 else item
        if isinstance(number, bool) or not isinstance(number, int) or not 0 < number < 2**63:
            problems.append(f"Factures cochées : identifiant invalide {shown(item)}")
            return None
        ids.add(number)
    if not ids:
        problems.append("Factures cochées : aucune facture cochée")
    elif len(ids) > MAX_TICKED:
        problems.append(
            f"Factures cochées : {len(ids)} factures, {MAX_TICKED} au plus ; cochez plutôt "
            "« toutes selon les critères »"
        )
    return frozenset(ids)


def _switch(params: Mapping[str, Any], key: str, t: Treatment, problems: list[str]) -> bool:
    value = params.get(key)
    if value is None:
        return t.print_switches
    if isinstance(value, str) and value.strip().lower() in {
        "true",
        "oui",
        "1",
        "false",
        "non",
        "0",
    }:
        value = value.strip().lower() in {"true", "oui", "1"}
    if not isinstance(value, bool):
        problems.append(f"{PARAM_LABELS[key]} : oui ou non attendu (reçu {shown(value)})")
        return False
    if value and not t.print_switches:
        problems.append(f"{PARAM_LABELS[key]} : critère réservé aux traitements d'impression")
        return False
    return value
