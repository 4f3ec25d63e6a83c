"""The embedded compute service: Nova's resource accounting, small enough to fuzz.

``models.service.Cloud`` is the facade (one method per API operation);
``models.oracle`` says what the accounting should be and reads what it is;
``models.faults`` brings Nova's fixed races back on demand.  Importing any
module registers the model's delay sites (``models.sites``).
"""
