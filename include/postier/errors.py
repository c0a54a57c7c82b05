"""The error tree of Postier. Every error carries a French message meant for the billing clerk."""

from __future__ import annotations


class PostierError(Exception):
    """Base of every error Postier raises on purpose; `str(error)` is the clerk's French message."""


class ConfigurationError(PostierError):
    """A connection, a setting or a local tool is missing or wrong."""


class SelectionError(PostierError):
    """The treatment's criteria are invalid; nothing was read or changed."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("Critères de sélection invalides : " + " ; ".join(self.problems))


class TransitionError(PostierError):
    """A state change is not allowed."""


class InvoiceValidationError(PostierError):
    """An invoice cannot be processed for its channel (missing customer data, bad amounts…)."""

    def __init__(self, invoice_number: str, reasons: list[str]) -> None:
        self.invoice_number = invoice_number
        self.reasons = list(reasons)
        super().__init__(f"Facture {invoice_number} : " + " ; ".join(self.reasons))


class DocumentError(PostierError):
    """A document could not be rendered or is not valid (Factur-X, PDF/A)."""


class SigningError(PostierError):
    """The signing key cannot be loaded or a signature cannot be made or checked."""


class DeliveryError(PostierError):
    """A document or message could not be delivered (GED, SMTP, SFTP)."""


class ReturnFileError(PostierError):
    """A Chorus Pro return file is malformed, unknown or hostile."""
