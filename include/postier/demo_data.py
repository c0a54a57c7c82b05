"""Demo data set: realistic French customers and invoices, reproducible from a seed, loaded by COPY.

`seed(conn, invoices=100_000)` fills the ERP tables with a data set on which every treatment meets
both valid and invalid invoices: all send states, channels and payment modes, credit notes, split
schedules, multi-page invoices, and deliberate defects (0 € invoices, portal customers without
e-mail, Chorus customers without SIRET, Chorus invoices without the service code or engagement
number their buyer requires, LCR customers without bank details). With `plateforme=True` (as
`postier demo seed` does) a share of the private customers receive theirs through the Plateforme
Agréée: valid SIREN, a scheme-0225 address that starts with it, and no invoice already sent (the
local PA of the demo has none of them yet).

Same `seed` and `today` give the same rows. Seeding a database that already holds data continues
after it: customer codes, invoice numbers and batch numbers start after the highest existing ones,
and row ids are reserved from the tables' own identity sequences.
"""

from __future__ import annotations

import random
import time
import unicodedata
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pandas as pd
import psycopg
from psycopg import sql
from psycopg.copy import QueuedLibpqWriter
from stdnum import iban as stdnum_iban
from stdnum import luhn

from postier.domain.money import to_cents
from postier.domain.states import Channel, InvoiceKind, LineNature, PaymentMode, SendState
from postier.errors import PostierError

PARIS = ZoneInfo("Europe/Paris")
#: Invoice dates fall in this many days before `today`.
WINDOW_DAYS = 90
CUSTOMER_PREFIX = "CLI"
NUMBER_PREFIX: dict[InvoiceKind, str] = {InvoiceKind.FACTURE: "FA", InvoiceKind.AVOIR: "AV"}
FIRST_BATCH = 1000
#: Share of the private customers on channel `plateforme` (`seed(..., plateforme=True)`).
PLATEFORME_SHARE = 0.2

CREATORS: tuple[str, ...] = ("mdupont", "jmartin", "scompta", "lbernard", "cpetit")
CREATOR_WEIGHTS: tuple[int, ...] = (35, 25, 20, 12, 8)
EDITORS: tuple[str, ...] = ("mdupont", "jmartin", "scompta", "agarcia")
SENDERS: tuple[str, ...] = ("scompta", "mdupont", "agarcia")

STATE_WEIGHTS: dict[SendState, int] = {
    SendState.EN_ATTENTE: 50,
    SendState.PRET: 25,
    SendState.ENVOYE: 17,
    SendState.CONSERVE_INTERNE: 8,
}
#: Probability that an invoice in this state has already been printed for real.
EDITED_SHARE: dict[SendState, float] = {
    SendState.EN_ATTENTE: 0.15,
    SendState.PRET: 0.40,
    SendState.ENVOYE: 0.70,
    SendState.CONSERVE_INTERNE: 0.30,
}
MODE_WEIGHTS: dict[PaymentMode, int] = {
    PaymentMode.VIREMENT: 35,
    PaymentMode.CHEQUE: 14,
    PaymentMode.LCR: 16,
    PaymentMode.BILLET_ORDRE: 7,
    PaymentMode.PRELEVEMENT: 18,
    PaymentMode.CARTE: 10,
}
#: Payment modes that need the customer's bank details (drawee of a bill, direct debit).
BANK_MODES = frozenset({PaymentMode.LCR, PaymentMode.BILLET_ORDRE, PaymentMode.PRELEVEMENT})

# -- reference lists -------------------------------------------------------------------------

CITIES: tuple[tuple[str, str], ...] = (
    ("75011", "Paris"),
    ("75015", "Paris"),
    ("69003", "Lyon"),
    ("69007", "Lyon"),
    ("13008", "Marseille"),
    ("31000", "Toulouse"),
    ("06000", "Nice"),
    ("44000", "Nantes"),
    ("67000", "Strasbourg"),
    ("34000", "Montpellier"),
    ("33000", "Bordeaux"),
    ("59000", "Lille"),
    ("35000", "Rennes"),
    ("51100", "Reims"),
    ("42000", "Saint-Étienne"),
    ("83000", "Toulon"),
    ("76600", "Le Havre"),
    ("38000", "Grenoble"),
    ("21000", "Dijon"),
    ("49000", "Angers"),
    ("30000", "Nîmes"),
    ("63000", "Clermont-Ferrand"),
    ("72000", "Le Mans"),
    ("13100", "Aix-en-Provence"),
    ("29200", "Brest"),
    ("37000", "Tours"),
    ("80000", "Amiens"),
    ("87000", "Limoges"),
    ("74000", "Annecy"),
    ("66000", "Perpignan"),
    ("57000", "Metz"),
    ("25000", "Besançon"),
    ("45000", "Orléans"),
    ("68100", "Mulhouse"),
    ("14000", "Caen"),
    ("54000", "Nancy"),
    ("86000", "Poitiers"),
    ("64000", "Pau"),
    ("17000", "La Rochelle"),
    ("26000", "Valence"),
    ("01000", "Bourg-en-Bresse"),
    ("73000", "Chambéry"),
    ("71100", "Chalon-sur-Saône"),
    ("03100", "Montluçon"),
    ("24000", "Périgueux"),
    ("12000", "Rodez"),
    ("05000", "Gap"),
    ("2A000", "Ajaccio"),
    ("97400", "Saint-Denis"),
    ("69400", "Villefranche-sur-Saône"),
    ("38200", "Vienne"),
    ("84000", "Avignon"),
)
#: Public buyers located where they are: (name, postal code, city).
DEPARTMENTS: tuple[tuple[str, str, str], ...] = (
    ("de l'Ain", "01000", "Bourg-en-Bresse"),
    ("de l'Isère", "38000", "Grenoble"),
    ("du Rhône", "69003", "Lyon"),
    ("de la Drôme", "26000", "Valence"),
    ("de la Savoie", "73000", "Chambéry"),
    ("du Nord", "59000", "Lille"),
    ("de la Gironde", "33000", "Bordeaux"),
    ("du Finistère", "29000", "Quimper"),
    ("de la Haute-Garonne", "31000", "Toulouse"),
    ("du Bas-Rhin", "67000", "Strasbourg"),
    ("de la Loire", "42000", "Saint-Étienne"),
    ("du Puy-de-Dôme", "63000", "Clermont-Ferrand"),
    ("de Maine-et-Loire", "49000", "Angers"),
    ("de l'Hérault", "34000", "Montpellier"),
    ("du Calvados", "14000", "Caen"),
)
UNIVERSITIES: tuple[tuple[str, str, str], ...] = (
    ("Université Claude Bernard Lyon 1", "69100", "Villeurbanne"),
    ("Université de Bordeaux", "33400", "Talence"),
    ("Université Grenoble Alpes", "38400", "Saint-Martin-d'Hères"),
    ("Université de Lille", "59650", "Villeneuve-d'Ascq"),
    ("Université Paris Cité", "75006", "Paris"),
    ("Université de Strasbourg", "67000", "Strasbourg"),
    ("Aix-Marseille Université", "13007", "Marseille"),
    ("Nantes Université", "44000", "Nantes"),
    ("Université de Rennes", "35000", "Rennes"),
    ("Université Toulouse Capitole", "31000", "Toulouse"),
    ("Université Jean Monnet Saint-Étienne", "42000", "Saint-Étienne"),
    ("Université Savoie Mont Blanc", "73000", "Chambéry"),
    ("Université de Montpellier", "34000", "Montpellier"),
    ("Université de Poitiers", "86000", "Poitiers"),
)
NOTABLES: tuple[str, ...] = (
    "Victor Hugo",
    "Jean Moulin",
    "Marie Curie",
    "Jules Ferry",
    "Louis Pasteur",
    "Simone Veil",
    "Albert Camus",
    "George Sand",
    "Jean Jaurès",
    "Condorcet",
    "Charles de Gaulle",
)
FIRST_NAMES: tuple[str, ...] = (
    "Marie",
    "Jean",
    "Sophie",
    "Pierre",
    "Nathalie",
    "Philippe",
    "Isabelle",
    "Michel",
    "Catherine",
    "Alain",
    "Sylvie",
    "Nicolas",
    "Christine",
    "Laurent",
    "Céline",
    "Julien",
    "Émilie",
    "Thomas",
    "Camille",
    "Antoine",
    "Léa",
    "Hugo",
    "Chloé",
    "Mathieu",
    "Aurélie",
    "François",
    "Hélène",
    "Stéphane",
    "Valérie",
    "Éric",
    "Manon",
    "Olivier",
    "Inès",
    "Yannick",
)
LAST_NAMES: tuple[str, ...] = (
    "Martin",
    "Bernard",
    "Dubois",
    "Thomas",
    "Robert",
    "Richard",
    "Petit",
    "Durand",
    "Leroy",
    "Moreau",
    "Simon",
    "Laurent",
    "Lefèvre",
    "Michel",
    "Garcia",
    "David",
    "Bertrand",
    "Roux",
    "Vincent",
    "Fournier",
    "Morel",
    "Girard",
    "André",
    "Lefebvre",
    "Mercier",
    "Dupont",
    "Lambert",
    "Bonnet",
    "François",
    "Martinez",
    "Legrand",
    "Garnier",
    "Faure",
    "Rousseau",
    "Blanc",
    "Guérin",
    "Muller",
    "Henry",
    "Roussel",
    "Nicolas",
    "Perrin",
    "Morin",
    "Mathieu",
    "Clément",
    "Gauthier",
    "Dumont",
    "Lopez",
    "Fontaine",
    "Chevalier",
    "Robin",
    "Masson",
)
TRADES: tuple[str, ...] = (
    "Boulangerie",
    "Garage",
    "Transports",
    "Menuiserie",
    "Imprimerie",
    "Pharmacie",
    "Plomberie",
    "Électricité",
    "Boucherie",
    "Librairie",
    "Charpente",
    "Cabinet",
    "Paysages",
    "Carrosserie",
    "Traiteur",
    "Maçonnerie",
    "Fromagerie",
    "Serrurerie",
    "Ambulances",
    "Hôtel",
)
BRANDS: tuple[str, ...] = (
    "Alpes Logistique",
    "Rhône Industrie",
    "Atelier du Bois",
    "Sud Emballages",
    "Océane Services",
    "Horizon Bureautique",
    "Provence Distribution",
    "Nord Maintenance",
    "Bretagne Équipements",
    "Soft Conseil",
    "Delta Informatique",
    "Métallerie Moderne",
    "Arvor Nettoyage",
    "Lumière & Son",
    "Vallée Agro",
    "Azur Climatisation",
    "Savoie Matériaux",
    "Loire Hygiène",
)
LEGAL_FORMS: tuple[str, ...] = ("SARL", "SAS", "SA", "EURL", "SASU", "SNC")
STREET_TYPES: tuple[str, ...] = (
    "rue",
    "rue",
    "rue",
    "avenue",
    "boulevard",
    "place",
    "chemin",
    "allée",
    "impasse",
    "quai",
)
STREET_NAMES: tuple[str, ...] = (
    "Victor Hugo",
    "Jean Jaurès",
    "de la République",
    "du Général de Gaulle",
    "Pasteur",
    "des Lilas",
    "de la Gare",
    "Gambetta",
    "du Moulin",
    "des Écoles",
    "Voltaire",
    "de la Liberté",
    "Émile Zola",
    "du Commerce",
    "des Tilleuls",
    "Jules Ferry",
    "de Verdun",
    "Carnot",
    "de l'Église",
    "Lamartine",
    "du 8 Mai 1945",
    "Marcel Pagnol",
    "des Vignes",
)
ADDRESS_LINE2: tuple[str, ...] = (
    "Bâtiment B",
    "ZA des Platanes",
    "CS 40012",
    "BP 215",
    "2e étage",
    "Parc d'activités du Lac",
    "Service comptabilité",
    "ZI Nord",
    "Porte 3",
)
SERVICE_CODES: tuple[str, ...] = (
    "SERV-FIN",
    "DAF",
    "SCE-ACHATS",
    "COMPTA-FOURN",
    "DSI",
    "SERVICES-TECHNIQUES",
    "ECO-LOG",
    "RESTAURATION",
    "SCE-BIOMED",
    "PATRIMOINE",
)
#: Real French bank codes with their BICs (8 or 11 characters).
BANKS: tuple[tuple[str, str], ...] = (
    ("30004", "BNPAFRPPXXX"),
    ("30003", "SOGEFRPP"),
    ("30002", "CRLYFRPP"),
    ("10278", "CMCIFR2A"),
    ("11315", "CEPAFRPP131"),
    ("16006", "AGRIFRPP860"),
    ("20041", "PSSTFRPPLYO"),
    ("30066", "CMCIFRPP"),
    ("10107", "BREDFRPP"),
    ("18306", "AGRIFRPP883"),
    ("13825", "CEPAFRPP382"),
    ("17806", "AGRIFRPP878"),
)

B, S = LineNature.BIEN, LineNature.SERVICE
# description, ERP unit (include/templates/documents/units.toml), VAT rate, unit price range
# (euros), quantity kind, nature (goods or services: BT-23 and the printed operation category)
Item = tuple[str, str, str, float, float, str, LineNature]
CATALOGUE: dict[str, tuple[Item, ...]] = {
    "services": (
        ("Maintenance préventive du parc d'impression", "H", "20", 45, 95, "hours", S),
        ("Prestation de conseil en organisation", "J", "20", 450, 1200, "days", S),
        ("Formation des utilisateurs (session sur site)", "J", "20", 600, 1500, "days", S),
        ("Intervention technicien – main-d'œuvre", "H", "20", 38, 72, "hours", S),
        ("Frais de déplacement technicien", "U", "20", 25, 90, "few", S),
        ("Abonnement logiciel de gestion – mensuel", "U", "20", 29, 490, "one", S),
        ("Hébergement et sauvegarde des données", "U", "20", 15, 250, "one", S),
        ("Nettoyage des locaux", "M2", "20", 0.85, 3.6, "area", S),
        ("Entretien des espaces verts", "M2", "20", 0.4, 2.2, "area", S),
        ("Location de nacelle élévatrice", "J", "20", 180, 420, "days", S),
        ("Audit de sécurité informatique", "J", "20", 800, 1400, "days", S),
        ("Assistance téléphonique (forfait)", "U", "20", 60, 350, "one", S),
    ),
    "fournitures": (
        ("Ramette papier A4 80 g/m² (500 feuilles)", "U", "20", 3.9, 6.5, "many", B),
        ("Cartouche d'encre noire haute capacité", "U", "20", 24, 89, "few", B),
        ("Toner laser couleur", "U", "20", 65, 180, "few", B),
        ("Câble réseau RJ45 catégorie 6", "M", "20", 0.35, 1.9, "length", B),
        ("Gants nitrile (boîte de 100)", "U", "20", 5.5, 12.9, "many", B),
        ("Produit d'entretien multi-surfaces", "L", "20", 2.45, 7.8, "volume", B),
        ("Granulés de bois en vrac", "KG", "20", 0.3215, 0.4875, "weight", B),
        ("Fioul domestique", "L", "20", 1.0525, 1.3875, "volume", B),
        ("Palette bois 80 x 120", "U", "20", 8, 22, "many", B),
        ("Écran 24 pouces", "U", "20", 129, 289, "few", B),
    ),
    "travaux": (
        (
            "Travaux de rénovation énergétique – isolation des combles",
            "M2",
            "5.5",
            18,
            45,
            "area",
            S,
        ),
        ("Remplacement de chaudière à condensation", "U", "5.5", 2800, 5200, "one", S),
        (
            "Travaux de peinture intérieure (logement de plus de 2 ans)",
            "M2",
            "10",
            12,
            32,
            "area",
            S,
        ),
        ("Pose de carrelage (logement de plus de 2 ans)", "M2", "10", 28, 65, "area", S),
        ("Main-d'œuvre plomberie (logement de plus de 2 ans)", "H", "10", 40, 65, "hours", S),
        ("Fourniture et pose de menuiseries isolantes", "U", "5.5", 380, 1200, "few", S),
    ),
    "alimentation": (
        ("Plateaux-repas livrés", "U", "10", 12.5, 24.9, "many", B),
        ("Prestation traiteur – cocktail", "U", "10", 18, 45, "many", S),
        ("Pommes de terre (sac de 25 kg)", "U", "5.5", 11, 19, "few", B),
        ("Farine de blé T55", "KG", "5.5", 0.6125, 1.1, "weight", B),
        ("Café en grains", "KG", "5.5", 11.35, 24.9, "weight", B),
        ("Eau minérale (pack de 6 × 1,5 L)", "U", "5.5", 2.1, 4.2, "many", B),
        ("Livres scolaires", "U", "5.5", 14, 32, "many", B),
        ("Bois de chauffage", "M3", "10", 65, 110, "volume", B),
    ),
    "presse_sante": (
        ("Abonnement presse quotidienne régionale", "U", "2.1", 180, 420, "one", B),
        ("Magazine professionnel (abonnement annuel)", "U", "2.1", 45, 160, "one", B),
        ("Médicaments remboursables – réassort officine", "U", "2.1", 2.35, 38, "many", B),
        ("Publications de presse (lot)", "U", "2.1", 1.2, 3.9, "many", B),
    ),
}
SECTOR_WEIGHTS: dict[str, int] = {
    "services": 45,
    "fournitures": 25,
    "travaux": 12,
    "alimentation": 12,
    "presse_sante": 6,
}
CREDIT_REASONS: tuple[str, ...] = (
    "Avoir – retour de marchandise",
    "Avoir – remise commerciale accordée",
    "Avoir – annulation partielle de la prestation",
    "Avoir – erreur de facturation",
    "Avoir – geste commercial",
)
FREE_LINES: tuple[str, ...] = (
    "Échantillons gratuits",
    "Prestation offerte (garantie)",
    "Visite de contrôle incluse au contrat",
    "Remplacement sous garantie",
)


@dataclass(frozen=True)
class SeedSummary:
    customers: int
    invoices: int
    lines: int
    due_dates: int
    duration_s: float


@dataclass
class _Customer:
    id: int
    code: str
    name: str
    contact_name: str | None
    address_line1: str
    address_line2: str | None
    postal_code: str
    city: str
    emails: list[str]
    siren: str | None
    siret: str | None
    vat_number: str | None
    channel: Channel
    chorus_service_code: str | None
    chorus_service_required: bool
    chorus_engagement_required: bool
    iban: str | None
    bic: str | None
    payment_mode: PaymentMode
    term_days: int
    sector: str
    #: BT-49 (scheme 0225); None: the SIREN, as the directory's default address.
    einvoicing_address: str | None = None

    def row(self) -> tuple[object, ...]:
        return (
            self.id,
            self.code,
            self.name,
            self.contact_name,
            self.address_line1,
            self.address_line2,
            self.postal_code,
            self.city,
            self.emails,
            self.siren,
            self.siret,
            self.vat_number,
            self.channel.value,
            self.chorus_service_code,
            self.chorus_service_required,
            self.chorus_engagement_required,
            self.iban,
            self.bic,
            self.einvoicing_address,
        )


@dataclass
class _Invoice:
    customer: _Customer
    kind: InvoiceKind
    invoice_date: date
    created_at: datetime
    batch_number: int
    created_by: str
    payment_mode: PaymentMode
    state: SendState
    lines: list[tuple[object, ...]] = field(default_factory=list)
    due_dates: list[tuple[date, Decimal]] = field(default_factory=list)
    due_date: date | None = None
    total_net: Decimal = Decimal("0.00")
    total_vat: Decimal = Decimal("0.00")
    total_gross: Decimal = Decimal("0.00")
    state_changed_at: datetime | None = None
    state_changed_by: str | None = None
    edited_at: datetime | None = None
    edited_by: str | None = None
    sent_at: datetime | None = None
    sent_by: str | None = None
    dematerialized_channel: str | None = None
    chorus_service_code: str | None = None
    chorus_engagement_number: str | None = None
    credited: _Invoice | None = None  # the invoice a credit note corrects
    delivery_date: date | None = None
    delivery_place: tuple[str, str, str, str] | None = None  # name, line 1, postal code, city


CUSTOMER_COLUMNS = (
    "id",
    "code",
    "name",
    "contact_name",
    "address_line1",
    "address_line2",
    "postal_code",
    "city",
    "emails",
    "siren",
    "siret",
    "vat_number",
    "channel",
    "chorus_service_code",
    "chorus_service_required",
    "chorus_engagement_required",
    "iban",
    "bic",
    "einvoicing_address",
)
INVOICE_COLUMNS = (
    "id",
    "number",
    "kind",
    "customer_id",
    "invoice_date",
    "due_date",
    "batch_number",
    "created_by",
    "created_at",
    "payment_mode",
    "total_net",
    "total_vat",
    "total_gross",
    "send_state",
    "state_changed_at",
    "state_changed_by",
    "edited_at",
    "edited_by",
    "sent_at",
    "sent_by",
    "dematerialized",
    "dematerialized_channel",
    "chorus_service_code",
    "chorus_engagement_number",
    "credited_invoice_id",
    "delivery_date",
    "delivery_name",
    "delivery_address_line1",
    "delivery_postal_code",
    "delivery_city",
    "delivery_country",
)
LINE_COLUMNS = (
    "invoice_id",
    "position",
    "description",
    "quantity",
    "unit",
    "unit_price",
    "vat_rate",
    "net_amount",
    "nature",
)
DUE_DATE_COLUMNS = ("invoice_id", "position", "due_date", "amount")


# -- identifiers -----------------------------------------------------------------------------


def siren_with_key(first8: str) -> str:
    return first8 + luhn.calc_check_digit(first8)


def siret_for(siren: str, establishment: int) -> str:
    """SIRET = SIREN + NIC (4 digits + a Luhn key over all 14 digits)."""
    partial = f"{siren}{establishment:04d}"
    return partial + luhn.calc_check_digit(partial)


def vat_number_for(siren: str) -> str:
    return f"FR{(12 + 3 * (int(siren) % 97)) % 97:02d}{siren}"


def french_iban(bank: str, branch: str, account: str) -> str:
    """IBAN FR from a RIB: bank 5 + branch 5 + account 11 + RIB key 2."""
    rib_key = 97 - ((89 * int(bank) + 15 * int(branch) + 3 * int(account)) % 97)
    bban = f"{bank}{branch}{account}{rib_key:02d}"
    return f"FR{stdnum_iban.calc_check_digits('FR00' + bban)}{bban}"


def _slug(text: str) -> str:
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode().lower()
    return "-".join("".join(c if c.isalnum() else " " for c in ascii_text).split())


# -- generation ------------------------------------------------------------------------------


class _Generator:
    def __init__(self, rng: random.Random, today: date) -> None:
        self.rng = rng
        self.today = today
        self.sirens: set[str] = set()

    def new_siren(self, prefix: str) -> str:
        while True:
            body = prefix + "".join(str(self.rng.randrange(10)) for _ in range(8 - len(prefix)))
            siren = siren_with_key(body)
            # 356000000 is La Poste, whose SIRETs follow another rule.
            if siren not in self.sirens and not siren.startswith("356000000"):
                self.sirens.add(siren)
                return siren

    def person(self) -> tuple[str, str]:
        return self.rng.choice(FIRST_NAMES), self.rng.choice(LAST_NAMES)

    def address(self) -> tuple[str, str | None, str, str]:
        rng = self.rng
        street = f"{rng.randint(1, 180)} {rng.choice(STREET_TYPES)} {rng.choice(STREET_NAMES)}"
        line2 = rng.choice(ADDRESS_LINE2) if rng.random() < 0.2 else None
        postal_code, city = rng.choice(CITIES)
        return street, line2, postal_code, city

    def bank_details(self) -> tuple[str, str]:
        bank, bic = self.rng.choice(BANKS)
        branch = f"{self.rng.randrange(100000):05d}"
        account = f"{self.rng.randrange(10**11):011d}"
        return french_iban(bank, branch, account), bic

    def customer(self, cid: int, code: str, public: bool) -> _Customer:
        rng = self.rng
        line1, line2, postal_code, city = self.address()
        first, last = self.person()
        if public:
            kind = rng.choice(("mairie", "hopital", "universite", "departement", "cc", "lycee"))
            # SIREN prefixes follow INSEE's legal categories of public bodies.
            if kind == "universite":
                name, postal_code, city = rng.choice(UNIVERSITIES)
                prefix, domain = "19", f"{_slug(name)[:30]}.fr"
            elif kind == "departement":
                department, postal_code, city = rng.choice(DEPARTMENTS)
                name, prefix = f"Département {department}", "22"
                domain = f"departement-{_slug(department)}.fr"
            elif kind == "mairie":
                name, prefix, domain = f"Mairie de {city}", "21", f"ville-{_slug(city)}.fr"
            elif kind == "hopital":
                name, prefix = f"Centre hospitalier de {city}", "26"
                domain = f"ch-{_slug(city)}.fr"
            elif kind == "cc":
                name, prefix = f"Communauté de communes de {city}", "24"
                domain = f"cc-{_slug(city)}.fr"
            else:
                name, prefix = f"Lycée {rng.choice(NOTABLES)}", "19"
                domain = f"lycee-{_slug(city)}.fr"
            emails = [f"factures@{domain}"] if rng.random() < 0.7 else []
            channel = Channel.CHORUS if rng.random() < 0.9 else Channel.PAPIER
            mode = PaymentMode.VIREMENT if rng.random() < 0.9 else PaymentMode.CHEQUE
            term = 30
            sector = rng.choice(("services", "fournitures", "alimentation", "travaux"))
        else:
            pattern = rng.randrange(4)
            if pattern == 0:
                base = f"{rng.choice(TRADES)} {last}"
            elif pattern == 1:
                base = f"{last} et Fils"
            elif pattern == 2:
                base = f"{rng.choice(BRANDS)}"
            else:
                base = f"{rng.choice(TRADES)} {rng.choice(LAST_NAMES)}-{last}"
            name = f"{base} {rng.choice(LEGAL_FORMS)}"
            prefix = str(rng.randint(3, 9))
            domain = f"{_slug(base)[:30]}.fr"
            emails = [
                f"{_slug(first)}.{_slug(last)}@{domain}"
                if rng.random() < 0.6
                else f"comptabilite@{domain}"
            ]
            if rng.random() < 0.1:
                emails.append(f"factures@{domain}")
            channel = Channel.PORTAIL if rng.random() < 0.55 else Channel.PAPIER
            if channel is Channel.PAPIER and rng.random() < 0.5:
                emails = []
            mode = rng.choices(list(MODE_WEIGHTS), weights=list(MODE_WEIGHTS.values()))[0]
            term = rng.choice((30, 30, 45, 60))
            sector = rng.choices(list(SECTOR_WEIGHTS), weights=list(SECTOR_WEIGHTS.values()))[0]
        siren = self.new_siren(prefix)
        siret = siret_for(siren, rng.choice((1, 1, 2, 3, 4, 5, 7, 12, 15, 21)))
        vat = vat_number_for(siren) if (not public or rng.random() < 0.5) else None
        iban = bic = None
        if mode in BANK_MODES or rng.random() < 0.3:
            iban, bic = self.bank_details()
        service_required = channel is Channel.CHORUS and rng.random() < 0.5
        engagement_required = channel is Channel.CHORUS and rng.random() < 0.4
        service_code = None
        if channel is Channel.CHORUS and (service_required or rng.random() < 0.3):
            service_code = rng.choice(SERVICE_CODES)
        contact = None
        if rng.random() < 0.85:
            civility = "Mme" if first in _FEMALE else "M."
            contact = f"{civility} {first} {last}"
        return _Customer(
            id=cid,
            code=code,
            name=name,
            contact_name=contact,
            address_line1=line1,
            address_line2=line2,
            postal_code=postal_code,
            city=city,
            emails=emails,
            siren=siren,
            siret=siret,
            vat_number=vat,
            channel=channel,
            chorus_service_code=service_code,
            chorus_service_required=service_required,
            chorus_engagement_required=engagement_required,
            iban=iban,
            bic=bic,
            payment_mode=mode,
            term_days=term,
            sector=sector,
            # Most receive under their SIREN; some per establishment (SIREN_SIRET).
            einvoicing_address=siren if rng.random() < 0.7 else f"{siren}_{siret}",
        )

    def quantity(self, kind: str) -> Decimal:
        rng = self.rng
        if kind == "one":
            return Decimal(1 if rng.random() < 0.8 else rng.randint(2, 12))
        if kind == "few":
            return Decimal(rng.randint(1, 6))
        if kind == "many":
            return Decimal(rng.randint(1, 120))
        if kind == "hours":
            return Decimal(rng.randint(1, 80)) / 2
        if kind == "days":
            return Decimal(rng.randint(1, 20)) / 2
        if kind == "area":
            return Decimal(rng.randint(500, 250_000)) / 100
        if kind == "length":
            return Decimal(rng.randint(5, 500))
        if kind == "volume":
            return Decimal(rng.randint(5_000, 3_000_000)) / 1000
        return Decimal(rng.randint(500, 2_000_000)) / 1000  # weight, in kg to the gram

    def unit_price(self, low: float, high: float) -> Decimal:
        # Prices below 5 € carry four decimals (fuel, bulk goods) so line rounding is exercised.
        if high <= 5:
            return Decimal(self.rng.randint(int(low * 10_000), int(high * 10_000))) / 10_000
        return Decimal(self.rng.randint(int(low * 100), int(high * 100))) / 100


_FEMALE = frozenset(
    {
        "Marie",
        "Sophie",
        "Nathalie",
        "Isabelle",
        "Catherine",
        "Sylvie",
        "Christine",
        "Céline",
        "Émilie",
        "Camille",
        "Léa",
        "Chloé",
        "Aurélie",
        "Hélène",
        "Valérie",
        "Manon",
        "Inès",
    }
)


def _business_days(today: date) -> list[date]:
    days = [today - timedelta(days=d) for d in range(WINDOW_DAYS, -1, -1)]
    return [d for d in days if d.weekday() < 5] or [today]


def _at(day: date, minutes: int) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=PARIS) + timedelta(minutes=minutes)


def _after(rng: random.Random, start: datetime, limit: datetime, max_days: int) -> datetime:
    """A moment during office hours up to `max_days` after `start`, never after `limit`."""
    local_start = start.astimezone(PARIS)
    days = max(0, min(max_days, (limit.date() - local_start.date()).days))
    day = local_start.date() + timedelta(days=rng.randint(0, days))
    moment = _at(day, rng.randint(8 * 60, 19 * 60)) + timedelta(seconds=rng.randrange(60))
    if moment <= start:
        moment = start + timedelta(minutes=rng.randint(10, 90))
    return min(moment, max(limit, start + timedelta(minutes=10)))


def _quota(n: int, share: float, minimum: int) -> int:
    return min(n, max(minimum, round(n * share)))


def _existing_max(conn: psycopg.Connection) -> tuple[int, dict[InvoiceKind, int], int]:
    """Highest customer code suffix, invoice sequence per kind and batch number already there."""
    row = conn.execute(
        "SELECT coalesce(max(substring(code FROM %s)::bigint), 0) FROM customers WHERE code ~ %s",
        (f"^{CUSTOMER_PREFIX}(\\d+)$", f"^{CUSTOMER_PREFIX}\\d+$"),
    ).fetchone()
    customer_max = int(row[0]) if row else 0
    numbers: dict[InvoiceKind, int] = {}
    for kind, prefix in NUMBER_PREFIX.items():
        row = conn.execute(
            "SELECT coalesce(max(substring(number FROM %s)::bigint), 0) FROM invoices"
            " WHERE number ~ %s",
            (f"^{prefix}\\d{{4}}-(\\d+)$", f"^{prefix}\\d{{4}}-\\d+$"),
        ).fetchone()
        numbers[kind] = int(row[0]) if row else 0
    row = conn.execute("SELECT coalesce(max(batch_number), 0) FROM invoices").fetchone()
    batch_max = int(row[0]) if row else 0
    return customer_max, numbers, batch_max


def _reserve_ids(conn: psycopg.Connection, table: str, count: int) -> list[int]:
    # Taking ids from the identity sequence keeps later ordinary INSERTs clash-free.
    rows = conn.execute(
        "SELECT nextval(pg_get_serial_sequence(%s, 'id')) FROM generate_series(1, %s)",
        (table, count),
    ).fetchall()
    return sorted(int(r[0]) for r in rows)


def _copy(
    cur: psycopg.Cursor[tuple[object, ...]], table: str, columns: Sequence[str]
) -> AbstractContextManager[psycopg.Copy]:
    statement = sql.SQL("COPY {} ({}) FROM STDIN").format(
        sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, columns))
    )
    # A writer thread feeds the server while this one formats rows: both cores stay busy.
    return cur.copy(statement, writer=QueuedLibpqWriter(cur))


def seed(
    conn: psycopg.Connection,
    invoices: int,
    seed: int = 1,
    *,
    today: date | None = None,
    plateforme: bool = False,
) -> SeedSummary:
    """Add `invoices` demo invoices (and their customers) in one transaction; reproducible.
    `plateforme`: some private customers receive theirs through the Plateforme Agréée (a send
    then needs a PA configured)."""
    if invoices < 1:
        raise PostierError(
            f"Nombre de factures de démonstration invalide : {invoices} (il en faut au moins une)."
        )
    started = time.perf_counter()
    today = today or date.today()
    rng = random.Random(seed)
    gen = _Generator(rng, today)
    n_customers = max(min(invoices, 20), invoices // 20)

    with conn.transaction():
        # Two concurrent seeds would compute the same next numbers: serialise them.
        conn.execute("LOCK TABLE customers, invoices IN SHARE ROW EXCLUSIVE MODE")
        customer_max, number_max, batch_max = _existing_max(conn)
        customer_ids = _reserve_ids(conn, "customers", n_customers)
        invoice_ids = _reserve_ids(conn, "invoices", invoices)

        customers = _make_customers(gen, customer_ids, customer_max)
        if plateforme:
            _move_to_plateforme(rng, customers)
        records = _make_invoices(gen, customers, invoices, max(batch_max + 1, FIRST_BATCH))
        # Numbers follow creation order, as the ERP hands them out.
        records.sort(key=lambda r: r.created_at)
        ids_of = {id(rec): invoice_id for invoice_id, rec in zip(invoice_ids, records, strict=True)}
        sent_ids: list[int] = []
        ready_ids: list[int] = []  # « Prêt » and to be sent: checked as the preparation would
        line_count = due_count = 0
        sequence = dict(number_max)

        with conn.cursor() as cur:
            with _copy(cur, "customers", CUSTOMER_COLUMNS) as copy:
                for customer in customers:
                    copy.write_row(customer.row())
            # Lines and due dates of a sent invoice are refused by the immutability trigger, so
            # sent invoices go in as PRET and switch to ENVOYE once their details are in.
            with _copy(cur, "invoices", INVOICE_COLUMNS) as copy:
                for invoice_id, rec in zip(invoice_ids, records, strict=True):
                    sequence[rec.kind] += 1
                    number = (
                        f"{NUMBER_PREFIX[rec.kind]}{rec.invoice_date.year}-{sequence[rec.kind]:06d}"
                    )
                    state = rec.state
                    if state is SendState.ENVOYE:
                        sent_ids.append(invoice_id)
                        state = SendState.PRET
                    if state is SendState.PRET:
                        ready_ids.append(invoice_id)
                    copy.write_row(
                        (
                            invoice_id,
                            number,
                            rec.kind.value,
                            rec.customer.id,
                            rec.invoice_date,
                            rec.due_date,
                            rec.batch_number,
                            rec.created_by,
                            rec.created_at,
                            rec.payment_mode.value,
                            rec.total_net,
                            rec.total_vat,
                            rec.total_gross,
                            state.value,
                            rec.state_changed_at,
                            rec.state_changed_by,
                            rec.edited_at,
                            rec.edited_by,
                            rec.sent_at,
                            rec.sent_by,
                            rec.dematerialized_channel is not None,
                            rec.dematerialized_channel,
                            rec.chorus_service_code,
                            rec.chorus_engagement_number,
                            ids_of[id(rec.credited)] if rec.credited else None,
                            rec.delivery_date,
                            *(rec.delivery_place or (None,) * 4),
                            "FR" if rec.delivery_place else None,
                        )
                    )
            with _copy(cur, "invoice_lines", LINE_COLUMNS) as copy:
                for invoice_id, rec in zip(invoice_ids, records, strict=True):
                    for line in rec.lines:
                        copy.write_row((invoice_id, *line))
                    line_count += len(rec.lines)
            with _copy(cur, "invoice_due_dates", DUE_DATE_COLUMNS) as copy:
                for invoice_id, rec in zip(invoice_ids, records, strict=True):
                    for position, (due, amount) in enumerate(rec.due_dates, start=1):
                        copy.write_row((invoice_id, position, due, amount))
                    due_count += len(rec.due_dates)
        sent_ids = _settle_ready(conn, ready_ids, sent_ids)
        with conn.cursor() as cur:
            cur.execute("UPDATE invoices SET send_state = 'ENVOYE' WHERE id = ANY(%s)", (sent_ids,))
        conn.execute("ANALYZE customers, invoices, invoice_lines, invoice_due_dates")

    return SeedSummary(
        customers=len(customers),
        invoices=len(records),
        lines=line_count,
        due_dates=due_count,
        duration_s=round(time.perf_counter() - started, 3),
    )


def _settle_ready(conn: psycopg.Connection, ready: list[int], sent: list[int]) -> list[int]:
    """« Prêt » (and to-be-sent) invoices as the preparation would leave them: checked for their
    channel, fingerprinted; those it would refuse go back to « En attente », unsent. The sent
    ones that passed, to switch to « Envoyé »."""
    from postier.domain.validation import sending_problems
    from postier.store.invoices import fingerprint, load_invoices

    refused: list[int] = []
    prints: list[tuple[str, int]] = []
    for start in range(0, len(ready), 1000):
        for invoice in load_invoices(conn, ready[start : start + 1000]):
            if sending_problems(invoice):
                refused.append(invoice.id)
            else:
                prints.append((fingerprint(invoice), invoice.id))
    with conn.cursor() as cur:
        cur.execute(
            "UPDATE invoices i SET fingerprint = u.print FROM unnest(%s::text[], %s::bigint[]) "
            "AS u(print, id) WHERE i.id = u.id",
            ([p for p, _ in prints], [i for _, i in prints]),
        )
        cur.execute(
            "UPDATE invoices SET send_state = 'EN_ATTENTE', state_changed_at = NULL, "
            "state_changed_by = NULL, sent_at = NULL, sent_by = NULL, dematerialized = false, "
            "dematerialized_channel = NULL WHERE id = ANY(%s)",
            (refused,),
        )
    gone = set(refused)
    return [i for i in sent if i not in gone]


def _make_customers(gen: _Generator, ids: Sequence[int], code_offset: int) -> list[_Customer]:
    rng = gen.rng
    n = len(ids)
    n_public = max(1, round(n * 0.25))
    public_slots = set(rng.sample(range(n), n_public))
    customers = [
        gen.customer(cid, f"{CUSTOMER_PREFIX}{code_offset + i + 1:06d}", i in public_slots)
        for i, cid in enumerate(ids)
    ]
    # Deliberate defects, each present at least once so validation meets both outcomes.
    chorus = [c for c in customers if c.channel is Channel.CHORUS]
    for c in rng.sample(chorus, min(len(chorus), _quota(len(chorus), 0.08, 1))):
        c.siret = None
    requiring = [c for c in chorus if c.chorus_service_required and c.siret]
    for c in rng.sample(requiring, min(len(requiring), _quota(len(requiring), 0.05, 1))):
        c.chorus_service_code = None
    portal = [c for c in customers if c.channel is Channel.PORTAIL]
    for c in rng.sample(portal, min(len(portal), _quota(len(portal), 0.05, 1))):
        c.emails = []
    drawees = [c for c in customers if c.payment_mode in BANK_MODES]
    for c in rng.sample(drawees, min(len(drawees), _quota(len(drawees), 0.04, 1))):
        c.iban = c.bic = None
    return customers


def _make_invoices(
    gen: _Generator, customers: list[_Customer], n: int, first_batch: int
) -> list[_Invoice]:
    rng = gen.rng
    today = gen.today
    limit = _at(today, 19 * 60)
    days = _business_days(today)
    # Each business day has one to three batches, numbered in date order.
    batches: dict[date, list[int]] = {}
    next_batch = first_batch
    for day in days:
        count = rng.choice((1, 1, 2, 3))
        batches[day] = list(range(next_batch, next_batch + count))
        next_batch += count

    # Every customer gets at least one invoice, then a long tail of big accounts.
    weights = [rng.paretovariate(1.2) for _ in customers]
    owners = list(customers[: min(n, len(customers))])
    owners += rng.choices(customers, weights=weights, k=n - len(owners))
    special = rng.sample(range(n), n)
    n_zero = _quota(n, 0.01, 3) if n >= 20 else 0
    n_multi = _quota(n, 0.003, 2) if n >= 20 else 0
    n_credit = _quota(n, 0.04, 2) if n >= 20 else 0
    zero = set(special[:n_zero])
    multi = set(special[n_zero : n_zero + n_multi])
    credit = set(special[n_zero + n_multi : n_zero + n_multi + n_credit])

    modes = list(MODE_WEIGHTS)
    mode_weights = list(MODE_WEIGHTS.values())
    states = list(STATE_WEIGHTS)
    state_weights = list(STATE_WEIGHTS.values())
    sectors = list(SECTOR_WEIGHTS)
    sector_weights = list(SECTOR_WEIGHTS.values())
    records: list[_Invoice] = []
    for i, customer in enumerate(owners):
        day = rng.choice(days)
        created_at = _at(day, rng.randint(8 * 60, 18 * 60 + 30))
        kind = InvoiceKind.AVOIR if i in credit else InvoiceKind.FACTURE
        mode = (
            customer.payment_mode
            if rng.random() < 0.92
            else rng.choices(modes, weights=mode_weights)[0]
        )
        if i in zero:
            state = SendState.CONSERVE_INTERNE if rng.random() < 0.4 else SendState.EN_ATTENTE
        else:
            state = rng.choices(states, weights=state_weights)[0]
        rec = _Invoice(
            customer=customer,
            kind=kind,
            invoice_date=day,
            created_at=created_at,
            batch_number=rng.choice(batches[day]),
            created_by=rng.choices(CREATORS, weights=CREATOR_WEIGHTS)[0],
            payment_mode=mode,
            state=state,
        )
        sector = (
            customer.sector
            if rng.random() < 0.85
            else rng.choices(sectors, weights=sector_weights)[0]
        )
        if i in multi:
            n_lines = rng.randint(40, 60)
        elif kind is InvoiceKind.AVOIR:
            n_lines = rng.randint(1, 3)
        else:
            n_lines = rng.choices(range(1, 9), weights=(22, 20, 16, 13, 10, 8, 6, 5))[0]
        _fill_lines(gen, rec, sector, n_lines, free=i in zero)
        _fill_delivery(gen, rec)
        _fill_schedule(rng, rec, customer.term_days)
        _fill_lifecycle(rng, rec, limit)
        if customer.channel is Channel.CHORUS:
            if customer.chorus_service_required or rng.random() < 0.3:
                rec.chorus_service_code = customer.chorus_service_code
            if customer.chorus_engagement_required or rng.random() < 0.2:
                rec.chorus_engagement_number = f"EJ{rng.randrange(10**10):010d}"
        records.append(rec)

    _drop_required_chorus_references(rng, records)
    _link_credit_notes(rng, records, limit)
    _none_sent_through_plateforme(records)
    return records


def _move_to_plateforme(rng: random.Random, customers: list[_Customer]) -> None:
    """Switch a share of the private customers (never one of the deliberate defects) to the
    channel `plateforme`; their SIREN and 0225 address are already valid."""
    eligible = [
        c
        for c in customers
        if c.channel in (Channel.PORTAIL, Channel.PAPIER)
        and (c.channel is Channel.PAPIER or c.emails)
        and (c.iban or c.payment_mode not in BANK_MODES)
    ]
    for c in rng.sample(eligible, min(len(eligible), _quota(len(eligible), PLATEFORME_SHARE, 2))):
        c.channel = Channel.PLATEFORME


def _none_sent_through_plateforme(records: list[_Invoice]) -> None:
    """A `plateforme` invoice « Envoyé » would be one the PA has: there is none yet, so those
    are « Prêt », left for the send to deposit."""
    for rec in records:
        if rec.customer.channel is Channel.PLATEFORME and rec.state is SendState.ENVOYE:
            rec.state = SendState.PRET
            rec.sent_at = rec.sent_by = rec.dematerialized_channel = None


def _fill_lines(gen: _Generator, rec: _Invoice, sector: str, n_lines: int, free: bool) -> None:
    rng = gen.rng
    items = CATALOGUE[sector]
    bases: dict[Decimal, Decimal] = {}
    total_net = Decimal("0.00")
    for position in range(1, n_lines + 1):
        description, unit, rate_text, low, high, qty_kind, nature = rng.choice(items)
        # One line in ten comes from another sector, so invoices mix VAT rates (and goods with
        # services).
        if rng.random() < 0.1:
            other = CATALOGUE[rng.choice(list(CATALOGUE))]
            description, unit, rate_text, low, high, qty_kind, nature = rng.choice(other)
        quantity = gen.quantity(qty_kind)
        price = gen.unit_price(low, high)
        if free:
            description, price = rng.choice(FREE_LINES), Decimal("0")
        elif rec.kind is InvoiceKind.AVOIR and position == 1:
            description = (
                f"{rng.choice(CREDIT_REASONS)} : {description[0].lower()}{description[1:]}"
            )
        rate = Decimal(rate_text)
        net = to_cents(quantity * price)
        bases[rate] = bases.get(rate, Decimal("0")) + net
        total_net += net
        rec.lines.append((position, description, quantity, unit, price, rate, net, nature.value))
    # VAT is computed per rate on the sum of the line nets, as Invoice.vat_breakdown does.
    rec.total_net = total_net
    rec.total_vat = sum((to_cents(base * rate / 100) for rate, base in bases.items()), Decimal())
    rec.total_vat = to_cents(rec.total_vat)
    rec.total_gross = rec.total_net + rec.total_vat


def _fill_delivery(gen: _Generator, rec: _Invoice) -> None:
    """Goods delivered, services done, in the week before the invoice; now and then at another
    place than the buyer's address (a site, a warehouse)."""
    rng = gen.rng
    rec.delivery_date = rec.invoice_date - timedelta(days=rng.randint(0, 6))
    if rng.random() < 0.12:
        line1, _, postal_code, city = gen.address()
        name = f"{rng.choice(('Chantier', 'Entrepôt', 'Site', 'Magasin'))} de {city}"
        rec.delivery_place = (name, line1, postal_code, city)


def _link_credit_notes(rng: random.Random, records: list[_Invoice], limit: datetime) -> None:
    """Each credit note cites an invoice (BT-25, BT-26) issued before it: one of its customer's
    when there is one, else another customer's invoice, whose customer it then takes."""
    invoices = [r for r in records if r.kind is InvoiceKind.FACTURE and r.total_gross > 0]
    by_customer: dict[int, list[_Invoice]] = {}
    for r in invoices:
        by_customer.setdefault(r.customer.id, []).append(r)
    for rec in records:
        if rec.kind is not InvoiceKind.AVOIR or not invoices:
            continue
        own = by_customer.get(rec.customer.id, [])
        earlier = [r for r in own if r.created_at < rec.created_at]
        if not earlier:
            earlier = [r for r in invoices if r.created_at < rec.created_at] or invoices[:1]
        rec.credited = credited = rng.choice(earlier)
        if credited.customer is not rec.customer:
            rec.customer = credited.customer
            rec.payment_mode = credited.payment_mode
            rec.chorus_service_code = credited.chorus_service_code
            rec.chorus_engagement_number = credited.chorus_engagement_number
            if rec.dematerialized_channel is not None:
                rec.dematerialized_channel = None
                _fill_lifecycle(rng, rec, limit)
        if credited.created_at >= rec.created_at:  # the very first document of the set
            rec.invoice_date, rec.batch_number = credited.invoice_date, credited.batch_number
            rec.created_at = credited.created_at + timedelta(minutes=rng.randint(5, 60))
            rec.due_date = credited.due_date
            rec.due_dates = []
            rec.delivery_date = credited.delivery_date
            rec.edited_at = rec.edited_by = rec.sent_at = rec.sent_by = None
            rec.state_changed_at = rec.state_changed_by = rec.dematerialized_channel = None
            _fill_lifecycle(rng, rec, limit)


def _fill_schedule(rng: random.Random, rec: _Invoice, term_days: int) -> None:
    first_due = rec.invoice_date + timedelta(days=term_days)
    rec.due_date = first_due
    if rec.total_gross <= 0 or rec.payment_mode is PaymentMode.CARTE:
        return
    share = 0.35 if rec.payment_mode in (PaymentMode.LCR, PaymentMode.BILLET_ORDRE) else 0.04
    if rng.random() >= share:
        return
    parts = rng.randint(2, 4) if share > 0.1 else rng.randint(2, 3)
    gross_cents = int(rec.total_gross * 100)
    if gross_cents < parts:
        return
    each = gross_cents // parts
    amounts = [each] * (parts - 1) + [gross_cents - each * (parts - 1)]
    # The invoice's due date is the first instalment; the others follow month by month.
    rec.due_dates = [
        (first_due + timedelta(days=30 * k), Decimal(cents) / 100)
        for k, cents in enumerate(amounts)
    ]


def _fill_lifecycle(rng: random.Random, rec: _Invoice, limit: datetime) -> None:
    if rng.random() < EDITED_SHARE[rec.state] or (
        rec.state is SendState.ENVOYE and rec.customer.channel is Channel.PAPIER
    ):
        rec.edited_at = _after(rng, rec.created_at, limit, 5)
        rec.edited_by = rng.choice(EDITORS)
    if rec.state is SendState.EN_ATTENTE:
        return
    since = rec.edited_at or rec.created_at
    rec.state_changed_at = _after(rng, since, limit, 10)
    rec.state_changed_by = rng.choice(SENDERS)
    if rec.state is SendState.ENVOYE:
        rec.sent_at, rec.sent_by = rec.state_changed_at, rec.state_changed_by
        customer = rec.customer
        if customer.channel is Channel.PORTAIL and customer.emails and rng.random() < 0.85:
            rec.dematerialized_channel = "artis"
        elif customer.channel is Channel.CHORUS and customer.siret and rng.random() < 0.85:
            rec.dematerialized_channel = "chorus"


def _drop_required_chorus_references(rng: random.Random, records: list[_Invoice]) -> None:
    """Leave out a few service codes and engagement numbers the Chorus buyer requires."""
    needing_service = [
        r
        for r in records
        if r.customer.chorus_service_required and r.chorus_service_code is not None
    ]
    for rec in rng.sample(needing_service, _quota(len(needing_service), 0.05, 1)):
        rec.chorus_service_code = None
    needing_engagement = [r for r in records if r.customer.chorus_engagement_required]
    for rec in rng.sample(needing_engagement, _quota(len(needing_engagement), 0.05, 1)):
        rec.chorus_engagement_number = None


# -- summary ---------------------------------------------------------------------------------


def describe(conn: psycopg.Connection) -> pd.DataFrame:
    """Invoice counts per send state, channel and payment mode (long format, for the CLI)."""
    rows = conn.execute(
        """
        SELECT 'etat_envoi' AS dimension, i.send_state AS valeur, count(*) AS factures
          FROM invoices i GROUP BY i.send_state
        UNION ALL
        SELECT 'canal', c.channel, count(*)
          FROM invoices i JOIN customers c ON c.id = i.customer_id GROUP BY c.channel
        UNION ALL
        SELECT 'mode_paiement', i.payment_mode, count(*) FROM invoices i GROUP BY i.payment_mode
        UNION ALL
        SELECT 'type', i.kind, count(*) FROM invoices i GROUP BY i.kind
        ORDER BY 1, 2
        """
    ).fetchall()
    return pd.DataFrame(rows, columns=["dimension", "valeur", "factures"])
