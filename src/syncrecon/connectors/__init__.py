"""Ready connectors for real systems, built on :mod:`syncrecon.http`.

- :mod:`syncrecon.connectors.hubspot`: HubSpot CRM v3 objects (deals, contacts, companies,
  custom objects).
- :mod:`syncrecon.connectors.salesforce`: any Salesforce sObject.

Each has a sync class (over an ``httpx.Client``) and an async one (over an
``httpx.AsyncClient``), and an offline emulator in :mod:`syncrecon.testing` to test against.
"""
