"""The engine as a service: the worker protocol, a local worker process (stdin/stdout) and an HTTP server."""
