"""The alert's renderings, pure functions of the alert model (``core.alerts``): ``email`` (SNS subject
and plain-text brief), ``slack`` (Block Kit), ``chatbot`` (AWS Chatbot custom notification),
``asff`` (Security Hub finding), ``ocsf`` (OCSF Detection Finding), ``envelope`` (the SNS
``MessageStructure=json`` message), with ``mrkdwn`` (chat escaping) and ``shared`` (rare items,
console links, ids) between them; and ``html_report``, a run's alerts as one self-contained HTML
page (``trailgeo replay --report``).

Nothing outside ``core.render`` imports it from ``core`` (tests/test_import_graph.py).

May import: `trailgeo.core`; the standard library always.
"""
