"""The demo and test kit, apart from what production imports: the local reference PDS + PLC from npm
(``devkit.devnet``), the seeded catalog (``devkit.seed``), localstripe and the demo's money
(``devkit.demo_payments``), the Stripe Connect stub (``devkit.connect_stub``, with Stripe's own
example objects in ``devkit/data``) and generated audio (``devkit.media``). Only the CLI's ``demo``
command and the tests import it."""
