"""Who may talk to a node: CURVE keys and ZAP, join and client tokens with roles, loopback-only
mode, and TLS for the HTTP gateway (files, keys, tokens, zap, auth, loopback, tls, bootstrap)."""
