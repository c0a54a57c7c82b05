"""The directory's line choice and the PA / directory connection settings (no service)."""

from __future__ import annotations

import pytest

from postier.delivery.annuaire import DirectoryConfig, choose_line
from postier.delivery.plateforme import PlatformConfig
from postier.errors import ConfigurationError

SIREN, SIRET = "732829320", "73282932000074"


def line(address: str, siren: str = SIREN, status: str = "Enabled", **more: object) -> dict:
    found = {"addressingIdentifier": address, "siren": siren}
    return found | {"platform": {"platformStatus": status}} | more


def test_a_line_whose_platform_is_disabled_or_another_buyers_is_not_chosen() -> None:
    lines = [
        line(SIREN, status="Disabled"),
        line("552100554", siren="552100554"),
        line(f"{SIREN}_{SIRET}", siret=SIRET, status="Disabled"),
    ]
    assert choose_line(lines, SIREN, SIRET) is None
    chosen = choose_line([*lines, line(f"{SIREN}_SIEGE")], SIREN, SIRET)
    assert chosen is not None and chosen.address == f"{SIREN}_SIEGE"


def test_the_environment_url_reads_as_the_connection_does() -> None:
    url = (
        "https://client:s%23cret@pa.example.fr:8443/flow-service?token_url=https://pa.example.fr/t"
    )
    from_env = PlatformConfig.from_env({"POSTIER_PLATEFORME_URL": url + "&timeout=12&scope=flow"})
    from_connection = PlatformConfig.from_connection(
        None,
        None,
        "client",
        "s#cret",
        {
            "base_url": "https://pa.example.fr:8443/flow-service",
            "token_url": "https://pa.example.fr/t",
            "timeout": "12",
            "scope": "flow",
        },
    )
    assert from_env == from_connection
    directory = DirectoryConfig.from_env({"POSTIER_ANNUAIRE_URL": url})
    assert isinstance(directory, DirectoryConfig) and directory.where.startswith("annuaire (")


@pytest.mark.parametrize("timeout", ["trente", "-5", "0", "nan", "inf"])
def test_an_unreadable_timeout_is_refused_in_french_naming_the_field(timeout: str) -> None:
    extra = {"base_url": "https://pa.example.fr", "token_url": "https://pa.example.fr/t"}
    with pytest.raises(
        ConfigurationError, match=f"connexion « postier_annuaire » : timeout « {timeout} »"
    ):
        DirectoryConfig.from_connection(None, None, "c", "s", extra | {"timeout": timeout})
    url = f"https://c:s@pa.example.fr/?token_url=https://pa.example.fr/t&timeout={timeout}"
    with pytest.raises(ConfigurationError, match="POSTIER_PLATEFORME_URL : timeout") as caught:
        PlatformConfig.from_env({"POSTIER_PLATEFORME_URL": url})
    assert "nombre de secondes" in str(caught.value)
