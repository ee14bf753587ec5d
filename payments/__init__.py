"""Money: the double-entry ledger (``ledger``), tip settlement rules (``settle``), signed
settlement records (``attest``), Stripe (``stripe_gateway``), service auth (``auth``) and the
broker's background work (``broker``). Amounts are integers in minor units everywhere."""
