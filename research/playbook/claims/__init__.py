"""One module per claim of the playbook; each defines ``CLAIM``
(a ``research.playbook.core.Claim``).

The order and the names ``scripts/reproduce.py --claims`` takes are in
``research.playbook.registry``.
"""
