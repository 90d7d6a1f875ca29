"""Privacy requests (erasure, access) and the retention limit: what every sender owes its recipients.

``records`` is the erasure record (a keyed hash of the id, never the id), ``erasure`` removes a
recipient from the store and from every cache of every node, ``export`` shapes an access request's
answer, ``retention`` deletes events and form answers past ``retention_days``. The SQL is in the
stores (``PrivacyRepository`` in ``app.store.base``).
"""
