"""The county's web layer: pages, JSON API, printable documents, the OpenAPI document."""
