"""`postier` command line: database, demo data, selections (and, later, documents)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from postier.domain.selection import PARAM_LABELS, Selection
from postier.domain.treatments import TreatmentId
from postier.errors import PostierError
from postier.store import database
from postier.store.migrations import migrate
from postier.store.selection import select_frame


def _db_command(args: argparse.Namespace) -> int:
    cluster = database.local_cluster()
    if args.action == "start":
        print(f"PostgreSQL local démarré : {cluster.start()}")
    elif args.action == "stop":
        cluster.stop()
        print("PostgreSQL local arrêté.")
    elif args.action == "status":
        if cluster.running():
            print(f"PostgreSQL local en marche : {cluster.dsn()}")
        else:
            print("PostgreSQL local arrêté.")
            return 3
    elif args.action == "migrate":
        with database.connect(database.resolve_owner_dsn()) as conn:
            applied = migrate(conn)
        print("Migrations appliquées : " + (", ".join(applied) if applied else "aucune (à jour)"))
    return 0


def _demo_command(args: argparse.Namespace) -> int:
    if args.action == "day":
        from postier.airflow.demo_day import run_day

        run_day()
        from postier.storage import RUNS, StorageConfig, open_storage

        home = database.home()
        runs = open_storage(StorageConfig.from_env(), home).location(RUNS)
        print(
            f"\nDocuments et rapports : {runs}\nGED : {home / 'ged'}\nCourriels : {home / 'outbox'}"
        )
        return 0
    from postier import demo_data

    with database.connect(database.resolve_owner_dsn()) as conn:
        migrate(conn)
    with database.connect(database.resolve_dsn()) as conn:
        summary = demo_data.seed(conn, args.invoices, args.seed, plateforme=True)
    print(
        f"Données de démonstration : {summary.invoices} factures, {summary.customers} clients, "
        f"{summary.lines} lignes en {summary.duration_s:.1f} s."
    )
    return 0


def _criteria(args: argparse.Namespace) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for key in PARAM_LABELS:
        value = getattr(args, key, None)
        if value is None:
            continue
        if key in {"sans_date_edition", "sans_dematerialisation"}:
            value = value == "oui"
        params[key] = value
    return params


def _select_command(args: argparse.Namespace) -> int:
    selection = Selection.from_params(args.treatment, _criteria(args))
    with database.connect(database.resolve_dsn()) as conn:
        frame = select_frame(conn, selection, limit=args.limit)
    if args.format == "csv":
        frame.to_csv(sys.stdout, index=False)
    else:
        with pd.option_context("display.max_rows", None, "display.width", 200):
            print(frame.to_string(index=False) if len(frame) else "Aucune facture sélectionnée.")
    print(f"{len(frame)} facture(s).", file=sys.stderr)
    return 0


def _documents_command(args: argparse.Namespace) -> int:
    from postier.documents import verify_pdf

    roots = [_der(path) for path in args.trust] or _demo_roots()
    bad = 0
    for path in args.files:
        result = verify_pdf(path, trust_roots=roots or None)
        print(f"{'OK ' if result.valid else 'KO '} {path}")
        for check in result.signatures:
            print(
                f"    signature {check.field_name} : signataire « {check.signer} », "
                f"le {check.signing_time}, intègre={'oui' if check.intact else 'non'}, "
                f"confiance={'oui' if check.trusted else 'non'}"
            )
        for problem in result.problems:
            print(f"    {problem}")
        bad += not result.valid
    return 1 if bad else 0


def _ged_command(args: argparse.Namespace) -> int:
    from postier.pipeline.archive_check import verify_archive
    from postier.pipeline.context import Environment

    env = Environment(
        dsn=database.resolve_dsn(),
        home=database.home(),
        ged_url=os.environ.get("POSTIER_GED_URL", ""),
    )
    roots = [_der(path) for path in args.trust] or _demo_roots()
    check = verify_archive(env, roots or None)
    for p in check.problems:
        print(f"KO  {p.invoice} — {p.problem} — {p.location}")
    print(f"{check.checked} document(s) vérifié(s), {len(check.problems)} anomalie(s).")
    return 0 if check.ok else 1


def _mail_command(args: argparse.Namespace) -> int:
    from postier.delivery.mail import SmtpConfig
    from postier.pipeline.context import Environment
    from postier.pipeline.mailing import resend, uncertain_messages

    dsn = database.resolve_dsn()
    if args.action == "incertains":
        with database.connect(dsn) as conn:
            rows = uncertain_messages(conn)
        for message_id, customer, recipients, reason in rows:
            print(f"{message_id}  {customer}  {recipients}\n    {reason}")
        print(f"{len(rows)} courriel(s) incertain(s).")
        return 0
    if not args.message_ids:
        print("Indiquez le Message-ID de chaque courriel à renvoyer.", file=sys.stderr)
        return 2
    env = Environment(
        dsn=dsn,
        home=database.home(),
        ged_url=os.environ.get("POSTIER_GED_URL", ""),
        smtp=SmtpConfig.from_env(),
    )
    done = resend(env, list(args.message_ids))
    for message_id in done["ignores"]:
        print(f"Ignoré (inconnu, ou ni incertain ni refusé) : {message_id}")
    print(
        f"{len(done['remis_en_file'])} courriel(s) remis en file ; {done['envoyes']} envoyé(s), "
        f"{done['en_echec']} en échec, {done['en_attente']} en attente."
    )
    return 0 if not done["ignores"] and not done["en_echec"] else 1


def _platform_command(args: argparse.Namespace) -> int:
    from postier.pipeline.context import Environment
    from postier.pipeline.lifecycle import import_files

    env = Environment(dsn=database.resolve_dsn(), home=database.home())
    done = import_files(env, list(args.files), by=os.environ.get("USER") or "postier")
    for line in done.applied:
        print(f"Appliqué : {line}")
    for line in done.attention:
        print(f"À traiter : {line}")
    for name, reason in done.quarantined.items():
        print(f"Mis de côté : {name} — {reason}")
    print(f"{len(done.applied)} statut(s) appliqué(s), {len(done.quarantined)} mis de côté.")
    return 0 if not done.quarantined else 1


def _der(path: Path) -> bytes:
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    data = path.read_bytes()
    if b"-----BEGIN" in data:
        return x509.load_pem_x509_certificate(data).public_bytes(Encoding.DER)
    return data


def _demo_roots() -> list[bytes]:
    demo_ca = database.home() / "signing" / "demo-ca.der"
    return [demo_ca.read_bytes()] if demo_ca.exists() else []


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="postier",
        description="Postier : impression, signature, archivage et envoi des factures client.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    db = sub.add_parser("db", help="base de données : migrate, start, stop, status")
    db.add_argument("action", choices=["migrate", "start", "stop", "status"])
    db.set_defaults(func=_db_command)

    demo = sub.add_parser("demo", help="données de démonstration")
    demo.add_argument("action", choices=["seed", "day"], help="seed : données ; day : une journée")
    demo.add_argument("--invoices", type=int, default=2000, help="nombre de factures")
    demo.add_argument("--seed", type=int, default=1, help="graine (reproductible)")
    demo.set_defaults(func=_demo_command)

    sel = sub.add_parser("select", help="afficher les factures que sélectionne un traitement")
    sel.add_argument("--treatment", required=True, choices=[t.value for t in TreatmentId])
    for key, label in PARAM_LABELS.items():
        flag = "--" + key.replace("_", "-")
        if key in {"sans_date_edition", "sans_dematerialisation"}:
            sel.add_argument(flag, dest=key, choices=["oui", "non"], help=label)
        else:
            sel.add_argument(flag, dest=key, help=label)
    sel.add_argument("--limit", type=int, default=None, help="nombre maximal de lignes")
    sel.add_argument("--format", choices=["table", "csv"], default="table")
    sel.set_defaults(func=_select_command)

    docs = sub.add_parser("documents", help="documents : vérifier les signatures de PDF")
    docs.add_argument("action", choices=["verify"])
    docs.add_argument("files", nargs="+", type=Path, help="fichiers PDF signés")
    docs.add_argument(
        "--trust", type=Path, action="append", default=[], help="certificat racine (DER ou PEM)"
    )
    docs.set_defaults(func=_documents_command)

    ged = sub.add_parser("ged", help="GED : vérifier les documents archivés")
    ged.add_argument("action", choices=["verify"])
    ged.add_argument("--trust", type=Path, action="append", default=[], help="certificat racine")
    ged.set_defaults(func=_ged_command)

    mail = sub.add_parser("courriels", help="courriels : lister les incertains, en renvoyer")
    mail.add_argument(
        "action",
        choices=["incertains", "renvoyer"],
        help="incertains : issue inconnue ; renvoyer : renvoi volontaire (même Message-ID)",
    )
    mail.add_argument("message_ids", nargs="*", metavar="MESSAGE-ID", help="pour renvoyer")
    mail.set_defaults(func=_mail_command)

    pa = sub.add_parser(
        "plateforme", help="plateforme agréée : appliquer des fichiers de cycle de vie"
    )
    pa.add_argument("action", choices=["importer"])
    pa.add_argument("files", nargs="+", type=Path, metavar="FICHIER", help="fichiers CDAR")
    pa.set_defaults(func=_platform_command)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except PostierError as error:
        print(f"Erreur : {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
