"""/v1 over HTTP: routes, uploads, reading bodies by a deadline, schemas, the static page."""
