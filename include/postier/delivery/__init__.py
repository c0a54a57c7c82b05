"""Delivery to the outside: GED document archive, customer e-mail, Chorus Pro SFTP."""
