"""Pure domain: send states, the treatment catalogue, selection criteria, invoices, money."""
